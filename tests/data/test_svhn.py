"""SVHN as the paper trains on it: train + extra, 6,000 held out for validation, labels as digits, the download of
extra_32x32.mat. Everything runs on tiny generated .mat files; the real files are never fetched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.io

import dnet.data.download as dl
from dnet.core.errors import DataError, UsageError
from dnet.data import svhn
from dnet.data.datasets import open_dataset, open_train_val


def _mat(path, n, seed=0, first=0):
    """n images whose pixels encode their index in the file (first + i), labels 1..10 cycling from a seeded start."""
    index = np.arange(first, first + n)
    x = np.zeros((32, 32, 3, n), np.uint8)
    x[0, 0, 0], x[0, 0, 1] = index % 256, index // 256
    y = ((np.arange(n) + seed) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 = the digit 0
    scipy.io.savemat(path, {"X": x, "y": y})
    return y.ravel()


def _index(images):
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


@pytest.fixture
def small_hold_out(monkeypatch):
    monkeypatch.setattr(svhn, "HOLD_OUT_PER_CLASS", {"train": 3, "extra": 2})  # 30 + 20 held out


def _folder(tmp_path):
    _mat(tmp_path / "train_32x32.mat", 60)
    _mat(tmp_path / "extra_32x32.mat", 40, seed=3, first=1000)
    _mat(tmp_path / "test_32x32.mat", 20, seed=5, first=5000)
    return tmp_path


def test_labels_are_the_digits_with_10_as_0(tmp_path):
    stored = _mat(tmp_path / "test_32x32.mat", 12)
    ds = open_dataset("svhn", tmp_path)
    assert stored.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert ds.labels.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0] and ds.split == "test"
    assert _index(ds.images).tolist() == list(range(12)) and ds.images.shape == (12, 32, 32, 3)


def test_hold_out_is_the_first_of_each_digit_in_a_seeded_shuffle():
    labels = np.random.default_rng(1).integers(0, 10, 500)
    held = svhn.hold_out(labels, 7)
    assert len(held) == 70 and np.bincount(labels[held], minlength=10).tolist() == [7] * 10
    order = np.random.RandomState(svhn.SPLIT_SEED).permutation(500)
    assert held[:7].tolist() == [i for i in order if labels[i] == 0][:7]
    assert np.array_equal(held, svhn.hold_out(labels, 7))  # the same images every run
    with pytest.raises(DataError, match=r"x.mat: only \d+ images of the digit \d, but 60 of each digit are held out"):
        svhn.hold_out(labels, 60, name="x.mat")


def test_full_size_split_is_598388_training_and_6000_validation_images():
    rng = np.random.default_rng(0)
    train_labels, extra_labels = rng.integers(0, 10, 73_257), rng.integers(0, 10, 531_131)
    held_train = svhn.hold_out(train_labels, svhn.HOLD_OUT_PER_CLASS["train"])
    held_extra = svhn.hold_out(extra_labels, svhn.HOLD_OUT_PER_CLASS["extra"])
    assert (len(held_train), len(held_extra)) == (4_000, 2_000)
    assert 73_257 + 531_131 == 604_388 and 604_388 - len(held_train) - len(held_extra) == 598_388


def test_train_and_val_split_train_plus_extra_without_overlap(tmp_path, small_hold_out):
    root = _folder(tmp_path)
    train, val = open_train_val("svhn", root)
    assert (train.split, val.split, len(train), len(val)) == ("train", "val", 60 + 40 - 50, 50)
    seen_train, seen_val = _index(train.images), _index(val.images)
    assert sorted(seen_train.tolist() + seen_val.tolist()) == list(range(60)) + list(range(1000, 1040))
    assert np.bincount(val.labels, minlength=10).tolist() == [5] * 10  # 3 of each digit from train, 2 from extra
    assert (seen_val < 1000).sum() == 30 and (seen_val >= 1000).sum() == 20
    stored = {**{i: (i % 10) + 1 for i in range(60)}, **{1000 + i: (i + 3) % 10 + 1 for i in range(40)}}
    for ds, seen in ((train, seen_train), (val, seen_val)):
        assert ds.labels.tolist() == [stored[i] % 10 for i in seen.tolist()]  # each image keeps its own label
    again = open_dataset("svhn", root, "val")
    assert np.array_equal(again.images, val.images) and np.array_equal(open_dataset("svhn", root, "train").labels,
                                                                        train.labels)


def test_training_needs_extra_and_says_how_to_get_it(tmp_path, small_hold_out):
    _mat(tmp_path / "train_32x32.mat", 60)
    with pytest.raises(DataError) as e:
        open_dataset("svhn", tmp_path, "train")
    assert str(e.value) == (f"{tmp_path}: expected extra_32x32.mat (SVHN cropped digits, format 2; the paper trains on "
                            f"train + extra, 6,000 images held out) or use --download")
    with pytest.raises(DataError, match="extra_32x32.mat: 10 images, fewer than the 20 held out of it"):
        _mat(tmp_path / "extra_32x32.mat", 10)
        open_dataset("svhn", tmp_path, "train")


def test_only_svhn_has_a_validation_split():
    with pytest.raises(UsageError) as e:
        open_dataset("digits", split="val")
    assert str(e.value) == "data set digits has no validation split (only svhn holds images out of training)"


def _md5(path):
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_download_fetches_train_and_extra_and_announces_the_size_first(tmp_path, monkeypatch, capsys, small_hold_out):
    (tmp_path / "remote").mkdir()
    remote = _folder(tmp_path / "remote")
    for key in ("train", "extra"):
        src = remote / f"{key}_32x32.mat"
        size = "about 1.3 GB" if key == "extra" else ""
        monkeypatch.setitem(dl.DOWNLOADS, f"svhn/{key}", [dl.Download(src.as_uri(), src.name, _md5(src), size=size)])
    data = tmp_path / "data"
    train, val = open_train_val("svhn", data, download=True)
    assert (len(train), len(val)) == (50, 50)
    assert sorted(p.name for p in data.iterdir()) == ["extra_32x32.mat", "train_32x32.mat"]
    assert capsys.readouterr().err == (f"downloading extra_32x32.mat (about 1.3 GB) from {(remote / 'extra_32x32.mat').as_uri()} "
                                       f"into {data}\n")


def test_the_extra_download_is_the_published_file():
    (item,) = dl.DOWNLOADS["svhn/extra"]
    assert (item.url, item.filename, item.md5, item.size) == (
        "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat", "extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7",
        "about 1.3 GB")
