"""ONNX Runtime engine: any ONNX file (FP32, FP16, INT8 Q/DQ) on the CPU, or on CUDA / TensorRT providers.

``provider``: None or "cpu" (default), "cuda" (CUDAExecutionProvider), "tensorrt" (TensorrtExecutionProvider,
with its engine cache in ``trt_cache_dir`` so a second session skips the build). A provider that this
ONNX Runtime build lacks is refused with one line instead of silently falling back to the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dnet.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from dnet.engines.base import Engine

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def providers_for(provider: str | None, *, trt_cache_dir: str | os.PathLike | None = None) -> list:
    """The ONNX Runtime provider list for a dnet provider name; raises when it is not installed."""
    import onnxruntime as ort

    name = provider or "cpu"
    if name not in PROVIDERS:
        raise UsageError(f"provider {name!r} is not one of the onnxruntime engine's: {', '.join(PROVIDERS)}")
    ort_name = PROVIDERS[name]
    available = ort.get_available_providers()
    if ort_name not in available:
        package = "onnxruntime-gpu (pip install 'dnet[gpu]')" if name == "cuda" else "onnxruntime-gpu built with TensorRT, and TensorRT"
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


class OnnxRuntimeEngine(Engine):
    kind = "onnxruntime"

    def __init__(self, path: Path, session, provider: str) -> None:
        from dnet.converters.onnx import read_meta, read_model

        self.path = path
        self.session = session
        self.device = provider
        self.meta = read_meta(read_model(path))
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = session.get_outputs()[0].name
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
        return self.session.run([self.output_name], {self.input_name: feed})[0]

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
    import onnxruntime as ort

    from dnet.converters.onnx import read_model

    path = Path(path)
    read_model(path)  # one clear line for a missing, corrupt or external-data file before ORT sees it
    providers = providers_for(provider, trt_cache_dir=trt_cache_dir)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        # A fixed thread count means a shared machine or a side-by-side benchmark: idle threads must not spin
        # (ONNX Runtime's default), or they steal the cores the other runner is timed on.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileFormatError(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None
    return OnnxRuntimeEngine(path, session, provider or "cpu")
