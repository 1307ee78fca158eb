"""``build_model``: a freshly initialised DenseNet from a zoo name or a configuration, the architecture only.

``dnet.create_model`` (``dnet.models.hub``, timm's ``create_model``) builds through it and adds ``pretrained=``.
"""

from __future__ import annotations

from dnet.models import zoo
from dnet.models.config import DenseNetConfig
from dnet.models.densenet import DenseNet


def build_model(
    name_or_config: str | DenseNetConfig, *, num_classes: int | None = None, memory_efficient: bool = False
) -> DenseNet:
    """A freshly initialised DenseNet from a zoo name (``"densenet121"``) or a :class:`DenseNetConfig`.

    ``model.meta`` says what the model expects (``zoo.artifact_meta``), so it exports without further options.
    """
    config = zoo.resolve_config(name_or_config, num_classes=num_classes)
    model = DenseNet(config, memory_efficient=memory_efficient)
    model.meta = zoo.artifact_meta(config, name=name_or_config if isinstance(name_or_config, str) else None)
    return model


__all__ = ["build_model"]
