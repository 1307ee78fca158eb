"""dnet.engines.openvino: OpenVINO runs dnet's FP32 ONNX as ONNX Runtime does, both INT8 layouts in u8, and its IR.

Parity bound: max|Δ| ≤ 1e-5 · max(1, max|ref|) against ONNX Runtime on the FP32 file (measured: 1.7e-7 relative on
the tiny model, 4.0e-7 on the digits model, 2.9e-6 on a random-weight densenet121).
Skipped with the reason where OpenVINO (the optional extra ``openvino``) is not installed; ``make install`` installs it.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from dnet import DISTRIBUTION, engines
from dnet.apps.eval.loop import evaluate
from dnet.cli import main
from dnet.converters.export import export
from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.quantize import to_int8
from dnet.core.errors import FileFormatError, NotInstalledError, UsageError
from dnet.core.similarity import cosine, top1_agreement
from dnet.data.datasets import open_dataset
from dnet.engines import openvino as ov_engine
from dnet.engines.onnxruntime import run
from tests.helpers.images import photo_tiles
from tests.helpers.models import CIFAR, digits_model, normalise_images, tiny_onnx

RTOL = 1e-5
TINY_CONVS = 12  # stem 1 + (2 + 3 layers) × 2 (BC) + 1 transition


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino", reason="OpenVINO is the optional extra: pip install 'dnet[openvino]'")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(scope="module")
def tiny(folder):
    return tiny_onnx(folder)


@pytest.fixture(scope="module")
def photos_in():
    return normalise_images(photo_tiles(32), CIFAR)


@pytest.fixture(scope="module")
def digits(folder):
    """The digits-trained model exported to FP32 ONNX, and the test split (decisive logits, like a real model)."""
    model, x, y = digits_model()
    return export(model, folder / "digits.onnx"), x, y


def bound(ref: np.ndarray) -> float:
    return RTOL * max(1.0, float(np.max(np.abs(ref))))


def save_ir(ov, onnx_path, xml_path, **kwargs):
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), **kwargs)
    return xml_path


def test_fp32_onnx_matches_onnxruntime(ov, tiny, photos_in):
    ref = run(tiny, photos_in)
    with engines.open(tiny, provider="openvino") as eng:
        assert (eng.kind, eng.device, eng.requested_precision, eng.inference_precision) == ("openvino", "openvino", "f32", "f32")
        assert eng.input_shape == (-1, 3, 32, 32) and eng.meta.num_classes == 5 and eng.meta.preprocess == CIFAR
        got = eng(photos_in)
        assert eng.layer_precisions() == {"f32": TINY_CONVS}
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.max(np.abs(got - ref)) <= bound(ref)


def test_trained_model_matches_onnxruntime_on_every_test_image(ov, digits):
    path, x, _ = digits
    ref = run(path, x)
    with engines.open(path, provider="openvino") as eng:
        got = eng(x)
    assert np.max(np.abs(got - ref)) <= bound(ref)
    assert top1_agreement(ref, got) == 1.0


def test_ir_saved_by_openvino_runs_with_dnet_metadata_and_fp32_parity(ov, tiny, photos_in, folder):
    xml = save_ir(ov, tiny, folder / "tiny.xml", compress_to_fp16=False)
    ref = run(tiny, photos_in)
    with engines.open(xml) as eng:  # .xml picks OpenVINO, f32, with no provider named
        assert (eng.kind, eng.inference_precision) == ("openvino", "f32")
        assert eng.meta.model == "custom" and eng.meta.input_size == 32 and eng.meta.preprocess == CIFAR
        got = eng(photos_in)
    assert np.max(np.abs(got - ref)) <= bound(ref)


def test_ir_with_weights_compressed_to_fp16_stays_within_the_fp16_bound(ov, tiny, photos_in, folder):
    from dnet.converters.precision import FP16_REL_L2
    from dnet.core.similarity import rel_l2

    xml = save_ir(ov, tiny, folder / "tiny16.xml")  # save_model's default: float16 weights
    ref = run(tiny, photos_in)
    with engines.open(xml) as eng:
        got = eng(photos_in)
    assert 0 < rel_l2(ref, got) <= FP16_REL_L2  # measured 1.1e-3: the weights really are float16


@pytest.mark.parametrize("layout, convolutions, min_cosine", [("densenet", 16, 0.995), ("ort", 10, 0.95)])
def test_int8_qdq_files_run_with_every_convolution_in_int8(ov, digits, folder, layout, convolutions, min_cosine):
    """Every layout runs with all convolutions in one 8-bit integer precision: stem 1 + (2 + 2 layers) × 2 (BC) + 1
    transition = 10, and in dnet's densenet layout the 6 BatchNormalizations it computes as depthwise convolutions
    too. OpenVINO names the precision by its kernel: u8 on an AVX2 CPU, i8 on an AVX-512 VNNI one. Measured against
    the FP32 logits on an AVX2 CPU: cosine 0.9988 (densenet) and 0.971 (ort int8); OpenVINO's own float emulation of
    the ort int8 file (LP_TRANSFORMS_MODE off) gives 0.9999, so the loss is its int8 kernels'."""
    path, x, y = digits
    calib = CalibrationSet(images=open_dataset("digits", None, "train").images, count=256)
    q, _ = to_int8(path, folder / f"digits.{layout}.onnx", calib=calib, layout=layout)
    with engines.open(q, provider="openvino") as eng:
        precisions = eng.layer_precisions()
        assert len(precisions) == 1 and precisions.get("u8", precisions.get("i8")) == convolutions, precisions
        got = eng(x)
    assert cosine(run(path, x), got) >= min_cosine


def test_bf16_is_what_the_cpu_can_do(ov, tiny, photos_in):
    """bf16 is a stated option; a CPU without native bf16 (this project's AVX2 machine) runs it in f32, bit for bit."""
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with engines.open(tiny, provider="openvino") as f32, engines.open(tiny, provider="openvino-bf16") as bf16:
        assert bf16.requested_precision == "bf16"
        a, b = f32(photos_in), bf16(photos_in)
    if native:  # written for bf16 CPUs (AVX-512 BF16, AMX); not run on the project's machine
        assert bf16.inference_precision == "bf16" and 0 < np.max(np.abs(a - b)) <= 0.05 * np.max(np.abs(a))
    else:
        assert bf16.inference_precision == "f32"
        assert np.array_equal(a, b)


def test_eval_bench_and_compare_take_openvino_like_any_engine(ov, digits, folder):
    path, _, _ = digits
    xml = save_ir(ov, path, folder / "digits.xml", compress_to_fp16=False)
    test = open_dataset("digits", None, "test")
    assert evaluate(xml, test, progress=False).top1_error == evaluate(path, test, progress=False).top1_error
    r = CliRunner().invoke(main, ["eval", str(path), "--provider", "openvino", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["top1_error"] == evaluate(path, test, progress=False).top1_error
    r = CliRunner().invoke(main, ["bench", str(path), str(xml), "--batch-sizes", "2",
                                  "--warmup", "0", "--duration", "0.05", "--json"])
    assert r.exit_code == 0, r.output
    assert [(row["engine"], row["kind"]) for row in json.loads(r.output)] == [("digits.onnx", "onnxruntime"),
                                                                           ("digits.xml", "openvino")]
    r = CliRunner().invoke(main, ["compare", str(path), str(xml), "--json"])
    assert r.exit_code == 0, r.output
    logits = json.loads(r.output)["stages"][-1]
    assert logits["stage"] == "logits" and logits["rel_error"] < 1e-5 and logits["top1_agreement"] == 1.0


def test_an_ir_without_its_weights_or_truncated_is_one_line(ov, tiny, folder):
    xml = save_ir(ov, tiny, folder / "cut.xml", compress_to_fp16=False)
    bin_ = xml.with_suffix(".bin")
    bin_.write_bytes(bin_.read_bytes()[:100])
    with pytest.raises(FileFormatError, match=r"cut\.xml: OpenVINO cannot read it \(Incorrect weights in bin file!\)$"):
        engines.open(xml)
    bin_.unlink()
    with pytest.raises(FileFormatError, match=r"cut\.xml: its weights cut\.bin are missing"):
        engines.open(xml)


def test_openvino_providers_are_refused_for_other_files_and_unknown_ones(ov, tiny, folder):
    pth = folder / "model.pth"
    pth.write_bytes(b"not read")
    with pytest.raises(UsageError, match=r"provider 'openvino' runs \.onnx and \.xml files, not model\.pth"):
        engines.open(pth, provider="openvino")
    xml = save_ir(ov, tiny, folder / "p.xml", compress_to_fp16=False)
    with pytest.raises(UsageError, match="provider 'cuda' is not one of the openvino engine's: openvino, openvino-bf16"):
        engines.open(xml, provider="cuda")


def test_without_openvino_the_engine_says_which_extra_to_install(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(NotInstalledError) as e:
        engines.open(tiny, provider="openvino")
    assert str(e.value) == ov_engine.INSTALL_HINT == f"OpenVINO is not installed: pip install '{DISTRIBUTION}[openvino]'"
