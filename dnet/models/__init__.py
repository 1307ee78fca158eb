"""DenseNet models and the zoo of the paper's configurations."""

from __future__ import annotations

import dataclasses

from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig


def resolve_config(name_or_config: str | DenseNetConfig, *, num_classes: int | None = None) -> DenseNetConfig:
    """A zoo name or a configuration, with the class count replaced when given."""
    cfg = zoo.get(name_or_config).config if isinstance(name_or_config, str) else name_or_config
    if num_classes is not None:
        cfg = dataclasses.replace(cfg, num_classes=num_classes)
    return cfg


def create_model(
    name_or_config: str | DenseNetConfig, *, num_classes: int | None = None, memory_efficient: bool = False
) -> DenseNet:
    """A freshly initialised DenseNet from a zoo name (``"densenet121"``) or a :class:`DenseNetConfig`.

    ``model.meta`` says what the model expects (``zoo.artifact_meta``), so it exports without further options.
    """
    config = resolve_config(name_or_config, num_classes=num_classes)
    model = DenseNet(config, memory_efficient=memory_efficient)
    model.meta = zoo.artifact_meta(config, name=name_or_config if isinstance(name_or_config, str) else None)
    return model


__all__ = ["DenseNet", "DenseNetConfig", "create_model", "resolve_config", "zoo"]
