"""The two shapes of a data set: ``ArrayDataset`` (the whole set as uint8 N×H×W×3 in memory) and ``FileDataset``
(image files decoded on demand)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.core.errors import DataError, UsageError
from dnet.core.specs import PreprocessSpec


@dataclass(frozen=True)
class ArrayDataset:
    name: str
    split: str  # "train" or "test"
    images: np.ndarray  # uint8 N×H×W×3, RGB
    labels: np.ndarray  # int64 N
    num_classes: int
    spec: PreprocessSpec | None  # None: the model file's own decides (ImageNet images from an .npz)

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


def evenly_spread(n_total: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``n_total``, first and last included (a folder sorted by class would
    otherwise give one class): the images ``dnet eval --limit``, calibration and validation counts pick."""
    if count >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, count).round().astype(int))


def need_root(name: str, root) -> Path:
    if root is None:
        raise UsageError(f"data set {name!r} needs --data: the folder holding it")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder (for {name}: give the folder holding it, or --download)")
    return root
