"""Data sets, each read from the format it is distributed in.

Two shapes of data set: ``ArrayDataset`` (the whole set as uint8 N×H×W×3 in memory: CIFAR, SVHN, digits)
and ``FileDataset`` (image files decoded on demand: ImageNet, a folder of images). ``open_dataset`` is the one
entry point; every loader refuses a wrong layout with a line saying what it expected.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.data import svhn
from dnet.data.download import download as fetch_set
from dnet.data.images import IMAGE_SUFFIXES, is_image
from dnet.data.specs import PreprocessSpec, get_spec
from dnet.errors import DataError, UsageError, require_one_of


@dataclass(frozen=True)
class ArrayDataset:
    name: str
    split: str  # "train" or "test"
    images: np.ndarray  # uint8 N×H×W×3, RGB
    labels: np.ndarray  # int64 N
    num_classes: int
    spec: PreprocessSpec

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FileDataset:
    name: str
    split: str
    paths: list[Path]
    labels: np.ndarray  # int64 N
    num_classes: int
    class_names: list[str]
    spec: PreprocessSpec | None = None  # None: the model's own preprocessing decides

    def __len__(self) -> int:
        return len(self.labels)


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


def _need_root(name: str, root) -> Path:
    if root is None:
        raise UsageError(f"data set {name!r} needs --data: the folder holding it")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder (for {name}: give the folder holding it, or --download)")
    return root


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
        root = _need_root(name, root)
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
    root = _need_root("svhn", root)
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


# --- folders of image files -------------------------------------------------------------------------------

def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image(p))


def _class_folders(root: Path, name: str) -> FileDataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected one subfolder of images per class)")
    paths, labels = [], []
    for index, cls in enumerate(classes):
        found = _images_under(root / cls)
        if not found:
            raise DataError(f"{root / cls}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += found
        labels += [index] * len(found)
    return FileDataset(name, "test", paths, np.asarray(labels, dtype=np.int64), len(classes), classes)


def _folder(root, split: str, *, download: bool = False) -> FileDataset:
    if download:
        raise UsageError("--download does not apply to a folder of images")
    root = _need_root("folder", root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    return dataclasses.replace(_class_folders(root, "folder"), split=split)


# --- ImageNet (ILSVRC-2012 validation) ---------------------------------------------------------------------

SYNSET = re.compile(r"^n\d{8}$")
GROUND_TRUTH = "LOC_val_solution.csv"  # Kaggle's ImageNet object-localization challenge layout
SYNSET_NAMES = "LOC_synset_mapping.txt"


def _find_upwards(start: Path, name: str, levels: int = 4) -> Path | None:
    for folder in [start, *list(start.parents)[:levels]]:
        if (folder / name).is_file():
            return folder / name
    return None


def _imagenet_root(root: Path, split: str) -> Path:
    sub = "val" if split == "test" else "train"
    for candidate in (root / "ILSVRC" / "Data" / "CLS-LOC" / sub, root / "Data" / "CLS-LOC" / sub, root / sub):
        if candidate.is_dir():
            return candidate
    return root


def read_ground_truth(csv_path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv``: ImageId → the synset of its first box."""
    truth = {}
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"{csv_path}: expected the header 'ImageId,PredictionString', got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            tokens = row[1].split() if len(row) > 1 else []
            if not tokens or not SYNSET.match(tokens[0]):
                raise DataError(f"{csv_path}:{line}: expected 'ImageId,nXXXXXXXX x y x y ...', got {','.join(row)[:80]!r}")
            truth[row[0]] = tokens[0]
    if not truth:
        raise DataError(f"{csv_path}: holds no rows")
    return truth


def _imagenet(root, split: str, *, download: bool = False) -> FileDataset:
    if download:
        raise UsageError("ImageNet cannot be downloaded automatically (it needs an account at image-net.org); "
                         "pass --data with the validation folder")
    root = _imagenet_root(_need_root("imagenet", root), split)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subdirs:
        odd = [p.name for p in subdirs if not SYNSET.match(p.name)]
        if odd:
            raise DataError(f"{root}: subfolder {sorted(odd)[0]!r} is not a synset id (expected nXXXXXXXX folders; "
                            f"for any other class-per-folder layout use --dataset folder)")
        return dataclasses.replace(_class_folders(root, "imagenet"), split=split)
    images = _images_under(root)
    if not images:
        raise DataError(f"{root}: no images and no synset subfolders (expected the ImageNet validation images)")
    csv_path = _find_upwards(root, GROUND_TRUTH)
    if csv_path is None:
        raise DataError(f"{root}: {len(images):,} images in one folder but no {GROUND_TRUTH} beside it or above it "
                        f"(the ground truth), and no synset subfolders")
    truth = read_ground_truth(csv_path)
    names_file = _find_upwards(root, SYNSET_NAMES)
    if names_file is not None:
        classes = [line.split()[0] for line in names_file.read_text().splitlines() if line.strip()]
    else:
        classes = sorted(set(truth.values()))
    index = {s: i for i, s in enumerate(classes)}
    unknown = [p.name for p in images if p.stem not in truth]
    if unknown:
        raise DataError(f"{csv_path}: has no ground truth for {len(unknown):,} image(s), e.g. {unknown[0]}")
    missing = sorted(set(truth) - {p.stem for p in images})
    if missing:
        raise DataError(f"{root}: {len(missing):,} image(s) listed in {GROUND_TRUTH} are missing, e.g. {missing[0]}")
    labels = np.asarray([index[truth[p.stem]] for p in images], dtype=np.int64)
    return FileDataset("imagenet", split, images, labels, len(classes), classes)


@dataclass(frozen=True)
class DatasetInfo:
    """One data set dnet reads: its loader, the preprocessing its own models use, whether dnet trains on it."""

    load: Callable
    spec: str | None  # array data sets: the spec their models are fed; None: the model file's own decides
    trainable: bool = True
    train_val: Callable | None = None  # (root, download=) -> (train, val) where the recipe holds images out (SVHN)


# The one list of data sets (``dnet eval --dataset`` takes them all, ``dnet train`` the trainable ones).
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(_cifar("cifar10"), "cifar10"),
    "cifar100": DatasetInfo(_cifar("cifar100"), "cifar100"),
    "svhn": DatasetInfo(_svhn, "svhn", train_val=_svhn_train_val),
    "imagenet": DatasetInfo(_imagenet, None),
    "digits": DatasetInfo(_digits, "digits"),
    "folder": DatasetInfo(_folder, None, trainable=False),
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
    if name == "digits":
        return info.load(split)
    return info.load(root, split, download=download)


def open_train_val(name: str, root: str | Path | None = None, *, download: bool = False):
    """The training split and its validation split (SVHN: the paper's 6,000 held-out images), or (train, None)."""
    info = _info(name)
    if info.train_val is not None:
        return info.train_val(root, download=download)
    return open_dataset(name, root, "train", download=download), None


__all__ = ["DATASETS", "SPLITS", "TRAINABLE", "ArrayDataset", "DatasetInfo", "FileDataset", "dataset_of_spec", "get_spec",
           "open_dataset", "open_train_val"]
