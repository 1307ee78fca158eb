"""--download: checksum verified and atomic, tested with file:// URLs (no network)."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from dnet.data import download as dl
from dnet.data.datasets import open_dataset
from dnet.errors import DataError
from tests.evalmodels import write_cifar_bin


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_fetch_verifies_the_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    out = tmp_path / "out"
    out.mkdir()
    dl.fetch(src.as_uri(), out / "got.bin", _md5(src))
    assert (out / "got.bin").read_bytes() == src.read_bytes()
    with pytest.raises(DataError, match=r"checksum mismatch \(md5 [0-9a-f]{32}, expected 0{32}\); nothing was kept"):
        dl.fetch(src.as_uri(), out / "bad.bin", "0" * 32)
    assert _leftovers(out) == ["got.bin"]  # no partial or temporary file


def test_fetch_unreachable_url_is_one_line(tmp_path):
    with pytest.raises(DataError, match="cannot download file://"):
        dl.fetch((tmp_path / "absent").as_uri(), tmp_path / "x", "0" * 32)
    assert _leftovers(tmp_path) == []


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_extract_refuses_members_outside_the_folder_and_links(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    _tar(bad, [("cifar-10-batches-bin/a.bin", b"1"), ("../evil", b"2")])
    with pytest.raises(DataError, match=r"unexpected member '\.\./evil'"):
        dl.extract_folder(bad, tmp_path, "cifar-10-batches-bin")
    _tar(bad, [("cifar-10-batches-bin/link", None)])
    with pytest.raises(DataError, match="is not a regular file or folder"):
        dl.extract_folder(bad, tmp_path, "cifar-10-batches-bin")
    assert _leftovers(tmp_path) == ["bad.tar.gz"]


def test_download_cifar10_end_to_end_from_a_local_archive(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    images, labels = write_cifar_bin(staging / "test_batch.bin", 4)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _tar(archive, [("cifar-10-batches-bin/test_batch.bin", (staging / "test_batch.bin").read_bytes()),
                   ("cifar-10-batches-bin/batches.meta.txt", b"airplane\n")])
    data = tmp_path / "data"
    wrong = dl.Download(archive.as_uri(), "cifar-10-binary.tar.gz", "f" * 32, "cifar-10-batches-bin")
    monkeypatch.setitem(dl.DOWNLOADS, "cifar10", [wrong])
    with pytest.raises(DataError, match="checksum mismatch"):
        open_dataset("cifar10", data, download=True)
    assert _leftovers(data) == []  # nothing half-downloaded or half-extracted
    right = dl.Download(archive.as_uri(), "cifar-10-binary.tar.gz", _md5(archive), "cifar-10-batches-bin")
    monkeypatch.setitem(dl.DOWNLOADS, "cifar10", [right])
    ds = open_dataset("cifar10", data, download=True)
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)
    assert _leftovers(data) == ["cifar-10-batches-bin"]  # the archive is removed after extraction
    # a second call finds the folder and does not fetch again
    monkeypatch.setattr(dl, "_open_url", lambda url: pytest.fail("fetched again"))
    assert len(open_dataset("cifar10", data, download=True)) == 4


def test_download_svhn_plain_file(tmp_path, monkeypatch):
    import scipy.io

    src = tmp_path / "remote.mat"
    scipy.io.savemat(src, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[3], [10]], np.uint8)})
    monkeypatch.setitem(dl.DOWNLOADS, "svhn/test", [dl.Download(src.as_uri(), "test_32x32.mat", _md5(src))])
    ds = open_dataset("svhn", tmp_path / "svhn", download=True)
    assert ds.labels.tolist() == [3, 0]  # the digits (10 is the digit 0)


def test_published_checksums_are_well_formed():
    for key, items in dl.DOWNLOADS.items():
        for item in items:
            assert len(item.md5) == 32 and int(item.md5, 16) >= 0, key
            assert item.url.endswith(item.filename)
