"""Stand-ins for TensorRT on machines without it, shared by the build, engine, inspect, bench and sidecar tests.

``fake_tensorrt(version)`` is one stand-in ``tensorrt`` module for both sides: its builder records what it is asked
to do, its runtime runs a plan on the CPU (the "GPU kernel" reads and writes the tensors at the addresses it is given,
y = flatten(x) @ W), its inspector returns :data:`ENGINE_INFO`, and its execution context reports layer times to an
attached profiler. Every enum carries the real values of that TensorRT major version (:data:`ENUMS`), which
tests/converters/test_tensorrt_api.py checks against NVIDIA's bindings of 10.9, 10.16 and 11.4. That the real module
has every name used, on the class it is used on, is that test's job; that it builds, test_tensorrt_gpu.py's.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import enum
import json
import types
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from dnet import DISTRIBUTION
from dnet.converters.tensorrt import BuildOptions
from dnet.core.artifact import ArtifactMeta
from dnet.core.artifact.sidecar import EngineSidecar
from dnet.core.specs import get_spec

INSTALL = f"TensorRT is not installed: pip install '{DISTRIBUTION}[tensorrt]' (needs NVIDIA's package index)"
META = ArtifactMeta(
    model="custom", num_classes=5, input_size=4, preprocess=get_spec("cifar10"), precision="int8",
    source="tiny.pth", source_sha256="ab" * 32, config={"growth_rate": 4},
    calibration={"method": "percentile", "images": 64, "data": "digits"}, dnet_version="0.1.0",
)

# The values of the real bindings, per major version (NvInfer.h of release/10.9, 10.16 and 11.1; the wheels' own
# values are compared with these by test_tensorrt_api.py). 10.x: STRONGLY_TYPED is 1 and 0 is the deprecated
# EXPLICIT_BATCH (a weakly typed network); 11.x: STRONGLY_TYPED is 0, deprecated and ignored.
SEVERITY = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
_COMMON = {
    "MemoryPoolType": {"WORKSPACE": 0},
    "HardwareCompatibilityLevel": {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2},
    "ProfilingVerbosity": {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2},
    "LayerInformationFormat": {"ONELINE": 0, "JSON": 1},
    "TensorIOMode": {"NONE": 0, "INPUT": 1, "OUTPUT": 2},
    "DataType": {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3},
}
ENUMS = {
    10: {**_COMMON,
         "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                                           "PREFER_AOT_PYTHON_PLUGINS": 3},
         "BuilderFlag": {"FP16": 0, "INT8": 1, "TF32": 6, "VERSION_COMPATIBLE": 13}},
    11: {**_COMMON,
         "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                                           "PREFER_AOT_PYTHON_PLUGINS": 2},
         "BuilderFlag": {"TF32": 6, "VERSION_COMPATIBLE": 12}},
}


def _layer(name, layer_type, inputs, outputs, metadata=None, **fields):
    def tensors(specs):
        return [{"Name": n, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt} for n, dims, fmt in specs]

    out = {"Name": name, "LayerType": layer_type, "Inputs": tensors(inputs), "Outputs": tensors(outputs), **fields}
    if metadata is not None:
        out["Metadata"] = "\x1f".join(f"[ONNX Layer: {node}]" for node in metadata)
    return out


F32, I8_4, I8_32 = "Row major linear FP32", "Four wide channel vectorized row major Int8 format", \
    "Thirty-two wide channel vectorized row major Int8 format"
# What IEngineInspector.get_engine_information(LayerInformationFormat.JSON) returns for a DETAILED build: written
# here for a small INT8 DenseNet (node names as dnet's export names them), in TensorRT's format: the keys, the
# "Format/Datatype" strings, Origin QDQ/REFORMAT, "Reformatting CopyNode ..." names and TacticName/TacticValue as in
# NVIDIA's trt-engine-explorer examples (release/10.16, tools/experimental/trt-engine-explorer/examples/pytorch/
# resnet/A100/qat-residual/*.graph.json, written by trtexec --exportLayerInfo), and TensorRT 10's StreamId and
# Metadata ("[ONNX Layer: NAME]" joined by \x1f, as the ONNX parser writes it). One layer has no Metadata, as in
# TensorRT 8.x files, so its ONNX nodes come from its fused name.
ENGINE_INFO = {
    "Layers": [
        _layer("node_Conv_179_input_QuantizeLinear", "Reformat", [("input", [2, 3, 4, 4], F32)],
               [("q_input", [2, 3, 4, 4], I8_4)], ["node_Conv_179_input_QuantizeLinear"],
               ParameterType="Reformat", Origin="QDQ", TacticValue="0x00000000000003ea", StreamId=0),
        _layer("node_Conv_179_weight_DequantizeLinear + node_Conv_179", "CaskConvolution",
               [("q_input", [2, 3, 4, 4], I8_4)], [("conv0", [2, 8, 4, 4], I8_32)],
               ["node_Conv_179_weight_DequantizeLinear", "node_Conv_179"], ParameterType="Convolution",
               Kernel=[3, 3], OutMaps=8, Weights={"Type": "Int8", "Count": 216},
               TacticName="sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_"
                          "nchw_vect_c_32_tilesize128x128x64_stage4_warpsize2x2x1_g1_tensor16x8x32",
               TacticValue="0x1f7a3be2c4d5e6f7", StreamId=0),
        _layer("node_bn_0 + node_relu + node_Conv_181_input_QuantizeLinear", "PointWiseV2",
               [("conv0", [2, 8, 4, 4], I8_32)], [("q_relu", [2, 8, 4, 4], I8_32)],
               ["node_bn_0", "node_relu", "node_Conv_181_input_QuantizeLinear"], ParameterType="PointWise",
               TacticValue="0x0000000000000009", StreamId=0),
        _layer("node_Conv_181", "CaskConvolution", [("q_relu", [2, 8, 4, 4], I8_32)],
               [("conv1", [2, 4, 4, 4], I8_32)], ["node_Conv_181"], ParameterType="Convolution", Kernel=[1, 1],
               OutMaps=4, TacticName="sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_"
                                     "vect_c_32_nchw_vect_c_32_tilesize64x32x64_stage4_warpsize2x1x1_g1_tensor16x8x32",
               TacticValue="0x00000000000c0ffe", StreamId=0),
        _layer("Reformatting CopyNode for Input Tensor 1 to node_cat_1", "Reformat",
               [("conv1", [2, 4, 4, 4], I8_32)], [("Reformatted Input Tensor 1 to node_cat_1", [2, 4, 4, 4], F32)],
               ParameterType="Reformat", Origin="REFORMAT", TacticValue="0x00000000000003e8", StreamId=0),
        _layer("node_cat_1", "NoOp", [("Reformatted Input Tensor 1 to node_cat_1", [2, 4, 4, 4], F32)],
               [("cat1", [2, 12, 4, 4], F32)], ["node_cat_1"], TacticValue="0x0000000000000000", StreamId=0),
        _layer("node_mean + node_linear", "CaskGemmConvolution", [("cat1", [2, 12, 4, 4], F32)],
               [("linear", [2, 5, 1, 1], F32)], None, ParameterType="Convolution", OutMaps=5,
               TacticName="sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize32x32x8_stage3_warpsize1x2x1_ffma",
               TacticValue="0x000000000000051c", StreamId=0),
        _layer("copied_squeeze_after_node_linear", "NoOp", [("linear", [2, 5, 1, 1], F32)],
               [("logits", [2, 5], F32)], ["node_linear"], TacticValue="0x0000000000000000", StreamId=0),
    ],
    "Bindings": ["input", "logits"],
}
ENGINE_LAYERS = [layer["Name"] for layer in ENGINE_INFO["Layers"]]


def stub_onnx(path: Path, meta: ArtifactMeta | None = META) -> Path:
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


def engine_info_onnx(path: Path) -> Path:
    """An ONNX file whose node names and op types are the ones :data:`ENGINE_INFO` refers to, with dnet metadata.

    Only the names, op types and input matter (the stand-in builder never reads the graph); it is not a model to run.
    """
    ops = [("node_Conv_179_input_QuantizeLinear", "QuantizeLinear"), ("node_Conv_179_weight_DequantizeLinear",
           "DequantizeLinear"), ("node_Conv_179", "Conv"), ("node_bn_0", "BatchNormalization"), ("node_relu", "Relu"),
           ("node_Conv_181_input_QuantizeLinear", "QuantizeLinear"), ("node_Conv_181", "Conv"),
           ("node_cat_1", "Concat"), ("node_mean", "ReduceMean"), ("node_linear", "Gemm")]
    nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=name) for i, (name, op) in enumerate(ops)]
    nodes[0].input[0], nodes[-1].output[0] = "input", "logits"
    graph = helper.make_graph(nodes, "names", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, META.to_strings())
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


W = np.linspace(-1, 1, 48 * 5, dtype=np.float32).reshape(48, 5)
PROFILE = ((2, 3, 4, 4), (3, 3, 4, 4), (4, 3, 4, 4))  # the engine-side optimization profile (min, opt, max)


def fake_tensorrt(version: str, *, parse_errors=(), build_fails=False, input_dtype: str = "FLOAT",
                  engine_profile=PROFILE, profiles: int = 1, refuse_address: str | None = None,
                  engine_info: dict | None = ENGINE_INFO, parse_returns: bool | None = None,
                  cuda_init_fails: bool = False) -> types.ModuleType:
    """A stand-in ``tensorrt`` of ``version``; see the module docstring. Knobs make it fail the way TensorRT does.

    ``parse_returns`` is what ``parse_from_file`` returns (default: whether ``parse_errors`` is empty: 10.x can return
    True and record errors); ``cuda_init_fails`` makes Builder and Runtime raise what NVIDIA's bindings raise when CUDA
    does not initialise. ``trt.calls`` records the builder's calls, ``trt.seen`` the runtime's, ``trt.loggers`` every ILogger made and
    ``trt.logger_users`` every (class, logger) that a Builder, OnnxParser or Runtime was given.
    """
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls = {}
    trt.seen = seen = {"shapes": [], "host_code": None, "addresses": [], "capturing": None, "runs": 0}
    trt.loggers, trt.logger_users = [], []
    for name, members in ENUMS[major].items():
        setattr(trt, name, enum.IntEnum(name, members))

    class ILogger:
        Severity = enum.IntEnum("Severity", SEVERITY)

        def __init__(self):
            trt.loggers.append(self)

        def log(self, severity, msg):
            raise NotImplementedError

    for key in SEVERITY:
        setattr(ILogger, key, ILogger.Severity[key])

    class Logger(ILogger):
        def __init__(self, min_severity=ILogger.WARNING):
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity, msg):
            pass

    class IProfiler:
        def __init__(self):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.ILogger, trt.Logger, trt.IProfiler, trt.IProgressMonitor = ILogger, Logger, IProfiler, IProgressMonitor

    def uses(owner, logger):
        trt.logger_users.append((owner, logger))

    # ----- builder side -------------------------------------------------------------------------------------------

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
            calls.setdefault("cache_in", []).append(bytes(data))
            return None if bytes(data).startswith(b"corrupt") else Cache(data)  # TensorRT: None for unreadable bytes

        def set_timing_cache(self, cache, ignore_mismatch):
            calls["cache_ignore_mismatch"] = ignore_mismatch
            if cache.data.startswith(b"other-gpu") and not ignore_mismatch:
                return False  # TensorRT: a cache whose header names another device or version
            object.__setattr__(self, "cache", cache)
            return True

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            calls["profile"] = profile.shapes
            return 0

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, tuple(lo), tuple(opt), tuple(hi))

    def init_cuda():
        if cuda_init_fails:
            raise TypeError("pybind11::init(): factory function returned nullptr")

    class Builder:
        def __init__(self, logger):
            init_cuda()
            uses("Builder", logger)
            self.logger = logger

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            self.logger.log(ILogger.VERBOSE, "Original: 2 layers")
            self.logger.log(ILogger.INFO, "Total Activation Memory: 4096 bytes")
            monitor = calls.get("progress_monitor")
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic selection", "Building engine", 3)
                for step in range(3):
                    assert monitor.step_complete("Tactic selection", step) is True
                monitor.phase_finish("Tactic selection")
                assert monitor.step_complete("Building engine", 0) is True
                monitor.phase_finish("Building engine")
            return None if build_fails else b"PLAN:" + repr(sorted(calls)).encode()

    class OnnxParser:
        def __init__(self, network, logger):
            uses("OnnxParser", logger)
            self.num_errors = len(parse_errors)

        def parse_from_file(self, path):
            calls["parsed"] = path
            return not parse_errors if parse_returns is None else parse_returns

        def get_error(self, i):
            return Error(*parse_errors[i])

    # ----- runtime side -------------------------------------------------------------------------------------------

    ctype = {"FLOAT": (ctypes.c_float, np.float32), "HALF": (ctypes.c_uint16, np.float16)}

    class Context:
        def __init__(self):
            self.addresses, self.shape, self.profiler = {}, None, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            seen["shapes"].append(self.shape)
            return name == "input" and engine_profile[0][0] <= shape[0] <= engine_profile[2][0]

        def get_tensor_shape(self, name):
            return (self.shape[0], 5)

        def set_tensor_address(self, name, address):
            seen["addresses"].append(name)
            if name == refuse_address:
                return False  # TensorRT: a misaligned pointer or one that is not device memory
            self.addresses[name] = address
            return True

        def _compute(self, addresses, n):
            raw, dtype = ctype[input_dtype]
            x = np.frombuffer((raw * (n * 48)).from_address(addresses["input"]), dtype=dtype).reshape(n, 48)
            y = np.frombuffer((ctypes.c_float * (n * 5)).from_address(addresses["logits"]), dtype=np.float32)
            y[:] = (x.astype(np.float32) @ W).ravel()

        def execute_async_v3(self, stream):
            if "logits" not in self.addresses or "input" not in self.addresses:
                return False  # TensorRT: an I/O tensor without an address
            addresses, n = dict(self.addresses), self.shape[0]
            if seen["capturing"] is not None:  # a CUDA graph is being captured: record, do not run
                seen["capturing"].append(lambda: self._compute(addresses, n))
                return True
            self._compute(addresses, n)
            seen["runs"] += 1
            if self.profiler is not None:
                for i, name in enumerate(ENGINE_LAYERS):
                    self.profiler.report_layer_time(name, 0.25 * (i + 1) * n)
            return True

    class Inspector:
        execution_context = None

        def get_engine_information(self, fmt):
            seen["inspected"] = fmt
            if fmt != trt.LayerInformationFormat.JSON:
                return "\n".join(ENGINE_LAYERS)
            return json.dumps(engine_info) if engine_info is not None else "not json {"

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = profiles
        num_layers = len(ENGINE_LAYERS)

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return getattr(trt.DataType, input_dtype) if name == "input" else trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile_index):
            assert name == "input" and profile_index == 0
            return [tuple(dims) for dims in engine_profile]

        def create_execution_context(self):
            return Context()

        def create_engine_inspector(self):
            return Inspector()

    class Runtime:
        def __init__(self, logger):
            init_cuda()
            uses("Runtime", logger)

        def __setattr__(self, name, value):
            seen["host_code"] = (name, value)

        def deserialize_cuda_engine(self, plan):
            return None if bytes(plan) == b"truncated" else Engine()

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@contextlib.contextmanager
def fake_cuda_graphs(monkeypatch, trt):
    """torch.cuda.CUDAGraph / torch.cuda.graph on the CPU: capture records the stand-in's runs, replay repeats them."""
    import torch

    graphs = []

    class Graph:
        def __init__(self):
            self.ops = []
            graphs.append(self)

        def replay(self):
            for op in self.ops:
                op()

    @contextlib.contextmanager
    def capture(graph, pool=None, stream=None, capture_error_mode="global"):
        graph.mode = capture_error_mode
        trt.seen["capturing"] = graph.ops
        try:
            yield
        finally:
            trt.seen["capturing"] = None

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    yield graphs


def fake_runtime_tensorrt(version: str, input_dtype: str = "FLOAT", **knobs) -> types.ModuleType:
    return fake_tensorrt(version, input_dtype=input_dtype, **knobs)
