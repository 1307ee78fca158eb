"""A write that failed, said in one line: a full disk (also behind torch's zip writer's "unexpected pos"
RuntimeError), a file over ``ulimit -f`` (EFBIG), a read-only filesystem, a name over 255 bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dnet.core.errors import DnetError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NAME_MAX = 255  # bytes of one file name on every filesystem dnet writes to (ext4, xfs, btrfs, tmpfs, APFS)
_LOW_SPACE = 1 << 20  # bytes free below which a writer's unexplained failure is taken for a full disk


def free_bytes(folder: str | os.PathLike) -> int | None:
    try:
        s = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return s.f_bavail * s.f_frsize


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is the OSError of a full disk (or an exhausted quota)."""
    return isinstance(e, OSError) and e.errno in FULL_ERRNOS


def disk_full_error(target: str | os.PathLike, *, size: int | None = None, written: int | None = None,
                    advice: str = "free some space or choose another output folder") -> DnetError:
    """The one line of a full disk: the file, the bytes it needed (``size``) or had written, the bytes free."""
    target = Path(target)
    free = free_bytes(target.parent)
    free_text = f"{free:,} bytes are free" if free is not None else "the free space is unknown"
    if size is not None:
        need = f"needs {size:,} bytes"
    elif written is not None:
        need = f"needs more than the {written:,} bytes written before the disk filled"
    else:
        need = "needs more space"
    return DnetError(f"no space left on device: writing {target} {need}, {free_text} there; {advice}")


def _disk_full(target: Path, tmp: Path | None, size: int | None) -> DnetError:
    try:
        written = tmp.stat().st_size if size is None and tmp is not None else None
    except OSError:
        written = None
    return disk_full_error(target, size=size, written=written)


def os_cause(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: itself, or one in its chain. torch's zip writer turns the ENOSPC or EFBIG of its
    ``write`` into ``RuntimeError: ... unexpected pos``, keeping the OSError only as the exception's context."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def file_size_limit() -> int | None:
    """This process's largest file in bytes (``ulimit -f``, RLIMIT_FSIZE), or None when unlimited."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def write_error(target: str | os.PathLike, e: BaseException, *, tmp: str | os.PathLike | None = None,
                size: int | None = None) -> DnetError | None:
    """The one line of a write to ``target`` (through ``tmp``) that failed with ``e`` because of the disk or the
    limits, not because of dnet: a full disk or quota, a file larger than ``ulimit -f`` (EFBIG), a name too long,
    a read-only filesystem. None for anything else (a bug keeps its traceback).

    A writer that loses the OSError (a library's own exception type) is judged by what is left: a disk with less
    than a megabyte free is full; a partial file that reached the size limit is too large.
    """
    if isinstance(e, DnetError):
        return None
    target, cause = Path(target), os_cause(e)
    code = cause.errno if cause is not None else None
    try:
        written = os.stat(tmp).st_size if tmp is not None else None
    except OSError:
        written = None
    limit = file_size_limit()
    if code is None:
        free = free_bytes(target.parent)
        if free is not None and free < _LOW_SPACE:
            code = errno.ENOSPC
        elif limit is not None and written is not None and written >= limit:
            code = errno.EFBIG
    if code in FULL_ERRNOS:
        return _disk_full(target, Path(tmp) if tmp is not None else None, size)
    if code == errno.EFBIG:
        cap = f"the limit of {limit:,} bytes" if limit is not None else "the filesystem's largest file"
        done = f" after {written:,} bytes" if written and (limit is None or written < limit) else ""
        return DnetError(f"file too large: writing {target} stopped{done} at {cap} (ulimit -f, or the filesystem); "
                         "raise the limit or choose another output folder")
    if code == errno.ENAMETOOLONG:
        return DnetError(f"file name too long: {cause.filename or target}; file names stop at {NAME_MAX} bytes, "
                         "paths at 4,096: choose a shorter name")
    if code == errno.EROFS:
        return DnetError(f"read-only file system: cannot write {target}; choose another output folder")
    return None
