"""The TensorRT engine without TensorRT or a GPU: batching, the refusals, and the run logic on the CPU through a
stand-in ``tensorrt`` (tests/helpers/tensorrt_standins.py)."""

from __future__ import annotations

import dataclasses
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
from dnet.core.artifact.sidecar import read_sidecar, write_sidecar
from dnet.core.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from dnet.engines.tensorrt import split_batches
from tests.helpers.tensorrt_standins import (
    ENGINE_LAYERS,
    INSTALL,
    META,
    W,
    fake_cuda_graphs,
    fake_runtime_tensorrt,
    fake_tensorrt,
    sidecar,
)

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
    import torch

    fake = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr("dnet.engines.tensorrt.cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0))
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


def _plan(tmp_path, **changes):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"serialized engine")
    changes = {"profile": {"min": [2, 3, 4, 4], "opt": [3, 3, 4, 4], "max": [4, 3, 4, 4]}, **changes}
    write_sidecar(plan, sidecar(plan_sha256=hashlib.sha256(b"serialized engine").hexdigest(), **changes))
    return plan


def test_a_plan_without_hardware_compatibility_runs_only_on_the_gpu_model_that_built_it(tmp_path, monkeypatch,
                                                                                           fake_gpu):
    """Defect 3: NVIDIA: without a hardware compatibility level an engine is specific to the GPU model."""
    plan = _plan(tmp_path, gpu_name="NVIDIA A40")  # compute capability 8.6, like the A10 this "machine" has
    with pytest.raises(EngineError) as e:
        engines.open(plan)
    assert str(e.value) == (
        "m.plan was built for the NVIDIA A40 and, without a hardware compatibility level, runs only on that GPU "
        "model, not on this NVIDIA A10; rebuild it here: dnet convert m.onnx --from onnx --to trt -o m.plan "
        "(or build with --hardware-compat same-cc to run on any GPU of compute capability 8.6)"
    )
    write_sidecar(plan, dataclasses.replace(read_sidecar(plan), hardware_compat="same-cc"))
    engines.open(plan).close()


def test_a_version_compatible_plan_does_not_cross_to_a_major_version_nvidia_does_not_support(tmp_path, monkeypatch):
    """Defect 4: 11.x -> 12.x is not in TensorRT's support matrix (only 8 -> 10 and 10 -> 11 cross majors)."""
    import torch

    trt12 = fake_tensorrt("11.4.0.106")
    trt12.__version__ = "12.0.0.1"
    monkeypatch.setitem(sys.modules, "tensorrt", trt12)
    monkeypatch.setattr("dnet.engines.tensorrt.cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0))
    plan = _plan(tmp_path, tensorrt_version="11.4.0.106", version_compatible=True)
    with pytest.raises(EngineError, match=r"^m\.plan was built version-compatible with TensorRT 11\.4\.0\.106, which "
                                          r"TensorRT 12\.0\.0\.1 cannot run \(needs 11\.x at least as new\)"):
        engines.open(plan)


def test_profile_limits_come_from_the_plan_and_must_match_the_sidecar(tmp_path, monkeypatch, fake_gpu):
    """Defect 7: the sidecar's text is not covered by the plan's sha256; the plan's own profile is the truth."""
    plan = _plan(tmp_path, profile={"min": [1, 3, 4, 4], "opt": [3, 3, 4, 4], "max": [64, 3, 4, 4]})
    with pytest.raises(EngineError) as e:
        engines.open(plan)
    assert str(e.value) == (
        "m.plan: the plan's optimization profile (min 2x3x4x4, opt 3x3x4x4, max 4x3x4x4) is not the one its sidecar "
        "records (min 1x3x4x4, opt 3x3x4x4, max 64x3x4x4); rebuild it from m.onnx"
    )


def test_a_plan_with_several_optimization_profiles_is_refused(tmp_path, monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", profiles=2))
    monkeypatch.setattr("dnet.engines.tensorrt.cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0))
    with pytest.raises(EngineError, match=r"^m\.plan has 2 optimization profiles; dnet builds and runs plans with "
                                          r"exactly one; rebuild it from m\.onnx$"):
        engines.open(_plan(tmp_path))


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
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0, synchronize=lambda: None))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: __import__("contextlib").nullcontext())
    plan = tmp_path / "m.plan"

    def open_plan(input_dtype="FLOAT", plan_bytes=b"serialized engine", knobs=None, **changes):
        trt = fake_runtime_tensorrt("10.16.1.11", input_dtype, **(knobs or {}))
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        plan.write_bytes(plan_bytes)
        profile = {"min": [2, 3, 4, 4], "opt": [3, 3, 4, 4], "max": [4, 3, 4, 4]}
        write_sidecar(plan, sidecar(plan="m.plan", plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
                                    profile=profile, **changes))
        return engines.open(plan), trt

    return open_plan


def test_a_runtime_that_cannot_initialise_cuda_names_the_driver_and_cuda(cpu_engine, monkeypatch):
    import dnet.engines.tensorrt_runtime as gpu_module

    monkeypatch.setattr(gpu_module, "driver_cuda", lambda: "12.2")
    monkeypatch.setattr(gpu_module, "tensorrt_cuda", lambda: "13")
    with pytest.raises(NotInstalledError) as e:
        cpu_engine(knobs={"cuda_init_fails": True})
    assert str(e.value) == ("TensorRT 10.16.1.11 could not initialise CUDA (trt.Runtime returned nullptr): the NVIDIA "
                            "driver supports CUDA 12.2, TensorRT's wheels are built for CUDA 13 (tensorrt-cu13): "
                            "install tensorrt-cu12 or a driver for CUDA 13; cannot run m.plan")


def test_engine_splits_pads_and_returns_float32_logits(cpu_engine):
    engine, trt = cpu_engine()
    x = np.random.default_rng(0).standard_normal((11, 3, 4, 4)).astype(np.float32)
    with engine:
        assert (engine.kind, engine.input_shape, engine.meta) == ("tensorrt", (-1, 3, 4, 4), META)
        assert (engine.min_batch, engine.max_batch) == (2, 4)
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


def test_a_tensor_address_tensorrt_refuses_is_an_error_before_the_run(cpu_engine):
    """Defect 8: set_tensor_address returns False for an address TensorRT cannot use; Polygraphy raises on it."""
    engine, trt = cpu_engine(knobs={"refuse_address": "logits"})
    with pytest.raises(EngineError) as e:
        engine(np.zeros((2, 3, 4, 4), np.float32))
    assert str(e.value) == ("m.plan: TensorRT refused the address of tensor 'logits' (misaligned or not device memory); "
                            "its log above says why")
    assert trt.seen["runs"] == 0


def test_cuda_graph_captures_once_per_shape_and_replays_on_the_captured_buffers(cpu_engine, monkeypatch):
    engine, trt = cpu_engine()
    rng = np.random.default_rng(2)
    with fake_cuda_graphs(monkeypatch, trt) as graphs, engine:
        engine.use_cuda_graph()
        a, b = (rng.standard_normal((3, 3, 4, 4)).astype(np.float32) for _ in range(2))
        ya, yb = engine(a), engine(b)  # one capture (after one warm-up run, as trtexec does), two replays
        assert (len(graphs), trt.seen["runs"], graphs[0].mode) == (1, 1, "thread_local")
        one = engine(a[:1])  # another shape (1 row, padded to the profile's min 2): captured again
        nine = engine(rng.standard_normal((9, 3, 4, 4)).astype(np.float32))  # chunks 4, 4, 1: one shape of 4
    assert len(graphs) == 3 and trt.seen["runs"] == 3
    np.testing.assert_allclose(ya, a.reshape(3, 48) @ W, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(yb, b.reshape(3, 48) @ W, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one, a[:1].reshape(1, 48) @ W, rtol=1e-5, atol=1e-5)
    assert nine.shape == (9, 5)


def test_per_layer_times_come_from_tensorrt_s_profiler(cpu_engine):
    engine, trt = cpu_engine()
    with engine:
        times = engine.layer_times(np.zeros((2, 3, 4, 4), np.float32), runs=4)
        assert engine.context.profiler is None  # detached again: later runs are not slowed down
    assert times == [(name, 0.25 * (i + 1) * 2) for i, name in enumerate(ENGINE_LAYERS)]
    assert trt.seen["runs"] == 4
