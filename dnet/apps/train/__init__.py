"""Training with the paper's recipe (liuzhuang13/DenseNet ``train.lua``/``opts.lua``), one process or many."""

from __future__ import annotations

from dnet.apps.train.recipe import TrainConfig, recipe

__all__ = ["TrainConfig", "recipe"]
