"""Two ``dnet convert``s to one ``-o`` started together: each writes its own temporary file and renames it into
place, so the file left is complete and valid, and is one of the two results, never a mix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dnet.checkpoint import load_checkpoint
from tests.converters.tiny_models import tiny_checkpoint
from tests.hostile.harness import LAUNCH, ROOT, nothing_left


@pytest.mark.slow
@pytest.mark.parametrize("target", ["pth", "onnx"])
def test_two_converts_to_one_output_leave_one_complete_result(tmp_path, target):
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    sources = [tiny_checkpoint(work, f"seed{seed}.pth", seed=seed) for seed in (0, 1)]
    out = work / f"same.{target}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, "convert", str(src), "--from", "pth", "--to", target,
                               "-o", str(out), "--quiet", "--force"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for src in sources]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, err in results:  # each completes, or refuses in one line; never a traceback
        assert "Traceback" not in err, err
        assert code == 0 or (code != 0 and err.strip().startswith("dnet: error: ")), (code, err)
    assert any(code == 0 for code, _ in results)
    x = torch.randn(3, 3, 32, 32)
    if target == "pth":
        got = load_checkpoint(out)(x)
    else:
        from dnet import engines

        with engines.open(out) as e:
            got = torch.from_numpy(e(x.numpy()))
    expect = [load_checkpoint(src)(x) for src in sources]
    matches = [torch.allclose(got, e, atol=1e-4) for e in expect]
    assert matches.count(True) == 1, matches  # exactly one of the two models: complete, and not a mix
    assert sorted(p.name for p in work.iterdir() if "dnet-partial" in p.name) == []
    nothing_left(tmpdir)


TRAIN = ["train", "--dataset", "digits", "--depth", 10, "--growth-rate", 4, "--batch-size", 256, "--workers", 0,
         "--threads", 1, "--quiet"]


def test_train_and_resume_of_one_run_folder_at_once_are_refused_by_its_lock(tmp_path, monkeypatch):
    import dnet.train.trainer as trainer
    from tests.hostile.harness import cli, tree

    run, tmp = tmp_path / "run", tmp_path / "tmp"
    seen = {}
    real_epoch, real_plot = trainer.train_epoch, trainer.plot_curves

    def first_step(*args, **kwargs):  # while the first run trains: a second start of the same folder
        if "start" not in seen:
            seen["start"] = cli(*TRAIN, "--epochs", 2, "-o", run, tmpdir=tmp)
        return real_epoch(*args, **kwargs)

    def after_checkpoint(*args, **kwargs):  # last.pth is written: a --resume of the folder still in use
        real_plot(*args, **kwargs)
        if "resume" not in seen:
            before = tree(run)
            seen["resume"] = cli("train", "--resume", run, "--epochs", 2, tmpdir=tmp)
            seen["same"] = tree(run) == before

    monkeypatch.setattr(trainer, "train_epoch", first_step)
    monkeypatch.setattr(trainer, "plot_curves", after_checkpoint)
    r = cli(*TRAIN, "--epochs", 2, "-o", run, tmpdir=tmp)
    assert r.code == 0, r.stderr
    busy = (f"run folder {run} is in use by another dnet train (or --resume) still running; wait for it to end or "
            "choose another --output")
    assert seen["start"].error_line(2) == busy
    assert seen["resume"].error_line(2) == busy and seen["same"]
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "config.json", "curves.png", "last.pth",
                                                      "metrics.csv"]  # the lock leaves no file
    monkeypatch.undo()
    r = cli("train", "--resume", run, "--epochs", 3, tmpdir=tmp)  # released when the run ended
    assert r.code == 0, r.stderr
    nothing_left(tmp)
