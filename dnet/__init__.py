"""dnet: DenseNet from the original Lua Torch release to modern deployment.

The package root imports nothing heavy: ``load``, ``create_model``, ``DenseNet``, ``DenseNetConfig``, ``zoo``,
``hub``, ``data`` and ``quantize`` are looked up on first use (PEP 562), so ``import dnet.engines`` to run an ONNX file
never loads PyTorch.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from dnet.core.errors import DnetError

DISTRIBUTION = "dnet-densenet"  # what pip calls the project ("dnet" on PyPI is another one); the import
# package and the command are always dnet

try:
    __version__ = metadata.version(DISTRIBUTION)  # defined once, in pyproject.toml
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# public name -> module that defines it
_LAZY = {
    "load": "dnet.formats.loading",
    "create_model": "dnet.models.hub",  # dnet.models.build_model plus pretrained= (dnet.models.hub says why it lives there)
    "hub": "dnet.models.hub",
    "DenseNet": "dnet.models.densenet",
    "DenseNetConfig": "dnet.models.config",
    "zoo": "dnet.models.zoo",
    "data": "dnet.data",  # dnet.data.preprocess("cat.jpg", "torch7")
    "quantize": "dnet.converters.int8.python_api",  # one call to a checked INT8 ONNX file, as nncf.quantize
    "QuantizeResult": "dnet.converters.int8.python_api",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dnet' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__.rpartition(".")[2] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["DenseNet", "DenseNetConfig", "DnetError", "QuantizeResult", "__version__", "create_model", "data", "hub",
           "load", "quantize", "zoo"]
