"""``--resume`` of a run stopped before its first checkpoint: config.json is written before the first step, and
resuming says what happened instead of "no config.json" or "last.pth: no such file"; starting again works."""

from __future__ import annotations

import json

import pytest

import dnet.apps.train.trainer as trainer
from dnet.apps.train.run_folder import LOCK
from tests.helpers.harness import cli

ARGS = ["train", "--dataset", "digits", "--depth", 10, "--growth-rate", 4, "--epochs", 1, "--batch-size", 256,
        "--workers", 0, "--threads", 1, "--quiet"]


def test_config_json_is_written_before_the_first_step(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = {}

    def interrupt(*args, **kwargs):  # the first training step: what is on disk now is what an interrupt leaves
        seen["files"] = sorted(p.name for p in run.iterdir())
        seen["config"] = json.loads((run / "config.json").read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_epoch", interrupt)
    r = cli(*ARGS, "-o", run, tmpdir=tmp_path / "tmp")
    assert r.error_line(130) == "interrupted by SIGINT; no partial file was kept"
    assert seen["files"] == [LOCK, "config.json"] and seen["config"]["model"]["growth_rate"] == 4
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # the interrupt released and removed the lock
    line = cli("train", "--resume", run, "--epochs", 1, tmpdir=tmp_path / "tmp").error_line(2)
    assert line == f"the run in {run} was stopped before its first checkpoint: nothing to resume; start it again"
    monkeypatch.undo()
    r = cli(*ARGS, "-o", run, tmpdir=tmp_path / "tmp")  # starting it again is allowed: no checkpoint is replaced
    assert r.code == 0, r.stderr
    assert (run / "last.pth").is_file()


@pytest.mark.parametrize("left", [[], ["config.json"]], ids=["empty folder", "config only"])
def test_resume_of_an_early_stopped_folder_is_one_line(tmp_path, left):
    run = tmp_path / "run"
    if left:
        r = cli(*ARGS, "--epochs", 1, "-o", run, tmpdir=tmp_path / "tmp")
        assert r.code == 0, r.stderr
        for p in run.iterdir():  # what a SIGKILL before the first checkpoint leaves
            if p.name not in left:
                p.unlink()
    else:
        run.mkdir()
    line = cli("train", "--resume", run, "--epochs", 2, tmpdir=tmp_path / "tmp").error_line(2)
    assert line == f"the run in {run} was stopped before its first checkpoint: nothing to resume; start it again"
    assert sorted(p.name for p in run.iterdir()) == left


def test_a_folder_with_a_checkpoint_is_still_never_overwritten(tmp_path):
    run = tmp_path / "run"
    assert cli(*ARGS, "-o", run, tmpdir=tmp_path / "tmp").code == 0
    line = cli(*ARGS, "-o", run, tmpdir=tmp_path / "tmp").error_line(2)
    assert line == f"run folder {run} already holds a run; continue it with --resume {run} or choose another --output"
