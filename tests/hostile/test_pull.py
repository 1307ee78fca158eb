"""What writes into dnet's cache: ``dnet pull`` (``dnet.models.hub``, the one downloader
``dnet.data.download.fetch``).

The cache follows the output policy of every verb: a read-only cache is one line before any connection, the file a
download resumes is a regular file of dnet's own (a FIFO or symlink there is refused at once, never opened), a
record beside a cached file is never read if it is not a small regular file, new files get the umask's mode. The
partial download is the one file dnet keeps on purpose after an interrupt (so it resumes): the interrupt's line
names it, and an interrupt before any byte arrived leaves nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

import dnet
import dnet.data.download as dl
from dnet.core.errors import DnetError
from dnet.core.signals import Terminated
from dnet.models import zoo
from dnet.models.hub import pull
from tests.helpers.harness import Box, unshare_works
from tests.helpers.httpserver import serve
from tests.helpers.t7_writer import randomized

NAME = "densenet-l40-k12"  # small enough to serve; it has no published weights of its own


@pytest.fixture(scope="module")
def weights() -> bytes:
    buf = io.BytesIO()
    torch.save(randomized(dnet.create_model(NAME)).state_dict(), buf)
    return buf.getvalue()


@pytest.fixture
def cache(box: Box, monkeypatch):
    home = box.work / "cache"
    monkeypatch.setenv("DNET_HOME", str(home))
    return home


@pytest.fixture
def server(weights, monkeypatch):
    with serve({"w.pth": weights}) as srv:
        prefix = hashlib.sha256(weights).hexdigest()[:8]
        monkeypatch.setitem(zoo.WEIGHTS, NAME, {"torchvision": zoo.WeightsFile(
            "torchvision", srv.url("/w.pth"), f"{NAME}-{prefix}.pth", sha256=prefix, preprocess="cifar10")})
        yield srv


def _target(cache, weights) -> object:
    return cache / "weights" / "torchvision" / f"{NAME}-{hashlib.sha256(weights).hexdigest()[:8]}.pth"


def test_a_fifo_where_the_partial_download_goes_is_refused_before_the_server_is_asked(box: Box, cache, server,
                                                                                      weights):
    part = dl.part_path(_target(cache, weights))
    part.parent.mkdir(parents=True)
    os.mkfifo(part)  # opening it for writing would wait for a reader forever
    box.freeze()
    line = box.cli("pull", NAME, "--quiet").error_line(2)
    assert line == (f"{part} is a FIFO, not a partial file dnet wrote; dnet writes only regular files of its own "
                    "there: remove it")
    assert server.requests == [] and stat.S_ISFIFO(os.lstat(part).st_mode)
    box.unchanged()


def test_a_symlink_where_the_partial_download_goes_is_refused_and_its_target_untouched(box: Box, cache, server,
                                                                                       weights, models):
    precious = box.add(models["pth"])
    part = dl.part_path(_target(cache, weights))
    part.parent.mkdir(parents=True)
    part.symlink_to(precious)  # resuming "into" it would append the download to the user's model
    box.freeze()
    line = box.cli("pull", NAME, "--quiet").error_line(2)
    assert line.startswith(f"{part} is a symlink, not a partial file dnet wrote")
    assert server.requests == []
    box.unchanged()


def test_a_fifo_where_the_record_goes_is_neither_read_nor_replaced(box: Box, cache, server, weights):
    box.cli("pull", NAME, "--quiet").ok()
    target = _target(cache, weights)
    record = target.with_name(target.name + ".json")
    record.unlink()
    os.mkfifo(record)  # reading it would block: the record is read only when it is a small regular file
    box.freeze()
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(AssertionError("pull blocked on the FIFO")))
    signal.alarm(60)
    try:
        line = box.cli("pull", NAME, "--quiet").error_line(2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert line.startswith(f"output {record} is a FIFO; dnet writes only regular files")
    box.unchanged()


class _Cut:
    """A response that sends ``before`` bytes and then raises ``interrupt`` (as Ctrl-C or SIGTERM would)."""

    def __init__(self, body: bytes, before: int, interrupt: BaseException):
        self.body, self.before, self.interrupt, self.sent = body, before, interrupt, 0
        self.status, self.headers = 200, {"Content-Length": str(len(body))}

    def read(self, n: int) -> bytes:
        if self.sent >= self.before:
            raise self.interrupt
        block = self.body[self.sent:min(self.sent + n, self.before)]
        self.sent += len(block)
        return block

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("interrupt, code, name", [(KeyboardInterrupt(), 130, "SIGINT"), (Terminated(), 143, "SIGTERM")])
def test_an_interrupted_download_keeps_only_its_partial_file_says_so_and_resumes(box: Box, cache, server, weights,
                                                                                  monkeypatch, interrupt, code, name):
    half = len(weights) // 2
    monkeypatch.setattr(dl, "_open_url", lambda url, headers=None: _Cut(weights, half, interrupt))
    out = box.cli("pull", NAME, "--quiet")
    part = dl.part_path(_target(cache, weights))
    assert out.error_line(code) == (f"interrupted by {name}; the partial download {part} is kept, and running the "
                                    "command again resumes it")
    assert sorted(p.name for p in part.parent.iterdir()) == [part.name] and part.read_bytes() == weights[:half]
    assert stat.S_IMODE(os.stat(part).st_mode) == 0o666 & ~_umask()
    monkeypatch.undo()
    monkeypatch.setenv("DNET_HOME", str(cache))
    monkeypatch.setitem(zoo.WEIGHTS, NAME, {"torchvision": zoo.WeightsFile(
        "torchvision", server.url("/w.pth"), part.name[1:-len(".part")], sha256=hashlib.sha256(weights).hexdigest()[:8],
        preprocess="cifar10")})
    assert "resumed at" in box.cli("pull", NAME, "--quiet").ok()
    assert server.requests == [("/w.pth", f"bytes={half}-")]
    target = _target(cache, weights)
    assert target.read_bytes() == weights and sorted(p.name for p in target.parent.iterdir()) == [
        target.name, target.name + ".json"]
    box.unchanged("cache", "weights", "torchvision", target.name, target.name + ".json")


def test_an_interrupt_before_any_byte_arrived_leaves_nothing(box: Box, cache, server, weights, monkeypatch):
    monkeypatch.setattr(dl, "_open_url", lambda url, headers=None: _Cut(weights, 0, Terminated()))
    out = box.cli("pull", NAME, "--quiet")
    assert out.error_line(143) == "interrupted by SIGTERM; no partial file was kept"
    assert list(_target(cache, weights).parent.iterdir()) == []


def test_a_full_disk_during_a_download_is_one_line_and_keeps_what_arrived(box: Box, cache, server, weights,
                                                                          monkeypatch):
    calls = []

    def full(out, data):
        if calls:
            raise OSError(28, "No space left on device")
        calls.append(len(data))
        out.write(data)

    monkeypatch.setattr(dl, "BLOCK", 4096)
    monkeypatch.setattr(dl, "_write_all", full)
    # the whole body from a stand-in response (the test server would log the connection the failure drops)
    monkeypatch.setattr(dl, "_open_url", lambda url, headers=None: _Cut(weights, len(weights) + 1, AssertionError()))
    line = box.cli("pull", NAME, "--quiet").error_line(1)
    part = dl.part_path(_target(cache, weights))
    assert line.startswith(f"no space left on device: writing {_target(cache, weights)} needs {len(weights):,} bytes, ")
    assert line.endswith(f"free some space (the partial file {part} is kept, and fetching again resumes it)")
    assert part.stat().st_size == 4096


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


READ_ONLY = r"""
set -e
mount --bind "$1" "$1"
mount -o remount,ro,bind "$1"
shift
exec "$@"
"""


@pytest.mark.skipif(not unshare_works(), reason="needs unprivileged user and mount namespaces for a read-only mount")
@pytest.mark.parametrize("made", [pytest.param(False, marks=pytest.mark.slow), True], ids=["empty", "with-its-folders"])
def test_pull_into_a_read_only_cache_is_one_line_before_any_connection(box: Box, made):
    from tests.helpers.harness import LAUNCH, ROOT

    cache = box.work / "cache"
    folder = cache / "weights" / "torchvision"
    (folder if made else cache).mkdir(parents=True)
    box.freeze()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(box.tmp), "DNET_HOME": str(cache),
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # a connection would fail loudly
    p = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, "sh", str(cache),
                        sys.executable, "-c", LAUNCH, "pull", "densenet121", "--json"],
                       env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 1 and len(lines) == 1 and p.stdout == "", (p.stdout, p.stderr)
    if made:
        assert lines[0] == (f"dnet: error: cannot write to the cache folder {folder} (read-only or permission "
                            "denied); set DNET_HOME to a folder you can write")
    else:
        assert lines[0] == (f"dnet: error: cannot create the cache folder {folder} (Read-only file system); set "
                            "DNET_HOME to a folder you can write")
    box.unchanged()


# A real `dnet pull` in a subprocess, signalled while the bytes trickle in from the test server.
PRELUDE = """
import os
import dnet.models.zoo as zoo
zoo.WEIGHTS[os.environ["W_MODEL"]] = {"torchvision": zoo.WeightsFile(
    "torchvision", os.environ["W_URL"], os.environ["W_FILE"], sha256=os.environ["W_SHA"], preprocess="cifar10")}
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGKILL"])
def test_a_pull_killed_mid_download_leaves_only_its_partial_file_and_the_next_pull_resumes(box: Box, weights, signum):
    import time

    from tests.helpers.harness import LAUNCH, ROOT

    cache = box.work / "cache"
    digest = hashlib.sha256(weights).hexdigest()
    target = _target(cache, weights)
    part = dl.part_path(target)
    with serve({"w.pth": weights}) as srv:
        srv.trickle["/w.pth"] = 0.02  # about 1.3 s for the whole file
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(box.tmp), "DNET_HOME": str(cache),
               "W_MODEL": NAME, "W_URL": srv.url("/w.pth"), "W_FILE": target.name, "W_SHA": digest[:8]}
        cmd = [sys.executable, "-c", PRELUDE + LAUNCH, "pull", NAME, "--quiet"]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size >= dl.BLOCK) and p.poll() is None:
            assert time.monotonic() < deadline, "no bytes arrived"
            time.sleep(0.01)
        p.send_signal(signum)
        _out, err = p.communicate(timeout=60)
        arrived = part.stat().st_size
        assert 0 < arrived < len(weights) and part.read_bytes() == weights[:arrived]
        assert sorted(p.name for p in target.parent.iterdir()) == [part.name]  # nothing else, nothing half-named
        if signum == signal.SIGTERM:
            assert p.returncode == 143 and err.strip() == (f"dnet: error: interrupted by SIGTERM; the partial download "
                                                           f"{part} is kept, and running the command again resumes it")
        else:
            assert p.returncode == -signal.SIGKILL
        srv.trickle.clear()
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "resumed at" in again.stdout, again.stderr
        assert srv.requests[-1] == ("/w.pth", f"bytes={arrived}-")
    assert target.read_bytes() == weights
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".json"]
    box.unchanged("cache", "weights", "torchvision", target.name, target.name + ".json")


# --- two pulls of one name at once --------------------------------------------------------------------------


def test_a_pull_starting_while_another_renames_its_finished_download_refuses_in_one_line(box: Box, cache, server,
                                                                                          weights, monkeypatch):
    target, second = _target(cache, weights), {}
    real = dl._matches

    def then_a_second_pull(digest, expected):  # the first download is complete and checked, not yet renamed
        if not second:
            second["error"] = None
            try:
                second["pulled"] = pull(NAME)
            except DnetError as e:
                second["error"] = str(e)
        return real(digest, expected)

    monkeypatch.setattr(dl, "_matches", then_a_second_pull)
    assert "fetched" in box.cli("pull", NAME, "--quiet").ok()
    part = dl.part_path(target)
    assert second == {"error": f"{part}: another process is downloading {target.name}"}  # its lock is still held
    assert target.read_bytes() == weights and server.requests == [("/w.pth", None)]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".json"]
    monkeypatch.setattr(dl, "_matches", real)
    assert pull(NAME).fetched is False  # the next pull finds it cached and checks it


def test_a_pull_that_locks_a_partial_file_just_renamed_into_place_starts_a_new_one(box: Box, cache, server, weights,
                                                                                   monkeypatch):
    target = _target(cache, weights)
    part = dl.part_path(target)
    part.parent.mkdir(parents=True)
    part.write_bytes(weights)  # another pull's complete download, about to be renamed
    real, opened = dl.open_for_resume, []

    def renamed_after_the_open(path):
        fd = real(path)
        if not opened:  # the other pull renames its file and unlocks it between this open and this lock
            os.replace(part, target)
        opened.append(path)
        return fd

    monkeypatch.setattr(dl, "open_for_resume", renamed_after_the_open)
    assert "fetched" in box.cli("pull", NAME, "--quiet").ok()
    assert len(opened) == 2 and server.requests == [("/w.pth", None)]  # a new partial file, the whole file fetched
    assert target.read_bytes() == weights  # never resumed into (or truncated under) the finished file
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".json"]


@pytest.mark.slow
def test_two_pulls_of_one_name_at_once_both_succeed_or_one_refuses_and_the_file_is_complete(box: Box, weights):
    from tests.helpers.harness import LAUNCH, ROOT

    cache = box.work / "cache"
    digest = hashlib.sha256(weights).hexdigest()
    target = _target(cache, weights)
    with serve({"w.pth": weights}) as srv:
        srv.trickle["/w.pth"] = 0.01  # the two downloads overlap
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(box.tmp), "DNET_HOME": str(cache),
               "W_MODEL": NAME, "W_URL": srv.url("/w.pth"), "W_FILE": target.name, "W_SHA": digest[:8]}
        cmd = [sys.executable, "-c", PRELUDE + LAUNCH, "pull", NAME, "--json"]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    busy = f"dnet: error: {dl.part_path(target)}: another process is downloading {target.name}"
    for code, out, err in results:
        assert "Traceback" not in err, err
        assert (code == 0 and json.loads(out)["sha256"] == digest) or (code == 1 and err.strip() == busy), (code, err)
    assert any(code == 0 for code, _, _ in results)
    assert target.read_bytes() == weights  # complete and verified
    assert json.loads(target.with_name(target.name + ".json").read_text())["sha256"] == digest
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".json"]
    box.unchanged("cache", "weights", "torchvision", target.name, target.name + ".json")
