"""A zoo name in a ``.pth`` checkpoint's or an OpenVINO IR's metadata that the file's network contradicts: the
same check as for ONNX (``dnet.models.zoo.checked_name``): one warning naming the file and the key, the name taken
as custom, and no published number compared with the model."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dnet.core.artifact import ArtifactMeta
from dnet.core.specs import get_spec
from dnet.formats.checkpoint import save_checkpoint
from dnet.models import zoo
from tests.helpers.evaldata import write_cifar_bin
from tests.helpers.foreign_onnx import ten_classes_named
from tests.helpers.harness import Box
from tests.helpers.models import TINY, tiny_model

IGNORED = ": the name is ignored (taken as custom, compared with no published number)"
CASES = {  # case -> (the name the metadata gives, its dnet.config (None: none recorded), what the warning says)
    "densenet121-no-config": ("densenet121", None, "densenet121, but the weights are a custom DenseNet"),
    "densenet121-its-config": ("densenet121", "densenet121", "densenet121, but the weights are a custom DenseNet"),
    "bc100-its-config": ("densenet-bc-l100-k12", "densenet-bc-l100-k12",
                         "densenet-bc-l100-k12, but the weights are a custom DenseNet"),
    "bc100-weights-config": ("densenet-bc-l100-k12", "tiny",
                             "densenet-bc-l100-k12, but dnet.config records a custom DenseNet"),
}


def _tiny_named(path, name: str, config: str | None):
    """The tiny 10-class network (CIFAR-10 preprocessing) saved with metadata naming ``name``."""
    model = tiny_model(config=dataclasses.replace(TINY, num_classes=10))
    recorded = {None: {}, "tiny": model.config.to_dict()}.get(config)
    if recorded is None:
        recorded = dataclasses.replace(zoo.get(config).config, num_classes=10).to_dict()
    meta = ArtifactMeta(name, 10, 32, get_spec("cifar10"), config=recorded)
    return save_checkpoint(path, model, meta)


def _eval_json(box: Box, path) -> tuple[dict, list[str]]:
    r = box.cli("eval", path, "--dataset", "cifar10", "--data", box.work / "data", "--json", "--quiet")
    return json.loads(r.ok()), [line for line in r.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_checkpoint_whose_weights_contradict_its_zoo_name_is_never_compared_with_the_paper(box: Box, case):
    name, config, says = CASES[case]
    path = _tiny_named(box.work / "named.pth", name, config)
    write_cifar_bin(box.work / "data" / "cifar-10-batches-bin" / "test_batch.bin", 12)
    box.freeze()
    report, stderr = _eval_json(box, path)
    assert report["model"] == "custom" and report["published_error"] is None  # not the paper's 4.51 % for BC-100
    assert stderr == [f"dnet: warning: named.pth: metadata key dnet.model says {says}{IGNORED}"]
    box.unchanged()


def test_a_checkpoint_that_is_the_network_it_names_keeps_its_name_and_the_paper(box: Box):
    """The control: the same check passes a real BC-100 (random weights) and eval compares it with the paper."""
    config = zoo.get("densenet-bc-l100-k12").config
    from dnet.models.densenet import DenseNet

    meta = zoo.artifact_meta(config, name="densenet-bc-l100-k12", preprocess="cifar10")
    path = save_checkpoint(box.work / "bc100.pth", DenseNet(config).eval(), meta)
    write_cifar_bin(box.work / "data" / "cifar-10-batches-bin" / "test_batch.bin", 4)
    box.freeze()
    report, stderr = _eval_json(box, path)
    assert report["model"] == "densenet-bc-l100-k12" and report["published_error"] == 4.51 and stderr == []
    box.unchanged()


def _recorded(config: str | None, tiny: dict) -> dict | None:
    """The dnet.config a case records: none (the file's own is kept), the tiny network's, or the named model's."""
    if config in (None, "tiny"):
        return None if config is None else tiny
    return dataclasses.replace(zoo.get(config).config, num_classes=10).to_dict()


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_openvino_ir_whose_graph_contradicts_its_zoo_name_is_never_compared_with_the_paper(box: Box, models,
                                                                                               case):
    ov = pytest.importorskip("openvino", reason="OpenVINO is the optional extra: pip install 'dnet[openvino]'")
    name, config, says = CASES[case]
    if config is None or config == "tiny":  # the exported file's own dnet.config (the tiny network's) is kept
        says = f"{name}, but dnet.config records a custom DenseNet"
    else:  # dnet.config edited to match the name: the graph's classifier (20 channels) gives it away, as for ONNX
        says = f"{name}, whose classifier takes {zoo.get(name).config.num_features:,} channels; the graph's takes 20"
    onnx_path = ten_classes_named(box.add(models["onnx"], "named.onnx"), name,
                                  _recorded(config, dataclasses.replace(TINY, num_classes=10).to_dict()))
    ov.save_model(ov.convert_model(str(onnx_path)), str(box.work / "named.xml"), compress_to_fp16=False)
    onnx_path.unlink()
    write_cifar_bin(box.work / "data" / "cifar-10-batches-bin" / "test_batch.bin", 12)
    box.freeze()
    report, stderr = _eval_json(box, box.work / "named.xml")
    assert report["model"] == "custom" and report["published_error"] is None
    assert stderr == [f"dnet: warning: named.xml: metadata key dnet.model says {says}{IGNORED}"]
    box.unchanged()


def test_the_irs_classifier_channels_are_read_from_its_matmul(tmp_path, models):
    """The channels the check compares: 20 for the tiny model, in an IR with FP32 and with FP16-compressed weights,
    and None for a graph whose output no MatMul makes."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is the optional extra: pip install 'dnet[openvino]'")
    from dnet.engines.openvino import classifier_features

    for compress in (False, True):
        xml = tmp_path / f"tiny-{compress}.xml"
        ov.save_model(ov.convert_model(str(models["onnx"])), str(xml), compress_to_fp16=compress)
        assert classifier_features(ov.Core().read_model(str(xml))) == 20
    param = ov.opset13.parameter([1, 3, 4, 4], ov.Type.f32)
    assert classifier_features(ov.Model([ov.opset13.relu(param)], [param])) is None
