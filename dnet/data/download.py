"""Downloads: the one fetch that data sets and published weights use. Checked, atomic, resumable.

The bytes stream into ``.NAME.part`` beside the target, hashed as they arrive; the target appears under its name
only once the checksum matches (a mismatch removes the partial file, so nothing is left behind). A transfer cut
short, or interrupted (Ctrl-C, SIGTERM) after bytes arrived, keeps the partial file, and the next fetch asks the
server for the rest (HTTP ``Range``); it is the one file dnet keeps on purpose after an interrupt, and the
interrupt's line names it. The partial file is a regular file of dnet's own (never a symlink, FIFO or device), and
an archive is extracted into a ``.FOLDER.dnet-partial.HOST.PID.*`` folder that is renamed when complete (swept,
like every dnet temporary, once its process is gone). A progress bar (tqdm) is shown when asked for. An
unreachable server, a full disk and an unreadable archive are one line each.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dnet.core.errors import DataError, DownloadError
from dnet.core.outputs import check_output_path, open_for_resume
from dnet.core.ownership import partial_prefix
from dnet.core.write_errors import disk_full_error, is_disk_full

try:  # one download per partial file at a time (POSIX advisory lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

BLOCK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Download:
    url: str
    filename: str  # what the downloaded file is called
    md5: str  # the checksum the data set's authors publish (CIFAR: its web page; SVHN: as torchvision pins it)
    folder: str | None = None  # for an archive: the one top-level folder it must extract to; None: a plain file
    size: str = ""  # said before a large download starts, e.g. "about 1.3 GB"


# Checksums: CIFAR from https://www.cs.toronto.edu/~kriz/cifar.html (binary versions); SVHN the MD5s
# torchvision's datasets/svhn.py pins for http://ufldl.stanford.edu/housenumbers/.
DOWNLOADS: dict[str, list[Download]] = {
    "cifar10": [Download("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
                         "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin")],
    "cifar100": [Download("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "cifar-100-binary.tar.gz",
                          "03b5dce01913d631647c71ecec9e9cb8", "cifar-100-binary")],
    "svhn/test": [Download("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "test_32x32.mat",
                           "eb5a983be6a315427106f1b164d9cef3")],
    "svhn/train": [Download("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "train_32x32.mat",
                            "e26dedcc434d2e4c54c9b2d4a06d8373")],
    # the 531,131 extra training digits the paper trains on too (Sec. 4.1)
    "svhn/extra": [Download("http://ufldl.stanford.edu/housenumbers/extra_32x32.mat", "extra_32x32.mat",
                            "a93ce644f1a588dc4d68dda5feec44a7", size="about 1.3 GB")],
}


def where_to_get(name: str) -> str:
    """Where data set ``name`` comes from, for the line a missing data folder gets."""
    if name == "imagenet":
        return "https://image-net.org (ILSVRC2012 train/ and val/ folders, one sub-folder per class)"
    urls = [d.url for key, items in DOWNLOADS.items() if key.split("/")[0] == name for d in items]
    return ", ".join(urls) if urls else "its distribution"


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str  # of the whole file, whatever checksum the publisher gives
    size: int
    resumed_from: int = 0  # bytes that were already there from an earlier, interrupted fetch


def _open_url(url: str, headers: dict[str, str] | None = None):
    """The response stream (a seam for tests; ``file://`` URLs work too)."""
    request = urllib.request.Request(url, headers={"User-Agent": "dnet", **(headers or {})})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (URLs come from dnet's own records)


def part_path(target: str | os.PathLike) -> Path:
    """Where an unfinished download of ``target`` is kept until it is complete and checked."""
    target = Path(target)
    return target.with_name(f".{target.name}.part")


def _reason(e: BaseException) -> str:
    """One line for what went wrong; a failure to connect says the network may be down."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", None) or e
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return f"{text} (no network?)" if isinstance(e, urllib.error.URLError) and isinstance(reason, OSError) else text


def _matches(digest: str, expected: str) -> bool:
    """A full digest, or the prefix a publisher gives (torchvision: 8 hex digits)."""
    return len(expected) >= 8 and digest.startswith(expected.lower())


def _start(url: str, have: int):
    """Open ``url``, asking for the bytes from ``have`` on; returns (response, offset the body starts at, total)."""
    try:
        response = _open_url(url, {"Range": f"bytes={have}-"} if have else None)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is no prefix of what the server has now: start over
            return _start(url, 0)
        raise
    status = getattr(response, "status", None)
    headers = response.headers
    if (headers.get("Content-Type") or "").startswith("text/html"):
        response.close()
        raise DownloadError(f"{url}: the server sent a web page, not the file (moved, removed or over its quota?); "
                            "nothing was kept")
    length = int(headers["Content-Length"]) if headers.get("Content-Length", "").isdigit() else None
    if have and status == 206 and (headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
        total = headers["Content-Range"].rpartition("/")[2]
        return response, have, int(total) if total.isdigit() else None
    return response, 0, length


def fetch(url: str, target: str | os.PathLike, md5: str | None = None, *, sha256: str | None = None,
          progress: bool = False) -> Fetched:
    """Stream ``url`` to ``target``, checked against ``md5`` and/or ``sha256`` (a full digest or a published prefix).

    A checksum mismatch removes everything it wrote. A cut-off transfer keeps ``part_path(target)`` and raises;
    calling again resumes where it stopped. So does an interrupt (SIGINT, or SIGTERM under the CLI) once bytes have
    arrived: the KeyboardInterrupt carries the partial file as ``kept``, and the CLI's line names it; an interrupt
    before any byte arrived leaves nothing. The partial file must be a regular file of its own (never a symlink,
    FIFO or device) and is checked before the server is asked; a full disk is one line with the bytes needed.
    """
    target = check_output_path(target)
    part = part_path(target)
    created = not os.path.lexists(part)
    out = _locked_part(part, target)
    size = 0
    try:
        with out:
            have = os.fstat(out.fileno()).st_size
            try:
                response, offset, total = _start(url, have)
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"cannot download {url}: {_reason(e)}") from None
            sha, md = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
            with response:
                while offset and (block := out.read(min(BLOCK, offset - out.tell()))):  # what an earlier fetch kept
                    sha.update(block)
                    md.update(block)
                out.seek(offset)
                out.truncate()
                size = offset
                bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
                           disable=not progress, file=sys.stderr, leave=False)
                try:
                    with bar:
                        while block := response.read(BLOCK):
                            _write_all(out, block)
                            sha.update(block)
                            md.update(block)
                            size += len(block)
                            bar.update(len(block))
                    os.fsync(out.fileno())
                except (OSError, http.client.HTTPException) as e:
                    if is_disk_full(e):
                        raise disk_full_error(target, size=total, written=size, advice=(
                            f"free some space (the partial file {part} is kept, and fetching again resumes it)")) from None
                    raise DownloadError(f"cannot download {url}: {_reason(e)} after {size:,} bytes; the partial file "
                                        f"{part} is kept, and fetching again resumes it") from None
            if total is not None and size < total:
                raise DownloadError(f"cannot download {url}: the connection closed after {size:,} of {total:,} bytes; "
                                    f"the partial file {part} is kept, and fetching again resumes it")
            for name, digest, expected in (("md5", md.hexdigest(), md5), ("sha256", sha.hexdigest(), sha256)):
                if expected and not (_matches(digest, expected) if name == "sha256" else digest == expected.lower()):
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"{url}: checksum mismatch ({name} {digest}, expected {expected}); nothing "
                                        "was kept")
            # renamed while the lock is held: a second fetch of the same file that starts now finds the partial
            # file locked (and refuses) or gone (and starts a new one), never this complete one to resume into
            os.replace(part, target)
    except KeyboardInterrupt as e:
        _keep_or_remove(part, created, e)
        raise
    except BaseException:
        if created and _empty(part):  # nothing arrived: leave nothing behind
            part.unlink(missing_ok=True)
        raise
    return Fetched(target, sha.hexdigest(), size, offset)


def _locked_part(part: Path, target: Path):
    """The partial file opened (unbuffered, so a full disk fails in the write that hit it, not again when the file
    is closed) and locked: one download per partial file at a time.

    A second fetch may open the partial file just before the first renames it into place and unlocks it; its lock
    would then hold the finished file, under the target's name. So the file locked must still be the one at
    ``part``; when it is not, the partial file is opened again (a new, empty one).
    """
    for _ in range(3):
        out = os.fdopen(open_for_resume(part), "r+b", buffering=0)  # before the network: a FIFO or symlink is refused
        if fcntl is None:
            return out
        try:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            out.close()
            raise DownloadError(f"{part}: another process is downloading {target.name}") from None
        try:
            if os.path.samestat(os.fstat(out.fileno()), os.lstat(part)):
                return out
        except FileNotFoundError:  # renamed into place by the download that held it
            pass
        out.close()
    raise DownloadError(f"{part}: another process is downloading {target.name}")


def _write_all(out, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


def _empty(path: Path) -> bool:
    try:
        return os.lstat(path).st_size == 0
    except OSError:
        return False


def _keep_or_remove(part: Path, created: bool, interrupt: KeyboardInterrupt) -> None:
    """An interrupted download keeps its bytes to resume them (the interrupt says so in ``kept``); an empty
    partial file this fetch created is removed."""
    if created and _empty(part):
        part.unlink(missing_ok=True)
    elif part.is_file():
        interrupt.kept = part  # type: ignore[attr-defined]


def extract_folder(archive: str | os.PathLike, into: str | os.PathLike, folder: str) -> Path:
    """Extract a tar archive whose members all lie under ``folder/`` into ``into/folder``, atomically.

    Only regular files and folders are accepted (no links, devices or paths leaving ``folder``), and
    the folder appears under its name only once every member has been written.
    """
    into = Path(into)
    final = into / folder
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if not parts or parts[0] != folder or ".." in parts or Path(m.name).is_absolute():
                    raise DataError(f"{archive}: unexpected member {m.name!r} (expected everything under {folder}/)")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: member {m.name!r} is not a regular file or folder")
            staging = Path(tempfile.mkdtemp(prefix=partial_prefix(into, folder), dir=into))
            try:
                tar.extractall(staging, members=members, filter="data")
                os.replace(staging / folder, final)
            except OSError as e:
                if is_disk_full(e):
                    raise disk_full_error(final, size=sum(m.size for m in members),
                                          advice="free some space or give --data a folder with more") from None
                raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{archive}: not a readable tar archive ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return final


def download(key: str, root: str | os.PathLike) -> None:
    """Download (and extract) data set ``key`` into ``root`` unless it is already there."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for item in DOWNLOADS[key]:
        present = root / (item.folder or item.filename)
        if present.exists():
            continue
        if item.size:
            print(f"downloading {item.filename} ({item.size}) from {item.url} into {root}", file=sys.stderr, flush=True)
        if item.folder is None:
            fetch(item.url, present, item.md5, progress=bool(item.size) and sys.stderr.isatty())
            continue
        archive = root / item.filename
        fetch(item.url, archive, item.md5)
        try:
            extract_folder(archive, root, item.folder)
        finally:
            archive.unlink(missing_ok=True)


__all__ = ["DOWNLOADS", "Download", "Fetched", "download", "extract_folder", "fetch", "part_path"]
