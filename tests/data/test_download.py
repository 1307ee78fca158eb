"""The one downloader: checksum verified, atomic, resumable; file:// URLs and a server on 127.0.0.1 (no internet)."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from dnet.core.errors import DataError, DownloadError
from dnet.data import download as dl
from dnet.data.datasets import open_dataset
from tests.helpers.evaldata import write_cifar_bin
from tests.helpers.httpserver import closed_port_url, serve


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


# -- over HTTP, from a server on 127.0.0.1 (tests/helpers/httpserver.py) -------------------------------------------------------

DATA = bytes(range(256)) * 40  # 10,240 bytes
SHA = hashlib.sha256(DATA).hexdigest()


def test_http_fetch_checks_the_sha256_and_returns_it(tmp_path):
    with serve({"w.bin": DATA}) as srv:
        got = dl.fetch(srv.url("/w.bin"), tmp_path / "w.bin", sha256=SHA)
    assert (got.path.read_bytes(), got.sha256, got.size, got.resumed_from) == (DATA, SHA, len(DATA), 0)
    assert _leftovers(tmp_path) == ["w.bin"]


def test_http_fetch_accepts_a_published_sha256_prefix(tmp_path):
    with serve({"w.bin": DATA}) as srv:
        assert dl.fetch(srv.url("/w.bin"), tmp_path / "w.bin", sha256=SHA[:8]).sha256 == SHA


def test_http_hash_mismatch_is_refused_and_nothing_is_left_behind(tmp_path):
    with serve({"w.bin": DATA}) as srv, pytest.raises(DownloadError) as e:
        dl.fetch(srv.url("/w.bin"), tmp_path / "w.bin", sha256="0" * 8)
    assert str(e.value) == f"{srv.url('/w.bin')}: checksum mismatch (sha256 {SHA}, expected 00000000); nothing was kept"
    assert _leftovers(tmp_path) == []


def test_http_fetch_resumes_after_a_cut_with_a_range_request(tmp_path):
    target = tmp_path / "w.bin"
    with serve({"w.bin": DATA}) as srv:
        srv.cuts["/w.bin"] = 4000
        with pytest.raises(DownloadError) as e:
            dl.fetch(srv.url("/w.bin"), target, sha256=SHA)
        part = dl.part_path(target)
        assert str(e.value) == (f"cannot download {srv.url('/w.bin')}: the connection closed after 4,000 of 10,240 bytes; "
                                f"the partial file {part} is kept, and fetching again resumes it")
        assert part.read_bytes() == DATA[:4000] and not target.exists()
        got = dl.fetch(srv.url("/w.bin"), target, sha256=SHA)
    assert srv.requests == [("/w.bin", None), ("/w.bin", "bytes=4000-")]
    assert (got.resumed_from, got.sha256, target.read_bytes()) == (4000, SHA, DATA)
    assert _leftovers(tmp_path) == ["w.bin"]


def test_http_resume_starts_over_when_the_server_ignores_range(tmp_path):
    target = tmp_path / "w.bin"
    dl.part_path(target).write_bytes(b"stale bytes from somewhere else")
    with serve({"w.bin": DATA}) as srv:
        srv.ranges = False
        got = dl.fetch(srv.url("/w.bin"), target, sha256=SHA)
    assert (got.resumed_from, target.read_bytes()) == (0, DATA)
    assert _leftovers(tmp_path) == ["w.bin"]


def test_http_a_partial_file_longer_than_the_file_starts_over(tmp_path):
    target = tmp_path / "w.bin"
    dl.part_path(target).write_bytes(b"x" * (len(DATA) + 5))
    with serve({"w.bin": DATA}) as srv:
        got = dl.fetch(srv.url("/w.bin"), target, sha256=SHA)
    assert [r for _, r in srv.requests] == [f"bytes={len(DATA) + 5}-", None]  # 416, then from the start
    assert (got.resumed_from, target.read_bytes()) == (0, DATA)


def test_offline_is_one_line_and_leaves_nothing(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as e:
        dl.fetch(url, tmp_path / "w.bin", sha256=SHA)
    message = str(e.value)
    assert message.startswith(f"cannot download {url}: ") and message.endswith("(no network?)")
    assert "refused" in message.lower() and "\n" not in message
    assert _leftovers(tmp_path) == []


def test_http_404_is_one_line(tmp_path):
    with serve({}) as srv, pytest.raises(DownloadError) as e:
        dl.fetch(srv.url("/gone.bin"), tmp_path / "w.bin")
    assert str(e.value) == f"cannot download {srv.url('/gone.bin')}: HTTP 404 Not Found"


def test_a_web_page_instead_of_the_file_is_refused(tmp_path):
    with serve({"w.bin": b"<html>quota exceeded</html>"}) as srv, pytest.raises(DownloadError) as e:
        srv.content_types["/w.bin"] = "text/html; charset=utf-8"
        dl.fetch(srv.url("/w.bin"), tmp_path / "w.bin")
    assert str(e.value) == (f"{srv.url('/w.bin')}: the server sent a web page, not the file (moved, removed or over its "
                            "quota?); nothing was kept")
    assert _leftovers(tmp_path) == []


def test_a_second_download_of_the_same_file_at_once_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    target = tmp_path / "w.bin"
    with open(dl.part_path(target), "wb") as held, serve({"w.bin": DATA}) as srv:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match=r"another process is downloading w\.bin"):
            dl.fetch(srv.url("/w.bin"), target)


def test_the_progress_bar_is_drawn_only_when_asked(tmp_path, capsys):
    with serve({"w.bin": DATA}) as srv:
        dl.fetch(srv.url("/w.bin"), tmp_path / "quiet.bin")
        assert capsys.readouterr().err == ""
        dl.fetch(srv.url("/w.bin"), tmp_path / "shown.bin", progress=True)
    assert "shown.bin" in capsys.readouterr().err
