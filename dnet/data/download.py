"""Fetching a data set's published archive: checksum verified, written and extracted atomically.

Nothing lands under its final name until the bytes match the published checksum and the extraction has
finished; a failure leaves the target folder as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dnet.errors import DataError
from dnet.files import atomic_path


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


def _open_url(url: str):
    """The response stream (a seam for tests; ``file://`` URLs work too)."""
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 (URLs come from DOWNLOADS)


def fetch(url: str, target: str | os.PathLike, md5: str, *, progress: bool = False) -> Path:
    """Stream ``url`` to ``target``, hashing as it goes; a checksum mismatch leaves no file behind.

    ``progress``: a byte-count bar on stderr while it downloads (only when stderr is a terminal).
    """
    target = Path(target)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with atomic_path(target) as tmp, _open_url(url) as response, open(tmp, "wb") as out, \
                _bar(response, target.name, progress) as bar:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
                bar.update(len(block))
            out.flush()
            if digest.hexdigest() != md5.lower():
                raise DataError(f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}); nothing was kept")
    except OSError as e:
        raise DataError(f"cannot download {url}: {e}") from None
    return target


def _bar(response, name: str, shown: bool):
    from tqdm import tqdm

    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return tqdm(total=int(length) if length and length.isdigit() else None, unit="B", unit_scale=True, desc=name,
                file=sys.stderr, leave=False, disable=not (shown and sys.stderr.isatty()))


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
            staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=into))
            try:
                tar.extractall(staging, members=members, filter="data")
                os.replace(staging / folder, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError) as e:
        raise DataError(f"{archive}: not a readable tar archive ({e})") from None
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
            fetch(item.url, present, item.md5, progress=bool(item.size))
            continue
        archive = root / item.filename
        fetch(item.url, archive, item.md5)
        try:
            extract_folder(archive, root, item.folder)
        finally:
            archive.unlink(missing_ok=True)


__all__ = ["DOWNLOADS", "Download", "download", "extract_folder", "fetch"]
