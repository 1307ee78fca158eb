"""DenseNet models and the zoo of the paper's configurations.

The configuration (``config``), the zoo and the analytic ``summary`` need no PyTorch; ``DenseNet`` and
``build_model`` are looked up on first use (PEP 562), so ``dnet models`` lists the zoo without importing torch.
"""

from __future__ import annotations

import importlib

from dnet.models import zoo
from dnet.models.config import DenseNetConfig
from dnet.models.zoo import resolve_config

# public name -> module that defines it (importing it loads PyTorch)
_LAZY = {"DenseNet": "dnet.models.densenet", "build_model": "dnet.models.factory"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dnet.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["DenseNet", "DenseNetConfig", "build_model", "resolve_config", "zoo"]
