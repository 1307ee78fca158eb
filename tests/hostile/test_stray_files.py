"""No stray files: with TMPDIR an empty folder, ``dnet convert`` (INT8, with calibration) and ``dnet train`` leave it
empty, when they succeed and when SIGINT or SIGTERM stops them. PyTorch's compile cache (``torchinductor_USER``,
made whenever ``torch._dynamo`` is imported) lives in dnet's scratch folder for the run and goes with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnet.core.scratch import library_caches, scratch_root
from tests.helpers.harness import LAUNCH, ROOT, nothing_left


def test_torch_cache_goes_into_the_scratch_folder_and_away_with_it(tmp_path, monkeypatch):
    import tempfile

    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    with library_caches() as folder:
        assert folder.parent == scratch_root() == tmp_path / f"dnet-scratch-{os.getuid()}"
        assert Path(cache_dir()) == folder / "torchinductor" and (folder / "torchinductor").is_dir()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and list(tmp_path.iterdir()) == []


def test_a_cache_the_user_chose_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    with library_caches() as folder:
        assert folder is None and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def _start(args, cwd: Path, tmpdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_torch_cache(p: subprocess.Popen, tmpdir: Path, timeout: float = 120) -> None:
    """Until the run has imported torch._dynamo (its cache folder exists in dnet's scratch): mid-work."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        if any(tmpdir.glob("dnet-scratch-*/caches.*/torchinductor")):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never reached its export or first step (exit {p.poll()}): {p.stderr.read()}")


@pytest.fixture(scope="module")
def int8_case(tmp_path_factory, models):
    from tests.helpers.images import photo_tiles, write_images

    work = tmp_path_factory.mktemp("stray-int8")
    src = work / "tiny.pth"
    src.write_bytes(models["pth"].read_bytes())
    calib = write_images(work / "calib", photo_tiles(size=32, per_photo=2))
    return work, ["convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--calib-count", 12,
                  "-o", work / "tiny.int8.onnx", "--force", "--quiet"]


def _train_case(tmp_path, epochs: int):
    work = tmp_path / "work"
    work.mkdir()
    return work, ["train", "--dataset", "digits", "--depth", 10, "--growth-rate", 4, "--epochs", epochs, "--batch-size", 256,
                  "--workers", 0, "--threads", 1, "--quiet", "-o", work / "run"]


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["convert-int8", "train"])
@pytest.mark.parametrize("sig", [None, signal.SIGINT, signal.SIGTERM], ids=["success", "SIGINT", "SIGTERM"])
def test_tmpdir_stays_empty_after_success_and_after_a_signal(tmp_path, request, verb, sig):
    work, args = request.getfixturevalue("int8_case") if verb == "convert-int8" else _train_case(tmp_path, 1 if sig is None else 30)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    p = _start(args, work, tmpdir)
    if sig is not None:
        _wait_for_torch_cache(p, tmpdir)
        p.send_signal(sig)
    code = p.wait(timeout=600)
    err = p.stderr.read()
    assert "Traceback" not in err, err
    if sig is None:
        assert code == 0, err
    else:  # stopped mid-work (the run takes seconds more), with its one line
        assert code == 128 + sig and err.strip().splitlines()[-1].startswith(
            f"dnet: error: interrupted by {signal.Signals(sig).name}"), (code, err)
    nothing_left(tmpdir)
