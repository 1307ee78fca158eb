"""Stand-ins for TensorRT on machines without it, shared by the build, engine and sidecar tests.

``fake_tensorrt`` records what the builder is asked to do; ``fake_runtime_tensorrt`` runs a plan on the CPU: its
"GPU kernel" reads and writes the tensors at the addresses it is given, y = flatten(x) @ W. That the real module
has every name used is tests/converters/test_tensorrt_api.py's job, that it builds tests/converters/test_tensorrt_gpu.py's.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from dnet import DISTRIBUTION
from dnet.artifact import ArtifactMeta
from dnet.artifact.sidecar import EngineSidecar
from dnet.converters.tensorrt import BuildOptions
from dnet.data.specs import get_spec

INSTALL = f"TensorRT is not installed: pip install '{DISTRIBUTION}[tensorrt]' (needs NVIDIA's package index)"
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


