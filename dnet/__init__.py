"""dnet: DenseNet from the original Lua Torch release to modern deployment."""

from __future__ import annotations

__version__ = "0.1.0"

from dnet.errors import DnetError  # noqa: E402
from dnet.loading import load  # noqa: E402
from dnet.models import DenseNet, DenseNetConfig, create_model, zoo  # noqa: E402

__all__ = ["DenseNet", "DenseNetConfig", "DnetError", "__version__", "create_model", "load", "zoo"]
