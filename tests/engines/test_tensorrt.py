"""The TensorRT engine without TensorRT or a GPU: batching, the refusals, and the run logic on the CPU through a
stand-in ``tensorrt`` (tests/engines/tensorrt_standins.py)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnet import engines
from dnet.artifact.sidecar import write_sidecar
from dnet.engines.tensorrt import split_batches
from dnet.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from tests.engines.tensorrt_standins import INSTALL, META, W, fake_runtime_tensorrt, sidecar

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------------------
# Batching.


def test_split_batches_examples():
    assert split_batches(0, 32) == []
    assert split_batches(1, 32) == [(0, 1)]
    assert split_batches(32, 32) == [(0, 32)]
    assert split_batches(33, 32) == [(0, 32), (32, 33)]
    assert split_batches(100, 32) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        split_batches(4, 0)


@given(st.integers(0, 1000), st.integers(1, 128))
def test_split_batches_covers_every_row_once_in_order(n, max_batch):
    chunks = split_batches(n, max_batch)
    assert len(chunks) == -(-n // max_batch)
    assert [i for a, b in chunks for i in range(a, b)] == list(range(n))
    assert all(1 <= b - a <= max_batch for a, b in chunks)



def test_modules_do_not_import_tensorrt():
    code = "import sys, dnet.converters.tensorrt, dnet.engines.tensorrt; print(sorted(m for m in sys.modules if 'tensorrt' == m))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"



@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError



def test_open_plan_without_tensorrt_says_so(tmp_path, no_tensorrt):
    (tmp_path / "x.plan").write_bytes(b"plan")
    with pytest.raises(NotInstalledError) as e:
        engines.open(tmp_path / "x.plan")
    assert str(e.value) == f"{INSTALL}; cannot run x.plan"


def test_open_plan_refuses_a_provider_it_does_not_have(tmp_path):
    (tmp_path / "x.plan").write_bytes(b"plan")
    with pytest.raises(UsageError, match=r"^provider 'cpu' is not one of the tensorrt engine's: cuda"):
        engines.open(tmp_path / "x.plan", provider="cpu")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A stand-in tensorrt module and GPU: enough for open_file to reach its sidecar checks."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.16.1.11"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr("dnet.engines.tensorrt.cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    return fake


def test_open_plan_refuses_missing_sidecar_edited_capability_and_replaced_plan(tmp_path, fake_gpu):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"serialized engine")
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json is missing"):
        engines.open(plan)
    write_sidecar(plan, sidecar(plan_sha256=hashlib.sha256(b"serialized engine").hexdigest(), compute_capability=(9, 0)))
    with pytest.raises(EngineError, match=r"^m\.plan was built for a GPU of compute capability 9\.0"):
        engines.open(plan)
    plan.write_bytes(b"another engine")
    with pytest.raises(EngineError, match=r"^m\.plan is not the plan its sidecar describes \(sha256 differs\)"):
        engines.open(plan)



# ---------------------------------------------------------------------------------------------------------------
# The engine's run logic (chunks, padding, named tensors, dtypes), on the CPU through a stand-in tensorrt whose
# "GPU kernel" reads and writes the tensors at the addresses it is given: y = flatten(x) @ W.

@pytest.fixture
def cpu_engine(tmp_path, monkeypatch):
    """A plan with profile 2,3,4 and the stand-in tensorrt; returns a function opening it."""
    import torch

    import dnet.engines.tensorrt as et

    monkeypatch.setattr(et, "DEVICE", "cpu")
    monkeypatch.setattr(et, "cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: __import__("contextlib").nullcontext())
    plan = tmp_path / "m.plan"

    def open_plan(input_dtype="FLOAT", plan_bytes=b"serialized engine", **changes):
        trt = fake_runtime_tensorrt("10.16.1.11", input_dtype)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        plan.write_bytes(plan_bytes)
        profile = {"min": [2, 3, 4, 4], "opt": [3, 3, 4, 4], "max": [4, 3, 4, 4]}
        write_sidecar(plan, sidecar(plan="m.plan", plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
                                    profile=profile, **changes))
        return engines.open(plan), trt

    return open_plan


def test_engine_splits_pads_and_returns_float32_logits(cpu_engine):
    engine, trt = cpu_engine()
    x = np.random.default_rng(0).standard_normal((11, 3, 4, 4)).astype(np.float32)
    with engine:
        assert (engine.kind, engine.input_shape, engine.meta) == ("tensorrt", (-1, 3, 4, 4), META)
        y = engine(x)
        one = engine(x[:1])
    assert y.dtype == np.float32 and y.shape == (11, 5)
    np.testing.assert_allclose(y, x.reshape(11, 48) @ W, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one, x[:1].reshape(1, 48) @ W, rtol=1e-5, atol=1e-5)
    # 11 rows with a profile of max 4: chunks of 4, 4, 3; one row with min 2: padded to 2.
    assert [s[0] for s in trt.seen["shapes"]] == [4, 4, 3, 2]
    assert trt.seen["host_code"] is None  # not version-compatible: no embedded lean runtime allowed


def test_engine_feeds_float16_inputs_and_allows_host_code_for_version_compatible_plans(cpu_engine):
    engine, trt = cpu_engine(input_dtype="HALF", version_compatible=True)
    x = np.random.default_rng(1).standard_normal((5, 3, 4, 4)).astype(np.float32)
    with engine:
        y = engine(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x.astype(np.float16).astype(np.float32).reshape(5, 48) @ W, rtol=1e-4, atol=1e-4)
    assert trt.seen["host_code"] == ("engine_host_code_allowed", True)


def test_engine_refuses_a_plan_tensorrt_cannot_deserialize(cpu_engine):
    with pytest.raises(EngineError) as e:
        cpu_engine(plan_bytes=b"truncated")
    assert str(e.value) == "TensorRT could not deserialize m.plan; rebuild it from m.onnx"
