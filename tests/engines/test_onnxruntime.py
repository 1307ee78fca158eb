"""dnet.engines.onnxruntime: runs dnet and foreign ONNX files, reads their metadata, refuses what it cannot run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from dnet import engines
from dnet.engines import onnxruntime as ort_engine
from dnet.errors import FileFormatError, NotInstalledError, UsageError
from tests.converters.tiny_models import CIFAR, tiny_model, tiny_onnx


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


def test_tensorrt_provider_options_carry_the_engine_cache_dir(tmp_path, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    providers = ort_engine.providers_for("tensorrt", trt_cache_dir=tmp_path / "trt")
    assert providers[0] == ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path / "trt")})
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_unknown_provider_is_a_usage_error(tiny):
    with pytest.raises(UsageError, match="provider 'tpu' is not one of the onnxruntime engine's: cpu, cuda, tensorrt"):
        engines.open(tiny, provider="tpu")


def test_corrupt_onnx_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \xff\xfe")
    with pytest.raises(FileFormatError, match="bad.onnx: not a readable ONNX file"):
        engines.open(bad)
