"""A CIFAR binary file much larger than CIFAR (4.3 GB, sparse: zeros) is read lazily: memory follows the batch, not
the file, with and without ``--limit``; a size that is not a whole number of records is refused in one line."""

from __future__ import annotations

import os
import time

import pytest

from dnet.data.datasets import open_dataset
from tests.helpers.models import save_random

RECORD = 1 + 3 * 32 * 32
RECORDS = 1_400_000  # 4.3 GB
BOUND = 300 << 20  # bytes of resident memory a whole run may add (the file is 4,302,200,000 bytes)


def _sparse_cifar(root, records: int = RECORDS, extra: int = 0):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    path = folder / "test_batch.bin"
    with open(path, "wb") as f:
        f.truncate(records * RECORD + extra)
    if os.stat(path).st_blocks * 512 > 1 << 20:
        pytest.skip("this filesystem does not keep sparse files sparse")
    return path


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize("records", [
    130_000,  # 400 MB: a second
    pytest.param(RECORDS, marks=pytest.mark.slow),  # 4.3 GB: the labels alone take ~15 s to read
])
def test_opening_a_huge_cifar_file_and_taking_batches_stays_under_the_bound(tmp_path, records):
    _sparse_cifar(tmp_path / "data", records)
    _sparse_cifar(tmp_path / "small", 100)
    open_dataset("cifar10", tmp_path / "small", "test").images[[0]]  # the readers' imports and first buffers
    before = _rss()
    start = time.monotonic()
    ds = open_dataset("cifar10", tmp_path / "data", "test")
    assert len(ds) == records and ds.images.shape == (records, 32, 32, 3)
    batch = ds.images[[0, records // 2, records - 1]]  # a batch from anywhere: only its records are read
    assert batch.shape == (3, 32, 32, 3) and int(batch.max()) == 0
    added = _rss() - before
    print(f"{records * RECORD:,}-byte CIFAR file opened in {time.monotonic() - start:.1f} s, resident memory "
          f"+{added / 2**20:.0f} MiB")
    assert added < (48 << 20) + records * 8  # the labels (8 bytes a record) and a chunk, never the file (400 MB+)


@pytest.mark.slow
def test_eval_limit_10_of_a_4gb_cifar_file_stays_under_the_bound(box, tmp_path):
    _sparse_cifar(box.work / "data")
    model = save_random(box.work / "ten.pth", 10, "cifar10", 32)
    r = box.run("eval", model, "--dataset", "cifar10", "--data", box.work / "data", "--count", 10,
                "--json", "-q")
    assert r.code == 0, r.stderr
    assert '"images": 10' in r.stdout
    print(f"eval --limit 10 of a 4.3 GB CIFAR file: resident memory +{r.added_rss / 2**20:.0f} MiB")
    assert r.added_rss < BOUND


def test_a_size_that_is_not_a_whole_number_of_records_is_one_line(box):
    _sparse_cifar(box.work / "data", records=3, extra=5)
    model = save_random(box.work / "ten.pth", 10, "cifar10", 32)
    box.freeze()
    line = box.cli("eval", model, "--dataset", "cifar10", "--data", box.work / "data", "-q").error_line(1)
    assert line == (f"{box.work / 'data' / 'cifar-10-batches-bin' / 'test_batch.bin'}: 9,224 bytes is not a whole "
                    "number of 3073-byte CIFAR records (is this the binary version of the right data set?)")
    box.unchanged()
