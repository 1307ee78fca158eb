"""TensorRT on a GPU: FP32/FP16/INT8 plans against ONNX Runtime CPU on the same typed ONNX files.

Skipped, with the reason, where TensorRT or a CUDA GPU is missing (every machine the project has had: written, not
run). The ONNX files come from ``converters.pipeline.convert`` (FP32 export, FP16 cast, INT8 Q/DQ from calibration
images); the plans are built from exactly those files, so TensorRT and ONNX Runtime run the same typed graph, and
ONNX Runtime runs the INT8 file's own Q/DQ arithmetic (``fused=False``).

Thresholds: top-1 agreement is only meaningful where the logits are decisive, so FP16 and INT8 agreement are
checked on a *trained* model (the digits DenseNet of tests/helpers/models.py, trained in a fixture, on the
360 real test digits); on random-weight densenet121 most top-1 decisions are near-ties that any rounding flips, so
there only the FP32 relative error is checked. A Lua DenseNet-BC (L=40, k=12) written as a ``.t7`` in the test
(seeded weights, BN statistics of real digits) checks the Lua route, FP32 and FP16 relative errors, batching and the
sidecar refusal. A k = 32 INT8 model (channel offsets of every concatenation multiples of 32) checks what TensorRT
made of the Q/DQ file: no reformat layers beyond a bound, and most ONNX convolutions in int8.

Every model is made in the test from seeds and scikit-learn's bundled digits: nothing comes from ``../shared``,
which does not travel to a GPU machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import dnet
from dnet import engines
from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.lint import lint
from dnet.converters.int8.options import Int8Options
from dnet.converters.pipeline import convert
from dnet.converters.tensorrt import BuildOptions, build_plan, read_onnx_meta
from dnet.core.artifact.layers import read_layers, summarise
from dnet.core.artifact.sidecar import read_sidecar, sidecar_path
from dnet.core.atomic import sha256_file
from dnet.core.errors import EngineError
from dnet.core.similarity import rel_l2, top1_agreement
from dnet.core.specs import get_spec
from dnet.data.datasets import open_dataset
from dnet.engines.onnxruntime import run as onnx_runtime_run
from dnet.formats.checkpoint import save_checkpoint
from dnet.formats.t7.writer import dumps, lua_densenet
from dnet.models import DenseNetConfig
from tests.helpers.models import digits_model, tiny_model

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

LUA_BC40 = DenseNetConfig(block_config=(6, 6, 6), growth_rate=12, init_features=24, num_classes=10)  # DenseNet-BC L=40
K32 = DenseNetConfig(block_config=(2, 2), growth_rate=32, init_features=64, num_classes=10)  # offsets 64, 96 per block
INT8_CONV_SHARE = 0.9  # of the k = 32 file's ONNX Conv nodes, computed by int8 engine layers
MAX_REFORMATS = 2  # the k = 32 int8 plan: at most the network input's and the classifier head's conversions
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}  # relative L2 error of the logits vs ONNX Runtime CPU
AGREEMENT = {"fp16": 0.99, "int8": 0.99}  # top-1 agreement with ONNX Runtime CPU: the trained digits model only


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


def onnx_runtime_cpu(onnx_path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """The file's own arithmetic on the CPU (no fused int8 kernels, which saturate on CPUs without VNNI)."""
    return np.concatenate([onnx_runtime_run(onnx_path, x[i:i + batch], fused=False) for i in range(0, len(x), batch)])


def normalise(images: np.ndarray, spec) -> np.ndarray:
    """uint8 N×H×W×3 -> float32 N×3×H×W through an artifact's preprocessing spec (scale, mean, std)."""
    x = images.astype(np.float32) * (spec.pixel_scale / 255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def digits_32(split: str) -> np.ndarray:
    """scikit-learn's real handwritten digits, 8×8 upscaled ×4 (nearest) to the CIFAR models' 32×32 RGB."""
    images = open_dataset("digits", split=split).images
    return np.ascontiguousarray(images.repeat(4, axis=1).repeat(4, axis=2))


def seeded_model(config: DenseNetConfig, images: np.ndarray, seed: int = 0):
    """The tiny model's recipe for ``config``, BN statistics measured on ``images`` (uint8 N×32×32×3, CIFAR
    preprocessing): activations as normalised as a trained model's."""
    import torch

    return tiny_model(seed, config, torch.from_numpy(normalise(images, get_spec("cifar10"))))


def _plans(onnx: dict, out, stem: str) -> dict:
    return {p: build_plan(onnx[p], out / f"{stem}.{p}.plan", BuildOptions(profile=(1, 8, 32))) for p in onnx}


@pytest.fixture(scope="module")
def digits(tensorrt_gpu, tmp_path_factory):
    """The digits DenseNet, trained in the fixture, as FP32/FP16/INT8 ONNX and plans; the 360 test digits."""
    out = tmp_path_factory.mktemp("digits")
    model, x, labels = digits_model()
    pth = save_checkpoint(out / "digits.pth", model, model.meta)
    calib = CalibrationSet(images=open_dataset("digits", split="train").images, count=512, name="digits/train")
    written = convert(pth, src_format="pth", target="onnx-int8", out=out / "digits.int8-trt.onnx",
                      int8=Int8Options(calib=calib, target="tensorrt"))  # the layout by TensorRT's rules
    onnx = {"fp32": out / "digits.onnx", "int8": out / "digits.int8-trt.onnx"}
    assert onnx["fp32"] in written and onnx["int8"] in written
    onnx["fp16"] = convert(onnx["fp32"], src_format="onnx", target="onnx-fp16", out=out / "digits.fp16.onnx")[-1]
    return {"onnx": onnx, "plans": _plans(onnx, out, "digits"), "x": x, "labels": labels}


@pytest.fixture(scope="module")
def cifar(tensorrt_gpu, tmp_path_factory):
    """A Lua DenseNet-BC (L=40, k=12) ``.t7`` written here, as FP32/FP16 ONNX and plans; 360 real (upscaled) digits."""
    out = tmp_path_factory.mktemp("cifar")
    src = out / "cifar10-densenet-bc-l40-k12.t7"
    src.write_bytes(dumps(lua_densenet(seeded_model(LUA_BC40, digits_32("train")[:256]))))
    fp32 = convert(src, src_format="t7", target="onnx", out=out / "cifar.onnx")[-1]
    fp16 = convert(fp32, src_format="onnx", target="onnx-fp16", out=out / "cifar.fp16.onnx")[-1]
    onnx = {"fp32": fp32, "fp16": fp16}
    meta, _ = read_onnx_meta(fp32)
    return {"onnx": onnx, "plans": _plans(onnx, out, "cifar"), "x": normalise(digits_32("test"), meta.preprocess)}


@pytest.fixture(scope="module")
def densenet121(tensorrt_gpu, tmp_path_factory):
    """A seeded densenet121 (no pretrained weights offline) as an FP32 ONNX and plan; 30 real digits at 224×224."""
    import torch

    out = tmp_path_factory.mktemp("densenet121")
    torch.manual_seed(0)
    pth = save_checkpoint(out / "densenet121.pth", dnet.create_model("densenet121").eval())
    fp32 = convert(pth, src_format="pth", target="onnx", out=out / "d121.onnx", preprocess="torch7")[-1]
    meta, _ = read_onnx_meta(fp32)
    digits = open_dataset("digits", split="test").images[:30]
    x = normalise(np.ascontiguousarray(digits.repeat(28, axis=1).repeat(28, axis=2)), meta.preprocess)  # 8·28 = 224
    return {"onnx": {"fp32": fp32}, "plans": _plans({"fp32": fp32}, out, "d121"), "x": x}


@pytest.fixture(scope="module")
def k32(tensorrt_gpu, tmp_path_factory):
    """A k = 32 DenseNet as an INT8 ONNX in the TensorRT layout (what `--to trt` gives TensorRT) and its plan."""
    out = tmp_path_factory.mktemp("k32")
    images = digits_32("train")
    pth = save_checkpoint(out / "k32.pth", (model := seeded_model(K32, images[:256])), model.meta)
    calib = CalibrationSet(images=images[256:], count=256, name="digits/train")
    int8 = out / "k32.int8-trt.onnx"
    # what TensorRT builds from the file is checked here, not its accuracy (random weights): no INT8 check
    convert(pth, src_format="pth", target="onnx-int8", out=int8,
            int8=Int8Options(calib=calib, target="tensorrt", check_images=0))
    return {"onnx": int8, "plan": build_plan(int8, out / "k32.int8.plan", BuildOptions(profile=(1, 8, 32)))}


def _run(models, precision):
    x = models["x"]
    ref = onnx_runtime_cpu(models["onnx"][precision], x)
    with engines.open(models["plans"][precision]) as engine:
        assert engine.kind == "tensorrt" and engine.input_shape == (-1, *x.shape[1:])
        got = engine(x)  # more rows than the profile's max (32): split into chunks
    assert got.dtype == np.float32 and got.shape == ref.shape
    return ref, got


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trained_digits_plan_agrees_with_onnx_runtime_cpu(digits, precision):
    ref, got = _run(digits, precision)
    if precision in TOLERANCE:
        assert rel_l2(ref, got) <= TOLERANCE[precision], f"{precision}: relative error {rel_l2(ref, got):.2e}"
    if precision in AGREEMENT:
        agreement = top1_agreement(ref, got)
        assert agreement >= AGREEMENT[precision], f"{precision}: top-1 agreement {agreement:.4f} on 360 digits"
    labels = digits["labels"]
    correct = [int(np.sum(logits.argmax(1) == labels)) for logits in (ref, got)]
    assert abs(correct[0] - correct[1]) <= 2, f"{precision}: {correct[1]} vs {correct[0]} of {len(labels)} correct"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_lua_fixture_plan_matches_onnx_runtime_cpu(cifar, precision):
    ref, got = _run(cifar, precision)
    assert rel_l2(ref, got) <= TOLERANCE[precision], f"{precision}: relative error {rel_l2(ref, got):.2e}"


def test_random_densenet121_fp32_plan_matches_onnx_runtime_cpu(densenet121):
    ref, got = _run(densenet121, "fp32")  # relative error only: a random model's top-1 is a near-tie
    assert rel_l2(ref, got) <= TOLERANCE["fp32"], f"relative error {rel_l2(ref, got):.2e}"


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


def test_int8_plan_stores_its_layers_and_the_profiler_times_them(digits):
    layers = read_layers(digits["plans"]["int8"])
    assert summarise(layers)["layers_by_precision"].get("int8", 0) > 0
    with engines.open(digits["plans"]["int8"]) as engine:
        times = engine.layer_times(digits["x"][:8], runs=3)
    # the profiler's names are not compared with the inspector's: Myelin reports its kernels under other names
    assert times and all(ms >= 0 for _, ms in times) and sum(ms for _, ms in times) > 0


def test_k32_int8_plan_has_no_reformats_beyond_the_bound_and_its_convolutions_run_in_int8(k32):
    import onnx

    proto = onnx.load(str(k32["onnx"]))
    ops = {node.name: node.op_type for node in proto.graph.node}
    convs = sum(op == "Conv" for op in ops.values())
    assert lint(proto)["concat-offset-32"].count == 0  # the premise: no copies TensorRT would need for alignment
    summary = summarise(read_layers(k32["plan"]), ops)
    assert summary["reformats"] <= MAX_REFORMATS, summary["reformats_by_conversion"]
    int8_convs = summary["onnx_nodes_by_op"].get("Conv", {}).get("int8", 0)
    assert int8_convs >= INT8_CONV_SHARE * convs, f"{int8_convs} of {convs} ONNX Conv nodes in int8: {summary}"


def test_cuda_graph_replays_give_the_same_logits(digits):
    x = digits["x"][:40]  # two chunks (32 + 8): both replayed from one captured shape of 32
    with engines.open(digits["plans"]["fp32"]) as engine:
        plain = engine(x)
        engine.use_cuda_graph()
        graphed = [engine(x), engine(x)]
    for y in graphed:
        np.testing.assert_allclose(y, plain, rtol=1e-5, atol=1e-5)


def test_plan_carries_the_onnx_metadata_and_this_gpu(digits):
    import tensorrt
    import torch

    side = read_sidecar(digits["plans"]["int8"])
    assert side.tensorrt_version == tensorrt.__version__
    assert side.compute_capability == tuple(torch.cuda.get_device_capability())
    assert side.gpu_name == torch.cuda.get_device_name()
    assert side.onnx_sha256 == sha256_file(digits["onnx"]["int8"])
    assert side.meta.precision == "int8" and side.meta.num_classes == 10 and side.meta.calibration
    assert side.profile["max"] == [32, 3, 8, 8]


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
