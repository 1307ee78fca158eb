"""Data sets, each read from the format it is distributed in.

Two shapes of data set: ``ArrayDataset`` (the whole set as uint8 N×H×W×3 in memory: CIFAR, SVHN, digits)
and ``FileDataset`` (image files decoded on demand: ImageNet, a folder of images). ``open_dataset`` is the one
entry point; every loader refuses a wrong layout with a line saying what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.data.specs import PreprocessSpec, get_spec, register_spec
from dnet.errors import UsageError


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


def _digits_spec() -> PreprocessSpec:
    # Per-channel mean/std of the training split on the 0-255 scale (as the Lua CIFAR loaders normalise),
    # rounded to one decimal like the CIFAR constants; grey images so the three channels are equal.
    return PreprocessSpec("digits", (77.9, 77.9, 77.9), (95.9, 95.9, 95.9), 255.0, input_size=8)


DIGITS_SPEC = register_spec(_digits_spec())

LOADERS = {"digits": _digits}


def open_dataset(name: str, root: str | Path | None = None, split: str = "test", *, download: bool = False):
    """Open a data set by name: digits (built in), and the loaders registered in ``LOADERS``."""
    if split not in ("train", "test"):
        raise UsageError(f"split must be 'train' or 'test', got {split!r}")
    loader = LOADERS.get(name)
    if loader is None:
        raise UsageError(f"unknown data set {name!r}; choose from {', '.join(sorted(LOADERS))}")
    if name == "digits":
        return loader(split)
    return loader(root, split, download=download)


__all__ = ["ArrayDataset", "FileDataset", "open_dataset", "get_spec", "LOADERS"]
