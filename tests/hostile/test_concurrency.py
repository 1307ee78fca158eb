"""Two ``dnet convert``s to one ``-o`` started together: each writes its own temporary file and renames it into
place, so the file left is complete and valid, and is one of the two results, never a mix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dnet.formats.checkpoint import load_checkpoint
from tests.helpers.harness import LAUNCH, ROOT, nothing_left
from tests.helpers.models import tiny_checkpoint


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
    import dnet.apps.train.trainer as trainer
    from tests.helpers.harness import cli, tree

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


# A dnet train that holds its folder until the test opens the gate: its first epoch waits for the file GATE.
GATED = r"""
import os, sys, time
import dnet.apps.train.trainer as trainer
real = trainer.train_epoch
def gated(*args, **kwargs):
    while not os.path.exists(os.environ["GATE"]):
        time.sleep(0.05)
    return real(*args, **kwargs)
trainer.train_epoch = gated
from dnet.cli import main
sys.argv[0] = "dnet"
main()
"""


@pytest.mark.slow
def test_two_train_processes_into_one_folder_one_refused_in_one_line_the_other_intact(tmp_path):
    """Two real processes (the lock is the kernel's, across processes): the second, started while the first holds
    the folder, says so in one line and exits 2; the first ends normally, its files whole, the lock file gone."""
    import time

    from dnet.apps.train.run_folder import LOCK

    run, tmpdir, gate = tmp_path / "run", tmp_path / "tmp", tmp_path / "gate"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1", "GATE": str(gate)}
    args = [str(a) for a in (*TRAIN, "--epochs", 1, "-o", run)]
    first = subprocess.Popen([sys.executable, "-c", GATED, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "config.json").exists():  # written under the lock, before the first step
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        for second_args in (args, ["train", "--resume", str(run), "--epochs", "2"]):
            second = subprocess.run([sys.executable, "-c", LAUNCH, *second_args], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert second.returncode == 2 and second.stderr.splitlines() == [
                f"dnet: error: run folder {run} is in use by another dnet train (or --resume) still running; wait "
                "for it to end or choose another --output"], (second.returncode, second.stderr)
            assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing of the first's touched
        gate.touch()
        out, err = first.communicate(timeout=300)
    finally:
        gate.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "config.json", "curves.png", "last.pth",
                                                      "metrics.csv"]  # the lock file is removed with the lock
    assert LOCK not in os.listdir(run) and load_checkpoint(run / "last.pth").config.num_classes == 10
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # the header and the one epoch
    nothing_left(tmpdir)


def test_the_lock_is_a_file_in_the_folder_taken_over_after_a_kill_and_removed_at_the_end(tmp_path):
    """A lock file a killed run left (unlocked) is taken over; held, it refuses a second holder, from another
    descriptor as from another process; released, the file is gone."""
    import fcntl

    from dnet.apps.train.run_folder import LOCK, in_use, run_lock
    from dnet.core.errors import UsageError

    (tmp_path / LOCK).write_text("")  # what a SIGKILL leaves
    assert not in_use(tmp_path)
    with run_lock(tmp_path):
        assert in_use(tmp_path) and (tmp_path / LOCK).is_file()
        with pytest.raises(UsageError, match=r"is in use by another dnet train"), run_lock(tmp_path):
            pass
        fd = os.open(tmp_path / LOCK, os.O_RDWR)  # as any other process would try it
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert not (tmp_path / LOCK).exists() and not in_use(tmp_path)


# --- eval of a file that a convert is replacing --------------------------------------------------------------


def test_an_onnx_file_replaced_while_it_is_opened_runs_as_the_one_file_that_was_read(tmp_path, monkeypatch):
    import dataclasses
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    import dnet.engines.onnxruntime as ort_engine
    from dnet import engines
    from dnet.core.artifact.onnxfile import read_meta, write_meta
    from dnet.core.specs import get_spec
    from tests.helpers.models import tiny_onnx

    old, new = tiny_onnx(tmp_path, "old.onnx"), tmp_path / "new.onnx"
    proto = onnx.load(str(old))  # the classes in reverse order, and metadata naming another preprocessing
    weight = next(t for t in proto.graph.initializer if t.name == "classifier.weight")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight)[::-1].copy(), weight.name))
    write_meta(proto, dataclasses.replace(read_meta(proto), preprocess=get_spec("cifar100")))
    onnx.save(proto, str(new))
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with engines.open(old) as e:
        want, want_meta = e(x), e.meta
    with engines.open(new) as e:
        other, other_meta = e(x), e.meta
    assert not np.allclose(want, other, atol=1e-3) and want_meta != other_meta
    target, incoming = tmp_path / "model.onnx", tmp_path / ".model.onnx.incoming"
    shutil.copyfile(old, target)
    shutil.copyfile(new, incoming)
    real = ort_engine.read_model

    def then_replaced(path, **kwargs):  # a convert renames its new file into place right after this read
        proto = real(path, **kwargs)
        os.replace(incoming, path)
        return proto

    monkeypatch.setattr(ort_engine, "read_model", then_replaced)
    with engines.open(target) as e:
        got, got_meta = e(x), e.meta
    assert target.read_bytes() == new.read_bytes()  # replaced while it was opened
    assert got_meta == want_meta  # the file that was read: its metadata and its graph, never the new graph
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_eval_of_a_file_that_converts_are_replacing_scores_the_old_or_the_new_file_whole(tmp_path):
    import shutil
    import threading

    from tests.helpers.evaldata import write_cifar_bin
    from tests.helpers.harness import cli, run_dnet
    from tests.helpers.models import save_model, ten_class

    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    write_cifar_bin(work / "data" / "cifar-10-batches-bin" / "test_batch.bin", 64)
    sources = [save_model(work, f"seed{seed}.pth", ten_class(seed)) for seed in (0, 1)]
    expect = []
    for i, src in enumerate(sources):  # each file's own predictions, evaluated alone
        onnx_file = work / f"alone{i}.onnx"
        assert cli("convert", src, "--from", "pth", "--to", "onnx", "-o", onnx_file, "--quiet", tmpdir=tmpdir).code == 0
        csv = work / f"alone{i}.csv"
        cli("eval", onnx_file, "--dataset", "cifar10", "--data", work / "data", "--quiet", "--predictions",
            csv, tmpdir=tmpdir).ok()
        expect.append(csv.read_text())
    assert expect[0] != expect[1]  # the two files are told apart by their predictions
    out = work / "model.onnx"
    shutil.copyfile(work / "alone0.onnx", out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    converts: list[tuple[int, str]] = []

    def replace_it_again_and_again():
        for src in (sources[1], sources[0], sources[1]):
            p = subprocess.run([sys.executable, "-c", LAUNCH, "convert", str(src), "--from", "pth", "--to", "onnx",
                                "-o", str(out), "--quiet", "--force"], cwd=work, env=env, capture_output=True,
                               text=True, timeout=600)
            converts.append((p.returncode, p.stderr))

    writer = threading.Thread(target=replace_it_again_and_again)
    writer.start()
    seen = []
    while writer.is_alive() or not seen:
        csv = work / f"during{len(seen)}.csv"
        r = run_dnet("eval", out, "--dataset", "cifar10", "--data", work / "data", "--quiet",
                     "--predictions", csv, cwd=work, tmpdir=tmpdir)
        assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
        assert csv.read_text() in expect  # the old file or the new one, whole: never a mix, never a partial read
        seen.append(expect.index(csv.read_text()))
    writer.join()
    assert [code for code, _ in converts] == [0, 0, 0], converts
    assert len(seen) >= 2, seen
    assert sorted(p.name for p in work.iterdir() if "dnet-partial" in p.name) == []
    nothing_left(tmpdir)
