"""Edited metadata: an ONNX file's ``metadata_props`` and a TensorRT plan's sidecar. Each edit is refused in one
line naming the file and the key, or (a quantized graph that still says fp32) taken from the graph with a warning;
never trusted silently into a wrong preprocessing, class count or precision."""

from __future__ import annotations

import json

import pytest

from dnet.core.artifact.sidecar import write_sidecar
from tests.helpers.foreign_onnx import edit_meta, ten_classes_named
from tests.helpers.harness import Box
from tests.helpers.tensorrt_standins import sidecar

PRE = {"name": "cifar10", "mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7], "pixel_scale": 255.0,
       "resize": None, "crop": None, "interpolation": "none", "input_size": 32}
MALFORMED = "artifact metadata is incomplete or malformed: "
ONNX_EDITS = {  # case -> (key, new value, the end of the one error line)
    "unknown-preprocessing": ("dnet.preprocess", json.dumps({**PRE, "name": "bogus"}),
                              MALFORMED + "preprocess name 'bogus' is not one of cifar10, cifar100, digits, svhn, "
                                          "torch7, torchvision"),
    "mean-0-std-1-named-cifar10": ("dnet.preprocess", json.dumps({**PRE, "mean": [0, 0, 0], "std": [1, 1, 1]}),
                                   MALFORMED + "preprocess mean [0.0, 0.0, 0.0] is not cifar10's [125.3, 123.0, "
                                               "113.9]: the file was edited"),
    "std-edited": ("dnet.preprocess", json.dumps({**PRE, "std": [63.0, 62.1, 1.0]}),
                   MALFORMED + "preprocess std [63.0, 62.1, 1.0] is not cifar10's [63.0, 62.1, 66.7]: the file was "
                               "edited"),
    "classes-disagree": ("dnet.num_classes", "7", "its metadata says 7 classes, the graph gives 5"),
    "absurd-input-size": ("dnet.input_size", "100000", MALFORMED + "input_size 100000 is not a whole number in "
                                                                   "1..4,096"),
    "input-size-disagrees": ("dnet.input_size", "64", "its metadata says 64×64 inputs, the graph takes 32×32"),
    "invalid-json": ("dnet.preprocess", "{name: cifar10", "metadata key dnet.preprocess is not valid JSON (Expecting "
                                                          "property name enclosed in double quotes: line 1 column 2 "
                                                          "(char 1))"),
    "precision-int4": ("dnet.precision", json.dumps("INT4"), MALFORMED + "precision 'INT4' is not one of fp32, fp16, "
                                                                         "int8"),
}


@pytest.mark.parametrize("verb", ["inspect", "eval", "bench", "compare"])
@pytest.mark.parametrize("case", sorted(ONNX_EDITS))
def test_edited_onnx_metadata_is_refused_naming_the_file_and_key(box: Box, models, case, verb):
    key, value, expected = ONNX_EDITS[case]
    path = box.add(models["onnx"], "edited.onnx")
    edit_meta(path, key, value)
    good = box.add(models["onnx"], "good.onnx")
    box.freeze()
    args = {"inspect": ["inspect", path], "eval": ["eval", path, "--dataset", "cifar10", "--count", 2],
            "bench": ["bench", path, "--batch-sizes", 1, "--iterations", 1, "--warmup-iterations", 0],
            "compare": ["compare", good, path, "--count", 1]}[verb]
    assert box.cli(*args).error_line(1) == f"{path}: {expected}"
    box.unchanged()


SIDECAR_EDITS = {  # case -> (change to the sidecar's dict, the one error line after "m.plan.json: ")
    "unknown-preprocessing": (lambda d: d["meta"]["preprocess"].update(name="bogus"),
                              "key meta: " + MALFORMED + "preprocess name 'bogus' is not one of cifar10, cifar100, "
                                                         "digits, svhn, torch7, torchvision"),
    "mean-edited": (lambda d: d["meta"]["preprocess"].update(mean=[0, 0, 0]),
                    "key meta: " + MALFORMED + "preprocess mean [0.0, 0.0, 0.0] is not cifar10's [125.3, 123.0, "
                                               "113.9]: the file was edited"),
    "precision-int4": (lambda d: d["meta"].update(precision="INT4"),
                       "key meta: " + MALFORMED + "precision 'INT4' is not one of fp32, fp16, int8"),
    "absurd-input-size": (lambda d: d["meta"].update(input_size=10**6),
                          "key meta: " + MALFORMED + "input_size 1000000 is not a whole number in 1..4,096"),
    "profile-not-nchw": (lambda d: d["profile"].update(max=[32]),
                         "sidecar is incomplete or malformed (ValueError: profile max is not N,C,H,W)"),
    "compute-capability-text": (lambda d: d.update(compute_capability="eight"),
                                "sidecar is incomplete or malformed (ValueError: invalid literal for int() with base "
                                "10: 'e')"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_EDITS))
def test_an_edited_engine_sidecar_is_refused_naming_the_file_and_key(box: Box, case):
    plan = box.work / "m.plan"
    plan.write_bytes(b"not read: the sidecar is checked first")
    path = write_sidecar(plan, sidecar())
    doc = json.loads(path.read_text())
    change, expected = SIDECAR_EDITS[case]
    change(doc)
    path.write_text(json.dumps(doc))
    box.freeze()
    assert box.cli("inspect", plan).error_line(1) == f"m.plan.json: {expected}"
    box.unchanged()


def test_an_untouched_sidecar_still_reads(box: Box):
    plan = box.work / "m.plan"
    plan.write_bytes(b"x")
    write_sidecar(plan, sidecar())
    out = box.cli("inspect", plan).ok()
    assert out.startswith("m.plan: ") and "TensorRT 10.16.1.11, NVIDIA A10 (compute capability 8.6)" in out


# --- a zoo name that is not the network the file holds ------------------------------------------------------

IGNORED = ": the name is ignored (taken as custom, compared with no published number)"


def _zoo_config(name: str) -> dict:
    from dnet.models import zoo

    return zoo.get(name).config.to_dict()


NAME_EDITS = {  # case -> (dnet.model, dnet.config (None: the tiny model's), what the warning says it is)
    "config-disagrees": ("densenet-bc-l100-k12", None,
                         "densenet-bc-l100-k12, but dnet.config records a custom DenseNet"),
    "graph-disagrees": ("densenet-bc-l100-k12", _zoo_config("densenet-bc-l100-k12"),
                        "densenet-bc-l100-k12, whose classifier takes 342 channels; the graph's takes 20"),
    "imagenet-name": ("densenet121", _zoo_config("densenet121") | {"num_classes": 10},
                      "densenet121, whose classifier takes 1,024 channels; the graph's takes 20"),
    "no-zoo-name": ("densenet-bc-l999-k99", None, "'densenet-bc-l999-k99', which is no zoo model"),
}


@pytest.mark.parametrize("case", sorted(NAME_EDITS))
def test_a_zoo_name_the_graph_contradicts_is_ignored_with_a_warning_and_never_compared_with_the_paper(box: Box,
                                                                                                       models, case):
    from tests.helpers.evaldata import write_cifar_bin

    model, config, says = NAME_EDITS[case]
    path = ten_classes_named(box.add(models["onnx"], "named.onnx"), model, config)
    write_cifar_bin(box.work / "data" / "cifar-10-batches-bin" / "test_batch.bin", 12)
    box.freeze()
    warning = f"dnet: warning: named.onnx: metadata key dnet.model says {says}{IGNORED}"
    r = box.cli("eval", path, "--dataset", "cifar10", "--data", box.work / "data", "--json", "--quiet")
    report = json.loads(r.ok())
    assert report["model"] == "custom" and report["published_error"] is None  # not the paper's 4.51 % for BC-100
    assert [line for line in r.stderr.splitlines() if line.strip()] == [warning]
    r = box.cli("inspect", path)
    assert r.ok().startswith("named.onnx: custom, FP32, 10 classes, 32×32 input") and warning in r.stderr
    box.unchanged()


def test_every_zoo_name_agrees_with_its_own_configuration_and_classifier():
    from dnet.models import zoo

    for name in zoo.names():  # what dnet writes for each zoo model (any class count) is never taken for tampering
        config = zoo.get(name).config
        meta = zoo.artifact_meta(config, name=name)
        assert zoo.name_problem(meta, config.num_features) is None, name
        assert zoo.checked_name(meta, "m.onnx", config.num_features) is meta
    meta = zoo.artifact_meta(zoo.get("densenet121").config, name="densenet121")
    assert zoo.name_problem(meta, 1664) == "densenet121, whose classifier takes 1,024 channels; the graph's takes 1,664"


def test_metadata_naming_a_1000_class_model_on_a_10_output_graph_is_refused(box: Box, models):
    path = ten_classes_named(box.add(models["onnx"], "named.onnx"), "densenet121", _zoo_config("densenet121"))
    edit_meta(path, "dnet.num_classes", "1000")
    box.freeze()
    line = box.cli("eval", path, "--dataset", "cifar10", "--count", 2).error_line(1)
    assert line == f"{path}: its metadata says 1000 classes, the graph gives 10"
    box.unchanged()
