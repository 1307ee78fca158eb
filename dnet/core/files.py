"""Writing outputs so that nothing is lost: temporary file in the target folder, then rename.

The output-path policy of every verb lives here (:func:`check_output_path`): an output is never an input of the
same command and never an existing file that is not a regular file (a device, a FIFO, a socket, or a symlink to
one). Temporary files and folders carry their purpose, host and process id in their names
(``.model.onnx.dnet-partial.HOST.PID.xxxxxxxx``, ``calib.dnet-scratch.HOST.PID.xxxxxxxx``); they are removed when
the step ends, fails or is interrupted (SIGINT, and SIGTERM once :func:`exit_on_sigterm` is installed), and what a
SIGKILL leaves behind is swept by the next dnet process that writes into the same folder (:func:`sweep_stale`).
A full disk is one line naming the file and the bytes it needed. Files are created with the mode the umask allows
(or the mode of the file they replace), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dnet.core.errors import DnetError, FileFormatError, UsageError
from dnet.core.write_errors import FULL_ERRNOS, NAME_MAX, file_size_limit, free_bytes, os_cause, write_error

PARTIAL = "dnet-partial"  # marks a file being written: .NAME.dnet-partial.HOST.PID.RANDOM
SCRATCH = "dnet-scratch"  # marks a private folder of scratch files: PURPOSE.dnet-scratch.HOST.PID.RANDOM
_MARKS = (f".{PARTIAL}.", f".{SCRATCH}.")
_MAX_NAME = 100  # characters of the target's name kept in a temporary name (file names stop at 255 bytes)
_swept: set[str] = set()


# --- names of temporary files, and sweeping those of dead processes ----------------------------------------

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


# --- the output-path policy --------------------------------------------------------------------------------

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


# --- writing -----------------------------------------------------------------------------------------------

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


def scratch_root() -> Path:
    """The one folder dnet keeps scratch folders in: ``$TMPDIR/dnet-scratch-UID`` (private to the user)."""
    return Path(tempfile.gettempdir()) / f"{SCRATCH}-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


@contextlib.contextmanager
def scratch_folder(purpose: str) -> Iterator[Path]:
    """A private folder for scratch files (e.g. calibration's model copies), removed when the block ends.

    It lives in :func:`scratch_root`; folders of processes that were killed are swept when the next one is made,
    and the root itself is removed when it is left empty.
    """
    root = scratch_root()
    for _ in range(3):  # another process may remove the empty root between our mkdir and mkdtemp
        root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            raise DnetError(f"scratch folder {root} is not a folder of this user; remove it or set TMPDIR")
        sweep_stale(root)
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{purpose}{_tag(SCRATCH)}", dir=root))
            break
        except FileNotFoundError:
            continue
    else:
        raise DnetError(f"cannot create a scratch folder in {root}")
    try:
        yield folder
    except DnetError:  # already said in one line (an output's own full disk inside a verb's scratch, say)
        raise
    except Exception as e:
        cause = os_cause(e)
        if cause is not None and cause.errno in FULL_ERRNOS:
            raise DnetError(f"no space left on device for scratch files in {root}: "
                            f"{free_bytes(root) or 0:,} bytes are free; set TMPDIR to a folder with more space") from None
        if cause is not None and cause.errno == errno.EFBIG:
            raise DnetError(f"file too large: a scratch file in {root} reached the size limit of "
                            f"{file_size_limit() or 0:,} bytes (ulimit -f); raise the limit") from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()


# Caches libraries write into the temporary folder unless told otherwise: PyTorch's inductor/dynamo cache
# (``$TMPDIR/torchinductor_USER``, made when ``torch._dynamo`` is imported: every export, every training step) and
# Triton's beneath it. ONNX Runtime (CPU) and OpenVINO write none unless given a cache folder; TensorRT's are dnet's.
LIBRARY_CACHES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


@contextlib.contextmanager
def library_caches() -> Iterator[Path | None]:
    """Point the libraries' caches into a scratch folder of this process for the block, then remove it.

    What a user set (any of :data:`LIBRARY_CACHES` in the environment) is left alone: their cache, their choice.
    """
    if any(name in os.environ for name in LIBRARY_CACHES):
        yield None
        return
    with scratch_folder("caches") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "torchinductor")
        os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
        try:
            yield folder
        finally:
            for name in LIBRARY_CACHES:  # torch writes its own choice back into the environment: remove both
                os.environ.pop(name, None)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
