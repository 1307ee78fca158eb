"""The output-path policy of every verb, and the checks on the files a verb reads.

An output is never an input of the same command and never an existing file that is not a regular file (a device, a FIFO,
a socket, or a symlink to one): :func:`check_output_path` refuses it in one line before any work.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from dnet.core.errors import DnetError, FileFormatError, UsageError
from dnet.core.write_errors import NAME_MAX


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (links, symlinks and ``..`` included); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse, in one line, an output dnet must not write: see the module docstring.

    ``inputs`` are the files the same command reads; an output that is one of them is refused. Steps that run
    long call this first, so they fail before the work rather than after it.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    size = len(os.fsencode(target.name))
    if size > NAME_MAX:
        raise UsageError(f"output name {target.name[:40]}… is {size:,} bytes long; file names stop at {NAME_MAX} "
                         "bytes: choose a shorter name")
    if not folder.is_dir():
        raise DnetError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise DnetError(f"cannot write to output folder {folder}: permission denied")
    if target.is_dir():
        raise UsageError(f"output {target} is a folder; give a file name")
    if os.path.lexists(target):
        try:
            mode = os.stat(target).st_mode
        except OSError:
            mode = stat.S_IFREG  # a dangling symlink: the rename replaces the link itself
        if not stat.S_ISREG(mode):
            raise UsageError(f"output {target} is {_kind(mode)}; dnet writes only regular files and never replaces "
                             "a device, FIFO or socket (give a file name)")
        for inp in inputs:
            if same_file(target, inp):
                raise UsageError(f"output {target} is also an input of this command ({inp}); dnet never overwrites "
                                 "its inputs: choose another output name")
    for other in inputs:  # one not written yet (an intermediate, a plan): the same name is the same file
        if not os.path.lexists(other) and os.path.abspath(target) == os.path.abspath(other):
            raise UsageError(f"output {target} is also another file of this command ({other}); give each its own name")
    return Path(folder, target.name)


def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """An existing regular file, or one line saying what it is instead (FIFOs and devices would hang or lie)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise FileFormatError(f"{path}: is {_kind(mode)}, not a regular file; save the {what} to a file first "
                              "(dnet reads only regular files)")
    return path


def open_for_resume(path: str | os.PathLike) -> int:
    """A read-write descriptor of ``path`` (created, with the mode the umask allows, when absent), which must be a
    regular file of its own: a symlink is refused (it would write elsewhere), and so are a FIFO (it would block) and a
    device. The file is not truncated: a resumable download keeps its bytes here between runs."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        what = "a symlink" if stat.S_ISLNK(mode) else _kind(mode)
        raise UsageError(f"{path} is {what}, not a partial file dnet wrote; dnet writes only regular files of its own "
                         "there: remove it")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the check and the open
        os.close(fd)
        raise UsageError(f"{path} is not a regular file; remove it")
    return fd
