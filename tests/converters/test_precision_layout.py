"""The DenseNet-aware INT8 layout (dnet.converters.int8.placement), ONNX Runtime's view of it, and the check every INT8
conversion runs against the FP32 file on held-out images."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dnet.converters import export as onnx_export
from dnet.converters.int8 import placement as qdq
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationSet, split
from dnet.converters.int8.rewrites import int8_activations_as_uint8
from dnet.core.cpu import has_vnni
from dnet.core.errors import AccuracyError
from dnet.core.similarity import cosine
from dnet.data.datasets import open_dataset
from dnet.engines.onnxruntime import run as ort_run
from dnet.engines.onnxruntime import session
from tests.helpers.images import photo_tiles
from tests.helpers.models import digits_model, tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layout")
    fp32 = tiny_onnx(folder)
    calib = CalibrationSet(images=photo_tiles(offset=0), count=32, name="photos")
    path, summary = quantize.to_int8(fp32, folder / "tiny.int8.onnx", calib=calib, cache_path=folder / "c.json",
                                      min_top1=0.0)  # random weights: near-tied logits
    return fp32, path, summary


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The trained tiny DenseNet (digits), its FP32 ONNX, the 360 test images and labels, 512 training images."""
    model, x, labels = digits_model()
    path = onnx_export.export(model, tmp_path_factory.mktemp("digits") / "digits.onnx")
    calib = CalibrationSet(images=open_dataset("digits", split="train").images, count=512, name="digits/train")
    return path, x, labels, calib


def scalar(inits: dict, name: str) -> float:
    return float(numpy_helper.to_array(inits[name]))


def optimized_ops(model) -> Counter:
    """What ONNX Runtime executes for ``model`` through dnet's session (op type counts of its optimised graph)."""
    with tempfile.TemporaryDirectory() as tmp:
        session(model, threads=1, optimized_model_path=Path(tmp) / "o.onnx")
        graph = onnx.load(str(Path(tmp) / "o.onnx")).graph
    return Counter(n.op_type for n in graph.node)


def test_every_concatenation_of_a_block_is_chained_and_shares_one_scale(tiny):
    _, path, summary = tiny
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    prod = {o: n for n in proto.graph.node for o in n.output}
    cons = Counter(i for n in proto.graph.node for i in n.input)
    concats = [n for n in proto.graph.node if n.op_type == "Concat"]
    assert len(concats) == 2 + 3 and all(len(c.input) == 2 for c in concats)  # chained: Concat(C(i-1), x_i)
    assert [b["features"] for b in summary["layout"]["blocks"]] == [3, 4]  # block input + 2 and + 3 layers
    for concat in concats:
        ins = [prod[i] for i in concat.input]
        assert all(d.op_type == "DequantizeLinear" for d in ins)
        (q,) = [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == concat.output[0]]
        scales = {scalar(inits, d.input[1]) for d in ins} | {scalar(inits, q.input[1])}
        assert len(scales) == 1, concat.name  # re-quantizing the concatenation is the identity
        assert cons[q.output[0]] == 1  # one DequantizeLinear reads it
    block_scales = [b["scale"] for b in summary["layout"]["blocks"]]
    assert len(set(block_scales)) == 2 and all(s > 0 for s in block_scales)


def test_each_relu_writes_uint8_codes_from_zero_that_the_convolution_before_it_computes(tiny):
    _, path, summary = tiny
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    prod = {o: n for n in proto.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    # 5 layers × (BN-ReLU, conv-ReLU) + the transition's BN-ReLU; the last BN-ReLU feeds the float head
    fused = [r for r in relus if [q.op_type for q in readers[r.output[0]]] == ["QuantizeLinear"]]
    assert len(fused) == summary["layout"]["relus_fused"] == 11 and len(relus) == 12
    assert summary["layout"]["relus_on_int8"] == 0 and not any(n.op_type == "LeakyRelu" for n in proto.graph.node)
    for relu in fused:
        assert prod[relu.input[0]].op_type == "Conv"  # Conv -> Relu -> Q: ONNX Runtime's ReluQuantFusion drops it
        (q,) = readers[relu.output[0]]
        zp = numpy_helper.to_array(inits[q.input[2]])
        assert zp.dtype == np.uint8 and int(zp) == 0  # the lowest code: the convolution's clamp is the ReLU


def test_the_transition_pool_is_folded_into_its_convolution_with_the_same_values(tiny):
    from dnet.converters.int8.rewrites import pool_into_conv

    fp32, _, summary = tiny
    proto = onnx.load(str(fp32))
    pools = sum(n.op_type == "AveragePool" for n in proto.graph.node)
    assert pool_into_conv(proto) == summary["layout"]["pools_folded"] == pools == 1
    assert not any(n.op_type == "AveragePool" for n in proto.graph.node)
    x = np.random.default_rng(5).standard_normal((4, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(ort_run(proto, x, fused=False), ort_run(fp32, x, fused=False), rtol=1e-4, atol=1e-4)


def test_a_plain_onnxruntime_session_runs_every_convolution_as_an_integer_convolution(tiny, tmp_path):
    _, path, summary = tiny
    plain = _plain_session_ops(path, tmp_path)
    # 12 convolutions + 6 BNs as depthwise convs; the last BN reads int8 but writes the float head (FusedConv)
    assert plain["QLinearConv"] == 18 and plain["Conv"] == 0 and plain["FusedConv"] == 1
    # every ReLU inside a QLinearConv; the transition's pool inside its convolution
    assert plain["QLinearLeakyRelu"] == plain["Relu"] == plain["QLinearAveragePool"] == plain["AveragePool"] == 0
    assert plain["QLinearConcat"] == 5 and plain["BatchNormalization"] == 0
    assert plain == optimized_ops(path)  # dnet's own session runs the very same graph: the file holds the rewrite
    layout = summary["layout"]  # the ReLUs' outputs are uint8 from zero, the others int8 written as uint8
    assert layout["uint8_activations"] + layout["relus_fused"] == sum(n.op_type == "QuantizeLinear"
                                                                      for n in onnx.load(str(path)).graph.node)


def test_a_plain_session_of_the_cpu_file_gives_dnets_engine_outputs_exactly(tiny):
    import onnxruntime as ort

    from dnet.engines.onnxruntime import open_file

    _, path, _ = tiny
    x = np.random.default_rng(4).standard_normal((8, 3, 32, 32), dtype=np.float32)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(plain.run(None, {plain.get_inputs()[0].name: x})[0], open_file(path).run(x))


def _plain_session_ops(path: Path, tmp: Path) -> Counter:
    """What a plain ``onnxruntime.InferenceSession`` (no dnet rewrite) executes for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp / "o.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp / "o.onnx")).graph.node)


def test_uint8_activations_compute_the_same_arithmetic_bit_for_bit(tiny, tmp_path):
    fp32, _, _ = tiny  # the TensorRT layout keeps int8 activations: give them uint8 zero points afterwards
    path, _ = quantize.to_int8(fp32, tmp_path / "t.onnx", calib=CalibrationSet(images=photo_tiles(), count=32),
                               cache_path=tmp_path / "c.json", target="tensorrt", min_top1=0.0)
    proto = onnx.load(str(path))
    assert int8_activations_as_uint8(proto) == sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    x = np.random.default_rng(3).standard_normal((4, 3, 32, 32), dtype=np.float32)
    assert np.array_equal(ort_run(path, x, fused=False), ort_run(proto, x, fused=False))


def _file_vs_fused(digits, tmp_path, bits: int) -> tuple[float, float, float]:
    """(cosine of ONNX Runtime's fused kernels vs the file's own arithmetic, fused accuracy, file accuracy)."""
    fp32, x, labels, calib = digits
    path, _ = quantize.to_int8(fp32, tmp_path / f"w{bits}.onnx", calib=calib, weight_bits=bits,
                               cache_path=tmp_path / "c.json")
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name.endswith("_int8")]
    assert max(int(np.abs(w).max()) for w in weights) == 2 ** (bits - 1) - 1
    file, fused = ort_run(path, x, fused=False), ort_run(path, x)
    return cosine(file, fused), np.mean(fused.argmax(1) == labels), np.mean(file.argmax(1) == labels)


def test_seven_bit_weights_make_onnxruntime_compute_the_files_arithmetic_on_any_cpu(digits, tmp_path):
    """255·63 + 255·63 < 32767: u8×s8 pairs summed into int16 cannot saturate, with or without VNNI."""
    cos, fused, file = _file_vs_fused(digits, tmp_path, 7)
    assert cos >= 0.999 and fused >= file - 0.01  # measured 0.99992 (AVX2), 0.99979 (AVX-512 VNNI): rounding only


@pytest.mark.skipif(has_vnni(), reason="this CPU has VNNI: ONNX Runtime sums u8×s8 into int32, nothing saturates")
def test_eight_bit_weights_saturate_onnxruntimes_int16_sums_on_a_cpu_without_vnni(digits, tmp_path):
    cos8, fused8, _ = _file_vs_fused(digits, tmp_path, 8)
    cos7, fused7, _ = _file_vs_fused(digits, tmp_path, 7)
    assert cos8 < 0.999 <= cos7  # measured 0.969 vs 0.99992 on an AVX2 CPU: the saturated sums
    assert fused7 >= fused8  # measured 97.2% vs 88.3% correct on the 360 test images


@pytest.mark.skipif(not has_vnni(), reason="this CPU has no VNNI: ONNX Runtime's int16 sums saturate 8-bit weights")
def test_eight_bit_weights_compute_the_files_arithmetic_on_a_cpu_with_vnni(digits, tmp_path):
    cos, fused, file = _file_vs_fused(digits, tmp_path, 8)
    assert cos >= 0.999 and fused >= file - 0.01



def test_the_check_passes_a_trained_model_on_held_out_images(digits, tmp_path):
    fp32, x, labels, calib = digits
    path, summary = quantize.to_int8(fp32, tmp_path / "d.onnx", calib=calib, cache_path=tmp_path / "c.json")
    check = summary["check"]
    assert check["images"] == quantize.INT8_CHECK_IMAGES == 64 and summary["images"] == 512
    assert check["cosine"] >= 0.995 and check["top1_agreement"] >= 0.95
    assert list(check["stages"]) == ["denseblock1", "transition1", "denseblock2"]
    assert all(c >= 0.99 for c in check["stages"].values())
    # on all 360 test images, in the file's arithmetic: within 1 point of FP32 (measured 96.9% vs 97.5%)
    acc32 = np.mean(ort_run(fp32, x).argmax(1) == labels)
    acc8 = np.mean(ort_run(path, x, fused=False).argmax(1) == labels)
    assert acc32 > 0.9 and acc8 >= acc32 - 0.01


def test_held_out_images_are_never_calibration_images():
    for n, count, held in ((1437, 512, 64), (42, 32, 64), (100, 512, 64), (10, 512, 0)):
        calib, check = split(n, count, held)
        assert not set(calib) & set(check)
        assert len(calib) == min(count, n - len(check))
    assert [len(part) for part in split(1437, 512, 64)] == [512, 64]
    assert [len(part) for part in split(100, 512, 64)] == [75, 25]  # a small set: a quarter is held out


def test_a_failing_check_names_the_first_diverging_block_and_writes_nothing(tiny, tmp_path, monkeypatch):
    fp32, _, _ = tiny
    real = quantize.densenet_layout

    def clipped_block1(proto, ranges, **kw):  # block 1's scale 100× too small: its features clip
        layout = real(proto, ranges, **kw)
        s1 = layout.blocks[0]["scale"]
        for t in proto.graph.initializer:
            if t.name.endswith("_scale") and t.data_type == onnx.TensorProto.FLOAT and not t.dims:
                if float(numpy_helper.to_array(t)) == float(np.float32(s1)):
                    t.CopyFrom(numpy_helper.from_array(np.array(s1 / 100, np.float32), t.name))
        return layout

    monkeypatch.setattr(quantize, "densenet_layout", clipped_block1)
    out = tmp_path / "tiny.int8.onnx"
    with pytest.raises(AccuracyError, match=r"^INT8 check failed on \d+ held-out images: top-1 agreement with FP32 "
                                            r"\d+\.\d% \(bound 0%\), cosine 0\.\d{4} \(bound 0\.99\); the divergence "
                                            r"first appears at denseblock1 \(cosine 0\.\d{4}; denseblock1 0\.\d{4}, "
                                            r"transition1 0\.\d{4}, denseblock2 0\.\d{4}\); no INT8 file was written \(calibrate "):
        quantize.to_int8(fp32, out, calib=CalibrationSet(images=photo_tiles(offset=0), count=32), min_top1=0.0,
                          cache_path=tmp_path / "c.json")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["c.json"]  # the ranges are kept


def test_the_layout_refuses_ranges_that_miss_a_block(tiny):
    fp32, _, _ = tiny
    proto = onnx.load(str(fp32))
    with pytest.raises(qdq.FileFormatError, match=r"^the calibration has no range for '.+' \(dense block 1\); "
                                                  r"calibrate this FP32 file again$"):
        qdq.densenet_layout(proto, {})
