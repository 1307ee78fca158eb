"""dnet.engines.onnxruntime: runs dnet and foreign ONNX files, reads their metadata, refuses what it cannot run."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dnet import engines
from dnet.core.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from dnet.engines import onnxruntime as ort_engine
from tests.helpers.models import CIFAR, tiny_model, tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("eng"))


def test_engines_open_runs_an_onnx_file_like_pytorch(tiny):
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    with engines.open(tiny) as eng:
        assert eng.kind == "onnxruntime" and eng.device == "cpu"
        assert eng.input_shape == (-1, 3, 32, 32)
        assert eng.meta.preprocess == CIFAR and eng.meta.num_classes == 5 and eng.meta.precision == "fp32"
        y = eng(x)
    with torch.inference_mode():
        ref = tiny_model()(torch.from_numpy(x)).numpy()
    assert y.dtype == np.float32 and y.shape == (3, 5)
    assert np.max(np.abs(y - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


def test_thread_count_is_honoured(tiny):
    eng = ort_engine.open_file(tiny, threads=1)
    assert eng.session.get_session_options().intra_op_num_threads == 1


def test_a_non_dnet_onnx_runs_with_no_metadata(tmp_path, tiny):
    proto = onnx.load(str(tiny))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with engines.open(foreign) as eng:
        assert eng.meta is None and eng.input_shape == (-1, 3, 32, 32)
        assert eng(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 5)


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_a_provider_that_is_not_installed_is_one_clear_line(tiny, provider):
    import onnxruntime as ort

    name = ort_engine.PROVIDERS[provider]
    if name in ort.get_available_providers():
        pytest.skip(f"{name} is installed here")
    with pytest.raises(NotInstalledError, match=f"ONNX Runtime here has no {name} \\(available: .*CPUExecutionProvider\\); it needs onnxruntime-gpu"):
        engines.open(tiny, provider=provider)


GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


class FallbackSession:
    """What ort.InferenceSession does when a listed provider's libraries cannot load: it runs on the next one."""

    created: list = []

    def __init__(self, source, options, providers, **kwargs):
        FallbackSession.created.append(providers)
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.running = names[1:] if names[0] != "CPUExecutionProvider" else names
        self.kwargs, self.fallback = kwargs, True

    def get_providers(self):
        return self.running

    def disable_fallback(self):
        self.fallback = False


@pytest.mark.parametrize("provider, message", [
    ("tensorrt", "ONNX Runtime could not start TensorrtExecutionProvider and fell back to CUDAExecutionProvider: "
                 "TensorRT's libnvinfer (and the CUDA and cuDNN libraries) that onnxruntime-gpu was built for did not "
                 "load (ONNX Runtime's log at severity 1 says which)"),
    ("cuda", "ONNX Runtime could not start CUDAExecutionProvider and fell back to CPUExecutionProvider: the CUDA and "
             "cuDNN libraries (libcudart, libcublas, libcudnn) that onnxruntime-gpu was built for did not load "
             "(ONNX Runtime's log at severity 1 says which)"),
])
def test_a_gpu_provider_that_falls_back_silently_is_refused(tiny, tmp_path, monkeypatch, provider, message):
    """Defect 1: get_available_providers() lists what the wheel was built with, not what can load."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_PROVIDERS)
    monkeypatch.setattr(ort, "InferenceSession", FallbackSession)
    with pytest.raises(NotInstalledError) as e:
        engines.open(tiny, provider=provider) if provider == "cuda" else ort_engine.open_file(
            tiny, provider=provider, trt_cache_dir=tmp_path)
    assert str(e.value) == message


def test_the_session_is_made_and_runs_without_onnxruntime_s_fallback(tiny):
    sess = ort_engine.session(tiny)
    assert sess._enable_fallback is False  # what InferenceSession.disable_fallback() sets; run() then never retries


class FailingSession(FallbackSession):
    """A GPU session as ONNX Runtime makes it without fallback: creation or run raises the provider's error."""

    runs = 0
    fail_at = "create"

    def __init__(self, source, options, providers, **kwargs):
        assert kwargs == {"enable_fallback": 0}
        if FailingSession.fail_at == "create":
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 100: no CUDA-capable device is detected "
                               "; GPU=0\nmore")
        super().__init__(source, options, providers)
        self.running = [p[0] if isinstance(p, tuple) else p for p in providers]

    def get_inputs(self):
        return [types.SimpleNamespace(name="input", shape=["N", 3, 32, 32], type="tensor(float)")]

    def get_outputs(self):
        return [types.SimpleNamespace(name="logits")]

    def run(self, names, feed):
        FailingSession.runs += 1
        assert not self.fallback  # ONNX Runtime would otherwise print "EP Error ... Falling back" and retry on CPU
        raise RuntimeError("EPFail: CUDA error cudaErrorIllegalAddress: an illegal memory access was encountered")


def test_a_gpu_provider_that_fails_to_start_is_refused_with_its_own_error(tiny, monkeypatch, capsys):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_PROVIDERS)
    monkeypatch.setattr(ort, "InferenceSession", FailingSession)
    monkeypatch.setattr(FailingSession, "fail_at", "create")
    with pytest.raises(NotInstalledError) as e:
        engines.open(tiny, provider="cuda")
    assert str(e.value) == ("ONNX Runtime could not start CUDAExecutionProvider: [ONNXRuntimeError] : 1 : FAIL : CUDA "
                            "failure 100: no CUDA-capable device is detected ; GPU=0; it needs " + ort_engine.NEEDS["cuda"])
    assert capsys.readouterr().out == ""


def test_a_gpu_run_that_fails_is_refused_with_the_provider_s_error_not_retried_on_the_cpu(tiny, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_PROVIDERS)
    monkeypatch.setattr(ort, "InferenceSession", FailingSession)
    monkeypatch.setattr(FailingSession, "fail_at", "run")
    monkeypatch.setattr(FailingSession, "runs", 0)
    engine = engines.open(tiny, provider="cuda")
    with pytest.raises(EngineError) as e:
        engine.run(np.zeros((2, 3, 32, 32), np.float32))
    assert str(e.value) == (f"{tiny.name}: ONNX Runtime cannot run it on CUDAExecutionProvider, and dnet does not fall "
                            "back (EPFail: CUDA error cudaErrorIllegalAddress: an illegal memory access was encountered)")
    assert FailingSession.runs == 1


def _typed(tmp_path, precision: str) -> Path:
    """The tiny model as an FP16 file (float16 initializers and casts) or an INT8 Q/DQ file (one Q/DQ pair)."""
    proto = onnx.load(str(tiny_onnx(tmp_path, name=f"src-{precision}.onnx")))
    if precision == "fp16":
        proto.graph.node.insert(0, helper.make_node("Cast", ["input"], ["input_h"], to=TensorProto.FLOAT16))
    if precision == "int8":
        proto.graph.node.insert(0, helper.make_node("QuantizeLinear", ["input", "s"], ["input_q"]))
    path = tmp_path / f"{precision}.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("precision, int8, fp16", [("fp32", False, False), ("int8", True, False), ("fp16", False, True)])
def test_tensorrt_provider_is_told_the_file_s_precision_profile_and_versioned_caches(tmp_path, monkeypatch, precision,
                                                                                     int8, fp16):
    """Defect 9: the TensorRT provider builds weakly typed networks; dnet tells it what the typed ONNX file needs."""
    import onnxruntime as ort

    FallbackSession.created.clear()
    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_PROVIDERS)
    monkeypatch.setattr(ort, "InferenceSession", lambda source, options, providers, **kw: FallbackSession.created.append(
        providers) or types.SimpleNamespace(get_providers=lambda: GPU_PROVIDERS, disable_fallback=lambda: None))
    monkeypatch.setattr(ort_engine, "tensorrt_version", lambda: "10.16.1.11")
    ort_engine.session(_typed(tmp_path, precision), provider="tensorrt", trt_cache_dir=tmp_path / "cache")
    (name, options), *rest = FallbackSession.created[0]
    folder = tmp_path / "cache" / f"ort-{ort.__version__}_trt-10.16.1.11"
    assert name == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options == {
        "trt_int8_enable": int8, "trt_fp16_enable": fp16,
        "trt_profile_min_shapes": "input:1x3x32x32", "trt_profile_opt_shapes": "input:8x3x32x32",
        "trt_profile_max_shapes": "input:32x3x32x32",
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder),
    }
    assert folder.is_dir()


def test_typed_precision_reads_the_graph_not_the_file_name(tmp_path):
    assert [ort_engine.typed_precision(onnx.load(str(_typed(tmp_path, p)))) for p in ("fp32", "int8", "fp16")] == [
        "fp32", "int8", "fp16"]


def test_unknown_provider_is_a_usage_error(tiny):
    with pytest.raises(UsageError, match="provider 'tpu' is not one of the onnxruntime engine's: cpu, cuda, tensorrt"):
        engines.open(tiny, provider="tpu")


def test_corrupt_onnx_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \xff\xfe")
    with pytest.raises(FileFormatError, match="bad.onnx: not a readable ONNX file"):
        engines.open(bad)
