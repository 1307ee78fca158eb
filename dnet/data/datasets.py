"""Data sets, each read from the format it is distributed in.

Two shapes of data set: ``ArrayDataset`` (the whole set as uint8 N×H×W×3 in memory: CIFAR, SVHN, digits)
and ``FileDataset`` (image files decoded on demand: ImageNet, a folder of images). ``open_dataset`` is the one
entry point; every loader refuses a wrong layout with a line saying what it expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.core.errors import DataError, UsageError, require_one_of
from dnet.core.specs import get_spec
from dnet.data import folders, svhn
from dnet.data.arrays import ImageArrays, check_labels, is_array_file, read_image_arrays
from dnet.data.base import ArrayDataset, FileDataset, need_root
from dnet.data.download import download as fetch_set

# scikit-learn's bundled handwritten digits: 1,797 real 8×8 images, 17 grey levels (0..16), no download.
# Split: a fixed stratified 80/20 split (seed 0); pixels scaled to 0..255 and replicated to RGB.
DIGITS_SEED = 0


def _digits(split: str) -> ArrayDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    grey = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    idx = np.arange(len(grey))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=DIGITS_SEED, stratify=d.target)
    pick = train_idx if split == "train" else test_idx
    images = np.repeat(grey[pick][..., None], 3, axis=3)
    return ArrayDataset("digits", split, images, d.target[pick].astype(np.int64), 10, DIGITS_SPEC)


DIGITS_SPEC = get_spec("digits")


# --- CIFAR-10 / CIFAR-100, binary distribution: fixed-size records, label byte(s) then 3×32×32 pixels -------

CIFAR_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _CifarFormat:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # CIFAR-100 records start with the coarse label, then the fine one (the one we use)
    num_classes: int
    spec: str


CIFAR_FORMATS = {
    "cifar10": _CifarFormat("cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                            ("test_batch.bin",), 1, 10, "cifar10"),
    "cifar100": _CifarFormat("cifar-100-binary", ("train.bin",), ("test.bin",), 2, 100, "cifar100"),
}


LABEL_CHUNK = 4096  # records read at a time for the labels: ~12 MB, whatever the file's size


def read_cifar_records(path: Path, label_bytes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary file as (uint8 N×32×32×3, int64 N); the size must be a whole number of records.

    The images are a read-only memory map of the file, read when indexed (a batch at a time), so memory follows
    the batch, not the file's size; the labels are read in chunks of :data:`LABEL_CHUNK` records.
    """
    record = label_bytes + CIFAR_PIXELS
    size = path.stat().st_size
    if size == 0 or size % record:
        raise DataError(f"{path}: {size:,} bytes is not a whole number of {record}-byte CIFAR records "
                        f"(is this the binary version of the right data set?)")
    n = size // record
    labels = np.empty(n, np.int64)
    with open(path, "rb") as f:
        for start in range(0, n, LABEL_CHUNK):
            rows = min(LABEL_CHUNK, n - start)
            chunk = np.frombuffer(f.read(rows * record), np.uint8)
            if len(chunk) != rows * record:
                raise DataError(f"{path}: the file shrank while it was read")
            labels[start:start + rows] = chunk.reshape(rows, record)[:, label_bytes - 1]
    if labels.max() >= num_classes:
        raise DataError(f"{path}: label {int(labels.max())} out of range for {num_classes} classes "
                        f"(CIFAR-10 and CIFAR-100 files mixed up?)")
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, record))
    images = raw[:, label_bytes:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)  # a view: nothing read yet
    return images, labels


def _cifar(name: str):
    fmt = CIFAR_FORMATS[name]

    def load(root, split: str, *, download: bool = False) -> ArrayDataset:
        if download:
            root = Path(root if root is not None else ".").expanduser()
            if not (root / fmt.folder).is_dir() and root.name != fmt.folder:
                fetch_set(name, root)
        root = need_root(name, root)
        folder = root / fmt.folder if (root / fmt.folder).is_dir() else root
        files = fmt.train if split == "train" else fmt.test
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{root}: expected {fmt.folder}/{missing[0]} (the binary CIFAR distribution; "
                            f"the Python pickle version is not read) — pass the folder holding {fmt.folder}/ "
                            f"or use --download")
        parts = [read_cifar_records(folder / f, fmt.label_bytes, fmt.num_classes) for f in files]
        # one file (every test split) stays a lazy memory map; the five CIFAR-10 training files are joined in memory
        images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return ArrayDataset(name, split, images, labels, fmt.num_classes, get_spec(fmt.spec))

    return load


def cifar_layout(folder: str | os.PathLike | None) -> tuple[str, Path] | None:
    """(``cifar10``/``cifar100``, the folder of its ``.bin`` files) when ``folder`` holds a CIFAR binary distribution
    (or is its own folder) with at least one of its files; else None."""
    if folder is None or not Path(folder).is_dir():
        return None
    root = Path(folder)
    for name, fmt in CIFAR_FORMATS.items():
        inner = root / fmt.folder if (root / fmt.folder).is_dir() else root
        if any((inner / f).is_file() for f in fmt.train + fmt.test):
            return name, inner
    return None


def read_cifar_folder(folder: str | os.PathLike, split: str) -> ImageArrays:
    """The records of a CIFAR binary folder's ``split`` files, or of its other split's when only those are there."""
    name, inner = cifar_layout(folder) or (None, None)
    if name is None:
        raise DataError(f"{folder}: not a CIFAR binary folder")
    fmt = CIFAR_FORMATS[name]
    wanted, other = (fmt.train, fmt.test) if split == "train" else (fmt.test, fmt.train)
    files = [f for f in wanted if (inner / f).is_file()] or [f for f in other if (inner / f).is_file()]
    parts = [read_cifar_records(inner / f, fmt.label_bytes, fmt.num_classes) for f in files]
    return ImageArrays(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                       f"{name} {inner}/{'+'.join(files) if len(files) < 3 else files[0] + '…'}")


# --- SVHN, the cropped-digits .mat files: train + extra less 6,000 held out, as the paper trains (dnet.data.svhn) ---

SVHN_SPEC = get_spec("svhn")
SVHN_FILES = {"train": ("train_32x32.mat", "extra_32x32.mat"), "test": ("test_32x32.mat",)}


def _svhn_files(root, split: str, download: bool) -> list[Path]:
    names = SVHN_FILES["test" if split == "test" else "train"]
    if download:
        root = Path(root if root is not None else ".").expanduser()
        for name in names:
            if not root.is_file() and not (root / name).is_file():
                fetch_set(f"svhn/{name.split('_')[0]}", root)
    root = need_root("svhn", root)
    if root.is_file():
        if split != "test":
            raise DataError(f"{root}: the SVHN {split} split comes from train_32x32.mat and extra_32x32.mat; "
                            f"pass the folder holding them")
        return [root]
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        why = "" if split == "test" else "; the paper trains on train + extra, 6,000 images held out"
        raise DataError(f"{root}: expected {missing[0]} (SVHN cropped digits, format 2{why}) or use --download")
    return [root / name for name in names]


def _svhn_train_val(root, *, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    train_path, extra_path = _svhn_files(root, "train", download)
    (x, y), (val_x, val_y) = svhn.train_val(train_path, extra_path)
    return (ArrayDataset("svhn", "train", x, y, 10, SVHN_SPEC), ArrayDataset("svhn", "val", val_x, val_y, 10, SVHN_SPEC))


def _svhn(root, split: str, *, download: bool = False) -> ArrayDataset:
    if split != "test":
        train, val = _svhn_train_val(root, download=download)
        return train if split == "train" else val
    (path,) = _svhn_files(root, split, download)
    x, y = svhn.read_mat(path)
    return ArrayDataset("svhn", split, svhn.images_of(x), y, 10, SVHN_SPEC)


@dataclass(frozen=True)
class DatasetInfo:
    """One data set dnet reads: its loader, the preprocessing its own models use, whether dnet trains on it."""

    load: Callable
    spec: str | None  # array data sets: the spec their models are fed; None: the model file's own decides
    trainable: bool = True
    train_val: Callable | None = None  # (root, download=) -> (train, val) where the recipe holds images out (SVHN)
    classes: int | None = None  # None: the folder decides
    test_images: int | None = None  # the published test set, the one the papers' errors are measured on


# The one list of data sets (``dnet eval --dataset`` takes them all, ``dnet train`` the trainable ones).
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(_cifar("cifar10"), "cifar10", classes=10, test_images=10_000),
    "cifar100": DatasetInfo(_cifar("cifar100"), "cifar100", classes=100, test_images=10_000),
    "svhn": DatasetInfo(_svhn, "svhn", train_val=_svhn_train_val, classes=10, test_images=26_032),
    "imagenet": DatasetInfo(folders.imagenet, None, classes=1000, test_images=50_000),  # ILSVRC-2012 validation
    "digits": DatasetInfo(_digits, "digits", classes=10),
    "folder": DatasetInfo(folders.folder, None, trainable=False),
}
TRAINABLE = tuple(name for name, info in DATASETS.items() if info.trainable)
SPLITS = ("train", "val", "test")


def dataset_of_spec(spec_name: str) -> str | None:
    """The array data set whose models are fed ``spec_name`` (a CIFAR-10 model -> "cifar10"), if any."""
    return next((name for name, info in DATASETS.items() if info.spec == spec_name), None)


def _info(name: str) -> DatasetInfo:
    info = DATASETS.get(name)
    if info is None:
        raise UsageError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}", option="dataset")
    return info


def open_dataset(name: str, root: str | Path | None = None, split: str = "test", *, download: bool = False):
    """Open a data set by name (see ``DATASETS``); ``digits`` is built in and needs no folder.

    Splits: ``train``, ``test``, and ``val`` for a data set whose recipe holds images out of training (SVHN).
    """
    require_one_of("split", split, SPLITS)
    info = _info(name)
    if split == "val" and info.train_val is None:
        raise UsageError(f"data set {name} has no validation split (only {', '.join(n for n, i in DATASETS.items() if i.train_val)} "
                         f"holds images out of training)", option="split")
    if root is not None and is_array_file(root):
        return _array_file(name, Path(root), split, download)
    if name == "digits":
        return info.load(split)
    return info.load(root, split, download=download)


def _array_file(name: str, path: Path, split: str, download: bool) -> ArrayDataset:
    """An .npz of uint8 images and their labels, read as the data set ``name`` (its classes and preprocessing)."""
    info = _info(name)
    if download:
        raise UsageError(f"--download does not apply to an array file ({path.name})", option="download")
    if info.classes is None:
        raise UsageError(f"{path}: say which data set the images are of (cifar10, cifar100, svhn, imagenet, digits): "
                         f"its classes and preprocessing follow from it", option="dataset")
    found = read_image_arrays(path, need_labels=True)
    check_labels(found.labels, info.classes, f"{path} ('labels')")
    spec = get_spec(info.spec) if info.spec is not None else None
    size = found.images.shape[1:3]
    if spec is not None and size != (spec.input_size, spec.input_size):
        raise DataError(f"{path}: images of {size[1]}×{size[0]} pixels; {name} images are "
                        f"{spec.input_size}×{spec.input_size}")
    return ArrayDataset(name, split, found.images, found.labels, info.classes, spec)


def open_images(source: str | os.PathLike | None, dataset: str | None = None, *, split: str = "train"
                ) -> ImageArrays | FileDataset | None:
    """The images ``--calib`` (``split`` "train") or ``--val`` ("test") names, in the forms dnet reads besides a
    folder of image files: a data set by name (as ``open_dataset``; image data sets give their files), an
    ``.npz``/``.npy`` array file, or a CIFAR binary folder. None: ``source`` is a folder of image files."""
    if dataset is not None and is_array_file(source):  # calibration needs no labels; those given must fit the set
        found = read_image_arrays(source)
        classes = _info(dataset).classes
        if found.labels is not None and classes is not None:
            check_labels(found.labels, classes, f"{source} ('labels')")
        return found
    if dataset is not None:
        ds = open_dataset(dataset, source, split)
        if isinstance(ds, FileDataset):
            return ds
        return ImageArrays(ds.images, ds.labels, f"{dataset}/{ds.split}")
    if is_array_file(source):
        return read_image_arrays(source)
    if cifar_layout(source) is not None:
        return read_cifar_folder(source, split)
    return None


def open_train_val(name: str, root: str | Path | None = None, *, download: bool = False):
    """The training split and its validation split (SVHN: the paper's 6,000 held-out images), or (train, None)."""
    info = _info(name)
    if info.train_val is not None:
        return info.train_val(root, download=download)
    return open_dataset(name, root, "train", download=download), None


__all__ = ["DATASETS", "SPLITS", "TRAINABLE", "ArrayDataset", "DatasetInfo", "FileDataset", "cifar_layout",
           "dataset_of_spec", "get_spec", "open_dataset", "open_images", "open_train_val", "read_cifar_folder"]
