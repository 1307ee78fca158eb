"""Names of dnet's temporary files and folders, whose process made them, and sweeping those of dead processes.

A temporary file or folder carries its purpose, host and process id in its name (``.model.onnx.dnet-partial.HOST.PID.xxxxxxxx``,
``calib.dnet-scratch.HOST.PID.xxxxxxxx``); what a SIGKILL leaves behind is swept by the next dnet process that writes into
the same folder (:func:`sweep_stale`). A live process's files are never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

PARTIAL = "dnet-partial"  # marks a file being written: .NAME.dnet-partial.HOST.PID.RANDOM


SCRATCH = "dnet-scratch"  # marks a private folder of scratch files: PURPOSE.dnet-scratch.HOST.PID.RANDOM


_MARKS = (f".{PARTIAL}.", f".{SCRATCH}.")


_MAX_NAME = 100  # characters of the target's name kept in a temporary name (file names stop at 255 bytes)


_swept: set[str] = set()


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def _tag(kind: str) -> str:
    return f".{kind}.{_host()}.{os.getpid()}."


def owner_of(name: str) -> tuple[str, int] | None:
    """(host, pid) of the process that made a dnet temporary file or folder called ``name``, else None."""
    for mark in _MARKS:
        if mark in name:
            parts = name.rsplit(mark, 1)[1].rsplit(".", 2)
            if len(parts) == 3 and parts[1].isdigit():
                return parts[0], int(parts[1])
    return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the dnet temporary files and folders in ``folder`` whose process (on this host) is gone.

    What a SIGKILL or a power cut leaves behind; a live process's files are never touched. Returns what was removed.
    """
    removed = []
    host = _host()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        owner = owner_of(entry.name)
        if owner is None or owner[0] != host or pid_alive(owner[1]):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        sweep_stale(folder)


def partial_prefix(folder: str | os.PathLike, name: str) -> str:
    """The name prefix of a temporary file or folder that stands for ``folder/name`` while it is being written
    (``.NAME.dnet-partial.HOST.PID.``); what a killed process left in ``folder`` is swept first."""
    _sweep_once(Path(folder))
    return f".{name[:_MAX_NAME]}{_tag(PARTIAL)}"
