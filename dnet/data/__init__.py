"""Data sets (``datasets``), image arrays (``arrays``), image decoding (``images``), preprocessing (``specs``,
``transforms``), downloads.

The package itself imports nothing, so ``dnet.core.specs`` (a description every artifact carries) stays light;
``preprocess`` and ``preprocess_array`` (``dnet.data.transforms``) are looked up on first use (PEP 562).
"""

from __future__ import annotations

import importlib

_LAZY = {"preprocess": "dnet.data.transforms", "preprocess_array": "dnet.data.transforms"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dnet.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["preprocess", "preprocess_array"]
