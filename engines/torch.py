"""PyTorch engine: dnet checkpoints, torchvision-style state dicts and Lua ``.t7`` files, on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dnet.core.errors import NotInstalledError, UsageError
from dnet.engines.base import Engine
from dnet.formats.loading import load


class TorchEngine(Engine):
    kind = "torch"

    def __init__(self, path: Path, model: torch.nn.Module, device: str = "cpu") -> None:
        self.path = path
        self.device = device
        self.model = model.eval().to(device)
        self.meta = getattr(model, "meta", None)
        size = self.meta.input_size if self.meta is not None else model.config.input_size
        self.input_shape = (-1, 3, size, size)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            return self.model(x).float().cpu().numpy()


def open_file(path: Path, *, provider: str | None = None, threads: int | None = None) -> TorchEngine:
    if threads is not None:
        torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
    device = provider or "cpu"
    if device not in ("cpu", "cuda"):
        raise UsageError(f"provider {device!r} is not one of the torch engine's: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise NotInstalledError("no CUDA GPU found (torch.cuda.is_available() is False); use provider='cpu'")
    return TorchEngine(path, load(path), device)
