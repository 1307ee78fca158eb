"""The benchmark scripts' helpers (their numbers are measured by running them, never asserted here)."""

import numpy as np
import onnx
import pytest

from benchmarks.convert_time import stage_timer
from benchmarks.ort_profile import profile
from benchmarks.photos import PHOTOS, crops_of, photo_crops, write_folder
from benchmarks.studies import int8_fixtures
from tests.helpers.models import tiny_onnx

pytest.importorskip("skimage")


def test_photo_crops_are_seeded_real_content(tmp_path):
    a, b, c = photo_crops(6, size=64, seed=3), photo_crops(6, size=64, seed=3), photo_crops(6, size=64, seed=4)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert all(img.std() > 5 for img in a)  # photo content, not flat images
    paths = write_folder(a[:3], tmp_path / "calib")
    assert [p.name for p in paths] == ["photo0000.jpg", "photo0001.jpg", "photo0002.jpg"]


def test_int8_fixtures_measures_on_photos_calibration_never_sees():
    calib = set(int8_fixtures.calibration_photos())
    assert len(calib) == 10 and calib < set(PHOTOS)
    assert not calib & {"chelsea", "coffee", *int8_fixtures.MEASURE_SKIMAGE}  # the fixtures' photos are chelsea, coffee
    one = photo_crops(1, size=64, seed=0)[0]
    crops = crops_of([one], 4, size=16, seed=1)
    assert crops.shape == (4, 16, 16, 3) and np.array_equal(crops, crops_of([one], 4, size=16, seed=1))
    ref = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert np.allclose(int8_fixtures.row_cosines(ref, ref * 2), 1.0)
    assert np.allclose(int8_fixtures.row_cosines(ref, -ref), -1.0)


def test_stage_timer_times_calls_and_restores():
    import types

    mod = types.SimpleNamespace(f=lambda x: x + 1)
    original = mod.f
    stages = {}
    with stage_timer(stages, [(mod, "f", "adding")]):
        assert mod.f(1) == 2 and mod.f(2) == 3
    assert mod.f is original and list(stages) == ["adding"] and stages["adding"] >= 0


def test_profile_counts_executed_ops_and_times_them(tmp_path):
    from dnet.converters.int8.calibration import CalibrationSet
    from dnet.converters.int8.quantize import to_int8

    fp32 = tiny_onnx(tmp_path)
    int8, _ = to_int8(fp32, tmp_path / "tiny.int8.onnx", calib=CalibrationSet(images=photo_crops(8, size=32), count=8),
                      check_images=0)
    proto = onnx.load(str(int8))
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    quantized = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    # the densenet layout's integer convolutions, DQ -> Conv -> Q or DQ -> Conv -> Relu -> Q (the ReLU the fused
    # kernel's clamp computes, zero point 0); the BNs as depthwise ones included, not the final BN, whose output goes on
    # in float through its ReLU to the global average pool. 18 in the tiny DenseNet-BC (blocks 2, 3): conv0, 5 layers
    # × 2 convs, 1 transition (its pool folded in), and 6 of the 7 pre-activation BNs (5 norm1, the transition's)
    relu_quantized = {n.input[0] for n in proto.graph.node if n.op_type == "Relu" and n.output[0] in quantized}
    convs = sum(n.op_type == "Conv" and n.input[0] in dequantized and n.output[0] in quantized | relu_quantized
                for n in proto.graph.node)
    p = profile(int8, batch=2, threads=1, runs=3, size=32)
    # ONNX Runtime fuses every DQ -> Conv -> Q into one QLinearConv
    assert p["executed_ops"].get("com.microsoft.QLinearConv") == convs == 18 and "Conv" not in p["executed_ops"]
    assert p["runs"] == 3 and p["kernel_ms"] > 0 and p["per_op_ms"]["QLinearConv"] > 0
    assert sum(p["per_op_ms"].values()) == pytest.approx(p["kernel_ms"])
    assert set(p["per_op_ms"]) <= {k.split(".")[-1] for k in p["executed_ops"]}
