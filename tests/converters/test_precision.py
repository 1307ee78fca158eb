"""dnet.converters.precision: FP16 and INT8 Q/DQ files, their checks, and the input never being modified."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dnet.converters import export as onnx_export
from dnet.converters import precision
from dnet.converters.int8 import calibrator as ortquant
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationSet
from dnet.core.artifact import onnxfile
from dnet.core.atomic import sha256_file
from dnet.core.errors import AccuracyError
from dnet.core.similarity import cosine, rel_l2
from dnet.data.datasets import open_dataset
from dnet.data.transforms import preprocess_array
from dnet.engines.onnxruntime import run as ort_run
from tests.helpers.images import photo_tiles
from tests.helpers.models import CIFAR, digits_model, tiny_onnx

# Operators TensorRT's ONNX parser supports (onnx/onnx-tensorrt, docs/operators.md, "Operator Support Matrix",
# TensorRT 10.x, opsets 9-20; LeakyRelu: FP32, FP16, INT8), restricted to those a classifier export could plausibly contain. Anything
# outside this list in a dnet file would make `dnet convert --to trt` fail at parse time.
TENSORRT_ONNX_OPS = {
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "DequantizeLinear",
    "Div", "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu", "MatMul", "MaxPool", "Mul",
    "QuantizeLinear", "ReduceMean", "Relu", "Reshape", "Shape", "Softmax", "Squeeze", "Sub", "Transpose",
    "Unsqueeze",
}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("fp32"))


@pytest.fixture(scope="module")
def real_inputs():
    return preprocess_array(photo_tiles(offset=1), CIFAR)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A trained tiny DenseNet (digits), its FP32 ONNX and the real test images."""
    model, x, labels = digits_model()
    path = onnx_export.export(model, tmp_path_factory.mktemp("digits") / "digits.onnx")
    return path, x, labels


@pytest.fixture(scope="module")
def int8(tmp_path_factory, fp32):
    folder = tmp_path_factory.mktemp("int8")
    calib = CalibrationSet(images=photo_tiles(offset=0), count=32, name="photos")
    path, summary = quantize.to_int8(fp32, folder / "tiny.int8.onnx", calib=calib, min_top1=0.0, cache_path=folder / "c.json")
    return path, summary


# The tiny models have random weights: near-tied logits, so their INT8 checks bound the cosine only (min_top1=0.0);
# the trained digits model is held to the default bounds.


def producers(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in proto.graph.node for o in n.output}


# --- FP16 -------------------------------------------------------------------------------------------------


def test_fp16_file_computes_in_float16_with_float32_boundary(tmp_path, digits):
    fp32, x, _ = digits
    path = precision.to_fp16(fp32, tmp_path / "digits.fp16.onnx", check_inputs=x)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inits = {t.name: t for t in proto.graph.initializer}
    conv_weights = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    assert len(conv_weights) == 1 + 2 * 4 + 1 and all(w.data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)
    # BNs and the global average stay float32: their inputs are cast up
    prod = producers(proto)
    kept = [n for n in proto.graph.node if n.op_type in ("ReduceMean", "BatchNormalization")]
    assert len(kept) == 1 + 4 + 1 + 1  # global average, 4 layers' norm1, 1 transition norm, norm5
    for node in kept:
        cast = prod[node.input[0]]
        assert cast.op_type == "Cast" and next(a.i for a in cast.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    meta = onnxfile.read_meta(proto)
    assert meta.precision == "fp16" and meta.extra["fp32_onnx_sha256"] == sha256_file(fp32)


def test_fp16_meets_its_bound_on_real_images(tmp_path, digits):
    fp32, x, labels = digits
    path = precision.to_fp16(fp32, tmp_path / "digits.fp16.onnx", check_inputs=x)
    ref, got = ort_run(fp32, x), ort_run(path, x)
    assert rel_l2(ref, got) <= precision.FP16_REL_L2 == 4 * 2.0**-11
    assert np.array_equal(ref.argmax(1), got.argmax(1))
    assert rel_l2(ref, got) > 0  # really float16: not bit-identical to FP32
    assert np.mean(ref.argmax(1) == labels) > 0.9  # the model is trained: its decisions mean something


def test_fp16_with_float16_boundary_when_asked(tmp_path, digits):
    fp32, x, _ = digits
    path = precision.to_fp16(fp32, tmp_path / "io16.onnx", keep_io_types=False, check_inputs=x)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_fp16_failing_its_bound_raises_with_numbers_and_writes_nothing(tmp_path, digits, monkeypatch):
    fp32, x, _ = digits
    real = precision.run
    monkeypatch.setattr(precision, "run", lambda p, b, threads=None: real(p, b) * (1.0 if p == fp32 else 1.05))
    with pytest.raises(AccuracyError, match=r"batch of 360: relative L2 error 0\.0[45]\d* \(bound 0\.00195\)"):
        precision.to_fp16(fp32, tmp_path / "m.fp16.onnx", check_inputs=x)
    assert not (tmp_path / "m.fp16.onnx").exists()


# --- INT8 -------------------------------------------------------------------------------------------------


def test_int8_leaves_the_logits_in_float(tmp_path, digits):
    """Quantized logits take a handful of values and clip at 127 × scale (ties at the top, wrong top-1); NNCF and
    Model Optimizer leave the classifier's output in float, and so must dnet, in both layouts."""
    fp32, x, _ = digits
    # calibrated on 8 images: most of the 360 test images have a larger top logit than any of those 8
    calib = CalibrationSet(images=open_dataset("digits", split="train").images, count=8, name="digits/train")
    ref = ort_run(fp32, x)
    for layout in ("densenet", "ort"):
        path, _ = quantize.to_int8(fp32, tmp_path / f"{layout}.onnx", calib=calib, layout=layout,
                                    cache_path=tmp_path / "c.json", check_images=0)
        proto = onnx.load(str(path))
        assert producers(proto)[proto.graph.output[0].name].op_type == "Gemm", layout
        got = ort_run(path, x, fused=False)
        assert min(len(np.unique(row)) for row in got) == got.shape[1], layout  # no quantization grid, no ties
        assert np.max(got) > 0.9 * np.max(ref), layout  # the top logits are not clipped


def test_int8_has_qdq_around_every_conv_input_and_weight(int8):
    path, _ = int8
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    prod = producers(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    # stem, 5 bottleneck layers, 1 transition; and the 7 BNs (5 layers, 1 transition, the last) as depthwise convs
    assert len(convs) == 1 + 2 * 5 + 1 + 7
    assert sum(next((a.i for a in c.attribute if a.name == "group"), 1) > 1 for c in convs) == 7
    for conv in convs:
        dq_x = prod[conv.input[0]]
        assert dq_x.op_type == "DequantizeLinear", conv.name
        assert dq_x.input[0] in prod and prod[dq_x.input[0]].op_type == "QuantizeLinear", conv.name
        dq_w = prod[conv.input[1]]
        assert dq_w.op_type == "DequantizeLinear", conv.name
        w = inits[dq_w.input[0]]
        assert w.dtype == np.int8
        scale = inits[dq_w.input[1]]
        assert scale.shape == (w.shape[0],)  # per output channel
        axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
        assert axis == 0


def activation_zero_points(path) -> list[np.ndarray]:
    """The zero points of every activation QuantizeLinear/DequantizeLinear (not the weights' per-channel ones)."""
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return [inits[n.input[2]] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and inits[n.input[2]].ndim == 0]


def test_the_cpu_file_is_symmetric_int8_written_as_uint8_and_weights_are_int8_zero(int8):
    path, summary = int8
    zps = activation_zero_points(path)
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    # every activation is uint8: a ReLU's output (Conv -> Relu -> Q, and the DQ reading it) from zero point 0 over
    # [0, max]; every other one (the dense blocks' grids) symmetric int8 shifted to zero point 128
    assert len(zps) > 20 and all(z.dtype == np.uint8 for z in zps)
    by_relu = {}
    for q in (n for n in proto.graph.node if n.op_type == "QuantizeLinear" and inits[n.input[2]].ndim == 0):
        src = producer.get(q.input[0])
        by_relu.setdefault(src is not None and src.op_type == "Relu", set()).add(int(inits[q.input[2]]))
    assert by_relu == {True: {0}, False: {128}}
    assert summary["activations"] == "int8 symmetric as uint8 (zero point 128); ReLU outputs uint8 (zero point 0)"
    weights = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and all(z.dtype == np.int8 and not z.any() for z in weights)


def test_int8_uses_only_operators_tensorrt_parses(int8):
    path, _ = int8
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= TENSORRT_ONNX_OPS, ops - TENSORRT_ONNX_OPS
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(str(path)).graph.node)


def test_int8_keeps_cosine_099_with_fp32_on_real_photos(int8, fp32, real_inputs):
    path, summary = int8
    ref, got = ort_run(fp32, real_inputs), ort_run(path, real_inputs)
    assert cosine(ref, got) >= 0.99
    assert rel_l2(ref, got) > 1e-4  # really quantized
    meta = onnxfile.read_meta(onnxfile.read_model(path))
    assert meta.precision == "int8"
    # 32 calibration images asked; the held-out check images come out of the same photos first
    held_out = summary["check"]["images"]
    assert held_out > 0 and meta.calibration["images"] == min(32, len(photo_tiles(offset=0)) - held_out)
    assert meta.calibration["method"] == "minmax"
    assert meta.calibration["data"] == "photos"


def test_calibration_cache_is_reused_and_the_int8_file_is_byte_identical(tmp_path, fp32, monkeypatch):
    calib = CalibrationSet(images=photo_tiles(), count=16)
    cache = tmp_path / "cache.json"
    first, s1 = quantize.to_int8(fp32, tmp_path / "a.onnx", calib=calib, min_top1=0.0, cache_path=cache)
    assert not s1["reused_cache"] and cache.is_file()

    def no_calibration(*a, **k):
        raise AssertionError("calibration ran although the cache matches")

    monkeypatch.setattr(quantize, "calibrate", no_calibration)
    second, s2 = quantize.to_int8(fp32, tmp_path / "b.onnx", calib=None, cache_path=cache)
    assert s2["reused_cache"]
    assert first.read_bytes() == second.read_bytes()


def test_cache_of_another_model_or_method_is_not_reused(tmp_path, fp32):
    calib = CalibrationSet(images=photo_tiles(), count=16)
    cache = tmp_path / "cache.json"
    quantize.to_int8(fp32, tmp_path / "a.onnx", calib=calib, min_top1=0.0, cache_path=cache)
    _, s = quantize.to_int8(fp32, tmp_path / "b.onnx", calib=calib, min_top1=0.0, method="percentile", cache_path=cache)
    assert not s["reused_cache"]
    other = tiny_onnx(tmp_path, "other.onnx", seed=1)
    _, s = quantize.to_int8(other, tmp_path / "c.onnx", calib=calib, min_top1=0.0, method="percentile", cache_path=cache)
    assert not s["reused_cache"]


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile", "mse"])
def test_each_calibration_method_gives_its_own_ranges(tmp_path, fp32, method, real_inputs):
    calib = CalibrationSet(images=photo_tiles(), count=16)
    path, _ = quantize.to_int8(fp32, tmp_path / "m.onnx", calib=calib, min_top1=0.0, method=method, cache_path=tmp_path / "c.json")
    from dnet.converters.int8.calibration import CalibrationCache

    cache = CalibrationCache.load(tmp_path / "c.json")
    assert cache.method == method and cache.model_sha256 == sha256_file(fp32) and cache.images == 16
    assert "input" in cache.ranges and all(lo <= hi for lo, hi in cache.ranges.values())
    ref, got = ort_run(fp32, real_inputs), ort_run(path, real_inputs)
    assert cosine(ref, got) >= 0.99


def test_mse_ranges_feed_the_ort_layout_as_they_are(tmp_path, fp32, real_inputs):
    """onnxruntime.quantization knows no mse method: the cached ranges go to it as MinMax ranges, used unchanged."""
    from dnet.converters.int8.calibration import CalibrationCache

    calib = CalibrationSet(images=photo_tiles(), count=16)
    path, _ = quantize.to_int8(fp32, tmp_path / "m.onnx", calib=calib, min_top1=0.0, method="mse", layout="ort",
                                cache_path=tmp_path / "c.json")
    ranges = CalibrationCache.load(tmp_path / "c.json").ranges
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    lo, hi = ranges["input"]
    assert float(inits[q.input[1]]) == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-6)  # symmetric int8
    assert cosine(ort_run(fp32, real_inputs), ort_run(path, real_inputs)) >= 0.99


def test_calibration_methods_differ(tmp_path, fp32):
    from dnet.converters.int8.calibration import CalibrationCache

    calib = CalibrationSet(images=photo_tiles(), count=16)
    highs = {}
    for method in ("minmax", "percentile", "mse"):
        quantize.to_int8(fp32, tmp_path / f"{method}.onnx", calib=calib, min_top1=0.0, method=method, cache_path=tmp_path / f"{method}.json")
        highs[method] = CalibrationCache.load(tmp_path / f"{method}.json").ranges
    for clipped in ("percentile", "mse"):
        some = [k for k in highs["minmax"] if k in highs[clipped]]
        # minmax takes the extreme; the 99.999th percentile and the least-squares threshold can only be inside it
        assert all(highs[clipped][k][1] <= highs["minmax"][k][1] + 1e-6 for k in some)
        assert any(highs[clipped][k][1] < highs["minmax"][k][1] - 1e-6 for k in some)


def test_the_input_onnx_is_never_modified(tmp_path, fp32):
    src = tmp_path / "src.onnx"
    src.write_bytes(fp32.read_bytes())
    before, mtime = sha256_file(src), src.stat().st_mtime_ns
    calib = CalibrationSet(images=photo_tiles(), count=16)
    quantize.to_int8(src, tmp_path / "q.onnx", calib=calib, min_top1=0.0)
    precision.to_fp16(src, tmp_path / "h.onnx", check=False)
    assert sha256_file(src) == before and src.stat().st_mtime_ns == mtime


def test_a_quantizer_that_rewrites_its_input_is_caught(tmp_path, fp32, monkeypatch):
    src = tmp_path / "src.onnx"
    src.write_bytes(fp32.read_bytes())
    real = ortquant.quantize

    def rewriting(copy, out, cache):  # the ort layout's quantizer, doing what a misbehaving library would do to the file
        real(copy, out, cache)
        with open(src, "ab") as f:
            f.write(b"\0")

    monkeypatch.setattr(ortquant, "quantize", rewriting)
    with pytest.raises(precision.InputModifiedError, match="was modified during the conversion"):
        quantize.to_int8(src, tmp_path / "q.onnx", calib=CalibrationSet(images=photo_tiles(), count=8), min_top1=0.0, layout="ort")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("layout", ["densenet", "ort"])
def test_tensorrt_and_reference_layouts_have_symmetric_int8_activations(tmp_path, fp32, real_inputs, layout):
    """Zero points 0 in int8, what TensorRT accepts."""
    calib = CalibrationSet(images=photo_tiles(), count=16)
    path, summary = quantize.to_int8(fp32, tmp_path / "q.onnx", calib=calib, min_top1=0.0, layout=layout,
                                      target="tensorrt")
    assert summary["activations"] == "int8 symmetric"
    zps = activation_zero_points(path)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert cosine(ort_run(fp32, real_inputs), ort_run(path, real_inputs)) >= 0.99


def test_minmax_ranges_cover_every_calibration_image_across_chunks(tmp_path, fp32):
    # more images than one collect_data chunk (16 × 4 = 64), so the ranges must be merged across calls
    rng = np.random.default_rng(5)
    x = rng.standard_normal((100, 3, 32, 32), dtype=np.float32)
    x[97, 1, 3, 4], x[2, 0, 0, 0] = 9.5, -8.25  # the extremes sit in the second and the first chunk
    ranges = quantize.calibrate(fp32, x, "minmax")
    assert ranges["input"] == (-8.25, 9.5)
