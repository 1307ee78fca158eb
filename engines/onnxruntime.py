"""ONNX Runtime engine: any ONNX file (FP32, FP16, INT8 Q/DQ) on the CPU, or on CUDA / TensorRT providers.

``provider``: None or "cpu" (default), "cuda" (CUDAExecutionProvider), "tensorrt" (TensorrtExecutionProvider). A
provider that this ONNX Runtime build lacks is refused with one line, and so is one that the build has but could not
start: ``get_available_providers()`` lists every provider the wheel was built with, and when libnvinfer or cuDNN
cannot load ONNX Runtime only logs a warning and runs on the next provider, so after creating a session dnet
requires ``session.get_providers()[0]`` to be the provider asked for. ONNX Runtime's own fallback (a session that
fails to build, or a run that fails with an EP error, retried on the next provider after a banner on stdout) is
turned off, so the provider's own error text is the refusal.

The TensorRT execution provider builds weakly typed networks, so it must be told the file's precision:
``trt_int8_enable`` for a Q/DQ file (such models are reported to fail without it, microsoft/onnxruntime issue 13381)
and ``trt_fp16_enable`` for an FP16 file (weak typing may then run float32 layers in float16 too; the native
``.plan`` path is strongly typed). It gets dnet's optimization profile, and its engine and timing caches live in
``trt_cache_dir`` (default ``~/.cache/dnet/ort-tensorrt``) in a folder named for the ONNX Runtime and TensorRT
versions, because its cached engines carry neither.

:func:`session` is the one place an ONNX Runtime session is made: the engine, the export and precision checks,
``dnet compare`` and the benchmarks all call it.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import platform
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from dnet import DISTRIBUTION
from dnet.converters.int8.rewrites import int8_activations_as_uint8
from dnet.core import cpu
from dnet.core.artifact.onnxfile import classifier_features, input_dims, read_meta, read_model
from dnet.core.artifact.sidecar import PROFILE
from dnet.core.errors import (
    DnetError,
    DnetWarning,
    EngineError,
    FileFormatError,
    NotInstalledError,
    UsageError,
    runtime_failure,
)
from dnet.core.write_errors import write_error
from dnet.engines.base import Engine
from dnet.models.zoo import checked_name

# ONNX Runtime 1.32 starts a telemetry session when imported, and writes a ".ses" file into the temporary folder
# that nothing removes; dnet leaves no file behind and sends nothing (a user may still set it to 0).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

try:  # onnxruntime or onnxruntime-gpu (one import package; the cpu and gpu extras install exactly one of them)
    import onnxruntime as ort
except ImportError:
    ort = None

INSTALL_HINT = (f"ONNX Runtime is not installed: pip install '{DISTRIBUTION}[cpu]' (or '{DISTRIBUTION}[gpu]' on a "
                "CUDA machine; never both, they share one import package)")

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# What a GPU provider needs to start; named when ONNX Runtime falls back from it.
NEEDS = {
    "cuda": "the CUDA and cuDNN libraries (libcudart, libcublas, libcudnn) that onnxruntime-gpu was built for",
    "tensorrt": "TensorRT's libnvinfer (and the CUDA and cuDNN libraries) that onnxruntime-gpu was built for",
}
TRT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / DISTRIBUTION / "ort-tensorrt"
TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs",
                     "tensorrt-libs")


# Largest |int8 weight| that cannot saturate the u8×s8 -> int16 pair sums (vpmaddubsw) of x86 CPUs without VNNI:
# 255·63 + 255·63 < 32767 (ONNX Runtime's reduce_range advice; dnet.converters.int8.placement).
UNSATURATED_WEIGHT = 63


def saturation_risk(proto: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime's fused x86 kernels may not compute this INT8 file's arithmetic on this CPU, or None.

    dnet warns rather than rewriting the weights to 7 bits in memory: a rewrite would make the engine run another
    model than the file (numbers nobody checked against FP32, unlike TensorRT's and a plain session's), and only in
    dnet's session; the warning names the file that is exact on every x86 CPU instead, and ``dnet eval`` still
    measures what this CPU really computes.
    """
    if not X86 or not cpu.flags() or cpu.has_vnni():  # no flags: not Linux, nothing known, nothing said
        return None
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        t = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if t is not None and t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1:
            if int(np.abs(numpy_helper.to_array(t).astype(np.int16)).max()) > UNSATURATED_WEIGHT:
                return ("its int8 weights use all 8 bits, and this CPU has no VNNI: ONNX Runtime's fused x86 kernels "
                        "saturate (the results differ from the file's arithmetic); for this CPU convert with 7-bit "
                        "weights (--int8-weight-bits 7)")
    return None


def require_onnxruntime():
    """The ``onnxruntime`` module, or NotInstalledError saying how to install it."""
    if ort is None:
        raise NotInstalledError(INSTALL_HINT)
    return ort


def tensorrt_version() -> str:
    """The TensorRT version ONNX Runtime's TensorRT provider will load, without importing ``tensorrt``."""
    for dist in TRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    for soname in ("libnvinfer.so.11", "libnvinfer.so.10"):  # a system install: ask the library itself
        try:
            number = int(ctypes.CDLL(soname).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return "unknown"


def typed_precision(proto: onnx.ModelProto) -> str:
    """"int8" for a graph with QuantizeLinear nodes, "fp16" for one computing in float16, else "fp32"."""
    if any(node.op_type == "QuantizeLinear" for node in proto.graph.node):
        return "int8"
    half = onnx.TensorProto.FLOAT16
    if any(init.data_type == half for init in proto.graph.initializer) or any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute)
        for node in proto.graph.node
    ):
        return "fp16"
    return "fp32"


def tensorrt_provider_options(proto: onnx.ModelProto, *, cache_dir: str | os.PathLike | None = None,
                              profile: tuple[int, int, int] = PROFILE) -> dict:
    """TensorrtExecutionProvider options for this graph: its precision, dnet's profile, versioned engine/timing caches."""
    name = next(v.name for v in proto.graph.input if v.name not in {i.name for i in proto.graph.initializer})
    dims = input_dims(proto, name)
    if len(dims) != 4:
        raise EngineError(f"dnet runs image classifiers with an N×3×H×W input; input {name!r} has {len(dims)} dims")
    chw = dims[1:]
    if any(d <= 0 for d in chw):
        meta = read_meta(proto)
        if meta is None:
            raise EngineError(f"input {name!r} has no fixed C,H,W and the file carries no dnet metadata: the TensorRT "
                              "provider needs an optimization profile")
        chw = (3, meta.input_size, meta.input_size)
    lo, opt, hi = profile
    shapes = {k: f"{name}:{n}x{'x'.join(map(str, chw))}" for k, n in (("min", lo), ("opt", opt), ("max", hi))}
    folder = Path(cache_dir if cache_dir is not None else TRT_CACHE) / f"ort-{ort.__version__}_trt-{tensorrt_version()}"
    folder.mkdir(parents=True, exist_ok=True)
    precision = typed_precision(proto)
    return {
        "trt_int8_enable": precision == "int8",  # Q/DQ scales come from the file; no calibration table
        "trt_fp16_enable": precision == "fp16",
        "trt_profile_min_shapes": shapes["min"],
        "trt_profile_opt_shapes": shapes["opt"],
        "trt_profile_max_shapes": shapes["max"],
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
    }


def providers_for(provider: str | None, *, trt_options: dict | None = None) -> list:
    """The ONNX Runtime provider list for a dnet provider name; raises when this ONNX Runtime lacks it."""
    require_onnxruntime()
    name = provider or "cpu"
    if name not in PROVIDERS:
        raise UsageError(f"provider {name!r} is not one of the onnxruntime engine's: {', '.join(PROVIDERS)}")
    ort_name = PROVIDERS[name]
    available = ort.get_available_providers()
    if ort_name not in available:
        package = f"onnxruntime-gpu (pip install '{DISTRIBUTION}[gpu]')" if name == "cuda" else "onnxruntime-gpu built with TensorRT, and TensorRT"
        raise NotInstalledError(
            f"ONNX Runtime here has no {ort_name} (available: {', '.join(available)}); it needs {package}"
        )
    if name == "tensorrt":
        return [(ort_name, dict(trt_options or {})), "CUDAExecutionProvider", "CPUExecutionProvider"]
    if name == "cuda":
        return [ort_name, "CPUExecutionProvider"]
    return [ort_name]


def session(model: str | os.PathLike | bytes | onnx.ModelProto, *, provider: str | None = None,
            threads: int | None = None, trt_cache_dir: str | os.PathLike | None = None,
            fused: bool = True, profile_prefix: str | os.PathLike | None = None,
            optimized_model_path: str | os.PathLike | None = None):
    """A quiet ONNX Runtime session for a file, serialized bytes or a ModelProto, on the provider asked for or none.

    ``threads`` sets intra-op threads and turns off spinning: a fixed thread count means a shared machine or a
    side-by-side benchmark, where idle threads must not steal the cores the other runner is timed on.
    ``fused=False`` stops ONNX Runtime from fusing Q/DQ pairs into its integer kernels, so an INT8 file computes
    exactly what its Q/DQ nodes say (what TensorRT computes). Fused on an x86 CPU, int8 activations are first
    given uint8 zero points (the same arithmetic), which ONNX Runtime's u8×s8 kernels fuse everywhere. The fused
    x86 kernels multiply u8×s8 pairs into int16 (``vpmaddubsw``) on CPUs without VNNI, which saturates: on such a
    CPU the fused result is the CPU's, not the file's. ``profile_prefix`` turns on ONNX Runtime's profiler; ``optimized_model_path`` saves the graph it
    runs (benchmarks read both). A GPU provider that does not start is NotInstalledError, never a silent fallback.
    """
    trt_options = None
    if provider == "tensorrt":
        require_onnxruntime()
        if isinstance(model, onnx.ModelProto):
            proto = model
        elif isinstance(model, bytes):
            proto = onnx.load_from_string(model)
        else:
            proto = read_model(model)
        trt_options = tensorrt_provider_options(proto, cache_dir=trt_cache_dir)
    providers = providers_for(provider, trt_options=trt_options)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if fused and (provider or "cpu") == "cpu" and X86:
        model = _uint8_activations(model)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    source = model if isinstance(model, bytes) else str(model)
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    # ONNX Runtime's fallback (enable_fallback) retries a session that fails to build, and a run that fails with an
    # EP error, on the next provider after printing an "EP Error ... Falling back" banner on stdout: a GPU run would
    # silently become a CPU run. dnet creates the session without it and turns it off for run() too, so the
    # provider's own error reaches the caller; stdout stays the command's own (tables, --json) either way.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            sess = ort.InferenceSession(source, opts, providers=providers, enable_fallback=0)
        except Exception as e:  # noqa: BLE001 (ORT's InvalidProtobuf and friends share no useful base)
            # ORT's own write of the optimized graph that the disk or ulimit -f stopped ("Protobuf serialization
            # failed", its errno lost): the one line of a write error, not a traceback
            if optimized_model_path is not None and (
                    error := write_error(optimized_model_path, e, tmp=optimized_model_path)) is not None:
                raise error from None
            if (provider or "cpu") == "cpu" or not isinstance(e, RuntimeError | ValueError):
                raise
            raise NotInstalledError(f"ONNX Runtime could not start {wanted}: {_first_line(e)}; it needs "
                                    f"{NEEDS.get(provider, 'its libraries')}") from None
    sess.disable_fallback()
    running = sess.get_providers()
    if not running or running[0] != wanted:
        name = provider or "cpu"
        raise NotInstalledError(
            f"ONNX Runtime could not start {wanted} and fell back to {running[0] if running else 'nothing'}: "
            f"{NEEDS.get(name, 'its libraries')} did not load (ONNX Runtime's log at severity 1 says which)"
        )
    return sess


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _uint8_activations(model: str | os.PathLike | bytes | onnx.ModelProto):
    """An INT8 Q/DQ model with its int8 activations as uint8 (same arithmetic), else ``model`` unchanged.

    ONNX Runtime's x86 integer kernels are u8×s8; its own int8 -> uint8 pass skips every tensor that feeds more
    than one DequantizeLinear, and a DenseNet feature map feeds two (see dnet.converters.int8.rewrites). dnet's CPU INT8 files
    hold this rewrite already (a no-op here: a plain session runs them alike); it stays for the files that do not:
    TensorRT-layout files run on a CPU, INT8 files of earlier dnet versions, and other tools' Q/DQ files.
    """
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, bytes):
        proto = onnx.load_model_from_string(model)
    else:
        proto = onnx.load_model(str(model), load_external_data=False)
    if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy if int8_activations_as_uint8(copy) else model


def run(model: str | os.PathLike | bytes | onnx.ModelProto, batch: np.ndarray, threads: int | None = None, *,
        fused: bool = True) -> np.ndarray:
    """Run an ONNX model on the CPU and return its first output (float16 inputs are fed as the graph wants)."""
    sess = session(model, threads=threads, fused=fused)
    inp = sess.get_inputs()[0]
    feed = batch.astype(np.float16) if inp.type == "tensor(float16)" else batch
    return sess.run(None, {inp.name: feed})[0]


class OnnxRuntimeEngine(Engine):
    kind = "onnxruntime"

    def __init__(self, path: Path, sess, provider: str, meta=None) -> None:
        self.path = path
        self.session = sess
        self.device = provider
        self.meta = meta
        inp = sess.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = sess.get_outputs()[0].name
        shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        if len(shape) != 4:
            raise EngineError(f"{path.name}: dnet runs image classifiers with an N×3×H×W input, this one has shape {inp.shape}")
        shared = [d for d in inp.shape[2:] if isinstance(d, str) and d and d == inp.shape[0]]
        if shared:  # one symbol for the batch and the image side: no batch size and image size can both be chosen
            raise FileFormatError(f"{path.name}: its input {inp.name!r} is {'×'.join(map(str, inp.shape))}: the batch "
                                  f"and the image's height or width are one symbolic dimension {shared[0]!r}; export it "
                                  "with a batch dimension of its own")
        self.input_shape = (shape[0], shape[1], shape[2], shape[3])
        self._fp16_input = inp.type == "tensor(float16)"

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = self.input_shape[0]
        if n > 0 and len(batch) != n:  # a file exported with a fixed batch: feed it piece by piece
            return np.concatenate([self.run(batch[i:i + n]) for i in range(0, len(batch), n)])
        feed = batch.astype(np.float16) if self._fp16_input else batch
        try:
            return self.session.run([self.output_name], {self.input_name: feed})[0]
        except Exception as e:  # noqa: BLE001 (ORT's Fail/InvalidArgument/EPFail share no useful base)
            where = "" if self.device == "cpu" else f" on {PROVIDERS[self.device]}, and dnet does not fall back"
            raise runtime_failure(self.path.name, "ONNX Runtime", e, len(batch), where) from None

    def close(self) -> None:
        self.session = None


def open_file(
    path: str | os.PathLike,
    *,
    provider: str | None = None,
    threads: int | None = None,
    trt_cache_dir: str | os.PathLike | None = None,
) -> OnnxRuntimeEngine:
    """Open an ONNX file as an engine; ``threads`` sets ONNX Runtime's intra-op threads (None: its default)."""
    path = Path(path)
    proto = read_model(path)  # one clear line for a missing, corrupt or external-data file before ORT sees it
    try:  # the graph read and checked, not the path again: a file replaced meanwhile never pairs its graph with
        # the metadata of the file it replaced (read_model refuses external data, so the proto is all of it)
        sess = session(proto, provider=provider, threads=threads, trt_cache_dir=trt_cache_dir)
    except DnetError:  # an absent provider says so itself
        raise
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileFormatError(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None
    if (provider or "cpu") == "cpu":
        risk = saturation_risk(proto)
        if risk is not None:
            warnings.warn(f"{path.name}: {risk}", DnetWarning, stacklevel=2)
    meta = checked_name(read_meta(proto, path.name), path.name, classifier_features(proto))
    return OnnxRuntimeEngine(path, sess, provider or "cpu", meta)
