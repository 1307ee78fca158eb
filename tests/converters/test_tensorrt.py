"""What of the TensorRT path runs without TensorRT: options, sidecar, compatibility, batching, and the error paths.

The build flow itself is driven here through a stand-in ``tensorrt`` module that records what the builder is asked
to do; that the real module has every name used is test_tensorrt_api.py's job, that it builds is test_tensorrt_gpu.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import dnet.converters.tensorrt as ct
from dnet import engines
from dnet.converters.tensorrt import (
    BuildOptions,
    EngineSidecar,
    build_plan,
    check_compatible,
    parse_batch_profile,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from dnet.artifact import ArtifactMeta
from dnet.data.specs import get_spec
from dnet.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from dnet.files import sha256_file
from dnet.engines.tensorrt import split_batches

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "TensorRT is not installed: pip install 'dnet[tensorrt]' (needs NVIDIA's package index)"
META = ArtifactMeta(
    model="custom", num_classes=5, input_size=4, preprocess=get_spec("cifar10"), precision="int8",
    source="tiny.pth", source_sha256="ab" * 32, config={"growth_rate": 4},
    calibration={"method": "percentile", "images": 64, "data": "digits"}, dnet_version="0.1.0",
)


def tiny_onnx(path: Path, meta: ArtifactMeta | None = META) -> Path:
    """input N×3×4×4 -> Flatten -> MatMul -> logits N×5, with dnet metadata."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [48, 5], np.linspace(-1, 1, 240, dtype=np.float32))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
         helper.make_node("MatMul", ["flat", "w"], ["logits"], name="fc")],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if meta is not None:
        helper.set_model_props(model, meta.to_strings())
    onnx.save(model, str(path))
    return path


def sidecar(**changes) -> EngineSidecar:
    base = EngineSidecar(
        plan="m.plan", plan_sha256="0" * 64, tensorrt_version="10.16.1.11", gpu_name="NVIDIA A10",
        compute_capability=(8, 6), input_name="input",
        profile={"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]},
        onnx="m.onnx", onnx_sha256="1" * 64, built_at="2026-11-25T08:00:00+00:00", build_seconds=12.5,
        options=BuildOptions().to_dict(), meta=META,
    )
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------------------------------------------
# Options.


def test_parse_batch_profile_accepts_min_opt_max_and_one_number():
    assert parse_batch_profile("1,8,32") == (1, 8, 32)
    assert parse_batch_profile(" 2, 4 ,4") == (2, 4, 4)
    assert parse_batch_profile("16") == (16, 16, 16)


@pytest.mark.parametrize(
    "text, message",
    [
        ("8,1,32", "--batch profile '8,1,32' must satisfy 1 <= min <= opt <= max"),
        ("0,1,2", "--batch profile '0,1,2' must satisfy 1 <= min <= opt <= max"),
        ("1,64,32", "--batch profile '1,64,32' must satisfy 1 <= min <= opt <= max"),
        ("1,8", "--batch profile '1,8' is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)"),
        ("1,8,x", "--batch profile '1,8,x' is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)"),
        ("1.5,2,4", "--batch profile '1.5,2,4' is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)"),
    ],
)
def test_parse_batch_profile_refuses_with_one_line(text, message):
    with pytest.raises(UsageError) as e:
        parse_batch_profile(text)
    assert str(e.value) == message


def test_build_options_defaults_and_refusals():
    options = BuildOptions()
    assert (options.batch, options.workspace_mib, options.opt_level, options.timing_cache) == ((1, 8, 32), None, None, None)
    assert (options.version_compatible, options.hardware_compat, options.tf32) == (False, "none", False)
    with pytest.raises(UsageError, match=r"^hardware compatibility 'turing' is not one of: none, ampere\+, same-cc$"):
        BuildOptions(hardware_compat="turing")
    with pytest.raises(UsageError, match=r"^builder optimization level must be 0\.\.5, got 6$"):
        BuildOptions(opt_level=6)
    with pytest.raises(UsageError, match=r"^workspace must be at least 1 MiB, got 0$"):
        BuildOptions(workspace_mib=0)
    with pytest.raises(UsageError, match=r"^--batch profile 4,2,8 must satisfy"):
        BuildOptions(batch=(4, 2, 8))


# ---------------------------------------------------------------------------------------------------------------
# Sidecar.


def test_sidecar_round_trips_through_its_json_file(tmp_path):
    original = sidecar(version_compatible=True, hardware_compat="same-cc")
    path = write_sidecar(tmp_path / "m.plan", original)
    assert path == tmp_path / "m.plan.json" == sidecar_path(tmp_path / "m.plan")
    data = json.loads(path.read_text())
    assert data["format"] == "dnet.tensorrt-plan" and data["format_version"] == 1
    assert data["compute_capability"] == [8, 6] and data["meta"]["calibration"]["images"] == 64
    back = read_sidecar(tmp_path / "m.plan")
    assert back == original
    assert (back.min_batch, back.max_batch) == (1, 32)
    assert back.meta.preprocess == get_spec("cifar10")
    assert [p.name for p in tmp_path.iterdir()] == ["m.plan.json"]  # no temporary file left


def test_read_sidecar_refuses_missing_corrupt_and_foreign_files(tmp_path):
    plan = tmp_path / "m.plan"
    with pytest.raises(FileFormatError) as e:
        read_sidecar(plan)
    assert str(e.value) == (
        "m.plan.json is missing: a dnet plan needs the sidecar written beside it by dnet convert --to trt; "
        "rebuild m.plan from its ONNX file"
    )
    sidecar_path(plan).write_text('{"format": "dnet.tensorrt-plan", "format_version": 1,')
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json: sidecar is not valid JSON"):
        read_sidecar(plan)
    sidecar_path(plan).write_text('{"engine": "something else"}')
    with pytest.raises(FileFormatError, match=r'^m\.plan\.json: not a dnet TensorRT sidecar'):
        read_sidecar(plan)
    data = sidecar().to_dict()
    del data["tensorrt_version"]
    sidecar_path(plan).write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json: sidecar is incomplete or malformed \(TypeError"):
        read_sidecar(plan)
    data = sidecar().to_dict() | {"compute_capability": "eight"}
    sidecar_path(plan).write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json: sidecar is incomplete or malformed"):
        read_sidecar(plan)


# ---------------------------------------------------------------------------------------------------------------
# Compatibility.

REBUILD = "rebuild it here: dnet convert m.onnx --from onnx --to trt -o m.plan"


def test_same_version_and_compute_capability_is_accepted():
    assert check_compatible(sidecar(), "10.16.1.11", (8, 6)) is None


def test_other_tensorrt_version_is_refused_with_how_to_rebuild():
    with pytest.raises(EngineError) as e:
        check_compatible(sidecar(), "10.16.0.72", (8, 6))
    assert str(e.value) == (
        f"m.plan was built with TensorRT 10.16.1.11 but this is TensorRT 10.16.0.72; {REBUILD} "
        "(or build with --version-compatible)"
    )


def test_version_compatible_plan_runs_on_later_versions_only():
    vc = sidecar(version_compatible=True)
    assert check_compatible(vc, "10.16.1.11", (8, 6)) is None
    assert check_compatible(vc, "11.4.0.106", (8, 6)) is None  # NVIDIA: 10.x version-compatible plans run on 11.x
    for older_or_too_new in ("10.9.0.34", "12.0.0.1"):
        with pytest.raises(EngineError, match=rf"built version-compatible with TensorRT 10\.16\.1\.11, which "
                                              rf"TensorRT {older_or_too_new} cannot run"):
            check_compatible(vc, older_or_too_new, (8, 6))


def test_edited_compute_capability_in_the_sidecar_is_refused(tmp_path):
    write_sidecar(tmp_path / "m.plan", sidecar())
    path = sidecar_path(tmp_path / "m.plan")
    data = json.loads(path.read_text())
    data["compute_capability"] = [7, 5]
    path.write_text(json.dumps(data))
    edited = read_sidecar(tmp_path / "m.plan")
    with pytest.raises(EngineError) as e:
        check_compatible(edited, "10.16.1.11", (8, 6))
    assert str(e.value) == (
        "m.plan was built for a GPU of compute capability 7.5 (NVIDIA A10) but this GPU has compute capability 8.6; "
        f"{REBUILD} (or build with --hardware-compat ampere+)"
    )


def test_hardware_compatibility_levels():
    ampere = sidecar(hardware_compat="ampere+")
    for cc in ((8, 0), (8, 9), (9, 0), (12, 0)):
        assert check_compatible(ampere, "10.16.1.11", cc) is None
    with pytest.raises(EngineError, match=r"built for Ampere or newer GPUs .* compute capability 7\.5"):
        check_compatible(ampere, "10.16.1.11", (7, 5))
    same = sidecar(hardware_compat="same-cc")
    assert check_compatible(same, "10.16.1.11", (8, 6)) is None
    with pytest.raises(EngineError, match=r"compute capability 8\.6 \(NVIDIA A10\) but this GPU has compute capability 8\.9"):
        check_compatible(same, "10.16.1.11", (8, 9))


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


# ---------------------------------------------------------------------------------------------------------------
# Without TensorRT or a GPU.


def test_modules_do_not_import_tensorrt():
    code = "import sys, dnet.converters.tensorrt, dnet.engines.tensorrt; print(sorted(m for m in sys.modules if 'tensorrt' == m))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError


def test_build_without_tensorrt_says_so_and_keeps_the_onnx(tmp_path, no_tensorrt):
    onnx_path = tiny_onnx(tmp_path / "m.int8.onnx")
    before = sha256_file(onnx_path)
    with pytest.raises(NotInstalledError) as e:
        build_plan(onnx_path, tmp_path / "m.plan")
    assert str(e.value) == f"{INSTALL}; the INT8 ONNX is at {onnx_path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx"]
    assert sha256_file(onnx_path) == before


def test_build_without_a_gpu_says_so(tmp_path, monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    onnx_path = tiny_onnx(tmp_path / "m.onnx", dataclasses.replace(META, precision="fp16"))
    with pytest.raises(NotInstalledError) as e:
        build_plan(onnx_path, tmp_path / "m.plan")
    assert str(e.value) == f"no CUDA GPU found (torch.cuda.is_available() is False); the FP16 ONNX is at {onnx_path}"
    assert not (tmp_path / "m.plan").exists()


def test_build_refuses_a_file_that_is_not_onnx(tmp_path, no_tensorrt):
    (tmp_path / "m.onnx").write_bytes(b"\xff\xfe not protobuf" * 10)
    with pytest.raises(FileFormatError, match=r"m\.onnx: not a readable ONNX file"):
        build_plan(tmp_path / "m.onnx", tmp_path / "m.plan")
    with pytest.raises(FileFormatError, match=r"absent\.onnx: no such ONNX file"):
        build_plan(tmp_path / "absent.onnx", tmp_path / "m.plan")


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
# The build flow, through a stand-in tensorrt module that records what it is asked.


def fake_tensorrt(version: str, *, parse_errors=(), build_fails=False) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls = {}
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(VERSION_COMPATIBLE="VERSION_COMPATIBLE", TF32="TF32")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(
        NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"
    )

    class Error:
        def __init__(self, node, name, op, desc):
            self._node, self._name, self._op, self._desc = node, name, op, desc

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

        def desc(self):
            return self._desc

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return types.SimpleNamespace(name="input")

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+tuned"

    class Config:
        def __setattr__(self, name, value):
            calls[name] = value

        def set_memory_pool_limit(self, pool, size):
            calls["pool"] = (pool, size)

        def set_flag(self, flag):
            calls.setdefault("flags", []).append(flag)

        def clear_flag(self, flag):
            calls.setdefault("cleared", []).append(flag)

        def create_timing_cache(self, data):
            calls["cache_in"] = bytes(data)
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls["cache_ignore_mismatch"] = ignore_mismatch
            object.__setattr__(self, "cache", cache)

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            calls["profile"] = profile.shapes

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return None if build_fails else b"PLAN:" + repr(sorted(calls)).encode()

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parse_errors)

        def parse_from_file(self, path):
            calls["parsed"] = path
            return not parse_errors

        def get_error(self, i):
            return Error(*parse_errors[i])

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(ct, "cuda_device", lambda what: ("NVIDIA A10", (8, 6)))


@pytest.mark.parametrize("version, flags", [("10.9.0.34", 1), ("11.4.0.106", 0)])
def test_build_asks_tensorrt_for_a_strongly_typed_network_with_every_option(tmp_path, monkeypatch, gpu, version, flags):
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_path = tiny_onnx(tmp_path / "m.int8.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"earlier")
    options = BuildOptions(batch=(2, 4, 16), workspace_mib=64, opt_level=2, timing_cache=cache,
                           version_compatible=True, hardware_compat="ampere+")
    plan = build_plan(onnx_path, tmp_path / "m.plan", options)

    assert plan == tmp_path / "m.plan" and plan.read_bytes().startswith(b"PLAN:")
    assert trt.calls["network_flags"] == flags  # 10.x: 1 << STRONGLY_TYPED; 11.x: always strongly typed
    assert trt.calls["parsed"] == str(onnx_path)
    assert trt.calls["pool"] == ("WORKSPACE", 64 << 20)
    assert trt.calls["builder_optimization_level"] == 2
    assert trt.calls["flags"] == ["VERSION_COMPATIBLE"]
    assert trt.calls["cleared"] == ["TF32"]  # an FP32 layer computes in FP32 unless tf32=True
    assert trt.calls["hardware_compatibility_level"] == "AMPERE_PLUS"
    assert trt.calls["profile"] == ("input", (2, 3, 4, 4), (4, 3, 4, 4), (16, 3, 4, 4))
    assert trt.calls["cache_in"] == b"earlier" and trt.calls["cache_ignore_mismatch"] is False
    assert cache.read_bytes() == b"earlier+tuned"

    side = read_sidecar(plan)
    assert side.plan_sha256 == sha256_file(plan) and side.onnx_sha256 == sha256_file(onnx_path)
    assert (side.tensorrt_version, side.gpu_name, side.compute_capability) == (version, "NVIDIA A10", (8, 6))
    assert side.profile == {"min": [2, 3, 4, 4], "opt": [4, 3, 4, 4], "max": [16, 3, 4, 4]}
    assert (side.onnx, side.version_compatible, side.hardware_compat) == ("m.int8.onnx", True, "ampere+")
    assert side.meta == META and side.meta.calibration["images"] == 64
    assert side.options["workspace_mib"] == 64 and side.options["timing_cache"] == str(cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.plan", "m.plan.json", "timing.cache"]


def test_build_defaults_set_no_optional_option_and_start_a_fresh_timing_cache(tmp_path, monkeypatch, gpu):
    trt = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = build_plan(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert not {"pool", "builder_optimization_level", "flags", "hardware_compatibility_level"} & set(trt.calls)
    assert trt.calls["cleared"] == ["TF32"]
    assert trt.calls["cache_in"] == b""
    assert trt.calls["profile"] == ("input", (1, 3, 4, 4), (8, 3, 4, 4), (32, 3, 4, 4))
    assert read_sidecar(plan).hardware_compat == "none"


def test_build_reports_every_parser_error_with_node_names(tmp_path, monkeypatch, gpu):
    errors = [(3, "conv_3", "Conv", "unsupported auto_pad"), (7, "", "", "invalid weights type")]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", parse_errors=errors))
    with pytest.raises(EngineError) as e:
        build_plan(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert str(e.value) == (
        "TensorRT cannot parse m.onnx (2 errors): node conv_3 (Conv): unsupported auto_pad; node #7: invalid weights type"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_tf32_is_left_on_when_asked(tmp_path, monkeypatch, gpu):
    trt = fake_tensorrt("11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_plan(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", BuildOptions(tf32=True))
    assert "cleared" not in trt.calls and read_sidecar(tmp_path / "m.plan").options["tf32"] is True


def test_failed_build_leaves_no_plan(tmp_path, monkeypatch, gpu):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", build_fails=True))
    with pytest.raises(EngineError, match=r"^TensorRT could not build an engine from m\.onnx"):
        build_plan(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_ampere_plus_needs_an_ampere_gpu_to_build(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11"))
    monkeypatch.setattr(ct, "cuda_device", lambda what: ("Tesla T4", (7, 5)))
    with pytest.raises(UsageError, match=r"ampere\+ needs an Ampere or newer GPU to build on; this Tesla T4 is compute capability 7\.5$"):
        build_plan(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", BuildOptions(hardware_compat="ampere+"))


# ---------------------------------------------------------------------------------------------------------------
# The engine's run logic (chunks, padding, named tensors, dtypes), on the CPU through a stand-in tensorrt whose
# "GPU kernel" reads and writes the tensors at the addresses it is given: y = flatten(x) @ W.

W = np.linspace(-1, 1, 48 * 5, dtype=np.float32).reshape(48, 5)


def fake_runtime_tensorrt(version: str, input_dtype: str = "FLOAT"):
    import ctypes

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.seen = seen = {"shapes": [], "host_code": None}
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
    ctype = {"FLOAT": (ctypes.c_float, np.float32), "HALF": (ctypes.c_uint16, np.float16)}

    class Context:
        def __init__(self):
            self.addresses, self.shape = {}, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            seen["shapes"].append(self.shape)
            return name == "input" and 2 <= shape[0] <= 4

        def get_tensor_shape(self, name):
            return (self.shape[0], 5)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream):
            n = self.shape[0]
            raw, dtype = ctype[input_dtype]
            x = np.frombuffer((raw * (n * 48)).from_address(self.addresses["input"]), dtype=dtype).reshape(n, 48)
            y = np.frombuffer((ctypes.c_float * (n * 5)).from_address(self.addresses["logits"]), dtype=np.float32)
            y[:] = (x.astype(np.float32) @ W).ravel()
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return input_dtype if name == "input" else "FLOAT"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def __setattr__(self, name, value):
            seen["host_code"] = (name, value)

        def deserialize_cuda_engine(self, plan):
            return Engine() if plan == b"serialized engine" else None

    trt.Runtime = Runtime
    return trt


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
