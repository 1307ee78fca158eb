"""Layers left in higher precision in the DenseNet INT8 layout, per-layer divergence, and accuracy-controlled
conversion (dnet.converters.int8.mixed): a layer whose quantization is broken is found and put back in float."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dnet.converters.int8 import placement as qdq
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationCache, CalibrationSet
from dnet.converters.int8.divergence import layer_divergence
from dnet.converters.int8.mixed import MixedPrecision, ValidationSet, resolve
from dnet.core.artifact.onnxfile import check_graph, read_meta
from dnet.core.errors import AccuracyError, DataError, UsageError
from dnet.data.datasets import open_dataset
from dnet.engines.onnxruntime import run as ort_run
from tests.helpers.images import photo_tiles, write_images
from tests.helpers.int8 import BROKEN, break_weight_scales, coarsen_activation_grids, fp32_top1_text
from tests.helpers.models import digits_onnx, tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The random-weight tiny DenseNet-BC, its FP32 graph and calibrated ranges."""
    folder = tmp_path_factory.mktemp("mixed")
    fp32 = tiny_onnx(folder)
    quantize.to_int8(fp32, folder / "t.int8.onnx", calib=CalibrationSet(images=photo_tiles(), count=32),
                      cache_path=folder / "c.json", min_top1=0.0)
    return onnx.load(str(fp32)), CalibrationCache.load(folder / "c.json").ranges


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits-trained tiny DenseNet's FP32 ONNX, its 360 test images in one folder per class, calibration."""
    folder = tmp_path_factory.mktemp("mixed-digits")
    fp32 = digits_onnx(folder)
    test = open_dataset("digits", split="test")
    for c in range(10):
        write_images(folder / "val" / f"digit{c}", test.images[test.labels == c])
    calib = CalibrationSet(images=open_dataset("digits", split="train").images, count=512, name="digits/train")
    return fp32, folder / "val", calib


def layout(proto, ranges, **kw):
    q = onnx.ModelProto()
    q.CopyFrom(proto)
    done = qdq.densenet_layout(q, ranges, **kw)
    check_graph(q, "INT8 graph")
    return q, done


def test_layers_are_named_by_densenet_module_in_network_order(tiny):
    proto, _ = tiny
    names = list(qdq.layers(proto))
    assert names[:3] == ["conv0", "denseblock1.denselayer1.conv1", "denseblock1.denselayer1.conv2"]
    assert names[-2:] == ["denseblock2.denselayer3.conv2", "classifier"] and "transition1.conv" in names
    assert len(names) == 13  # 12 convolutions (1 + 2·2 + 1 + 2·3) and the classifier; BNs are not layers
    assert resolve(["transition*", "denseblock2.denselayer3.*"], names) == [
        "transition1.conv", "denseblock2.denselayer3.conv1", "denseblock2.denselayer3.conv2"]
    with pytest.raises(UsageError, match=r"^the exclude pattern 'denseblock9\.\*' names no layer of this model "
                                         r"\(its 13 layers: conv0, denseblock1\.denselayer1\.conv1, "
                                         r"denseblock1\.denselayer1\.conv2, … classifier\)$"):
        resolve(["denseblock9.*"], names)


def test_an_excluded_convolution_reads_and_writes_float_and_its_block_grid_stays(tiny):
    proto, ranges = tiny
    full, _ = layout(proto, ranges)
    q, done = layout(proto, ranges, exclude=["denseblock1.denselayer1.conv1", "denseblock1.denselayer1.conv2"])
    assert done.to_dict()["excluded"] == ["denseblock1.denselayer1.conv1", "denseblock1.denselayer1.conv2"]
    conv1, conv2 = (qdq.layers(q)[n] for n in done.excluded)
    inits = {t.name for t in q.graph.initializer}
    prod = {o: n for n in q.graph.node for o in n.output}
    cons = Counter(n.op_type for n in q.graph.node for i in n.input if i == conv2.output[0])
    assert conv1.input[1] in inits and conv2.input[1] in inits  # float weights, no DequantizeLinear
    assert prod[conv1.input[0]].op_type == "Relu" and prod[conv2.input[0]].op_type == "Relu"  # float inputs
    assert cons == {"QuantizeLinear": 1}  # conv2's new feature map still joins the block's int8 grid
    (q2,) = [n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == conv2.output[0]]
    scale = float(numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == q2.input[1])))
    assert scale == pytest.approx(done.blocks[0]["scale"])
    quantized = Counter(n.op_type for n in q.graph.node)
    # the two inputs that only the excluded convolutions read: in the full file each is BN (depthwise Conv) -> Relu ->
    # one QuantizeLinear (uint8 from 0, no Q/DQ pair between the BN and its ReLU), which the excluded file leaves out
    assert quantized["QuantizeLinear"] == Counter(n.op_type for n in full.graph.node)["QuantizeLinear"] - 2
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    assert ort_run(q, x, fused=False).shape == ort_run(q, x).shape == (2, 5)


def test_fp16_fallback_computes_the_layer_in_float16_between_casts(tiny):
    proto, ranges = tiny
    q, done = layout(proto, ranges, exclude=["classifier", "transition1.conv"], fallback="fp16")
    assert done.to_dict()["fallback"] == "fp16"
    inits = {t.name: t for t in q.graph.initializer}
    for name in ("classifier", "transition1.conv"):
        node = next(n for n in q.graph.node if n.input[1:2] and n.input[1].startswith(
            "classifier.weight" if name == "classifier" else "features.transition1.conv.weight"))
        assert all(inits[i].data_type == onnx.TensorProto.FLOAT16 for i in node.input[1:])
    casts = [n for n in q.graph.node if n.op_type == "Cast"]
    assert sorted(a.i for n in casts for a in n.attribute) == [onnx.TensorProto.FLOAT] * 2 + [onnx.TensorProto.FLOAT16] * 2
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    fp32_fallback, _ = layout(proto, ranges, exclude=["classifier", "transition1.conv"])
    a, b = ort_run(q, x, fused=False), ort_run(fp32_fallback, x, fused=False)
    assert np.allclose(a, b, rtol=0, atol=1e-2 * np.abs(b).max())


def test_an_unknown_layer_is_refused_by_the_layout(tiny):
    proto, ranges = tiny
    with pytest.raises(UsageError, match=r"^no layer named 'conv9' in this model \(its layers: 13: conv0, "):
        layout(proto, ranges, exclude=["conv9"])


def _break_weight_scale(proto: onnx.ModelProto, layer: str) -> None:
    """Multiply the weight scales of ``layer``'s convolution by 50 (its weights 50× too large)."""
    name = f"features.{layer}.weight_wscale"
    t = next(t for t in proto.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 50, name))


def test_per_layer_divergence_ranks_a_broken_layer_first(digits, tmp_path):
    fp32, val, calib = digits
    path, _ = quantize.to_int8(fp32, tmp_path / "d.int8.onnx", calib=calib, cache_path=tmp_path / "c.json")
    broken = onnx.load(str(path))
    _break_weight_scale(broken, BROKEN)
    ref = onnx.load(str(fp32))
    outputs = {n: node.output[0] for n, node in qdq.layers(ref).items()}
    x = ValidationSet(val, count=64).open(10).load(read_meta(ref).preprocess)
    rows = layer_divergence(ref, broken, outputs, x)
    assert rows[0].layer == BROKEN and rows[0].added > 10 * max(r.added for r in rows[1:])
    healthy = layer_divergence(ref, onnx.load(str(path)), outputs, x)
    assert next(r for r in healthy if r.layer == BROKEN).added < 0.1


@pytest.fixture
def broken_layer(monkeypatch):
    break_weight_scales(monkeypatch, BROKEN)


def test_accuracy_control_leaves_exactly_the_broken_layer_in_float(digits, tmp_path, broken_layer):
    fp32, val, calib = digits
    out, summary = quantize.to_int8(fp32, tmp_path / "d.int8.onnx", calib=calib, cache_path=tmp_path / "c.json",
                                     mixed=MixedPrecision(val=ValidationSet(val), max_drop=1.0))
    acc = summary["accuracy"]
    assert acc["excluded"] == summary["layout"]["excluded"] == [BROKEN] and acc["excluded_by_hand"] == []
    assert acc["images"] == 360 and acc["basis"] == "labels from class subfolders" and acc["max_drop"] == 1.0
    assert acc["search"]["ranking"][0]["layer"] == BROKEN
    assert acc["search"]["start"] > 10 and acc["drop"] <= 1.0  # measured: 79 points, then 0.56
    assert acc["search"]["steps"] == [{"exclude": BROKEN, "drop": acc["drop"]}]
    meta = read_meta(onnx.load(str(out)))
    assert meta.calibration["accuracy"]["excluded"] == [BROKEN] and meta.calibration["accuracy"]["drop"] == acc["drop"]
    assert summary["check"]["cosine"] > 0.99


def test_without_a_bound_the_drop_is_measured_and_recorded(digits, tmp_path):
    fp32, val, calib = digits
    _, summary = quantize.to_int8(fp32, tmp_path / "d.int8.onnx", calib=calib, cache_path=tmp_path / "c.json",
                                   mixed=MixedPrecision(("conv0",), val=ValidationSet(val, count=100)))
    acc = summary["accuracy"]
    assert acc["excluded"] == acc["excluded_by_hand"] == ["conv0"] and acc["max_drop"] is None
    assert acc["images"] == 100 and "search" not in acc and abs(acc["drop"]) <= 2.0


def test_val_images_without_class_folders_measure_agreement_with_fp32(digits, tmp_path):
    fp32, _, calib = digits
    flat = write_images(tmp_path / "flat", open_dataset("digits", split="test").images[:50])
    _, summary = quantize.to_int8(fp32, tmp_path / "d.int8.onnx", calib=calib, cache_path=tmp_path / "c.json",
                                   mixed=MixedPrecision(val=ValidationSet(flat), max_drop=5.0))
    acc = summary["accuracy"]
    assert acc["basis"] == "top-1 agreement with FP32, no labels" and acc["fp32_top1"] == 100.0
    assert acc["drop"] == pytest.approx(100.0 - acc["int8_top1"]) and acc["drop"] <= 5.0


def test_a_bound_not_met_with_every_layer_in_float_is_refused_and_writes_nothing(digits, tmp_path, monkeypatch):
    coarsen_activation_grids(monkeypatch)
    fp32, val, calib = digits
    out = tmp_path / "d.int8.onnx"
    with pytest.raises(AccuracyError, match=r"^the accuracy bound cannot be met: INT8 drops \d+\.\d\d points on 360 "
                                            rf"validation images \({re.escape(fp32_top1_text(fp32))} → \d+\.\d\d%\), "
                                            r"and still \d+\.\d\d with all 11 "
                                            r"layers in float \(what remains is the dense blocks' int8 feature maps\), "
                                            r"above the bound of 0; no INT8 file was written \(allow a larger drop, or "
                                            r"calibrate on more or other images\)$"):
        quantize.to_int8(fp32, out, calib=calib, cache_path=tmp_path / "c.json",
                          mixed=MixedPrecision(val=ValidationSet(val), max_drop=0.0))
    assert not out.exists()


def test_validation_errors(digits, tmp_path):
    fp32, _, calib = digits
    three = tmp_path / "three"
    for c in range(3):
        write_images(three / f"c{c}", open_dataset("digits", split="test").images[:2])
    kw = dict(calib=calib, cache_path=tmp_path / "c.json")
    with pytest.raises(DataError, match=rf"^the model has 10 classes but the validation folder {three} has 3 class "
                                        r"subfolders; give one subfolder per class \(sorted names are the class "
                                        r"indices\), or images without subfolders \(then the drop is measured as "
                                        r"agreement with FP32\)$"):
        quantize.to_int8(fp32, tmp_path / "a.onnx", mixed=MixedPrecision(val=ValidationSet(three)), **kw)
    with pytest.raises(DataError, match=rf"^validation folder {tmp_path / 'absent'} does not exist or is not a folder$"):
        quantize.to_int8(fp32, tmp_path / "a.onnx", mixed=MixedPrecision(val=ValidationSet(tmp_path / "absent")), **kw)
    with pytest.raises(UsageError, match=r"^an accuracy bound needs validation images to measure the drop on: give "
                                         r"their folder$"):
        MixedPrecision(max_drop=1.0)
    with pytest.raises(UsageError, match=r"^layers in higher precision and accuracy control need the densenet INT8 "
                                         r"layout$"):
        quantize.to_int8(fp32, tmp_path / "a.onnx", mixed=MixedPrecision(("conv0",)), layout="ort", **kw)
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "c.json").exists()  # refused before calibrating
