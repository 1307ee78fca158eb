"""SVHN the paper's way in ``dnet train``: train + extra less the held-out images, best.pth chosen on validation."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import scipy.io

from dnet.apps.train.recipe import recipe
from dnet.apps.train.trainer import train
from dnet.data import svhn
from dnet.formats.checkpoint import load_checkpoint


def _mat(path, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    scipy.io.savemat(path, {"X": x, "y": y})


def test_svhn_run_trains_on_train_plus_extra_and_keeps_the_best_on_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(svhn, "HOLD_OUT_PER_CLASS", {"train": 2, "extra": 1})  # 30 validation images
    data = tmp_path / "svhn"
    data.mkdir()
    for name, n, seed in (("train", 40, 0), ("extra", 30, 1), ("test", 20, 2)):
        _mat(data / f"{name}_32x32.mat", n, seed)
    lines = []
    cfg = recipe("svhn", data=str(data), depth=10, growth_rate=4, epochs=3, batch=16, threads=1, quiet=True,
                 out=str(tmp_path / "run"))
    result = train(cfg, log=lines.append)
    assert "on svhn: 40 train / 30 validation / 20 test images" in lines[0]
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert list(rows[0])[-2:] == ["val_loss", "val_error"]
    val = [float(r["val_error"]) for r in rows]
    best = val.index(min(val))  # the first epoch with the lowest validation error
    assert result.best_error == pytest.approx(float(rows[best]["test_error"]))
    saved = load_checkpoint(tmp_path / "run" / "best.pth").meta.extra
    assert saved["epoch"] == best + 1 and saved["val_error"] == pytest.approx(val[best])
    assert saved["augmented"] is False and result.model.config.drop_rate == 0.2  # the paper: no augmentation
