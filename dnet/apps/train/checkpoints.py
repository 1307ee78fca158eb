"""What makes a resume exact: the RNG states of every process, the optimizer, the epoch, the best error, the history.

``last.pth`` holds, beside the weights, everything a resumed run needs to continue as if never stopped; all of it
is plain tensors, numbers, strings, lists and dicts, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dnet.apps.train.distributed import Distributed
from dnet.apps.train.recipe import TrainConfig
from dnet.apps.train.run_folder import CONFIG_JSON, LAST, read_run_config, stopped_early
from dnet.core.errors import FileFormatError, UsageError
from dnet.formats.checkpoint import is_checkpoint, read_pth


def rng_state() -> dict:
    """This process's RNG states as plain tensors and numbers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def training_state(model, optimizer, scaler, cfg, epoch, best_error, history, d: Distributed) -> dict:
    states = [rng_state()]
    if d.enabled:
        gathered: list = [None] * d.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    return {
        "config": cfg.to_dict(),
        "epoch": epoch,  # epochs completed
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "scheduler": {"name": cfg.lr_schedule, "lr0": cfg.lr, "epochs": cfg.epochs, "epoch": epoch},
        "data_order": {"sampler": "DistributedSampler", "seed": cfg.seed, "next_epoch": epoch},
        "rng": states,
        "world_size": d.world,
        "best_error": best_error,
        "history": history,
    }


def load_resume(run_dir: Path, cfg: TrainConfig, d: Distributed) -> tuple[TrainConfig, dict]:
    saved, doc = read_run_config(run_dir)
    if not (run_dir / LAST).exists():
        raise stopped_early(run_dir)
    diffs = saved.differences(cfg)
    if doc.get("world_size", 1) != d.world:
        diffs.append(f"world_size: {doc.get('world_size', 1)} -> {d.world}")
    if diffs:
        raise UsageError(f"--resume {run_dir}: that run was trained with a different configuration "
                         f"({'; '.join(diffs)}); resume with its options or start a new run with --output")
    ckpt = read_pth(run_dir / LAST)
    if not is_checkpoint(ckpt) or "train" not in ckpt:
        raise FileFormatError(f"{run_dir / LAST}: not a dnet training checkpoint")
    if TrainConfig.from_dict(ckpt["train"]["config"]).differences(saved):
        raise FileFormatError(f"{run_dir / LAST} does not belong to {run_dir / CONFIG_JSON}")
    return saved, ckpt


__all__ = ["load_resume", "rng_state", "seed_everything", "set_rng_state", "training_state"]
