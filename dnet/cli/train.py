"""``dnet train``: the paper's recipe on a data set; works the same under ``torchrun``."""

from __future__ import annotations

import dataclasses
import json
import math

import click

from dnet.apps.train.recipe import SCHEDULES, recipe
from dnet.apps.train.run_folder import BEST, CONFIG_JSON, CURVES_PNG, LAST, METRICS_CSV, read_run_config
from dnet.apps.train.trainer import TrainResult, train
from dnet.cli.groups import GENERAL, Alias, verb
from dnet.cli.main import reports_errors
from dnet.cli.options import (
    MAX_BATCH,
    MAX_CLASSES,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_THREADS,
    MAX_WIDTH,
    MAX_WORKERS,
    amount,
    count,
    json_option,
    quiet_option,
)
from dnet.data.datasets import TRAINABLE


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # a run with no epoch has no error: null, not JSON's missing Infinity


def result_facts(result: TrainResult) -> dict:
    """What ``dnet train --json`` prints: the run folder, the files written, the numbers of every epoch."""
    files = {"config": CONFIG_JSON, "metrics": METRICS_CSV, "curves": CURVES_PNG, "last": LAST, "best": BEST}
    return {"run_dir": str(result.run_dir), "model": result.meta.model, "epochs": result.epochs_done,
            "best_error": _finite(result.best_error), "final_error": _finite(result.final_error),
            "written": {k: str(result.run_dir / name) for k, name in files.items() if (result.run_dir / name).exists()},
            "history": result.history}


SECTIONS = (
    ("Data", ("--dataset", "--data", "--download", "--num-classes", "--no-augment", "--workers")),
    ("Model", ("--model", "--depth", "--growth-rate", "--bc", "--init-features", "--drop-rate", "--memory-efficient")),
    ("Optimisation", ("--epochs", "--batch-size", "--lr", "--lr-schedule", "--weight-decay", "--no-decay-bn-bias",
                      "--amp", "--channels-last", "--sync-bn", "--threads", "--seed")),
    ("Checkpoints", ("--output", "--resume")),
    (GENERAL, ("--json", "--quiet")),
)
ALIASES = (Alias("--batch", "--batch-size"), Alias("--out", "--output"))


@verb("train", sections=SECTIONS, aliases=ALIASES)
@click.option("--model", help="Zoo name (see 'dnet models'); or give --depth (and --growth-rate, --bc ...).")
@click.option("--depth", type=count(4, MAX_DEPTH), help="Custom CIFAR-style DenseNet: depth L (6n+4 for BC, 3n+4 otherwise).")
@click.option("--growth-rate", type=count(1, MAX_WIDTH), help="Custom model: growth rate k (default 12).")
@click.option("--bc/--no-bc", default=None, help="Custom model: DenseNet-BC (default) or basic DenseNet.")
@click.option("--init-features", type=count(1, MAX_WIDTH), help="Custom model: channels of the first convolution.")
@click.option("--dataset", type=click.Choice(TRAINABLE), help="Data set (default cifar10; digits is built in).")
@click.option("--data", type=click.Path(file_okay=False), help="Folder holding the data set.")
@click.option("--download", is_flag=True, default=None, help="Download the data set into --data if absent.")
@click.option("--num-classes", type=count(1, MAX_CLASSES), help="Check the data set has this many classes (taken from it anyway).")
@click.option("--epochs", type=count(1, MAX_EPOCHS), help="Epochs in all (300 CIFAR, 40 SVHN, 90 ImageNet).")
@click.option("--batch-size", "batch", type=count(1, MAX_BATCH),
              help="Images per step in each process (64 CIFAR/SVHN, 256 ImageNet).")
@click.option("--lr", type=amount(0, 10, lo_open=True), help="Initial learning rate (0.1).")
@click.option("--lr-schedule", type=click.Choice(SCHEDULES), help="multistep (÷10 at 50/75%), step30, cosine.")
@click.option("--weight-decay", type=amount(0, 1), help="Weight decay (1e-4).")
@click.option("--no-decay-bn-bias", "decay_bn_bias", flag_value=False, default=None,
              help="Exempt BN weights and biases from weight decay (the Lua code decays them).")
@click.option("--drop-rate", type=amount(0, 0.99), help="Dropout (default: 0.2 without augmentation, else 0).")
@click.option("--no-augment", "augment", flag_value=False, default=None, help="Train without data augmentation.")
@click.option("--memory-efficient", is_flag=True, default=None, help="Recompute BN-ReLU-conv1x1 in backward.")
@click.option("--amp", is_flag=True, default=None, help="Mixed precision (fp16 on CUDA, bf16 on CPU).")
@click.option("--channels-last", is_flag=True, default=None, help="NHWC memory format.")
@click.option("--sync-bn", is_flag=True, default=None, help="Synchronise BN statistics across processes (CUDA).")
@click.option("--workers", type=count(0, MAX_WORKERS), help="Data-loading processes (image-file data sets).")
@click.option("--threads", type=count(1, MAX_THREADS), help="CPU threads for PyTorch (default: its own choice).")
@click.option("--seed", type=count(0, 2**32 - 1), help="Random seed (0).")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False),
              help="Run folder (default runs/<dataset>-<model>-<time>).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True),
              help="Continue the run in this folder, up to --epochs in all.")
@json_option("the run's files and numbers (epoch lines go to stderr)")
@quiet_option(default=None)
@reports_errors
def train_cmd(resume: str | None, as_json: bool, **options) -> None:
    """Train a DenseNet with the paper's recipe; writes config.json, metrics.csv, curves.png, last/best.pth."""
    given = {k: v for k, v in options.items() if v is not None}
    if resume is None:
        cfg = recipe(given.pop("dataset", "cifar10"), **given)
    else:
        saved, _ = read_run_config(resume)
        # Options given again must agree with the run (train() names any that differ); the rest come from it.
        cfg = dataclasses.replace(saved, **{k: v for k, v in given.items() if k != "out"})
    result = train(cfg, resume=resume, log=(lambda line: click.echo(line, err=True)) if as_json else click.echo)
    if result.is_main and as_json:
        click.echo(json.dumps(result_facts(result), indent=2))
    elif result.is_main:
        click.echo(f"best test error {result.best_error:.2f}% · last {result.final_error:.2f}% · "
                   f"files in {result.run_dir}")
