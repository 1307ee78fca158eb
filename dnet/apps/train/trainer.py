"""``dnet train``: the Lua recipe in PyTorch, one process or many (torchrun), resumable exactly.

It reads as fb.resnet.torch's ``main.lua`` does, a table of contents: the run folder (``run_folder``), the data
(``batches``), the model and optimizer (``loop``), the resume state (``checkpoints``), then one epoch after another
(``loop.train_epoch``, ``loop.evaluate_split``), each followed by atomic checkpoints, metrics and curves (``plots``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dnet import __version__
from dnet.apps.train.batches import Batches, dataset_spec, open_training_data
from dnet.apps.train.checkpoints import load_resume, seed_everything, set_rng_state, training_state
from dnet.apps.train.distributed import setup_distributed
from dnet.apps.train.loop import evaluate_split, make_optimizer, train_epoch
from dnet.apps.train.plots import plot_curves
from dnet.apps.train.recipe import TrainConfig
from dnet.apps.train.run_folder import (
    BEST,
    CURVES_PNG,
    LAST,
    busy,
    check_writable,
    default_run_dir,
    in_use,
    run_lock,
    write_config,
    write_metrics,
)
from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.errors import DataError, UsageError
from dnet.formats.checkpoint import save_checkpoint
from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig
from dnet.models.summary import param_count


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_error: float  # test error of best.pth (selected on the validation split where the recipe has one)
    final_error: float
    history: list[dict]
    model: DenseNet
    meta: ArtifactMeta
    is_main: bool = True  # rank 0 (the process that wrote the files)

    @property
    def last(self) -> Path:
        return self.run_dir / LAST

    @property
    def best(self) -> Path:
        return self.run_dir / BEST


def model_name(config: DenseNetConfig, cfg: TrainConfig) -> str:
    """The zoo name the run trains (as asked: two zoo names can share one architecture), or the architecture's."""
    return cfg.model if cfg.model != "custom" else zoo.name_of(config)


def describe(config: DenseNetConfig) -> str:
    """'DenseNet-BC-22 (k=12)': the architecture in the paper's words, for titles and logs."""
    return f"DenseNet{'-BC' if config.bottleneck else ''}-{config.depth} (k={config.growth_rate})"


def _run_folder(cfg: TrainConfig, resume, d) -> tuple[TrainConfig, Path, dict | None]:
    """The configuration to train, its run folder, and the checkpoint to resume from (None for a new run)."""
    if resume is not None:
        run_dir = Path(resume)
        if d.main and in_use(run_dir):  # before its first checkpoint too: not "stopped", still training
            raise busy(run_dir)
        saved, ckpt = load_resume(run_dir, cfg, d)
        changeable = ("epochs", "data", "workers", "threads", "quiet", "download", "memory_efficient", "channels_last")
        cfg = TrainConfig.from_dict({**saved.to_dict(), **{k: getattr(cfg, k) for k in changeable}, "out": str(run_dir)})
        return cfg, run_dir, ckpt
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if d.main and (run_dir / LAST).exists():  # config.json alone: a run stopped before its first checkpoint
        if in_use(run_dir):  # still training: --resume would be refused too
            raise busy(run_dir)
        raise UsageError(f"run folder {run_dir} already holds a run; continue it with --resume {run_dir} "
                         f"or choose another --output")
    return cfg, run_dir, None


# Parameters a run may train: far above the paper's largest (DenseNet-264 k=48, 73 M); past it the weights, their
# gradients and the optimizer's momentum alone (16 bytes a parameter) outgrow a machine's memory before step one.
MAX_TRAIN_PARAMS = 1_000_000_000


def check_size(cfg: TrainConfig) -> None:
    """Refuse, before any data is read or memory taken, a network too large to train (counted, not built)."""
    config = cfg.model_config(cfg.num_classes or 10)
    n = param_count(config)
    if n > MAX_TRAIN_PARAMS:
        raise UsageError(f"{describe(config)} has {n:,} parameters, more than the {MAX_TRAIN_PARAMS:,} dnet trains "
                         f"(about {16 * n / 2**30:,.0f} GiB for weights, gradients and momentum alone); choose a "
                         "smaller --depth or --growth-rate")


def train(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) a run; return where it was written and its numbers.

    ``on_epoch_end(epoch, row)`` is called after each epoch's files are written (tests use it to interrupt).
    """
    with contextlib.ExitStack() as held:  # the run folder's lock, released however the run ends
        return _train(cfg, resume, log, on_epoch_end, held)


def _train(cfg: TrainConfig, resume, log, on_epoch_end, held: contextlib.ExitStack) -> TrainResult:
    d = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log = log or (lambda s: print(s, flush=True))
    say = log if d.main else (lambda s: None)
    if cfg.sync_bn and d.device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only)")

    # 1. the run folder and the data
    cfg, run_dir, ckpt = _run_folder(cfg, resume, d)
    check_size(cfg)
    train_set, val_set, test_set = open_training_data(cfg)
    config = cfg.model_config(train_set.num_classes)
    labels_max = int(np.max(train_set.labels))
    if labels_max >= config.num_classes:
        raise DataError(f"data set {cfg.dataset} has label {labels_max} but the model has {config.num_classes} classes")
    name = model_name(config, cfg)
    if d.main:
        check_writable(run_dir)
        held.enter_context(run_lock(run_dir))
        # before the model is built and the first step taken: an early interrupt leaves a folder that says what it is
        write_config(run_dir, {"train": cfg.to_dict(), "model": config.to_dict(), "model_name": name,
                               "world_size": d.world, "global_batch": cfg.batch * d.world, "dnet_version": __version__})

    # 2. the model, the optimizer and, for a resumed run, their saved state
    seed_everything(cfg.seed + d.rank)
    model = DenseNet(config, memory_efficient=cfg.memory_efficient)
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
    model.to(d.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model) if cfg.sync_bn else model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda") if (cfg.amp and d.device.type == "cuda") else None
    start_epoch, best_error, history = 0, math.inf, []
    if ckpt is not None:
        state = ckpt["train"]
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_error, history = state["epoch"], state["best_error"], list(state["history"])
        set_rng_state(state["rng"][d.rank])
    # best.pth: the lowest validation error where the recipe holds images out (SVHN, as the paper reports), else
    # the lowest test error (train.lua); best_error is the test error of that model
    select = "val_error" if val_set is not None else "test_error"
    best_score = min((row[select] for row in history), default=math.inf)

    spec = dataset_spec(train_set)

    def meta(extra: dict) -> ArtifactMeta:
        return zoo.artifact_meta(config, name=name, preprocess=spec, input_size=spec.input_size,
                                 extra={"trained_by": "dnet train", "dataset": cfg.dataset, "augmented": cfg.augment,
                                        **extra})

    _announce(say, cfg, d, config, name, model, train_set, val_set, test_set, start_epoch, ckpt is not None, run_dir)

    # 3. epochs: train, test, then checkpoints, metrics and curves (rank 0), each written atomically
    progress = d.main and not cfg.quiet and sys.stderr.isatty()
    test_batches = Batches(test_set, cfg, d, train=False, epoch=0)
    val_batches = Batches(val_set, cfg, d, train=False, epoch=0) if val_set is not None else None
    for epoch in range(start_epoch, cfg.epochs):
        row = {"epoch": epoch + 1}
        row.update(train_epoch(net, Batches(train_set, cfg, d, train=True, epoch=epoch), optimizer, scaler, cfg,
                               d, epoch, progress))
        if d.enabled:  # BN running statistics of rank 0 everywhere, so every shard tests the saved model
            for b in model.buffers():
                dist.broadcast(b, 0)
        row.update(evaluate_split(model, test_batches, cfg, d))
        if val_batches is not None:
            row.update({f"val_{k[len('test_'):]}": v for k, v in evaluate_split(model, val_batches, cfg, d).items()})
        history.append(row)
        is_best = row[select] < best_score
        if is_best:
            best_score, best_error = row[select], row["test_error"]
        state = training_state(model, optimizer, scaler, cfg, epoch + 1, best_error, history, d)
        if d.main:
            m = meta({"epoch": epoch + 1, **{k: row[k] for k in ("test_error", "val_error") if k in row}})
            save_checkpoint(run_dir / LAST, model, m, train=state)
            if is_best:
                save_checkpoint(run_dir / BEST, model, m, train=state)
            write_metrics(run_dir, history)
            plot_curves(history, run_dir / CURVES_PNG, f"{describe(config)} on {cfg.dataset}")
            say(f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                f"train error {row['train_error']:5.2f}%  "
                + (f"val error {row['val_error']:5.2f}%  " if "val_error" in row else "")
                + f"test error {row['test_error']:5.2f}%  "
                f"lr {row['lr']:.4g}  {row['time_s']:.1f}s  {row['img_per_s']:.0f} img/s" + ("  *" if is_best else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    model.eval()
    final = history[-1]["test_error"] if history else math.nan
    return TrainResult(run_dir, len(history), best_error, final, history, model,
                       meta({"epoch": len(history), "test_error": final}), d.main)


def _announce(say, cfg, d, config, name, model, train_set, val_set, test_set, start_epoch, resumed, run_dir) -> None:
    if start_epoch >= cfg.epochs:
        say(f"{run_dir}: already trained {start_epoch} epochs (--epochs {cfg.epochs}); nothing to do")
        return
    params = sum(p.numel() for p in model.parameters())
    say(f"{'resuming' if resumed else 'training'} {name if name != 'custom' else describe(config)} ({params:,} "
        f"parameters, dropout {config.drop_rate:g}) on {cfg.dataset}: {len(train_set)} train / "
        + (f"{len(val_set)} validation / " if val_set is not None else "") + f"{len(test_set)} test "
        f"images, epochs {start_epoch + 1}-{cfg.epochs}, lr {cfg.lr:g} {cfg.lr_schedule}, device {d.device}")
    if d.enabled:
        say(f"{d.world} processes: global batch {cfg.batch * d.world} = {cfg.batch} per process × {d.world}")
    else:
        say(f"batch {cfg.batch}")
    say(f"run folder: {run_dir}")


__all__ = ["TrainResult", "describe", "model_name", "train"]
