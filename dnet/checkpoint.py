"""dnet checkpoints: a state dict with the configuration and metadata that describe it.

Saved with ``torch.save`` but holding only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: opening a checkpoint never executes code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from dnet.artifact import ArtifactMeta
from dnet.errors import FileFormatError, UnsafeFileError
from dnet.files import atomic_path
from dnet.models.densenet import DenseNet, DenseNetConfig

FORMAT = "dnet.checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: DenseNet, meta: ArtifactMeta | None = None, **extra) -> Path:
    """Write ``model`` (and any extra plain state, e.g. optimizer state) atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": model.state_dict(),
        "meta": meta.to_dict() if meta is not None else None,
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_pth(path: str | os.PathLike) -> object:
    """``torch.load(weights_only=True)`` with the project's errors: a file needing code is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeFileError(
            f"{path}: refused: the file needs pickled code to load, which dnet never runs ({first})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise FileFormatError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0] if str(e) else e!r})") from None


def is_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def model_from_checkpoint(obj: dict, source: str = "checkpoint") -> DenseNet:
    """Build the model a checkpoint describes and load its weights strictly; eval mode."""
    if obj.get("version") != VERSION:
        raise FileFormatError(f"{source}: dnet checkpoint version {obj.get('version')!r} is not supported (expected {VERSION})")
    try:
        model = DenseNet(DenseNetConfig.from_dict(obj["config"]))
        model.load_state_dict(obj["state_dict"], strict=True, assign=True)  # no second copy of the weights
    except (KeyError, RuntimeError, TypeError) as e:
        raise FileFormatError(f"{source}: checkpoint does not match its configuration ({str(e).splitlines()[0]})") from None
    if obj.get("meta"):
        model.meta = ArtifactMeta.from_dict(obj["meta"])
    return model.eval()


def load_checkpoint(path: str | os.PathLike) -> DenseNet:
    obj = read_pth(path)
    if not is_checkpoint(obj):
        raise FileFormatError(f"{path}: not a dnet checkpoint")
    return model_from_checkpoint(obj, str(path))
