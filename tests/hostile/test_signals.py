"""Signals: SIGTERM cleans up like SIGINT (temporary files removed); what a SIGKILL leaves is named
after its process and swept by the next dnet process writing into the same folder; scratch folders live in one
dnet folder under TMPDIR, swept the same way.

The ``slow`` tests kill ``dnet convert --to onnx-int8`` and ``dnet train`` at many moments with SIGTERM and SIGKILL,
and check that only complete outputs remain, or what the next run sweeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnet.core.atomic import atomic_path, atomic_write_text
from dnet.core.ownership import PARTIAL, SCRATCH, owner_of
from dnet.core.scratch import scratch_folder, scratch_root
from tests.helpers.harness import LAUNCH, ROOT, nothing_left

HOLD = r"""
import sys, time
from dnet.core.atomic import atomic_path
from dnet.core.scratch import scratch_folder
from dnet.core.signals import exit_on_sigterm
exit_on_sigterm()
with scratch_folder("calib") as scratch, atomic_path(sys.argv[1]) as tmp:
    (scratch / "model.onnx").write_bytes(b"x" * 1000)
    tmp.write_bytes(b"partial")
    print(tmp, scratch, flush=True)
    time.sleep(120)
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _holder(tmp_path: Path, target: Path) -> tuple[subprocess.Popen, Path, Path]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], env=env, stdout=subprocess.PIPE, text=True)
    partial, scratch = p.stdout.readline().split()
    return p, Path(partial), Path(scratch)


def test_sigterm_removes_the_partial_output_and_the_scratch_folder(tmp_path):
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    p, partial, scratch = _holder(tmp_path, target)
    assert partial.exists() and scratch.exists()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) != 0
    assert list(target.parent.iterdir()) == []
    nothing_left(tmp_path / "tmp")


def test_what_sigkill_leaves_is_named_for_its_process_and_swept_by_the_next_write(tmp_path):
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    p, partial, scratch = _holder(tmp_path, target)
    assert partial.name.startswith(f".model.onnx.{PARTIAL}.") and owner_of(partial.name)[1] == p.pid
    assert scratch.parent == tmp_path / "tmp" / scratch_root().name and f".{SCRATCH}." in scratch.name
    p.kill()
    p.wait()
    assert partial.exists() and scratch.exists()  # SIGKILL runs no cleanup: this is what the sweep is for
    atomic_write_text(target.parent / "other.txt", "x")  # any dnet write into the folder sweeps it
    assert sorted(x.name for x in target.parent.iterdir()) == ["other.txt"]
    import tempfile

    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path / "tmp")
    try:
        with scratch_folder("calib"):  # the next scratch folder sweeps the dead one
            assert not scratch.exists()
    finally:
        tempfile.tempdir = old
    nothing_left(tmp_path / "tmp")


def test_the_sweep_leaves_files_of_live_processes_and_other_files_alone(tmp_path):
    live = tmp_path / f".a.onnx.{PARTIAL}.{os.uname().nodename}.{os.getpid()}.abcdefgh"
    dead = tmp_path / f".b.onnx.{PARTIAL}.{os.uname().nodename}.{_dead_pid()}.abcdefgh"
    other_host = tmp_path / f".c.onnx.{PARTIAL}.elsewhere.{_dead_pid()}.abcdefgh"
    mine = tmp_path / ".d.onnx.xyz.tmp"
    for f in (live, dead, other_host, mine):
        f.write_text("x")
    atomic_write_text(tmp_path / "out.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, mine.name, "out.txt"])


def test_a_temporary_file_says_what_it_is_and_whose_it_is(tmp_path):
    with atomic_path(tmp_path / "densenet121.int8.onnx") as tmp:
        host, pid = owner_of(tmp.name)
        assert tmp.name.startswith(f".densenet121.int8.onnx.{PARTIAL}.{host}.{os.getpid()}.") and pid == os.getpid()


# --- killing real runs -----------------------------------------------------------------------------------------

def _launch(args: list, cwd: Path, tmpdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if owner_of(p.name) is not None]


def _kill_at_moments(args, cwd: Path, tmpdir: Path, check_complete, next_run, reset,
                     fractions=(0.35, 0.6, 0.85)) -> list:
    """Time one run; then for each fraction of that time and each of SIGTERM and SIGKILL: start from the inputs
    (``reset``), kill, check what is left (complete files only; after SIGTERM no temporary file at all); after a
    SIGKILL run the next command (``next_run()``: the same, or a resume), which must succeed and sweep what the kill
    left (no temporary file in the folder or in TMPDIR)."""
    start = time.monotonic()
    p = _launch(args, cwd, tmpdir)
    assert p.wait(timeout=900) == 0, p.stderr.read()
    full = time.monotonic() - start
    check_complete()
    kills = []
    for fraction in fractions:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            reset()
            p = _launch(args, cwd, tmpdir)
            time.sleep(full * fraction)
            p.send_signal(sig)
            code = p.wait(timeout=300)
            err = p.stderr.read()
            check_complete()  # every file under its final name is complete
            if sig == signal.SIGTERM and code == -signal.SIGTERM:  # still importing: dnet's handler not yet there
                assert err == "" and _leftovers(cwd) == [] and _leftovers(tmpdir) == []  # and nothing written yet
            elif sig == signal.SIGTERM and code != 0:
                assert "Traceback" not in err, err
                assert err.strip().splitlines()[-1] == "dnet: error: interrupted by SIGTERM; no partial file was kept", err
                assert code == 128 + signal.SIGTERM
                assert _leftovers(cwd) == [] and _leftovers(tmpdir) == [], (fraction, _leftovers(cwd), _leftovers(tmpdir))
            left = len(_leftovers(cwd)) + len(_leftovers(tmpdir))
            if sig == signal.SIGKILL:  # the next run (the same command, or a resume) sweeps what the kill left
                p = _launch(next_run(), cwd, tmpdir)
                assert p.wait(timeout=900) == 0, p.stderr.read()
                check_complete()
                assert _leftovers(cwd) == [], _leftovers(cwd)
                nothing_left(tmpdir)
            kills.append((fraction, sig.name, code, left))
    print("kills (fraction, signal, exit status, temporary files left for the sweep):", kills)
    return kills


@pytest.mark.slow
def test_sigterm_and_sigkill_during_an_int8_convert_leave_complete_files_or_swept_ones(tmp_path, models):
    from dnet import engines
    from dnet.converters.int8.calibration import CalibrationCache
    from tests.helpers.images import photo_tiles, write_images

    work = tmp_path / "work"
    work.mkdir()
    src = work / "tiny.pth"
    src.write_bytes(models["pth"].read_bytes())
    calib = write_images(work / "calib", photo_tiles(size=32, per_photo=4))
    args = ["convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--calib-count", 24,
            "-o", work / "tiny.int8.onnx", "--quiet"]
    outputs = [work / "tiny.onnx", work / "tiny.int8.onnx", work / "tiny.calib.json"]

    def check_complete():
        for path in outputs[:2]:
            if path.exists():
                with engines.open(path):
                    pass
        if outputs[2].exists():
            CalibrationCache.load(outputs[2])

    def reset():
        for path in outputs:
            path.unlink(missing_ok=True)

    kills = _kill_at_moments(args, work, tmp_path / "tmp", check_complete, lambda: args, reset)
    assert len(kills) == 6


@pytest.mark.slow
def test_sigterm_and_sigkill_during_training_leave_complete_checkpoints_and_resume_works(tmp_path):
    import shutil

    from dnet.formats.checkpoint import load_checkpoint

    work = tmp_path / "work"
    work.mkdir()
    run = work / "run"
    args = ["train", "--dataset", "digits", "--depth", 10, "--growth-rate", 4, "--epochs", 3, "--batch-size", 256,
            "--workers", 0, "--threads", 1, "--quiet", "-o", run]

    def check_complete():
        for name in ("last.pth", "best.pth"):
            if (run / name).exists():
                load_checkpoint(run / name)

    def next_run():
        if (run / "last.pth").exists():
            return ["train", "--resume", run, "--epochs", 3, "--workers", 0, "--threads", 1, "--quiet"]
        for name in ("config.json", "metrics.csv", "curves.png"):  # a run killed before its first checkpoint
            (run / name).unlink(missing_ok=True)
        return args

    kills = _kill_at_moments(args, work, tmp_path / "tmp", check_complete, next_run,
                             lambda: shutil.rmtree(run, ignore_errors=True))
    assert len(kills) == 6


def test_an_interrupt_a_library_turned_into_another_error_is_still_reported_as_the_interrupt(capsys):
    # Seen in the slow int8 case: SIGTERM landed while torch.onnx.export lazily imported torch._dynamo; torch's
    # except clause then failed on the half-imported module and raised TorchExportError, printed as a traceback.
    from dnet.cli.main import reports_errors
    from dnet.core import signals

    @reports_errors
    def verb():
        try:
            signals._raise_terminated(signal.SIGTERM, None)  # what the handler does when SIGTERM lands
        except KeyboardInterrupt:
            raise RuntimeError("module 'torch._dynamo' has no attribute 'exc'") from None

    with pytest.raises(SystemExit) as e:
        verb()
    assert e.value.code == 143
    assert capsys.readouterr().err == "dnet: error: interrupted by SIGTERM; no partial file was kept\n"
    with pytest.raises(RuntimeError):  # without a signal, a bug stays a bug (and the next command starts afresh)
        reports_errors(lambda: (_ for _ in ()).throw(RuntimeError("a bug")))()
