"""Writing outputs so that nothing is lost: a temporary file in the target folder, then a rename.

A failure, an exception or an interrupt (SIGINT, and SIGTERM once :func:`dnet.core.signals.exit_on_sigterm` is installed)
removes the temporary file and leaves the previous file under that name as it was. A full disk is one line naming the
file and the bytes it needed. Files are created with the mode the umask allows (or the mode of the file they replace),
not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dnet.core.outputs import check_output_path
from dnet.core.ownership import partial_prefix
from dnet.core.write_errors import write_error


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (not thread-safe, hence the /proc path first)
    os.umask(mask)
    return mask


def new_file_mode(target: str | os.PathLike) -> int:
    """The mode a new version of ``target`` gets: the existing file's, else what the umask allows of 0666."""
    try:
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, size: int | None = None,
                inputs: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A failure, an exception or an interrupt removes the temporary file and leaves any previous ``path`` as it
    was. ``size`` (bytes the block will write, if known) goes into the one-line error of a full disk. The new
    file gets the mode of the file it replaces, or 0666 less the umask.
    """
    target = check_output_path(path, inputs=inputs)
    folder = target.parent
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=partial_prefix(folder, target.name), suffix="", dir=folder)
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, new_file_mode(target))
        finally:
            os.close(fd)
        yield tmp_path
        os.replace(tmp_path, target)
    except Exception as e:
        error = write_error(target, e, tmp=tmp_path, size=size)
        if error is not None:
            raise error from None
        raise
    finally:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, inputs: Sequence[str | os.PathLike] = ()) -> None:
    with atomic_path(path, size=len(data), inputs=inputs) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, inputs: Sequence[str | os.PathLike] = ()) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), inputs=inputs)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
