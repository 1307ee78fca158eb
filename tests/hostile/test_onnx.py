"""ONNX files that are not image classifiers: the interface is checked once, when the file is read
(``dnet.core.artifact.onnxfile.check_interface``), so ``bench``, ``eval``, ``convert`` and ``compare`` all say what is
wrong in one line instead of showing ONNX Runtime tracebacks."""

from __future__ import annotations

import onnx
import pytest

from tests.helpers.harness import Box
from tests.helpers.images import photo_tiles, write_images


def two_inputs(proto: onnx.ModelProto) -> str:
    proto.graph.input.append(onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["N", 3, 32, 32]))
    return "dnet runs image classifiers: one N×3×H×W image input and one N×classes output; this file has 2 inputs " \
           "(input, mask) and 1 outputs"


def feature_map_output(proto: onnx.ModelProto) -> str:
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    del proto.graph.output[:]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT,
                                                                 ["N", 3, 32, 32]))
    return f"dnet runs image classifiers: one N×3×H×W image input and one N×classes output; its output " \
           f"'{conv.output[0]}' is ?×3×32×32, not N×classes"


def huge_initializer(proto: onnx.ModelProto) -> str:
    t = max(proto.graph.initializer, key=lambda t: len(t.raw_data))  # 4 TB claimed, no data held
    del t.dims[:]
    t.dims.extend([2**20, 2**20])
    t.raw_data = b""
    return f"initializer '{t.name}' is corrupt: dimensions [1048576, 1048576] need 4,398,046,511,104 values, it holds 0"


CASES = {"two-inputs": two_inputs, "feature-map-output": feature_map_output, "huge-initializer": huge_initializer}
VERBS = ["bench", "eval", "convert", "compare"]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_file_that_is_not_a_classifier_is_one_line_in_every_verb(box: Box, models, case, verb):
    proto = onnx.load(str(models["onnx"]))
    expected = CASES[case](proto)
    bad = box.work / f"{case}.onnx"
    onnx.save(proto, str(bad))
    good = box.add(models["onnx"], "good.onnx")
    calib = write_images(box.work / "calib", photo_tiles(size=32, per_photo=1))
    box.freeze()
    args = {"bench": ["bench", bad, "--batch-sizes", "1"],
            "eval": ["eval", bad, "--dataset", "digits"],
            "convert": ["convert", bad, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", calib, "-o", box.work / "q.onnx"],
            "compare": ["compare", good, bad]}[verb]
    assert box.cli(*args).error_line(1) == f"{bad}: {expected}"
    box.unchanged()


def test_an_output_without_a_recorded_shape_is_checked_when_it_runs(box: Box, models):
    proto = onnx.load(str(models["onnx"]))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    del proto.graph.output[:]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None))
    bad = box.work / "unshaped.onnx"
    onnx.save(proto, str(bad))
    box.freeze()
    line = box.cli("bench", bad, "--batch-sizes", "2").error_line(1)
    assert line == ("unshaped.onnx: gives outputs of shape 2×8×32×32 for a batch of 2; dnet runs image classifiers "
                    "(N×classes logits)")
    box.unchanged()


def test_metadata_that_contradicts_the_graph_is_refused(box: Box, models):
    proto = onnx.load(str(models["onnx"]))
    for p in proto.metadata_props:
        if p.key == "dnet.input_size":
            p.value = "224"
    bad = box.work / "liar.onnx"
    onnx.save(proto, str(bad))
    line = box.cli("compare", bad, box.add(models["onnx"], "good.onnx")).error_line(1)
    assert line == f"{bad}: its metadata says 224×224 inputs, the graph takes 32×32"
