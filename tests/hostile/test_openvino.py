"""OpenVINO IR (``.xml`` + ``.bin``) that is corrupt, not an image classifier, or not a pair of regular files: one
line from ``eval`` and ``bench`` (``dnet.engines.openvino.read`` checks what ``check_interface`` checks for ONNX),
never an OpenVINO traceback, never a wait on a FIFO, never an input allocated at the size the file claims.
Skipped where OpenVINO (the optional extra) is not installed."""

from __future__ import annotations

import os
import re

import pytest

from tests.helpers.harness import Box

ov = pytest.importorskip("openvino", reason="OpenVINO is the optional extra: pip install 'dnet[openvino]'")


@pytest.fixture(scope="module")
def ir(tmp_path_factory, models) -> tuple[str, bytes]:
    """The tiny model's IR: (.xml text, .bin bytes), float32 weights."""
    folder = tmp_path_factory.mktemp("ir")
    ov.save_model(ov.convert_model(str(models["onnx"])), str(folder / "tiny.xml"), compress_to_fp16=False)
    return (folder / "tiny.xml").read_text(), (folder / "tiny.bin").read_bytes()


def truncated(xml: str, weights: bytes):
    return xml[: len(xml) // 2], weights, "OpenVINO cannot read it ("  # the XML parser's reason depends on the cut


def huge_input(xml: str, weights: bytes):
    """An input that claims 100000×100000 (OpenVINO infers the shapes downstream): refused before anything runs."""
    xml = xml.replace('shape="?,3,32,32"', 'shape="?,3,100000,100000"')
    return xml, weights, "its input is 100000×100000; dnet runs inputs up to 4096 pixels a side"


def huge_padding(xml: str, weights: bytes):
    """A convolution padded by 100000 columns: a 48 kB file whose run would allocate gigabytes (found by the ir
    fuzz target: 622 MB for a batch of two)."""
    xml = re.sub(r'pads_begin="[^"]*"', 'pads_begin="0, 100000"', xml, count=1)
    return xml, weights, "the input per image; a DenseNet's tensors stay under 4,096× (a corrupt size or padding?)"


def two_dims(xml: str, weights: bytes):
    return xml.replace('shape="?,3,32,32"', 'shape="?,3"'), weights, "OpenVINO cannot read it (Data batch and filters"


def weights_cut(xml: str, weights: bytes):
    return xml, weights[: len(weights) // 3], "OpenVINO cannot read it (Incorrect weights in bin file!)"


def two_outputs(xml: str, weights: bytes):
    """A second Result on the input: a graph with two outputs is no classifier."""
    last = max(int(i) for i in re.findall(r'<layer id="(\d+)"', xml))
    result = (f'\t\t<layer id="{last + 1}" name="extra" type="Result" version="opset1"><input><port id="0" '
              'precision="FP32"><dim>-1</dim><dim>3</dim><dim>32</dim><dim>32</dim></port></input></layer>\n')
    xml = xml.replace("\t</layers>", result + "\t</layers>", 1)
    xml = xml.replace("<edges>", f'<edges>\n\t\t<edge from-layer="0" from-port="0" to-layer="{last + 1}" to-port="0" />', 1)
    return xml, weights, ("dnet runs image classifiers: one N×3×H×W image input and one N×classes output; this file "
                          "has 1 inputs and 2 outputs")


CASES = {"truncated": truncated, "huge-input": huge_input, "huge-padding": huge_padding, "two-dims": two_dims,
         "weights-cut": weights_cut, "two-outputs": two_outputs}
VERBS = {"eval": ["eval", "--dataset", "cifar10", "--data", "{data}", "--workers", 0, "--quiet"],
         "bench": ["bench", "--batch-sizes", 2, "--iterations", 1, "--warmup-iterations", 0]}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("case", CASES)
def test_a_corrupt_or_foreign_ir_is_one_line_in_eval_and_bench(box: Box, ir, case, verb):
    xml, weights, expected = CASES[case](*ir)
    path = box.work / "model.xml"
    path.write_text(xml)
    path.with_suffix(".bin").write_bytes(weights)
    data = box.work / "cifar"
    data.mkdir()
    box.freeze()
    args = [str(a).replace("{data}", str(data)) for a in VERBS[verb]]
    line = box.cli(*args, path).error_line(1)
    assert line.startswith(f"{path}: ") and expected in line, line
    box.unchanged()


@pytest.mark.parametrize("case", ["huge-input", "huge-padding"])
def test_an_ir_claiming_huge_tensors_is_refused_within_a_memory_bound(box: Box, ir, case):
    xml, weights = ir
    if case == "huge-input":
        xml = xml.replace('shape="?,3,32,32"', 'shape="?,3,100000,100000"')  # 120 GB per float32 image
        xml = re.sub(r"<dim>32</dim>", "<dim>100000</dim>", xml)  # and every shape that follows
        expected = "its input is 100000×100000; dnet runs inputs up to 4096 pixels a side"
    else:
        xml, weights, expected = huge_padding(xml, weights)
    path = box.work / "big.xml"
    path.write_text(xml)
    path.with_suffix(".bin").write_bytes(weights)
    box.freeze()
    out = box.run("bench", path, "--batch-sizes", 2, "--iterations", 1, "--warmup-iterations", 0, budget_mb=256)
    assert expected in out.error_line(1)
    assert out.added_rss < 256 << 20, out.added_rss
    box.unchanged()


@pytest.mark.parametrize("which", [".xml", ".bin"])
def test_a_fifo_as_either_file_of_an_ir_is_refused_at_once(box: Box, ir, which):
    xml, weights = ir
    path = box.work / "model.xml"
    for suffix, body in ((".xml", xml.encode()), (".bin", weights)):
        if suffix == which:
            os.mkfifo(path.with_suffix(suffix))
        else:
            path.with_suffix(suffix).write_bytes(body)
    box.freeze()
    out = box.run("bench", path, "--batch-sizes", 1, "--iterations", 1, "--warmup-iterations", 0, timeout=120)
    assert out.error_line(1).startswith(f"{path.with_suffix(which)}: is a FIFO, not a regular file")
    box.unchanged()
