"""The recipe's defaults per data set, the dropout rule, and the optimiser train.lua uses."""

from __future__ import annotations

import pytest
import torch

from dnet.apps.train.loop import make_optimizer, recipe_model
from dnet.apps.train.recipe import TrainConfig, recipe
from dnet.core.errors import ConfigError, UsageError


@pytest.mark.parametrize(("dataset", "batch", "epochs", "schedule", "model"), [
    ("cifar10", 64, 300, "multistep", "densenet-bc-l100-k12"),
    ("cifar100", 64, 300, "multistep", "densenet-bc-l100-k12"),
    ("svhn", 64, 40, "multistep", "densenet-bc-l100-k12"),
    ("imagenet", 256, 90, "step30", "densenet121"),
])
def test_recipe_defaults_per_data_set(dataset, batch, epochs, schedule, model):
    cfg = recipe(dataset)
    assert (cfg.batch, cfg.epochs, cfg.lr_schedule, cfg.model) == (batch, epochs, schedule, model)
    assert (cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.decay_bn_bias) == (0.1, 0.9, True, 1e-4, True)


def test_dropout_is_0_2_without_augmentation_and_0_with_it():
    assert recipe("cifar10").effective_drop_rate == 0.0
    assert recipe("cifar10", augment=False).effective_drop_rate == 0.2
    assert recipe("svhn").effective_drop_rate == 0.2  # the paper trains SVHN without augmentation
    assert recipe("cifar10", augment=False, drop_rate=0.1).effective_drop_rate == 0.1  # explicit wins
    assert recipe("cifar10", drop_rate=0.3).model_config(10).drop_rate == 0.3
    assert recipe("cifar100", augment=False).model_config(100).drop_rate == 0.2


def test_model_from_fields_takes_the_class_count_from_the_data_set():
    cfg = recipe("cifar100", depth=40, growth_rate=12)
    assert cfg.model == "custom"
    mc = cfg.model_config(100)
    assert (mc.block_config, mc.growth_rate, mc.num_classes, mc.init_features) == ((6, 6, 6), 12, 100, 24)
    assert recipe("cifar100").model_config(100).num_classes == 100


def test_class_count_mismatch_is_refused():
    with pytest.raises(ConfigError, match="the model would have 100 classes but data set digits has 10"):
        recipe("digits", num_classes=100).model_config(10)


def test_zoo_name_and_fields_together_are_refused():
    with pytest.raises(UsageError, match="not both"):
        recipe("cifar10", model="densenet-bc-l100-k12", depth=40).model_config(10)


def test_optimizer_is_nesterov_sgd_with_decay_on_every_parameter():
    model = recipe_model(recipe("digits", depth=10, growth_rate=4), 10)
    opt = make_optimizer(model, recipe("digits"))
    assert len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["momentum"], g["nesterov"], g["dampening"], g["weight_decay"], g["lr"]) == (0.9, True, 0.0, 1e-4, 0.1)
    assert sum(p.numel() for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_optimizer_can_exempt_bn_and_biases_from_decay():
    model = recipe_model(recipe("digits", depth=10, growth_rate=4), 10)
    opt = make_optimizer(model, recipe("digits", decay_bn_bias=False))
    decay, other = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and other["weight_decay"] == 0.0
    n_bn_bias = sum(p.numel() for p in model.parameters() if p.ndim == 1)
    assert sum(p.numel() for p in other["params"]) == n_bn_bias
    assert all(p.ndim > 1 for p in decay["params"])
    bn = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert n_bn_bias == bn + 10  # BN weights and biases, and the classifier's bias


def test_config_round_trips_and_names_differences():
    a = recipe("digits", epochs=3)
    assert TrainConfig.from_dict(a.to_dict()) == a
    b = recipe("digits", epochs=5, lr=0.05, out="elsewhere")
    assert a.differences(b) == ["lr: 0.1 -> 0.05"]  # epochs and out may change on resume
