"""A foreign ONNX file (no dnet metadata) whose graph fixes its input at 32×32: every verb takes the size from the
graph, and a size that contradicts it (a data set's or preprocessing's, ``--input-size``) is one line naming both."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.helpers.evaldata import write_cifar_bin
from tests.helpers.foreign_onnx import dynamic
from tests.helpers.harness import Box


def _ten_classes(src, dst, *, strip_meta: bool = True):
    """The tiny CIFAR model with 10 classes (its classifier's rows, then their negatives), fixed at N×3×32×32."""
    m = onnx.load(str(src))
    w = next(t for t in m.graph.initializer if t.name == "classifier.weight")
    rows = numpy_helper.to_array(w)
    w.CopyFrom(numpy_helper.from_array(np.concatenate([rows, -rows]), w.name))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    for p in m.metadata_props:
        p.value = "10" if p.key == "dnet.num_classes" else p.value
    if strip_meta:
        del m.metadata_props[:]
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    onnx.save(m, str(dst))
    return dst


@pytest.fixture
def foreign(box: Box, models):
    write_cifar_bin(box.work / "data" / "cifar-10-batches-bin" / "test_batch.bin", 12)
    return _ten_classes(models["onnx"], box.work / "foreign.onnx")


def test_eval_feeds_a_foreign_32x32_graph_at_32x32_as_its_own_dnet_export_would_be(box: Box, models, foreign):
    own = _ten_classes(models["onnx"], box.work / "own.onnx", strip_meta=False)  # the same graph, dnet's metadata
    box.freeze()
    args = ["--dataset", "cifar10", "--data", box.work / "data", "--json", "--quiet"]
    got = json.loads(box.cli("eval", foreign, *args).ok())
    want = json.loads(box.cli("eval", own, *args).ok())
    assert got["images"] == 12 and got["preprocess"] == "cifar10"
    assert (got["top1_correct"], got["top5_correct"]) == (want["top1_correct"], want["top5_correct"])
    box.unchanged()


@pytest.mark.parametrize(("args", "code", "line"), [
    (["eval", "--dataset", "digits"], 1, "foreign.onnx: expects 32×32 inputs, got 8×8"),  # digits are 8×8
    (["eval", "--dataset", "cifar10", "--preprocess", "torchvision"], 1, "foreign.onnx: expects 32×32 inputs, got "
                                                                         "224×224"),
    (["eval", "--dataset", "cifar10", "--input-size", 64], 2, "No such option '--input-size'. Did you mean '--batch-size'?"),  # the graph says it
    (["bench", "--batch-sizes", 1, "--iterations", 1, "--input-size", 64], 2,
     "foreign.onnx takes 32×32 inputs only, not 64×64; export the model at that size to measure it there "
     "(--input-size)"),
    (["convert", "--from", "onnx", "--to", "onnx", "--precision", "fp16", "--input-size", 64], 2,
     "foreign.onnx takes 32×32 inputs (fixed in its graph); --input-size 64 contradicts it: converting an ONNX file "
     "keeps its input size (export the model at 64×64 from its checkpoint instead)"),
])
def test_a_size_that_contradicts_the_graph_is_one_line_naming_both(box: Box, foreign, args, code, line):
    box.freeze()
    verb, *rest = args
    where = [foreign] if verb != "convert" else [foreign, "-o", box.work / "out.onnx"]
    if verb == "eval":
        rest += ["--data", box.work / "data", "-q"]
    assert box.cli(verb, *where, *rest).error_line(code) == line
    box.unchanged()


def test_the_graphs_own_size_is_what_bench_and_convert_use(box: Box, foreign):
    box.freeze()
    rows = json.loads(box.cli("bench", foreign, "--batch-sizes", 1, "--iterations", 1, "--warmup-iterations",
                              0, "--json").ok())  # ONNX Runtime runs a fixed 32×32 graph on 32×32 inputs only
    assert [(r["engine"], r["batch"], r["iterations"]) for r in rows] == [("foreign.onnx", 1, 1)]
    box.cli("convert", foreign, "--from", "onnx", "--to", "onnx", "--precision", "fp16", "--input-size", 32, "-o",
            box.work / "out.onnx", "--quiet").ok()  # the size it takes: accepted
    box.unchanged("out.onnx")


def test_convert_input_size_contradicting_the_metadata_of_a_free_size_graph_is_one_line(box: Box, models):
    src = dynamic(models["onnx"], box.work / "free.onnx")  # height and width free; dnet metadata: 32×32
    box.freeze()
    line = box.cli("convert", src, "--from", "onnx", "--to", "onnx", "--precision", "fp16", "--input-size", 64, "-o",
                   box.work / "out.onnx").error_line(2)
    assert line == ("free.onnx takes 32×32 inputs (its metadata says); --input-size 64 contradicts it: converting an "
                    "ONNX file keeps its input size (export the model at 64×64 from its checkpoint instead)")
    box.unchanged()
