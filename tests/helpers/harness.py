"""What every hostile case checks, and the two ways it runs dnet.

A case builds its hostile input in the test (nothing large is kept in the repository), runs a verb, and asserts
the outcome: one line ``dnet: error: ...`` and the exit status, the inputs byte-identical, no file anywhere that
should not be there (the temporary folder included: ``TMPDIR`` points into the test's own folder), and, where
memory is the attack, a bound on what the process may add (``RLIMIT_AS`` in a subprocess).

- :func:`cli` runs the verb in this process (click's runner): fast, for most cases.
- :func:`run_dnet` runs ``python -m dnet``-equivalent in a subprocess, optionally with an address-space budget
  above what the process holds once its libraries are imported, and reports its peak resident memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnet.cli import main

ROOT = Path(__file__).resolve().parents[2]

# Imports everything a verb may need, then caps the address space at what is mapped now plus the budget, so the
# bound is on what the hostile input makes dnet allocate, not on the size of torch and ONNX Runtime.
LAUNCH = r"""
import importlib, json, os, resource, sys
import numpy, torch, onnx, PIL.Image
import dnet.engines.onnxruntime, dnet.cli.main, dnet.formats.loading, dnet.apps.eval, dnet.apps.compare, dnet.converters.pipeline
verbs = sys.modules["dnet.cli.main"].VERBS
if sys.argv[1:2] and sys.argv[1] in verbs:  # the verb's own libraries (scipy for eval --compare-to, matplotlib...)
    importlib.import_module(verbs[sys.argv[1]][0].split(":")[0])
if any(a.endswith(".xml") for a in sys.argv[1:]):  # OpenVINO's runtime and IR frontend
    import openvino, openvino.frontend
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
budget = int(os.environ.get("DNET_TEST_AS_BUDGET", "0"))
if budget:
    limit = status("VmSize") + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
fsize = int(os.environ.get("DNET_TEST_FSIZE", "0"))
if fsize:  # `ulimit -f`: a write past it fails with EFBIG (Python ignores SIGXFSZ)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
start_rss = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
peak = os.environ.get("DNET_TEST_PEAK")
if peak:
    import atexit
    atexit.register(lambda: open(peak, "w").write(json.dumps({"added_rss": status("VmHWM") - start_rss})))
sys.argv = ["dnet"] + sys.argv[1:]
dnet.cli.main.main()
"""


@dataclasses.dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    added_rss: int | None = None  # bytes of resident memory the run added after its imports (subprocess only)
    exception: BaseException | None = None

    def error_line(self, code: int | None = None) -> str:
        """The one ``dnet: error:`` line (without the prefix); fails unless that is all of stderr."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert self.exception is None or isinstance(self.exception, SystemExit), repr(self.exception)
        assert "Traceback" not in self.stderr, self.stderr
        assert len(lines) == 1 and lines[0].startswith("dnet: error: "), self.stderr or self.stdout
        if code is not None:
            assert self.code == code, (self.code, self.stderr)
        return lines[0][len("dnet: error: "):]

    def ok(self) -> str:
        assert self.exception is None or isinstance(self.exception, SystemExit), repr(self.exception)
        assert self.code == 0, (self.code, self.stderr, self.stdout)
        return self.stdout


def cli(*args, tmpdir: Path | None = None) -> Outcome:
    """Run ``dnet ARGS`` in this process, with the temporary folder at ``tmpdir``."""
    from dnet.core.artifact import meta

    meta._warned.clear()  # each run is a new process: its once-per-file warnings are said again
    with pytest.MonkeyPatch.context() as mp:
        if tmpdir is not None:
            tmpdir.mkdir(parents=True, exist_ok=True)
            mp.setenv("TMPDIR", str(tmpdir))
            mp.setattr(tempfile, "tempdir", str(tmpdir))
        r = CliRunner().invoke(main, [str(a) for a in args])
    exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    if exc is not None:  # keep the traceback text where a failure message shows it
        import traceback

        stderr = r.stderr + "".join(traceback.format_exception(exc))
    else:
        stderr = r.stderr
    return Outcome(r.exit_code, r.stdout, stderr, exception=exc)


def run_dnet(*args, cwd: Path, tmpdir: Path, budget_mb: int | None = None, timeout: float = 300,
             env: dict | None = None, stdin=None) -> Outcome:
    """``dnet ARGS`` in a subprocess; ``budget_mb`` caps the address space it may add after importing its libraries."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    peak = tmpdir.parent / f".peak-{os.getpid()}.json"
    e = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "DNET_TEST_PEAK": str(peak),
         "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", **(env or {})}
    if budget_mb:
        e["DNET_TEST_AS_BUDGET"] = str(budget_mb << 20)
    p = subprocess.run([sys.executable, "-c", LAUNCH, *map(str, args)], cwd=cwd, env=e, capture_output=True,
                       text=True, timeout=timeout, stdin=stdin)
    added = None
    if peak.exists():
        added = json.loads(peak.read_text())["added_rss"]
        peak.unlink()
    return Outcome(p.returncode, p.stdout, p.stderr, added_rss=added)


def tree(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` (hidden ones too) with its sha256: to compare before and after a case."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_symlink() or not p.is_file():
                out[str(p)] = "link" if p.is_symlink() else ("dir" if p.is_dir() else "node")
            else:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def nothing_left(tmpdir: Path) -> None:
    """The temporary folder a case ran with holds nothing (scratch folders included)."""
    left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")) if tmpdir.exists() else []
    assert left == [], left


def unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return p.returncode == 0


class Box:
    """A case's world: ``work`` (its inputs and outputs) and ``tmp`` (its TMPDIR), and the checks of the matrix."""

    def __init__(self, root: Path) -> None:
        self.work, self.tmp = root / "work", root / "tmp"
        self.work.mkdir()
        self.tmp.mkdir()
        self.before: dict[str, str] = {}

    def add(self, src: Path, name: str | None = None) -> Path:
        dst = self.work / (name or src.name)
        shutil.copyfile(src, dst)
        return dst

    def freeze(self) -> None:
        """Remember every file now in the box: the inputs, which must come out byte-identical."""
        self.before = tree(self.work)

    def cli(self, *args) -> Outcome:
        return cli(*args, tmpdir=self.tmp)

    def run(self, *args, **kwargs) -> Outcome:
        return run_dnet(*args, cwd=self.work, tmpdir=self.tmp, **kwargs)

    def unchanged(self, *new: str) -> None:
        """Inputs byte-identical, nothing in the box but them and the ``new`` files, nothing in TMPDIR."""
        after = tree(self.work)
        for path, digest in self.before.items():
            assert after.get(path) == digest, f"input {path} changed or vanished"
        extra = sorted(Path(p).name for p in set(after) - set(self.before))
        assert extra == sorted(new), extra
        nothing_left(self.tmp)
