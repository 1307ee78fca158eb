"""The two INT8 layouts of one FP32 export: the TensorRT file by TensorRT's documented rules, the CPU file that a plain
ONNX Runtime session runs as dnet's engine does; both checked against FP32 in their own arithmetic.

Everything here is structural (counted node patterns) or compares numbers measured in the same run, so no result
depends on the CPU kind (VNNI or not)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from dnet.cli import main
from dnet.converters import export as onnx_export
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.lint import lint
from dnet.converters.int8.options import Int8Options
from dnet.converters.int8.rewrites import int8_activations_as_uint8
from dnet.converters.pipeline import convert, names_for
from dnet.core import cpu
from dnet.core.artifact.onnxfile import read_meta, read_model
from dnet.core.errors import DnetWarning, UsageError
from dnet.data.datasets import open_dataset
from dnet.engines import onnxruntime as ort_engine
from dnet.engines.onnxruntime import run as ort_run
from tests.helpers.images import photo_tiles, write_images
from tests.helpers.models import digits_model, fast_export, tiny_checkpoint


def tensorrt_rule_breaks(proto: onnx.ModelProto) -> Counter:
    """Counts of what TensorRT's INT8 rules forbid (the must-be-true list of the TensorRT layout), by pattern."""
    inits = {t.name: t for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    found: Counter = Counter()
    for node in proto.graph.node:
        src = producer.get(node.input[0]) if node.input else None
        if node.op_type == "Conv" and src is not None and src.op_type == "DequantizeLinear":
            w = producer[node.input[1]]  # the weight's DequantizeLinear
            group_size = list(inits[w.input[0]].dims)[1]  # (out, in/group, kh, kw)
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            found["int8 grouped conv, group size not a multiple of 4"] += group > 1 and group_size % 4 != 0
        if node.op_type in ("Relu", "LeakyRelu") and src is not None and src.op_type == "DequantizeLinear":
            q = producer.get(src.input[0])
            before = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            found["Q/DQ between a conv and its ReLU"] += before is not None and before.op_type == "Conv"
        if node.op_type == "LeakyRelu":
            found["LeakyRelu"] += 1
        if node.op_type == "Concat":
            scales = {float(numpy_helper.to_array(inits[producer[i].input[1]])) for i in node.input
                      if producer[i].op_type == "DequantizeLinear"}
            q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == node.output[0]]
            scales |= {float(numpy_helper.to_array(inits[n.input[1]])) for n in q}
            found["concat with several scales"] += len(scales) != 1
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            found["activation zero point not int8 0"] += zp.dtype != np.int8 or bool(zp.any())
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and len(inits[node.input[0]].dims) > 1:
            found["weights not using ±127"] += int(np.abs(numpy_helper.to_array(inits[node.input[0]])).max()) != 127
    out = producer[proto.graph.output[0].name]
    found["quantized logits"] += out.op_type != "Gemm"
    return +found


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The trained digits DenseNet, its FP32 ONNX, test images and labels, and its INT8 file of each target."""
    model, x, labels = digits_model()
    folder = tmp_path_factory.mktemp("targets")
    fp32 = onnx_export.export(model, folder / "digits.onnx")
    calib = CalibrationSet(images=open_dataset("digits", split="train").images, count=512, name="digits/train")
    files = {}
    for target in ("cpu", "tensorrt", "openvino"):
        # mse: with minmax the openvino file lost 2 of the 360 images (0.56 points; agreement 99.4%), the others none
        files[target], _ = quantize.to_int8(fp32, folder / f"digits.{target}.onnx", calib=calib, target=target,
                                            method="mse", cache_path=folder / "digits.calib.json")
    return fp32, x, labels, files


def test_the_tensorrt_file_follows_tensorrts_int8_rules(digits):
    _, _, _, files = digits
    proto = onnx.load(str(files["tensorrt"]))
    assert tensorrt_rule_breaks(proto) == Counter()
    ops = Counter(n.op_type for n in proto.graph.node)
    # DIGITS_CONFIG: 4 dense layers + 1 transition + the final norm: 6 pre-activation BNs, kept float, each
    # DequantizeLinear -> BatchNormalization -> Relu -> (QuantizeLinear, or the float head for the last)
    assert ops["BatchNormalization"] == 6 and ops["LeakyRelu"] == 0
    producer = {o: n for n in proto.graph.node for o in n.output}
    consumers = Counter()
    readers: dict[str, list[str]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers[i] += 1
            readers.setdefault(i, []).append(n.op_type)
    for bn in (n for n in proto.graph.node if n.op_type == "BatchNormalization"):
        assert producer[bn.input[0]].op_type == "DequantizeLinear" and readers[bn.output[0]] == ["Relu"]
    # Conv -> Relu -> Q: each conv whose output a ReLU reads feeds that ReLU directly
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    relu_after_conv = [n for n in proto.graph.node if n.op_type == "Relu" and producer[n.input[0]].op_type == "Conv"]
    assert len(relu_after_conv) == 4 and all(readers[r.output[0]] == ["QuantizeLinear"] for r in relu_after_conv)
    assert all(producer[c.input[0]].op_type == "DequantizeLinear" for c in convs)  # every convolution integer
    assert read_meta(proto).int8_target == "tensorrt"


def test_the_cpu_layout_breaks_them_where_the_tensorrt_one_keeps_them(digits):
    """The counter finds what the CPU layout does differently (so it is not a test that cannot fail)."""
    _, _, _, files = digits
    proto = onnx.load(str(files["cpu"]))
    breaks = tensorrt_rule_breaks(proto)
    assert breaks["int8 grouped conv, group size not a multiple of 4"] == 6  # the 6 BNs as 1×1 depthwise convs
    # Conv -> Relu -> Q(uint8, zero point 0) as TensorRT wants, but on uint8
    assert "Q/DQ between a conv and its ReLU" not in breaks and "LeakyRelu" not in breaks
    assert breaks["activation zero point not int8 0"] > 0  # uint8 activations, zero point 128 (0 after a ReLU)
    assert "weights not using ±127" not in breaks and "quantized logits" not in breaks
    assert read_meta(proto).int8_target == "cpu"


def test_the_openvino_file_keeps_bns_float_and_quantizes_relu_outputs_as_uint8_from_zero(digits):
    """NNCF's layout for OpenVINO's low-precision transformations: a float BN between a DequantizeLinear and
    ``Relu -> QuantizeLinear`` (OpenVINO folds it into the quantization), uint8 codes from 0 for what a ReLU
    wrote, int8 zero point 0 for the dense blocks' shared grids, 8-bit weights, the transitions' pools folded."""
    _, _, _, files = digits
    proto = onnx.load(str(files["openvino"]))
    inits = {t.name: t for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    breaks = tensorrt_rule_breaks(proto)
    assert "int8 grouped conv, group size not a multiple of 4" not in breaks and "LeakyRelu" not in breaks
    assert "weights not using ±127" not in breaks and "quantized logits" not in breaks
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["BatchNormalization"] == 6 and ops["AveragePool"] == 0
    zero_points = Counter()
    for q in (n for n in proto.graph.node if n.op_type == "QuantizeLinear"):
        zp = numpy_helper.to_array(inits[q.input[2]])
        assert int(zp) == 0
        src = producer.get(q.input[0])
        zero_points[(src.op_type if src is not None else "input", zp.dtype.name)] += 1
    # 4 BN-ReLUs + 4 conv-ReLUs + the transition's BN-ReLU (the last BN-ReLU feeds the float head)
    assert zero_points[("Relu", "uint8")] == 9 and not any(k[1] == "uint8" and k[0] != "Relu" for k in zero_points)
    assert breaks["activation zero point not int8 0"] == 2 * 9  # each of those Q and its DQ
    assert read_meta(proto).int8_target == "openvino"
    assert read_meta(proto).calibration["layout"]["pools_folded"] == 1


def test_both_files_agree_with_fp32_and_lose_at_most_half_a_point(digits):
    fp32, x, labels, files = digits
    ref = ort_run(fp32, x).argmax(1)
    for target, path in files.items():
        got = ort_run(path, x, fused=False).argmax(1)  # the file's own arithmetic
        assert np.mean(got == ref) >= 0.99, target
        assert 100 * (np.mean(ref == labels) - np.mean(got == labels)) <= 0.5, target


def test_a_plain_session_of_the_cpu_file_runs_dnets_engine_graph_with_the_same_outputs(digits):
    import onnxruntime as ort

    _, x, _, files = digits
    plain = ort.InferenceSession(str(files["cpu"]), providers=["CPUExecutionProvider"])
    engine = ort_engine.open_file(files["cpu"])
    assert np.array_equal(plain.run(None, {plain.get_inputs()[0].name: x})[0], engine.run(x))
    assert int8_activations_as_uint8(read_model(files["cpu"])) == 0  # the engine's load-time rewrite is in the file


def test_eight_bit_files_warn_on_an_x86_cpu_without_vnni_and_seven_bit_ones_do_not(digits, tmp_path, monkeypatch):
    fp32, _, _, files = digits
    seven, _ = quantize.to_int8(fp32, tmp_path / "w7.onnx", calib=None, weight_bits=7, method="mse",
                                cache_path=files["cpu"].parent / "digits.calib.json", check_images=0)
    monkeypatch.setattr(ort_engine, "X86", True)
    monkeypatch.setattr(cpu, "flags", lambda: frozenset({"avx2", "fma"}))
    with pytest.warns(DnetWarning, match=r"^digits\.cpu\.onnx: its int8 weights use all 8 bits, and this CPU has no "
                      r"VNNI: ONNX Runtime's fused x86 kernels saturate .*--int8-weight-bits 7\)$"):
        ort_engine.open_file(files["cpu"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DnetWarning)
        ort_engine.open_file(seven)
        monkeypatch.setattr(cpu, "flags", lambda: frozenset({"avx2", "avx512_vnni"}))
        ort_engine.open_file(files["cpu"])


def test_seven_bit_weights_are_refused_for_the_tensorrt_target():
    with pytest.raises(UsageError, match=r"^7-bit weights are for ONNX Runtime on x86 CPUs without VNNI; the TensorRT "
                                         r"layout uses 8-bit weights \(TensorRT accumulates in int32\)$"):
        quantize.to_int8("unused.onnx", "unused.int8.onnx", calib=None, target="tensorrt", weight_bits=7)


# --- the command line: targets, names, refusals ------------------------------------------------------------


def invoke(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def fast(monkeypatch):
    fast_export(monkeypatch)


@pytest.fixture
def tiny(tmp_path):
    return tiny_checkpoint(tmp_path), write_images(tmp_path / "calib", photo_tiles(size=32, per_photo=2))


def int8_args(calib):
    return ("--calib", calib, "--calib-count", 10, "--int8-min-top1", 0)  # random weights: near-tied logits


def test_the_tensorrt_layout_is_a_target_of_its_own_that_succeeds_without_tensorrt(tmp_path, fast, tiny):
    src, calib = tiny
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--int8-target", "tensorrt",
                            *int8_args(calib), "-o", tmp_path / "tiny.int8-trt.onnx", "-q")
    assert code == 0, err
    code, out, err = invoke("inspect", tmp_path / "tiny.int8-trt.onnx")
    assert code == 0 and "INT8: TensorRT target, densenet layout, 8-bit weights" in out


def test_the_openvino_layout_is_a_target_with_a_default_name_of_its_own(tmp_path, fast, tiny):
    src, calib = tiny
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8",
                            "--int8-target", "openvino", *int8_args(calib), "-o", tmp_path / "tiny.int8-ov.onnx", "--json", "-q")
    assert code == 0, err  # the FP32 intermediate is NAME.onnx: the target's tag is one of NAME's suffixes
    assert [Path(f["file"]).name for f in json.loads(out)["written"]] == ["tiny.onnx", "tiny.calib.json",
                                                                         "tiny.int8-ov.onnx"]
    assert names_for(tmp_path / "tiny.onnx")["int8-ov"] == tmp_path / "tiny.int8-ov.onnx"  # dnet.quantize's default
    code, out, err = invoke("inspect", tmp_path / "tiny.int8-ov.onnx")
    assert code == 0 and "INT8: OpenVINO target, densenet layout, 8-bit weights" in out


def test_another_targets_int8_file_is_never_replaced(tmp_path, fast, tiny):
    src, calib = tiny
    cpu = tmp_path / "tiny.int8.onnx"
    assert invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", *int8_args(calib), "-o", cpu, "-q")[0] == 0
    before = cpu.read_bytes()
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--int8-target", "tensorrt",
                            *int8_args(calib), "-o", cpu, "-q")
    assert code == 2 and err == (f"dnet: error: {cpu} exists and is an INT8 file of the cpu target; this conversion "
                                 "writes the tensorrt INT8 file: choose another output name, or let the conversion "
                                 "replace it (--force)\n")
    assert cpu.read_bytes() == before
    # the same target from the same source is a re-run: replaced
    assert invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", *int8_args(calib), "-o", cpu, "-q")[0] == 0


def test_an_engine_is_built_from_the_tensorrt_layout_only(tmp_path, tiny):
    src, calib = tiny
    with pytest.raises(UsageError, match=r"^a TensorRT engine is built from the TensorRT INT8 layout: leave out the "
                                         r"cpu target \(or convert --to onnx --precision int8 for the CPU file\)$"):
        convert(src, src_format="pth", target="trt", out=tmp_path / "t.plan", precision="int8",
                int8=Int8Options(calib=CalibrationSet(folder=calib), target="cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "tiny.pth"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed: the build runs")
def test_json_is_printed_on_a_refusal_with_what_was_kept(tmp_path, fast, tiny):
    src, calib = tiny
    out_dir = tmp_path / "new" / "engines"  # a missing output folder is created
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "trt", "--precision", "int8", *int8_args(calib),
                            "-o", out_dir / "tiny.plan", "--json", "-q")
    assert code != 0 and "TensorRT" in err
    doc = json.loads(out)
    assert [(Path(f["file"]).name, f["role"]) for f in doc["written"]] == [
        ("tiny.onnx", "kept"), ("tiny.calib.json", "kept"), ("tiny.int8-trt.onnx", "kept")]
    assert doc["error"] == err.removeprefix("dnet: error: ").rstrip("\n")
    assert any(c["check"] == "int8_vs_fp32" for c in doc["checks"])
    assert not (out_dir / "tiny.plan").exists()


# --- the real DenseNet-BC-100 (CIFAR-10), slow ---------------------------------------------------------------


@pytest.mark.slow
def test_the_real_densenet_bc_100_gives_both_files_by_their_rules_and_within_half_a_point(tmp_path):
    """Images 500-999 of the real CIFAR-10 test images calibrate (and check), 0-499 measure; both files are made by
    ``dnet convert`` from the third-party checkpoint, as a user would."""
    import shutil

    from tests.helpers.shared import shared_fixture

    ckpt = shared_fixture("real", "densenet-bc-l100-k12-cifar10.andreasveit.pth.tar")
    data = np.load(shared_fixture("real", "cifar10-test-first1000.npz"))
    images, labels = data["images"], data["labels"]
    calib = write_images(tmp_path / "calib", images[500:])  # PNG: lossless
    src = tmp_path / "bc100.pth"
    shutil.copyfile(ckpt, src)
    # mse: with minmax both files agreed with FP32 on 98.8% of the 500 images (mse: 99.0% CPU, 99.6% TensorRT)
    common = ("--calib", calib, "--calib-count", 500, "--calib-method", "mse", "--preprocess", "cifar10", "-q")
    code, _, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", *common, "-o", tmp_path / "bc100.int8.onnx")
    assert code == 0, err
    for target, name in (("tensorrt", "bc100.int8-trt.onnx"), ("openvino", "bc100.int8-ov.onnx")):
        code, _, err = invoke("convert", tmp_path / "bc100.onnx", "--from", "onnx", "--to", "onnx", "--precision", "int8",
                              "--int8-target", target, *common, "-o", tmp_path / name)
        assert code == 0, err
    files = {"cpu": tmp_path / "bc100.int8.onnx", "tensorrt": tmp_path / "bc100.int8-trt.onnx",
             "openvino": tmp_path / "bc100.int8-ov.onnx"}
    trt = onnx.load(str(files["tensorrt"]))
    assert tensorrt_rule_breaks(trt) == Counter()
    cpu_lint = lint(onnx.load(str(files["cpu"])))
    assert lint(trt).errors == lint(trt).warnings == 0 and cpu_lint.errors > 0  # the lint agrees on both files
    assert Counter(n.op_type for n in trt.graph.node)["BatchNormalization"] == 3 * 16 + 2 + 1  # layers, transitions, norm5
    spec = read_meta(read_model(tmp_path / "bc100.onnx")).preprocess
    from dnet.data.transforms import preprocess_array

    x = preprocess_array(images[:500], spec)
    ref = ort_run(tmp_path / "bc100.onnx", x).argmax(1)
    for target, path in files.items():
        assert read_meta(read_model(path)).int8_target == target
        got = ort_run(path, x, fused=False).argmax(1)  # the file's own arithmetic
        print(f"{target}: top-1 error {100 * np.mean(got != labels[:500]):.1f} % (FP32 "
              f"{100 * np.mean(ref != labels[:500]):.1f} %), agreement with FP32 {np.mean(got == ref):.1%}")
        assert np.mean(got == ref) >= 0.99, target  # measured: see docs/benchmarks.md (mse rows)
        assert 100 * (np.mean(ref == labels[:500]) - np.mean(got == labels[:500])) <= 0.5, target
    import onnxruntime as ort

    plain = ort.InferenceSession(str(files["cpu"]), providers=["CPUExecutionProvider"])
    assert np.array_equal(plain.run(None, {plain.get_inputs()[0].name: x[:64]})[0],
                          ort_engine.open_file(files["cpu"]).run(x[:64]))


def test_dnet_quantize_is_one_call_returning_what_it_wrote_and_measured(digits, tmp_path):
    import shutil

    import dnet

    fp32, x, _, _ = digits
    src = Path(shutil.copyfile(fp32, tmp_path / "digits.onnx"))
    images = open_dataset("digits", split="train").images
    result = dnet.quantize(src, images[:200], target="tensorrt")
    assert isinstance(result, dnet.QuantizeResult) and result.target == "tensorrt"
    assert result.path == tmp_path / "digits.int8-trt.onnx"  # the TensorRT layout's default name
    assert result.written == (tmp_path / "digits.calib.json", result.path)
    assert read_meta(read_model(result.path)).int8_target == "tensorrt"
    assert result.check["batch"] == 50 and result.check["cosine"] >= result.check["min_cosine"] == 0.99
    assert result.summary["layout"]["target"] == "tensorrt" and result.accuracy is None
    assert [c["check"] for c in result.checks] == ["int8_vs_fp32"]
    assert tensorrt_rule_breaks(onnx.load(str(result.path))) == Counter()
    assert result.lint.quantized and result.lint.errors == result.lint.warnings == 0  # dnet's own lint agrees
    with pytest.raises(UsageError, match=r"^calibration must be a CalibrationSet, an image folder or a uint8 "
                                         r"N×H×W×3 array, got list$"):
        dnet.quantize(src, [1, 2], target="cpu")
