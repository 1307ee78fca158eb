"""One epoch of training and one pass of testing, as ``train.lua`` does them: SGD with Nesterov momentum, the
learning rate set per iteration from the schedule, loss and error summed over every process."""

from __future__ import annotations

import contextlib
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dnet.apps.train.batches import Batches
from dnet.apps.train.distributed import Distributed, all_sum
from dnet.apps.train.recipe import TrainConfig
from dnet.apps.train.schedule import learning_rate
from dnet.core.errors import TrainingDiverged
from dnet.models.densenet import DenseNet


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


def recipe_model(cfg: TrainConfig, num_classes: int) -> DenseNet:
    """The DenseNet a training recipe describes, freshly initialised."""
    return DenseNet(cfg.model_config(num_classes), memory_efficient=cfg.memory_efficient)


def _autocast(cfg: TrainConfig, d: Distributed):
    if not cfg.amp:
        return contextlib.nullcontext()
    if d.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def train_epoch(model, batches: Batches, optimizer, scaler, cfg: TrainConfig, d: Distributed, epoch: int,
                progress: bool) -> dict:
    """One pass over the training split; the loss and error are over all processes' samples."""
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
        step = all_sum([loss.item() * len(y), (out.argmax(1) == y).sum().item(), len(y),
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
    loss_sum, correct, count = all_sum([loss_sum, correct, count], d)
    return {"test_loss": loss_sum / count, "test_error": 100.0 * (1 - correct / count)}


__all__ = ["evaluate_split", "make_optimizer", "recipe_model", "train_epoch"]
