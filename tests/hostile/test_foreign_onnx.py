"""ONNX files other tools wrote (``tests/helpers/foreign_onnx.py`` makes them from the tiny model) through every verb
that reads ONNX: each runs and gives a correct result, or is refused in one line; inputs byte-identical, nothing left
in the temporary folder, and no output file where the verb refused."""

from __future__ import annotations

import json

import pytest

from tests.helpers.foreign_onnx import MAKERS
from tests.helpers.harness import Box
from tests.helpers.images import photo_tiles, write_images

SELF_CONTAINED = "is stored in an external file; dnet reads self-contained ONNX files"
NOT_CLASSIFIER = ("dnet runs image classifiers: one N×3×H×W image input and one N×classes output; its output 'conv2d' "
                  "is ?×8×32×32, not N×classes")
QUANTIZED = ("is already quantized (DequantizeLinear, QuantizeLinear nodes); convert the FP32 model to onnx-fp16, or "
             "this file to trt (--to)")
# (case, verb) -> the end of the one error line; every pair not listed runs to a result
REFUSED = {
    **{(f"external-{d}", v): SELF_CONTAINED for d in ("moved", "missing", "truncated")
       for v in ("inspect", "eval", "bench", "compare", "convert")},
    **{("feature-map", v): NOT_CLASSIFIER for v in ("inspect", "eval", "bench", "compare", "convert")},
    # an ImageNet-style preprocessing resizes to 224; a foreign file fixed at 32×32 has no metadata saying otherwise
    ("opset-7", "eval"): "opset-7.onnx: expects 32×32 inputs, got 224×224",
    ("ort-qdq", "convert"): QUANTIZED, ("modelopt-qdq", "convert"): QUANTIZED,
    ("ort-qoperator", "convert"): QUANTIZED.replace("DequantizeLinear, QuantizeLinear",
                                                    "DequantizeLinear, QLinearConcat, QLinearConv"),
}
VERBS = ["inspect", "eval", "bench", "compare", "convert"]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, models):
    folder = tmp_path_factory.mktemp("foreign")
    return {name: make(models["onnx"], folder / f"{name}.onnx") for name, make in MAKERS.items()}


def _images(box: Box):
    tiles = photo_tiles(size=32, per_photo=1)
    for c in range(5):  # the tiny model's 5 classes, one image each
        write_images(box.work / "imgs" / f"c{c}", tiles[c:c + 1])
    return box.work / "imgs"


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("case", sorted(MAKERS))
def test_a_foreign_onnx_file_runs_or_is_one_line_in_every_verb(box: Box, models, foreign, case, verb):
    src = foreign[case]
    f = box.add(src)
    if src.with_name(src.name + ".data").exists():
        box.add(src.with_name(src.name + ".data"))
    ref = box.add(models["onnx"], "ref.onnx")
    imgs = _images(box)
    box.freeze()
    args = {"inspect": ["inspect", f, "--json"],
            "eval": ["eval", f, "--dataset", "folder", "--data", imgs, "-q", "--json",
                     *(["--preprocess", "torchvision"] if case == "opset-7" else [])],  # no dnet metadata to say it
            "bench": ["bench", f, "--batch-sizes", 1, "--iterations", 2, "--warmup-iterations", 0, "--json"],
            "compare": ["compare", ref, f, "--count", 2, "--json"],
            "convert": ["convert", f, "--from", "onnx", "--to", "onnx", "--precision", "fp16", "-o", box.work / "out.onnx", "--quiet"]}
    r = box.cli(*args[verb])
    quantized_as_fp32 = case.startswith(("ort-", "modelopt"))  # the tools copy dnet's metadata, "fp32" included
    if quantized_as_fp32:
        warning, r.stderr = r.stderr.split("\n", 1)
        assert warning.startswith(f"dnet: warning: {f}: metadata key dnet.precision says fp32 but the graph is "
                                  "quantized (") and warning.endswith("nodes); taken as int8"), warning
    if (case, verb) in REFUSED:
        line = r.error_line()
        assert r.code in (1, 2) and line.endswith(REFUSED[case, verb]), line
        box.unchanged()
        return
    out = r.ok()
    assert "Traceback" not in r.stderr
    if verb == "convert":
        box.unchanged("out.onnx")
        return
    box.unchanged()
    doc = json.loads(out)
    if verb == "eval":
        assert doc["images"] == 5 and 0 <= doc["top1_error"] <= 100, doc
    if verb == "inspect" and quantized_as_fp32:
        assert doc["meta"]["precision"] == "int8", doc
