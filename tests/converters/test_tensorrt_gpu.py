"""TensorRT on a GPU: FP32/FP16/INT8 plans of a real Lua checkpoint and of densenet121 against ONNX Runtime CPU.

Skipped, with the reason, where TensorRT or a CUDA GPU is missing (every machine the project has: written, not run).
The ONNX files come from ``converters.pipeline.convert`` (FP32 export, FP16 cast, INT8 Q/DQ from calibration images);
the plans are built from exactly those files, so TensorRT and ONNX Runtime run the same typed graph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import dnet
from dnet import engines
from dnet.artifact.sidecar import read_sidecar, sidecar_path
from dnet.checkpoint import save_checkpoint
from dnet.converters.calibration import CalibrationSet
from dnet.converters.pipeline import convert
from dnet.converters.tensorrt import BuildOptions, build_plan, read_onnx_meta
from dnet.data.datasets import open_dataset
from dnet.errors import EngineError
from dnet.files import sha256_file
from tests.conftest import shared_fixture

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

CIFAR_T7 = ("t7", "cifar10-densenet-bc-l40-k12.t7")
REAL_CROPS = ("chelsea", "chelsea-257x301", "coffee-portrait")  # fixtures/preprocess/*.tencrop.npy: 30 real crops
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}  # relative L2 error of the logits vs ONNX Runtime CPU
INT8_AGREEMENT = 0.99  # top-1 agreement with ONNX Runtime CPU on real images


@pytest.fixture(scope="module")
def tensorrt_gpu():
    try:
        import tensorrt
    except (ImportError, OSError) as e:
        pytest.skip(f"TensorRT is not installed ({type(e).__name__}: {e}); pip install '{dnet.DISTRIBUTION}[tensorrt]'")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU found (torch.cuda.is_available() is False)")
    return tensorrt


def _convert(src, **kwargs):
    return convert(src, **kwargs)


def _calibration_set(**kwargs):

    return CalibrationSet(**kwargs)


def onnx_runtime_cpu(onnx_path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def rel_l2(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64)))


def normalise(images: np.ndarray, spec) -> np.ndarray:
    """uint8 N×H×W×3 -> float32 N×3×H×W through an artifact's preprocessing spec (scale, mean, std)."""
    x = images.astype(np.float32) * (spec.pixel_scale / 255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def digits_32(split: str) -> np.ndarray:
    """scikit-learn's real handwritten digits, 8×8 upscaled ×4 (nearest) to the CIFAR models' 32×32 RGB."""

    images = open_dataset("digits", split=split).images
    return np.ascontiguousarray(images.repeat(4, axis=1).repeat(4, axis=2))


@pytest.fixture(scope="module")
def cifar(tensorrt_gpu, tmp_path_factory):
    """The Lua DenseNet-BC (L=40, k=12) fixture as FP32/FP16/INT8 ONNX and plans, and 360 real test images."""

    src = shared_fixture(*CIFAR_T7)
    out = tmp_path_factory.mktemp("cifar")
    calib = _calibration_set(images=digits_32("train"), count=512, name="digits/train ×4")
    written = _convert(src, src_format="t7", target="onnx-int8", out=out / "cifar.int8.onnx", calib=calib)
    onnx = {"fp32": out / "cifar.onnx", "int8": out / "cifar.int8.onnx"}
    assert onnx["fp32"] in written and onnx["int8"] in written
    onnx["fp16"] = _convert(onnx["fp32"], src_format="onnx", target="onnx-fp16", out=out / "cifar.fp16.onnx")[-1]
    meta, _ = read_onnx_meta(onnx["fp32"])
    plans = {p: build_plan(onnx[p], out / f"cifar.{p}.plan", BuildOptions(profile=(1, 8, 32))) for p in onnx}
    return {"onnx": onnx, "plans": plans, "x": normalise(digits_32("test"), meta.preprocess), "meta": meta}


@pytest.fixture(scope="module")
def densenet121(tensorrt_gpu, tmp_path_factory):
    """A seeded densenet121 (no pretrained weights offline) as FP32/FP16/INT8 ONNX and plans, and 30 real crops."""
    import torch

    out = tmp_path_factory.mktemp("densenet121")
    torch.manual_seed(0)
    pth = save_checkpoint(out / "densenet121.pth", dnet.create_model("densenet121").eval())
    calib = _calibration_set(folder=shared_fixture("preprocess"), count=3, name="fixtures/preprocess")
    written = _convert(pth, src_format="pth", target="onnx-int8", out=out / "d121.int8.onnx", calib=calib,
                       preprocess="torch7")
    onnx = {"fp32": out / "d121.onnx", "int8": out / "d121.int8.onnx"}
    assert onnx["fp32"] in written and onnx["int8"] in written
    onnx["fp16"] = _convert(onnx["fp32"], src_format="onnx", target="onnx-fp16", out=out / "d121.fp16.onnx")[-1]
    plans = {p: build_plan(onnx[p], out / f"d121.{p}.plan", BuildOptions(profile=(1, 8, 32))) for p in onnx}
    crops = np.concatenate([np.load(shared_fixture("preprocess", f"{name}.tencrop.npy")) for name in REAL_CROPS])
    return {"onnx": onnx, "plans": plans, "x": crops.astype(np.float32)}


def _check_precision(models, precision):
    x = models["x"]
    ref = onnx_runtime_cpu(models["onnx"][precision], x)
    with engines.open(models["plans"][precision]) as engine:
        assert engine.kind == "tensorrt" and engine.input_shape == (-1, *x.shape[1:])
        got = engine(x)  # more rows than the profile's max (32): split into chunks
    assert got.dtype == np.float32 and got.shape == ref.shape
    if precision == "int8":
        agreement = float(np.mean(got.argmax(1) == ref.argmax(1)))
        assert agreement >= INT8_AGREEMENT, f"INT8 top-1 agreement {agreement:.4f} over {len(x)} real images"
    else:
        error = rel_l2(ref, got)
        assert error <= TOLERANCE[precision], f"{precision}: relative error {error:.2e} over {len(x)} images"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_lua_fixture_plan_matches_onnx_runtime_cpu(cifar, precision):
    _check_precision(cifar, precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_densenet121_plan_matches_onnx_runtime_cpu(densenet121, precision):
    _check_precision(densenet121, precision)


def test_batches_1_8_32_and_above_the_profile_max(cifar):
    x = cifar["x"]
    ref = onnx_runtime_cpu(cifar["onnx"]["fp32"], x[:45])
    with engines.open(cifar["plans"]["fp32"]) as engine:
        for n in (1, 8, 32, 45):
            got = engine(x[:n])
            assert got.shape == (n, 10)
            assert rel_l2(ref[:n], got) <= TOLERANCE["fp32"], n
        whole = engine(x[:45])
        parts = np.concatenate([engine(x[:32]), engine(x[32:45])])
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-5)  # a split batch is the same as two calls


def test_plan_carries_the_onnx_metadata_and_this_gpu(cifar):
    import tensorrt
    import torch

    side = read_sidecar(cifar["plans"]["int8"])
    assert side.tensorrt_version == tensorrt.__version__
    assert side.compute_capability == tuple(torch.cuda.get_device_capability())
    assert side.gpu_name == torch.cuda.get_device_name()
    assert side.onnx_sha256 == sha256_file(cifar["onnx"]["int8"])
    assert side.meta.precision == "int8" and side.meta.num_classes == 10 and side.meta.calibration
    assert side.profile["max"] == [32, 3, 32, 32]


def test_plan_whose_sidecar_claims_another_compute_capability_is_refused(cifar):

    plan = cifar["plans"]["fp32"]
    path = sidecar_path(plan)
    original = path.read_text()
    data = json.loads(original)
    major, minor = data["compute_capability"]
    data["compute_capability"] = [major + 1, minor]
    path.write_text(json.dumps(data))
    try:
        with pytest.raises(EngineError, match=rf"compute capability {major + 1}\.{minor} .* but this GPU has "
                                              rf"compute capability {major}\.{minor}; rebuild it here"):
            engines.open(plan)
    finally:
        path.write_text(original)
    with engines.open(plan) as engine:
        assert engine(cifar["x"][:2]).shape == (2, 10)
