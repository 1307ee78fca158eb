"""The engine protocol and ``open``, which picks an implementation by file kind.

Implementations live in their own modules and are imported only when a file of their kind is opened, so
nothing imports TensorRT, CUDA or even ONNX Runtime at import time.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.artifact.pthfile import looks_like_pth
from dnet.core.errors import EngineError, FileFormatError, UsageError

# suffix -> module under engines/ whose ``open_file(path, provider=...)`` returns an Engine.
KINDS = {
    ".pth": "torch",
    ".pt": "torch",
    ".t7": "torch",
    ".onnx": "onnxruntime",
    ".xml": "openvino",  # OpenVINO IR, with its .bin beside it
    ".plan": "tensorrt",
    ".engine": "tensorrt",
}
# providers that run a file on another engine than its suffix picks: provider -> (engine module, suffixes it runs)
ENGINE_PROVIDERS = {
    "openvino": ("openvino", (".onnx", ".xml")),
    "openvino-bf16": ("openvino", (".onnx", ".xml")),
}
# Every provider name some engine takes (each engine's own list refuses the rest): what ``--provider`` offers.
PROVIDERS = ("cpu", "cuda", "tensorrt", *ENGINE_PROVIDERS)


class Engine:
    """Runs one model file. Subclasses set ``kind``, ``meta``, ``input_shape`` and implement ``run``.

    ``input_shape`` is (N, 3, H, W) with N = -1 when the batch is dynamic. ``__call__`` takes a float32
    N×3×H×W array and returns float32 logits N×classes.
    """

    kind = "base"
    path: Path
    meta: ArtifactMeta | None = None
    input_shape: tuple[int, int, int, int] = (-1, 3, 224, 224)
    device: str = "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise EngineError(f"{self.path.name}: expected a batch N×3×H×W, got shape {batch.shape}")
        _, _, h, w = self.input_shape
        if (h > 0 and batch.shape[2] != h) or (w > 0 and batch.shape[3] != w):
            raise EngineError(f"{self.path.name}: expects {h}×{w} inputs, got {batch.shape[2]}×{batch.shape[3]}")
        out = np.asarray(self.run(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        if out.ndim != 2 or len(out) != len(batch):  # a file whose output shape was not recorded, checked here
            raise EngineError(f"{self.path.name}: gives outputs of shape {'×'.join(map(str, out.shape))} for a batch "
                              f"of {len(batch)}; dnet runs image classifiers (N×classes logits)")
        return out

    def close(self) -> None:
        """Release what the engine holds; safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} on {self.device}>"


def open(path: str | os.PathLike, *, provider: str | None = None, threads: int | None = None) -> Engine:  # noqa: A001
    """Open a model file (.pth, .pt, .t7, .onnx, .xml, .plan; a PyTorch file of any suffix) as an :class:`Engine`.

    ``provider`` picks where it runs: for torch files "cpu" or "cuda"; for ONNX "cpu", "cuda" or "tensorrt"
    (ONNX Runtime execution providers) or "openvino" / "openvino-bf16" (OpenVINO's CPU plugin at f32 / bf16
    inference precision, which also runs OpenVINO IR ``.xml`` files). None takes the default (the CPU; f32 for
    OpenVINO). ``threads`` caps the CPU threads an engine uses (None: the runtime's default).
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a folder, not a model file")
    kind = KINDS.get(path.suffix.lower())
    if kind is None and path.is_file() and looks_like_pth(path):  # .pth.tar, .ckpt, .bin: known by its bytes
        kind = "torch"
    if kind is None:
        raise FileFormatError(
            f"{path}: unknown model file kind {path.suffix or '(no suffix)'!r}; "
            f"dnet runs {', '.join(sorted(KINDS))} and PyTorch files of any suffix (torch.save's zip or pickle)"
        )
    if provider in ENGINE_PROVIDERS:
        kind, suffixes = ENGINE_PROVIDERS[provider]
        if path.suffix.lower() not in suffixes:
            raise UsageError(f"provider {provider!r} runs {' and '.join(suffixes)} files, not {path.name}",
                             option="provider")
    module = importlib.import_module(f"dnet.engines.{kind}")
    return module.open_file(path, provider=provider, threads=threads)


__all__ = ["ENGINE_PROVIDERS", "PROVIDERS", "Engine", "KINDS", "open"]
