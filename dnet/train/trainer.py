"""The training loop: the Lua recipe in PyTorch, one process or many (torchrun), resumable exactly.

A run folder holds ``config.json``, ``metrics.csv`` (one row per epoch), ``curves.png``, ``last.pth`` and
``best.pth``, each written atomically by rank 0 only. ``last.pth`` carries, beside the weights, everything a
resumed run needs to continue as if never stopped: optimizer state, the epoch, the best error, the metrics,
and the RNG states of every process (dropout). The data order and the augmentation of an epoch are drawn
from (seed, epoch) alone, so they need no saved state.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dnet import __version__
from dnet.artifact import ArtifactMeta
from dnet.checkpoint import is_checkpoint, read_pth, save_checkpoint
from dnet.data.datasets import ArrayDataset, open_dataset
from dnet.data.download import where_to_get
from dnet.data.specs import PreprocessSpec, get_spec
from dnet.errors import DataError, DnetError, FileFormatError, UsageError
from dnet.files import atomic_path, atomic_write_text
from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig
from dnet.train import augment
from dnet.train.recipe import TrainConfig
from dnet.train.schedule import learning_rate

CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
LAST = "last.pth"
BEST = "best.pth"
METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "time_s", "img_per_s")

class TrainingDiverged(DnetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_error: float
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


def setup_distributed() -> Distributed:
    """Join the torchrun process group when launched by torchrun (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Distributed(0, 1, torch.device("cuda" if cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, world, torch.device(f"cuda:{local}" if cuda else "cpu"))


# ---- the run folder ------------------------------------------------------------------------------------


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.model if cfg.model != "custom" else f"densenet{'-bc' if cfg.bc in (None, True) else ''}-l{cfg.depth}"
    return Path("runs") / f"{cfg.dataset}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_writable(run_dir: Path) -> None:
    """Create the run folder (and parents) or say in one line why it cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DnetError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
    if not run_dir.is_dir():
        raise DnetError(f"run folder {run_dir} exists and is not a folder")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise DnetError(f"cannot write to run folder {run_dir}: permission denied; choose another --out")


def read_run_config(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict]:
    """The configuration a run folder was trained with, and the whole ``config.json``."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_JSON
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: no {CONFIG_JSON} there; is it a dnet run folder?")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return TrainConfig.from_dict(doc["train"]), doc
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FileFormatError(f"{path}: not a dnet run configuration ({e})") from None


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_FIELDS})
    atomic_write_text(run_dir / METRICS_CSV, buf.getvalue())


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and error against epoch, train and test, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax1.plot(epochs, [r["test_loss"] for r in history], label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(epochs, [r["train_error"] for r in history], label="train")
    ax2.plot(epochs, [r["test_error"] for r in history], label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("top-1 error (%)")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ---- data ----------------------------------------------------------------------------------------------


def open_training_data(cfg: TrainConfig):
    """(train, test) through ``open_dataset``; a missing folder gets a line saying how to get the data."""
    if cfg.dataset != "digits" and not cfg.download:
        if cfg.data is None:
            raise DataError(f"--data is needed for {cfg.dataset}: a folder holding it "
                            f"(from {where_to_get(cfg.dataset)}), or add --download")
        if not Path(cfg.data).is_dir():
            raise DataError(f"data folder {cfg.data} does not exist: put {cfg.dataset} there "
                            f"(from {where_to_get(cfg.dataset)}) or pass --download")
    try:
        train_set = open_dataset(cfg.dataset, cfg.data, "train", download=cfg.download)
        test_set = open_dataset(cfg.dataset, cfg.data, "test", download=cfg.download)
    except UsageError as e:
        if "unknown data set" in str(e):
            raise DataError(f"this build of dnet has no loader for {cfg.dataset} ({e})") from None
        raise
    if len(train_set) == 0 or len(test_set) == 0:
        raise DataError(f"data set {cfg.dataset} in {cfg.data}: the train or test split is empty")
    return train_set, test_set


def dataset_spec(ds) -> PreprocessSpec:
    spec = getattr(ds, "spec", None)
    return spec if spec is not None else get_spec("torch7")


class _FileSplit(torch.utils.data.Dataset):
    """ImageNet-style files decoded and augmented per sample, with choices drawn from (seed, epoch, index)."""

    def __init__(self, ds, spec: PreprocessSpec, train: bool, seed: int = 0, epoch: int = 0) -> None:
        self.ds, self.spec, self.train, self.seed, self.epoch = ds, spec, train, seed, epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.ds.paths[i]) as img:
            if self.train:
                x = augment.imagenet_train(img, self.spec, augment.epoch_generator(self.seed, self.epoch, 2 + i))
            else:
                x = augment.imagenet_eval(img, self.spec)
        return x, int(self.ds.labels[i])


class Batches:
    """Mini-batches of one split for one epoch: normalised (and augmented) tensors with their labels."""

    def __init__(self, ds, cfg: TrainConfig, d: Distributed, *, train: bool, epoch: int) -> None:
        self.ds, self.cfg, self.train, self.epoch = ds, cfg, train, epoch
        self.spec = dataset_spec(ds)
        if train:
            # The data order of every process: a DistributedSampler seeded with (seed, epoch), also for one
            # process, so one process with batch B sees the same samples per step as two with B/2 each.
            sampler = torch.utils.data.DistributedSampler(
                range(len(ds)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed, drop_last=False)
            sampler.set_epoch(epoch)
            order = list(sampler)
        else:
            order = list(range(d.rank, len(ds), d.world))
        self.batches = [order[i:i + cfg.batch] for i in range(0, len(order), cfg.batch)]
        self.aug = augment.ARRAY_AUGMENT.get(cfg.dataset) if (train and cfg.augment) else None
        if isinstance(ds, ArrayDataset) and self.aug is not None:
            self.offsets, self.flips = self.aug.draw(len(ds), cfg.seed, epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if isinstance(self.ds, ArrayDataset):
            for idx in self.batches:
                x = augment.normalize(self.ds.images[idx], self.spec)
                if self.aug is not None:
                    x = self.aug.apply(x, self.offsets[idx], self.flips[idx])
                yield x, torch.as_tensor(self.ds.labels[idx])
            return
        files = _FileSplit(self.ds, self.spec, self.train and self.cfg.augment, self.cfg.seed, self.epoch)
        loader = torch.utils.data.DataLoader(files, batch_sampler=self.batches, num_workers=self.cfg.workers)
        yield from loader


# ---- state that makes a resume exact ---------------------------------------------------------------------


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


# ---- model and optimiser ---------------------------------------------------------------------------------


def model_name(config: DenseNetConfig, cfg: TrainConfig) -> str:
    if cfg.model != "custom":
        return cfg.model
    entry = zoo.find(config)
    return entry.name if entry is not None else "custom"


def describe(config: DenseNetConfig) -> str:
    """'DenseNet-BC-22 (k=12)': the architecture in the paper's words, for titles and logs."""
    return f"DenseNet{'-BC' if config.bottleneck else ''}-{config.depth} (k={config.growth_rate})"


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """optim.sgd as train.lua sets it: momentum 0.9, Nesterov, dampening 0, weight decay on every parameter
    (``decay_bn_bias=False`` exempts BN weights and all biases, the common modern variant)."""
    if cfg.decay_bn_bias:
        groups = [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    else:
        decay = [p for p in model.parameters() if p.ndim > 1]
        other = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, dampening=0.0)


def build_model(cfg: TrainConfig, num_classes: int) -> DenseNet:
    return DenseNet(cfg.model_config(num_classes), memory_efficient=cfg.memory_efficient)


# ---- one epoch -------------------------------------------------------------------------------------------


def _all_sum(values: list[float], d: Distributed) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def _autocast(cfg: TrainConfig, d: Distributed):
    if not cfg.amp:
        return contextlib.nullcontext()
    if d.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def train_epoch(model, batches: Batches, optimizer, scaler, cfg: TrainConfig, d: Distributed, epoch: int,
                progress: bool) -> dict:
    """One pass over the training split; the loss and error are over all processes' samples."""
    from tqdm import tqdm

    model.train()
    n_iter = len(batches)
    loss_sum = correct = count = 0.0
    t0 = time.perf_counter()
    bar = tqdm(total=n_iter, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    lr = cfg.lr
    for it, (x, y) in enumerate(batches):
        lr = learning_rate(cfg.lr_schedule, cfg.lr, epoch, cfg.epochs, it, n_iter)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(cfg, d):
            out = model(x)
            loss = F.cross_entropy(out.float(), y)
        step = _all_sum([loss.item() * len(y), (out.argmax(1) == y).sum().item(), len(y),
                         0.0 if math.isfinite(loss.item()) else 1.0], d)
        if step[3] > 0:
            bar.close()
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {epoch + 1}, iteration {it + 1} (lr {lr:g}); stopped. "
                f"The last good checkpoint is kept; lower --lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        loss_sum += step[0]
        correct += step[1]
        count += step[2]
        if progress:
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{step[0] / step[2]:.3f}", err=f"{100 * (1 - step[1] / step[2]):.1f}%",
                            img_s=f"{count / max(elapsed, 1e-9):.0f}")
            bar.update()
    bar.close()
    elapsed = time.perf_counter() - t0
    return {"train_loss": loss_sum / count, "train_error": 100.0 * (1 - correct / count), "lr": lr,
            "time_s": elapsed, "img_per_s": count / elapsed}


@torch.no_grad()
def evaluate_split(model: nn.Module, batches: Batches, cfg: TrainConfig, d: Distributed) -> dict:
    """Test loss and top-1 error (%), summed over all processes' shards."""
    model.eval()
    loss_sum = correct = count = 0.0
    for x, y in batches:
        x, y = x.to(d.device), y.to(d.device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(cfg, d):
            out = model(x).float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        count += len(y)
    loss_sum, correct, count = _all_sum([loss_sum, correct, count], d)
    return {"test_loss": loss_sum / count, "test_error": 100.0 * (1 - correct / count)}


# ---- the run ---------------------------------------------------------------------------------------------


def _training_state(model, optimizer, scaler, cfg, epoch, best_error, history, d: Distributed) -> dict:
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


def _load_resume(run_dir: Path, cfg: TrainConfig, d: Distributed) -> tuple[TrainConfig, dict]:
    saved, doc = read_run_config(run_dir)
    diffs = saved.differences(cfg)
    if doc.get("world_size", 1) != d.world:
        diffs.append(f"world_size: {doc.get('world_size', 1)} -> {d.world}")
    if diffs:
        raise UsageError(f"--resume {run_dir}: that run was trained with a different configuration "
                         f"({'; '.join(diffs)}); resume with its options or start a new run with --out")
    ckpt = read_pth(run_dir / LAST)
    if not is_checkpoint(ckpt) or "train" not in ckpt:
        raise FileFormatError(f"{run_dir / LAST}: not a dnet training checkpoint")
    if TrainConfig.from_dict(ckpt["train"]["config"]).differences(saved):
        raise FileFormatError(f"{run_dir / LAST} does not belong to {run_dir / CONFIG_JSON}")
    return saved, ckpt


def train(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) a run; return where it was written and its numbers.

    ``on_epoch_end(epoch, row)`` is called after each epoch's files are written (tests use it to interrupt).
    """
    d = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log = log or (lambda s: print(s, flush=True))
    say = log if d.main else (lambda s: None)
    if cfg.sync_bn and d.device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only)")

    ckpt = None
    if resume is not None:
        run_dir = Path(resume)
        saved, ckpt = _load_resume(run_dir, cfg, d)
        cfg = TrainConfig.from_dict({**saved.to_dict(), **{k: getattr(cfg, k) for k in
                                                           ("epochs", "data", "workers", "threads", "quiet", "download",
                                                            "memory_efficient", "channels_last")},
                                     "out": str(run_dir)})
    else:
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
        if d.main and ((run_dir / LAST).exists() or (run_dir / CONFIG_JSON).exists()):
            raise UsageError(f"run folder {run_dir} already holds a run; continue it with --resume {run_dir} "
                             f"or choose another --out")
    train_set, test_set = open_training_data(cfg)
    config = cfg.model_config(train_set.num_classes)
    labels_max = int(np.max(train_set.labels))
    if labels_max >= config.num_classes:
        raise DataError(f"data set {cfg.dataset} has label {labels_max} but the model has {config.num_classes} classes")
    if d.main:
        check_writable(run_dir)

    seed_everything(cfg.seed + d.rank)
    model = DenseNet(config, memory_efficient=cfg.memory_efficient)
    spec = dataset_spec(train_set)
    name = model_name(config, cfg)
    start_epoch, best_error, history = 0, math.inf, []
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
    model.to(d.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if cfg.sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda") if (cfg.amp and d.device.type == "cuda") else None
    if ckpt is not None:
        state = ckpt["train"]
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_error, history = state["epoch"], state["best_error"], list(state["history"])
        set_rng_state(state["rng"][d.rank])

    def meta(extra: dict) -> ArtifactMeta:
        return ArtifactMeta(model=name, num_classes=config.num_classes, input_size=spec.input_size, preprocess=spec,
                            config=config.to_dict(), dnet_version=__version__,
                            extra={"trained_by": "dnet train", "dataset": cfg.dataset, **extra})

    if d.main:
        atomic_write_text(run_dir / CONFIG_JSON, json.dumps(
            {"train": cfg.to_dict(), "model": config.to_dict(), "model_name": name, "world_size": d.world,
             "global_batch": cfg.batch * d.world, "dnet_version": __version__}, indent=2) + "\n")
    if start_epoch >= cfg.epochs:
        say(f"{run_dir}: already trained {start_epoch} epochs (--epochs {cfg.epochs}); nothing to do")
    else:
        what = "resuming" if ckpt is not None else "training"
        say(f"{what} {name if name != 'custom' else describe(config)} ({sum(p.numel() for p in model.parameters()):,} parameters, dropout "
            f"{config.drop_rate:g}) on {cfg.dataset}: {len(train_set)} train / {len(test_set)} test images, "
            f"epochs {start_epoch + 1}-{cfg.epochs}, lr {cfg.lr:g} {cfg.lr_schedule}, device {d.device}")
        if d.enabled:
            say(f"{d.world} processes: global batch {cfg.batch * d.world} = {cfg.batch} per process × {d.world}")
        else:
            say(f"batch {cfg.batch}")
        say(f"run folder: {run_dir}")
    progress = d.main and not cfg.quiet and sys.stderr.isatty()
    test_batches = Batches(test_set, cfg, d, train=False, epoch=0)
    for epoch in range(start_epoch, cfg.epochs):
        row = {"epoch": epoch + 1}
        row.update(train_epoch(net, Batches(train_set, cfg, d, train=True, epoch=epoch), optimizer, scaler, cfg,
                               d, epoch, progress))
        if d.enabled:  # BN running statistics of rank 0 everywhere, so every shard tests the saved model
            for b in model.buffers():
                dist.broadcast(b, 0)
        row.update(evaluate_split(model, test_batches, cfg, d))
        history.append(row)
        is_best = row["test_error"] < best_error
        best_error = min(best_error, row["test_error"])
        state = _training_state(model, optimizer, scaler, cfg, epoch + 1, best_error, history, d)
        if d.main:
            m = meta({"epoch": epoch + 1, "test_error": row["test_error"]})
            save_checkpoint(run_dir / LAST, model, m, train=state)
            if is_best:
                save_checkpoint(run_dir / BEST, model, m, train=state)
            _write_metrics(run_dir, history)
            plot_curves(history, run_dir / CURVES_PNG, f"{describe(config)} on {cfg.dataset}")
            say(f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                f"train error {row['train_error']:5.2f}%  test error {row['test_error']:5.2f}%  "
                f"lr {row['lr']:.4g}  {row['time_s']:.1f}s  {row['img_per_s']:.0f} img/s" + ("  *" if is_best else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    model.eval()
    final = history[-1]["test_error"] if history else math.nan
    return TrainResult(run_dir, len(history), best_error, final, history, model,
                       meta({"epoch": len(history), "test_error": final}), d.main)
