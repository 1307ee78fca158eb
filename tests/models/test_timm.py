"""timm's deep-stem DenseNets (densenet264d, densenetblur121d): keys, parameter counts and outputs equal to timm's.

The numbers come from timm itself (tests/models/timm_reference.json, made by tests/helpers/timm_reference.py with
timm 1.0.31; see its docstring for how timm runs without torchvision). The weights are recreated here from the
same formula, so no timm is needed to check dnet against them.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

import dnet
from dnet.converters.export import export
from dnet.engines.onnxruntime import run as ort_run
from dnet.formats.statedict import config_from_state_dict
from dnet.models import DenseNet, DenseNetConfig, zoo
from dnet.models.summary import count_params
from tests.helpers import timm_reference as ref

REFERENCE = json.loads(ref.REFERENCE.read_text())
TOLERANCE = 1e-5  # max|Δ| of the logits, dnet against timm


def _tiny(name: str) -> tuple[DenseNet, torch.Tensor]:
    _kwargs, fields, side = ref.TINY[name]
    model = DenseNet(DenseNetConfig(**fields)).eval()
    model.load_state_dict(ref.filled([(k, tuple(v.shape)) for k, v in model.state_dict().items()]), strict=True)
    return model, ref.reference_input(side)


@pytest.mark.parametrize("name", list(ref.TINY))
def test_reduced_timm_models_have_timms_keys_and_shapes(name):
    sd = DenseNet(DenseNetConfig(**ref.TINY[name][1])).state_dict()
    assert (len(sd), ref.keys_sha256(sd)) == (REFERENCE["tiny"][name]["tensors"], REFERENCE["tiny"][name]["keys_sha256"])


@pytest.mark.parametrize("name", list(ref.TINY))
def test_reduced_timm_models_give_timms_logits(name):
    model, x = _tiny(name)
    assert list(x.shape) == REFERENCE["tiny"][name]["input"]
    with torch.no_grad():
        got = model(x).numpy()
    assert np.max(np.abs(got - np.array(REFERENCE["tiny"][name]["logits"], np.float32))) <= TOLERANCE


def test_the_blur_reference_really_depends_on_blur_pooling():
    model, x = _tiny("deep-blur")
    plain = DenseNet(dataclasses.replace(model.config, blur_pool=False)).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (model(x) - plain(x)).abs().max().item() > 0.1


@pytest.mark.parametrize("name", ["deep", "classic"])
def test_reduced_timm_state_dicts_are_recognised(name):
    cfg = DenseNetConfig(**ref.TINY[name][1])
    assert config_from_state_dict(DenseNet(cfg).state_dict()) == cfg


def test_blur_pooling_is_not_in_a_state_dict_so_a_model_outside_the_zoo_reads_without_it():
    cfg = DenseNetConfig(**ref.TINY["deep-blur"][1])
    assert config_from_state_dict(DenseNet(cfg).state_dict()) == dataclasses.replace(cfg, blur_pool=False)


@pytest.mark.parametrize("name", ref.FULL)
def test_zoo_entry_has_timms_keys_shapes_and_exact_parameter_count(name):
    model = dnet.create_model(name)
    sd = model.state_dict()
    facts = REFERENCE["full"][name]
    assert (count_params(model), len(sd), ref.keys_sha256(sd)) == (facts["params"], facts["tensors"], facts["keys_sha256"])
    assert facts["max_abs_diff_dnet_vs_timm"] <= TOLERANCE  # measured with timm beside dnet at 224x224
    assert config_from_state_dict(sd) == zoo.get(name).config  # blur pooling from the zoo entry with these shapes


def test_zoo_configurations_of_timms_names():
    blur, deep = zoo.get("densenetblur121d").config, zoo.get("densenet264d").config
    assert (blur.stem, blur.stem_width, blur.blur_pool, blur.block_config, blur.growth_rate) == ("deep", 32, True, (6, 12, 24, 16), 32)
    assert (deep.stem, deep.stem_width, deep.blur_pool, deep.block_config, deep.growth_rate) == ("deep", 48, False, (6, 12, 64, 48), 48)
    assert (blur.init_features, deep.init_features) == (64, 96)


def test_a_densenetblur121d_state_dict_file_loads_as_densenetblur121d(tmp_path):
    model = dnet.create_model("densenetblur121d")
    torch.save(model.state_dict(), tmp_path / "densenetblur121d.pth")
    loaded = dnet.load(tmp_path / "densenetblur121d.pth")
    assert loaded.config == model.config and loaded.meta.model == "densenetblur121d"
    assert loaded.meta.preprocess.name == "torch7" and "timm's pipeline" in loaded.meta.extra["preprocess_note"]
    assert "does not record blur pooling" in loaded.meta.extra["blur_pool_note"]


@pytest.mark.slow  # the exporter alone takes about 30 s on a shared 2-core machine
def test_a_deep_stem_with_blur_pooling_exports_to_onnx_with_pytorchs_outputs(tmp_path):
    model, x = _tiny("deep-blur")
    model.meta = zoo.artifact_meta(model.config)
    path = export(model, tmp_path / "deep-blur.onnx", input_size=x.shape[-1])
    pads = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Pad"]
    assert [a.s for n in pads for a in n.attribute if a.name == "mode"] == [b"reflect"]  # the blur's padding
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort_run(path, x.numpy())
    assert np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, float(np.max(np.abs(expected))))


@pytest.mark.slow
def test_the_reference_file_is_what_timm_makes_now():
    timm = ref.import_timm()
    if timm is None:
        pytest.skip("timm is not importable here (it is not a dnet dependency: it needs torchvision, whose CPU build "
                    "does not exist for this torch); tests/helpers/timm_reference.py says how the file was made")
    made = ref.make(timm)
    for name, facts in made["tiny"].items():
        assert (facts["tensors"], facts["keys_sha256"]) == (REFERENCE["tiny"][name]["tensors"],
                                                            REFERENCE["tiny"][name]["keys_sha256"])
        assert np.max(np.abs(np.array(facts["logits"]) - np.array(REFERENCE["tiny"][name]["logits"]))) <= TOLERANCE
    for name, facts in made["full"].items():
        assert facts["max_abs_diff_dnet_vs_timm"] <= TOLERANCE
        assert {k: facts[k] for k in ("params", "tensors", "keys_sha256")} == \
            {k: REFERENCE["full"][name][k] for k in ("params", "tensors", "keys_sha256")}
