"""Writing outputs so that nothing is lost: temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dnet.errors import DnetError, UsageError


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse, in one line, an output whose folder is missing or unwritable, or that names a folder.

    Steps that run long call it first, so they fail before the work rather than after it.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise DnetError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise DnetError(f"cannot write to output folder {folder}: permission denied")
    if target.is_dir():
        raise UsageError(f"output {target} is a folder; give a file name")
    return Path(folder, target.name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A failure (or an exception) removes the temporary file and leaves any previous ``path`` as it was.
    """
    target = check_output_path(path)
    folder = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
