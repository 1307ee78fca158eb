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
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dnet.errors import DnetError, FileFormatError, UsageError

PARTIAL = "dnet-partial"  # marks a file being written: .NAME.dnet-partial.HOST.PID.RANDOM
SCRATCH = "dnet-scratch"  # marks a private folder of scratch files: PURPOSE.dnet-scratch.HOST.PID.RANDOM
_MARKS = (f".{PARTIAL}.", f".{SCRATCH}.")
_MAX_NAME = 100  # characters of the target's name kept in a temporary name (file names stop at 255 bytes)
_FULL = (errno.ENOSPC, errno.EDQUOT)
_NAME_MAX = 255  # bytes of one file name on every filesystem dnet writes to (ext4, xfs, btrfs, tmpfs, APFS)
_LOW_SPACE = 1 << 20  # bytes free below which a writer's unexplained failure is taken for a full disk
_swept: set[str] = set()


class Terminated(KeyboardInterrupt):
    """SIGTERM (plain ``kill``, ``timeout``, ``docker stop``, systemd), raised like Ctrl-C so cleanup runs."""

    signum = signal.SIGTERM


_received: list[int] = []  # the signals this process turned into exceptions, newest last


def _raise_terminated(signum, frame) -> None:
    _received.append(signum)
    raise Terminated()


def _raise_interrupt(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` (a KeyboardInterrupt) in this process, so ``finally`` blocks run, and
    remember SIGINT and SIGTERM as they arrive (:func:`interrupted_by`).

    Python's default SIGTERM action ends the process at once, skipping every cleanup; the CLI installs this.
    """
    with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
        signal.signal(signal.SIGTERM, _raise_terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _raise_interrupt)


def interrupted_by() -> int | None:
    """The signal that interrupted this process since :func:`forget_signals`, if one did.

    A library can catch the KeyboardInterrupt and raise something else instead: a SIGTERM that lands while
    ``torch.onnx.export`` lazily imports ``torch._dynamo`` surfaces as torch's ``TorchExportError`` (its except
    clause fails on the half-imported module). The CLI asks this to report such an error as the interrupt it is.
    """
    return _received[-1] if _received else None


def forget_signals() -> None:
    _received.clear()


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
    if size > _NAME_MAX:
        raise UsageError(f"output name {target.name[:40]}… is {size:,} bytes long; file names stop at {_NAME_MAX} "
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


def free_bytes(folder: str | os.PathLike) -> int | None:
    try:
        s = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return s.f_bavail * s.f_frsize


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is the OSError of a full disk (or an exhausted quota)."""
    return isinstance(e, OSError) and e.errno in _FULL


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
    if code in _FULL:
        return _disk_full(target, Path(tmp) if tmp is not None else None, size)
    if code == errno.EFBIG:
        cap = f"the limit of {limit:,} bytes" if limit is not None else "the filesystem's largest file"
        done = f" after {written:,} bytes" if written and (limit is None or written < limit) else ""
        return DnetError(f"file too large: writing {target} stopped{done} at {cap} (ulimit -f, or the filesystem); "
                         "raise the limit or choose another output folder")
    if code == errno.ENAMETOOLONG:
        return DnetError(f"file name too long: {cause.filename or target}; file names stop at {_NAME_MAX} bytes, "
                         "paths at 4,096: choose a shorter name")
    if code == errno.EROFS:
        return DnetError(f"read-only file system: cannot write {target}; choose another output folder")
    return None


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
    except Exception as e:
        cause = os_cause(e)
        if cause is not None and cause.errno in _FULL:
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
