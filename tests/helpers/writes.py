"""Writers under pressure: a file-size limit (``ulimit -f``, EFBIG) in this process, a small tmpfs that can be
filled (the ``tmpfs`` fixture, tests/hostile/conftest.py), the previous file a write must keep, and the partial
files it must not leave."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

OLD = b"the previous file, which must survive\n"


@contextlib.contextmanager
def size_limit(nbytes: int) -> Iterator[None]:
    """``ulimit -f`` for this process while the block runs (the hard limit stays, so the soft one is restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, size: str = "256k") -> Iterator[str | None]:
    """Mount a tmpfs of ``size`` on the folder ``mnt`` for the block: yields None, or why it cannot be mounted."""
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        yield (r.stderr or r.stdout).strip() or "mount failed"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int = 8192) -> None:
    """Fill ``folder``'s filesystem until about ``leave`` bytes are free."""
    s = os.statvfs(folder)
    free = s.f_bavail * s.f_frsize
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))


def old_file(path: Path) -> Path:
    """``path`` holding :data:`OLD`, the previous file a failed write must leave intact."""
    path.write_bytes(OLD)
    return path


def leftovers(folder: Path) -> list[str]:
    """The partial files (dnet.core.ownership's temporary names) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if "dnet-partial" in p.name)
