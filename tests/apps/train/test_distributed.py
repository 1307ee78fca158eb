"""``dnet train`` under torchrun with 2 CPU processes (gloo): one set of files, the same loss as one process.

Tolerance: the mean training loss of the first epoch (23 steps of global batch 64) agrees with one process
at batch 64 within 2% (relative). It cannot agree exactly: each process normalises its BN layers with the
statistics of its own 32 images (SyncBatchNorm is GPU-only in PyTorch), and DistributedSampler repeats one
sample to split 1,437 images evenly. The data order and augmentation are the same in both by construction.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from dnet.apps.train.recipe import recipe
from dnet.apps.train.trainer import train
from tests.helpers.shared import ROOT

ARGS = ["--dataset", "digits", "--depth", "16", "--growth-rate", "6", "--epochs", "1", "--lr-schedule", "step30",
        "--threads", "1", "--quiet"]


@pytest.mark.slow  # about 30 s on 2 busy cores: two interpreters start, then a reference run
def test_two_gloo_processes_write_one_run_and_match_one_process(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dnet", "train", *ARGS, "--batch-size", "32", "-o", str(run)]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "global batch 64 = 32 per process × 2" in p.stdout
    assert p.stdout.count("best test error") == 1  # rank 0 alone reports
    assert sorted(x.name for x in run.iterdir()) == ["best.pth", "config.json", "curves.png", "last.pth",
                                                      "metrics.csv"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ddp"]  # nothing written anywhere else
    doc = json.loads((run / "config.json").read_text())
    assert (doc["world_size"], doc["global_batch"]) == (2, 64)
    ddp = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(ddp) == 1

    single = train(recipe("digits", depth=16, growth_rate=6, epochs=1, lr_schedule="step30", threads=1, quiet=True,
                          batch=64, out=str(tmp_path / "single")), log=lambda s: None)
    loss_ddp, loss_one = float(ddp[0]["train_loss"]), single.history[0]["train_loss"]
    assert loss_ddp == pytest.approx(loss_one, rel=0.02)
    assert loss_one < 2.2  # it learned something (chance is ln 10 = 2.30)
