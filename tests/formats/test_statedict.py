"""torchvision/timm-style state dicts: the architecture from shapes, torchvision's outputs, and the reverse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dnet
from dnet.core.atomic import sha256_file
from dnet.core.errors import ConfigError, FileFormatError
from dnet.formats.statedict import (
    config_from_state_dict,
    infer_compression,
    model_from_state_dict,
    torchvision_state_dict,
)
from dnet.models.densenet import DenseNet, DenseNetConfig
from tests.helpers.shared import shared_fixture
from tests.helpers.t7_writer import one_torch_thread, randomized  # noqa: F401 (one_torch_thread is an autouse fixture)

TV = "tv_densenet_k8_b2-3-2_init16_c10"
OPTIONS = ("; for another port give --key-map FILE (rules from its keys to torchvision's) and --concat-order new-first "
           "if it concatenates new features first")


@pytest.mark.parametrize("variant", ["", ".oldkeys", ".wrapped"])
def test_torchvision_fixture_reproduces_its_output(variant):
    path = shared_fixture("torchvision", f"{TV}{variant}.pth")
    x = torch.from_numpy(np.load(shared_fixture("torchvision", f"{TV}.input.npy")))
    ref = np.load(shared_fixture("torchvision", f"{TV}.output.npy"))
    model = dnet.load(path)
    assert not model.training
    assert model.config == DenseNetConfig((2, 3, 2), 8, True, 0.5, 16, "imagenet", 10)
    with torch.no_grad():
        y = model(x).numpy()
    assert float(np.abs(y - ref).max()) <= 1e-5
    meta = model.meta
    assert (meta.model, meta.num_classes, meta.preprocess.name, meta.input_size) == ("custom", 10, "torchvision", 224)
    assert meta.source == path.name and meta.source_sha256 == sha256_file(path)


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201", "densenet161"])
def test_torchvision_state_dict_has_torchvisions_exact_keys_and_shapes(name):
    expected = json.loads(shared_fixture("torchvision", "imagenet_state_dict_keys.json").read_text())[name]
    sd = torchvision_state_dict(dnet.create_model(name))
    assert [[k, list(v.shape)] for k, v in sd.items()] == expected["state_dict"]
    assert sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
        == expected["num_parameters"]


def test_torchvision_state_dict_round_trips(tmp_path):
    original = randomized(DenseNet(DenseNetConfig((2, 2, 2, 2), 6, True, 0.5, 12, "imagenet", 5)))
    path = tmp_path / "tv.pth"
    torch.save({"model": {f"module.{k}": v for k, v in torchvision_state_dict(original).items()}}, path)
    model = dnet.load(path)
    assert model.config == original.config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


@pytest.mark.parametrize(
    "cfg,problem",
    [
        (DenseNetConfig((2, 2), 4, True, 0.5, 8, "cifar", 10), "the cifar stem (torchvision has only the ImageNet 7x7 stem)"),
        (DenseNetConfig((2, 2), 4, False, 0.5, 8, "imagenet", 10), "no bottleneck layers"),
        (DenseNetConfig((2, 2), 4, True, 1.0, 8, "imagenet", 10), "compression 1.0"),
    ],
)
def test_torchvision_state_dict_refuses_what_torchvision_cannot_hold(cfg, problem):
    with pytest.raises(ConfigError) as e:
        torchvision_state_dict(DenseNet(cfg))
    assert str(e.value) == f"torchvision's DenseNet cannot hold this model ({problem}); write a dnet checkpoint instead"


def test_cifar_state_dict_without_batch_counters_infers_everything():
    cfg = DenseNetConfig((3, 2, 4), 6, False, 0.6, 10, "cifar", 100, conv_bias=True)
    original = randomized(DenseNet(cfg))
    sd = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = model_from_state_dict(sd, "cifar.pth")
    assert model.config.channels() == cfg.channels() and model.config.conv_bias
    assert model.config == cfg
    assert model.meta.preprocess.name == "cifar100" and model.meta.source_sha256 == ""
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_zoo_architecture_is_named():
    sd = dnet.create_model("densenet-bc-l100-k12", num_classes=100).state_dict()
    assert model_from_state_dict(sd, "x.pth").meta.model == "densenet-bc-l100-k12"


def test_compression_inference():
    assert infer_compression([(24, 12), (30, 15)], True) == 0.5
    assert infer_compression([(24, 24)], False) == 1.0
    assert infer_compression([(28, 19), (31, 21)], True) == 0.7  # floor(0.7·28) = 19, floor(0.7·31) = 21
    assert infer_compression([], True) == 0.5 and infer_compression([], False) == 1.0
    with pytest.raises(FileFormatError, match="do not follow one compression factor"):
        infer_compression([(20, 10), (20, 15)], True)


@pytest.mark.parametrize(
    "obj,message",
    [
        ([1, 2], "x.pth: holds list, not a state dict (a dict of tensors)"),
        ({"epoch": 3}, "x.pth: entry 'epoch' is not a named tensor; not a DenseNet state dict"),
        ({"conv.weight": torch.zeros(3, 3, 3, 3)},
         "x.pth: no DenseNet key layout dnet knows (1 tensor, the first 'conv.weight'); none of its keys fits a known "
         f"layout (torchvision, andreasveit, bamos, kuangliu){OPTIONS}"),
        ({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)},
         "x.pth: no DenseNet key layout dnet knows (a ResNet-style state dict (conv1, layer1..4, fc)); the nearest is "
         f"andreasveit (andreasveit/densenet-pytorch: 2 of 3 keys fit, not 'layer1.0.conv1.weight'){OPTIONS}"),
        ({"features.conv0.weight": torch.zeros(8, 3, 5, 5)},
         "x.pth: a 5x5 first convolution is none of dnet's DenseNet stems (CIFAR 3x3, ImageNet 7x7 with BN, timm's deep "
         "three 3x3)"),
        ({"features.conv0.weight": torch.zeros(8, 3, 7, 7)},
         "x.pth: a 7x7 first convolution without features.norm0 is none of dnet's DenseNet stems (CIFAR 3x3, ImageNet "
         "7x7 with BN, timm's deep three 3x3)"),
    ],
)
def test_not_a_densenet_state_dict(obj, message):
    with pytest.raises(FileFormatError) as e:
        model_from_state_dict(obj, "x.pth")
    assert str(e.value) == message


def test_extra_and_missing_keys_are_named():
    sd = dnet.create_model("densenet121").state_dict()
    sd["features.extra.weight"] = torch.zeros(1)
    with pytest.raises(FileFormatError, match=r"unexpected 'features.extra.weight'; 0 missing, 1 unexpected"):
        model_from_state_dict(sd, "x.pth")
    del sd["features.extra.weight"]
    sd["classifier.bias"] = torch.zeros(3)
    with pytest.raises(FileFormatError, match=r"classifier.bias has shape \[3\], the inferred DenseNet needs \[1000\]"):
        model_from_state_dict(sd, "x.pth")


def test_config_from_state_dict_reads_bn_size():
    cfg = DenseNetConfig((2, 2), 5, True, 0.5, 10, "cifar", 10, bn_size=3)
    assert config_from_state_dict(DenseNet(cfg).state_dict()) == cfg


def _deep_stem(widths, norm0=True):
    sd = dnet.create_model("densenetblur121d").state_dict()
    c_in = 3
    for i, w in enumerate(widths):
        sd[f"features.conv{i}.weight"] = torch.zeros(w, c_in, 3, 3)
        c_in = w
    if not norm0:
        del sd["features.norm0.weight"]
    return sd


def test_timms_deep_tiered_stem_is_named_and_refused():
    with pytest.raises(FileFormatError) as e:
        model_from_state_dict(_deep_stem([24, 48, 64]), "tiered.pth")
    assert str(e.value) == ("tiered.pth: a three-convolution stem of widths 24, 48, 64 is timm's 'deep_tiered' stem; "
                            "dnet holds timm's 'deep' stem, whose first two convolutions have the same width")


def test_a_3x3_stem_with_a_bn_but_no_second_convolution_says_why_not_unexpected_key():
    sd = dnet.create_model("densenet121").state_dict()
    sd["features.conv0.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(FileFormatError) as e:
        model_from_state_dict(sd, "x.pth")
    assert str(e.value) == ("x.pth: a 3x3 features.conv0 with a BN (features.norm0) but no features.conv1 is no DenseNet "
                            "stem dnet knows: the CIFAR stem has no BN, timm's deep stem has three 3x3 convolutions")


def test_a_deep_stem_without_its_first_bn_is_refused_in_one_line():
    with pytest.raises(FileFormatError) as e:
        model_from_state_dict(_deep_stem([32, 32, 64], norm0=False), "x.pth")
    assert str(e.value) == ("x.pth: features.conv1 follows a 3x3 features.conv0 without features.norm0; timm's deep "
                            "stem is three 3x3 convolutions, each with its BN")


def test_torchvision_cannot_hold_a_deep_stem_with_blur_pooling():
    with pytest.raises(ConfigError) as e:
        torchvision_state_dict(dnet.create_model("densenetblur121d"))
    assert "the deep stem (torchvision has only the ImageNet 7x7 stem); blur pooling" in str(e.value)
