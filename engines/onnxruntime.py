"""ONNX Runtime engine: any ONNX file (FP32, FP16, INT8 Q/DQ) on the CPU, or on CUDA / TensorRT providers.

``provider``: None or "cpu" (default), "cuda" (CUDAExecutionProvider), "tensorrt" (TensorrtExecutionProvider,
with its engine cache in ``trt_cache_dir`` so a second session skips the build). A provider that this
ONNX Runtime build lacks is refused with one line instead of silently falling back to the CPU.

:func:`session` is the one place an ONNX Runtime session is made: the engine, the export and precision checks,
``dnet compare`` and the benchmarks all call it.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import onnx

from dnet import DISTRIBUTION
from dnet.artifact.onnxfile import read_meta, read_model
from dnet.engines.base import Engine
from dnet.errors import DnetError, EngineError, FileFormatError, NotInstalledError, UsageError

# ONNX Runtime 1.32 starts a telemetry session when imported, and writes a ".ses" file into the temporary folder
# that nothing removes; dnet leaves no file behind and sends nothing (a user may still set it to 0).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

try:  # onnxruntime or onnxruntime-gpu (one import package; the cpu and gpu extras install exactly one of them)
    import onnxruntime as ort
except ImportError:
    ort = None

INSTALL_HINT = (f"ONNX Runtime is not installed: pip install '{DISTRIBUTION}[cpu]' (or '{DISTRIBUTION}[gpu]' on a "
                "CUDA machine; never both, they share one import package)")

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def require_onnxruntime():
    """The ``onnxruntime`` module, or NotInstalledError saying how to install it."""
    if ort is None:
        raise NotInstalledError(INSTALL_HINT)
    return ort


def providers_for(provider: str | None, *, trt_cache_dir: str | os.PathLike | None = None) -> list:
    """The ONNX Runtime provider list for a dnet provider name; raises when it is not installed."""
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
        options = {}
        if trt_cache_dir is not None:
            Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
            options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache_dir)}
        return [(ort_name, options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    if name == "cuda":
        return [ort_name, "CPUExecutionProvider"]
    return [ort_name]


def session(model: str | os.PathLike | bytes | onnx.ModelProto, *, provider: str | None = None,
            threads: int | None = None, trt_cache_dir: str | os.PathLike | None = None,
            fused: bool = True, profile_prefix: str | os.PathLike | None = None,
            optimized_model_path: str | os.PathLike | None = None):
    """A quiet ONNX Runtime session for a file, serialized bytes or a ModelProto.

    ``threads`` sets intra-op threads and turns off spinning: a fixed thread count means a shared machine or a
    side-by-side benchmark, where idle threads must not steal the cores the other runner is timed on.
    ``fused=False`` stops ONNX Runtime from fusing Q/DQ pairs into its integer kernels, so an INT8 file computes
    exactly what its Q/DQ nodes say (what TensorRT computes). The fused x86 kernels multiply u8×s8 pairs into
    int16 (``vpmaddubsw``) on CPUs without VNNI, which saturates: on such a CPU the fused result is the CPU's, not
    the file's. ``profile_prefix`` turns on ONNX Runtime's profiler; ``optimized_model_path`` saves the graph it
    runs (benchmarks read both).
    """
    providers = providers_for(provider, trt_cache_dir=trt_cache_dir)
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
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    source = model if isinstance(model, bytes) else str(model)
    # A session that fails to build makes ONNX Runtime print an "EP Error" banner on stdout before it retries;
    # the error itself still reaches the caller, and stdout stays the command's own (tables, --json).
    with contextlib.redirect_stdout(io.StringIO()):
        return ort.InferenceSession(source, opts, providers=providers)


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
        self.input_shape = (shape[0], shape[1], shape[2], shape[3])
        self._fp16_input = inp.type == "tensor(float16)"

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = self.input_shape[0]
        if n > 0 and len(batch) != n:  # a file exported with a fixed batch: feed it piece by piece
            return np.concatenate([self.run(batch[i:i + n]) for i in range(0, len(batch), n)])
        feed = batch.astype(np.float16) if self._fp16_input else batch
        try:
            return self.session.run([self.output_name], {self.input_name: feed})[0]
        except Exception as e:  # noqa: BLE001 (ORT's Fail/InvalidArgument/RuntimeException share no useful base)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"{self.path.name}: ONNX Runtime cannot run it ({first[:200]})") from None

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
    try:
        sess = session(path, provider=provider, threads=threads, trt_cache_dir=trt_cache_dir)
    except DnetError:  # an absent provider says so itself
        raise
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileFormatError(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None
    return OnnxRuntimeEngine(path, sess, provider or "cpu", read_meta(proto))
