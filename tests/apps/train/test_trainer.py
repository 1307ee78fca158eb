"""The training loop on digits with a tiny DenseNet-BC: files, exact resume, atomic checkpoints, NaN stop,
memory-efficient parity, and bad input (one line, non-zero exit, nothing lost)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dnet.formats.checkpoint
from dnet.apps.train import loop
from dnet.apps.train.batches import Batches
from dnet.apps.train.distributed import Distributed
from dnet.apps.train.loop import make_optimizer
from dnet.apps.train.recipe import recipe
from dnet.apps.train.trainer import train
from dnet.cli import main
from dnet.core.errors import DnetError, TrainingDiverged
from dnet.data.datasets import DIGITS_SPEC, open_dataset
from dnet.formats.checkpoint import load_checkpoint, read_pth, save_checkpoint
from dnet.models.densenet import DenseNet

TINY = dict(depth=10, growth_rate=4, batch=128, threads=1, quiet=True)  # 1 layer per block, ~12 steps/epoch


def tiny(tmp_path: Path, name: str = "run", **fields):
    return recipe("digits", **{**TINY, "out": str(tmp_path / name), **fields})


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_run_writes_its_files_and_checkpoints_that_load(tmp_path):
    result = train(tiny(tmp_path, epochs=2), log=lambda s: None)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "config.json", "curves.png", "last.pth", "metrics.csv"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["lr"]) == pytest.approx(0.001)  # multistep, 2 epochs: Lua epoch 2 >= 75% of 2
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((run / "config.json").read_text())
    assert doc["world_size"] == 1 and doc["global_batch"] == 128 and doc["train"]["lr"] == 0.1
    model = load_checkpoint(run / "last.pth")
    assert model.meta.num_classes == 10 and model.meta.preprocess == DIGITS_SPEC and model.meta.input_size == 8
    assert model.meta.extra["epoch"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k])
    state = read_pth(run / "last.pth")["train"]
    assert state["epoch"] == 2 and len(state["history"]) == 2 and "optimizer" in state and len(state["rng"]) == 1
    assert result.final_error == pytest.approx(float(rows[1]["test_error"]))


def test_resume_after_interruption_gives_the_same_weights_as_a_straight_run(tmp_path):
    # Dropout on and augmentation on, so both the saved RNG state and the (seed, epoch) draws matter.
    straight = train(tiny(tmp_path, "straight", epochs=3, drop_rate=0.2, lr_schedule="cosine"), log=lambda s: None)

    def interrupt(epoch, row):
        if epoch == 1:  # after 2 of 3 epochs
            raise KeyboardInterrupt

    cfg = tiny(tmp_path, "resumed", epochs=3, drop_rate=0.2, lr_schedule="cosine")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_epoch_end=interrupt, log=lambda s: None)
    assert read_pth(tmp_path / "resumed" / "last.pth")["train"]["epoch"] == 2
    resumed = train(cfg, resume=tmp_path / "resumed", log=lambda s: None)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(resumed.history) == 3
    for ra, rb in zip(straight.history, resumed.history, strict=True):
        assert ra["train_loss"] == rb["train_loss"] and ra["test_error"] == rb["test_error"]


def test_resume_through_the_cli_extends_the_run_to_n_epochs(tmp_path):
    run = tmp_path / "cli"
    args = ["train", "--dataset", "digits", "--depth", "10", "--growth-rate", "4", "--batch-size", "128", "--threads", "1",
            "--lr-schedule", "step30", "--quiet", "-o", str(run)]
    r = CliRunner().invoke(main, [*args, "--epochs", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 2
    straight = tmp_path / "straight"
    r = CliRunner().invoke(main, [*args[:-1], str(straight), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    a, b = load_checkpoint(run / "last.pth").state_dict(), load_checkpoint(straight / "last.pth").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # step30 does not depend on --epochs: extension is exact too


def test_a_crash_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    train(tiny(tmp_path, epochs=1), log=lambda s: None)
    last = tmp_path / "run" / "last.pth"
    before = last.read_bytes()
    model = load_checkpoint(last)

    def crashing_save(obj, f, *a, **k):  # f: the temporary file, open (dnet.formats.checkpoint.save_torch) or by name
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half a file")
        else:
            Path(f).write_bytes(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(dnet.formats.checkpoint.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(last, DenseNet(model.config))
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pth", "config.json", "curves.png", "last.pth",
                                                             "metrics.csv"]  # no temporary file left
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_checkpoint(last).state_dict().items())


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = [0]
    real = F.cross_entropy

    def poisoned(out, y, *a, **k):
        loss = real(out, y, *a, **k)
        if k.get("reduction") != "sum":  # training calls only
            calls[0] += 1
            if calls[0] == 15:  # epoch 2 (12 steps an epoch), iteration 3
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged) as e:
        train(tiny(tmp_path, epochs=3), log=lambda s: None)
    assert str(e.value).startswith("loss became nan at epoch 2, iteration 3 (lr 0.01); stopped.")
    assert "\n" not in str(e.value)
    assert read_pth(tmp_path / "run" / "last.pth")["train"]["epoch"] == 1
    load_checkpoint(tmp_path / "run" / "last.pth")


def test_memory_efficient_training_follows_the_standard_loss_trajectory():
    cfg = recipe("digits", depth=16, growth_rate=6, batch=32, drop_rate=0.0)
    data = open_dataset("digits", None, "train")
    losses = {}
    for me in (False, True):
        torch.manual_seed(0)
        model = DenseNet(cfg.model_config(10), memory_efficient=me).train()
        opt = make_optimizer(model, cfg)
        out = []
        for i, (x, y) in enumerate(Batches(data, cfg, Distributed(), train=True, epoch=0)):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
            if i == 5:
                break
        losses[me] = (out, model.state_dict())
    assert len(losses[True][0]) == 6
    assert max(abs(a - b) for a, b in zip(losses[False][0], losses[True][0], strict=True)) <= 1e-5
    assert losses[False][0][0] != losses[False][0][5]  # it trained
    for k, v in losses[False][1].items():
        assert torch.allclose(v.float(), losses[True][1][k].float(), atol=1e-5), k


# ---- bad input: one line, exit status ≠ 0, nothing lost ---------------------------------------------------


def _cli(args):
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.output.strip()


def test_missing_data_folder_says_how_to_get_it(tmp_path):
    code, out = _cli(["train", "--dataset", "cifar10", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "r")])
    assert code == 1
    assert out == (f"dnet: error: data folder {tmp_path / 'nope'} does not exist: put cifar10 there "
                   "(from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) or pass --download")
    assert not (tmp_path / "r").exists()


def test_class_count_mismatch_is_one_line(tmp_path):
    code, out = _cli(["train", "--dataset", "digits", "--num-classes", "100", "-o", str(tmp_path / "r")])
    assert code == 2
    assert out == ("dnet: error: the model would have 100 classes but data set digits has 10; "
                   "drop --num-classes (the class count is taken from the data set)")
    assert not (tmp_path / "r").exists()


def test_unwritable_run_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out = _cli(["train", "--dataset", "digits", "-o", str(blocker / "run"), "--epochs", "1"])
    assert code == 1
    assert out.startswith(f"dnet: error: cannot create run folder {blocker / 'run'}: ") and "\n" not in out
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only folder")
def test_read_only_run_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, out = _cli(["train", "--dataset", "digits", "-o", str(ro), "--epochs", "1"])
    finally:
        ro.chmod(0o700)
    assert code == 1
    assert out == f"dnet: error: cannot write to run folder {ro}: permission denied; choose another --output"


def test_resume_with_a_different_configuration_is_refused_and_nothing_changes(tmp_path):
    run = tmp_path / "r"
    code, _ = _cli(["train", "--dataset", "digits", "--depth", "10", "--growth-rate", "4", "--batch-size", "128",
                    "--threads", "1", "--epochs", "1", "--quiet", "-o", str(run)])
    assert code == 0
    before = _digest(run)
    code, out = _cli(["train", "--resume", str(run), "--epochs", "2", "--lr", "0.05"])
    assert code == 2
    assert out == (f"dnet: error: --resume {run}: that run was trained with a different configuration "
                   "(lr: 0.1 -> 0.05); resume with its options or start a new run with --output")
    assert _digest(run) == before
    # and a new run into a folder that holds one is refused, not overwritten
    code, out = _cli(["train", "--dataset", "digits", "--epochs", "1", "-o", str(run)])
    assert code == 2
    assert out == f"dnet: error: run folder {run} already holds a run; continue it with --resume {run} or choose another --output"
    assert _digest(run) == before


def test_sync_bn_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: --sync-bn is accepted")
    code, out = _cli(["train", "--dataset", "digits", "--sync-bn", "-o", str(tmp_path / "r")])
    assert code == 2
    assert out == "dnet: error: --sync-bn needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only)"
    assert not (tmp_path / "r").exists()


def test_errors_are_dnet_errors():
    assert issubclass(TrainingDiverged, DnetError)
