"""SVHN cropped digits (format 2) as the DenseNet paper trains on it: train + extra, 6,000 images held out.

Paper, Sec. 4.1: all the training data (73,257 ``train`` + 531,131 ``extra`` = 604,388 images), no augmentation,
a validation set of 6,000 images split from the training set, the model with the lowest validation error
reported. The paper gives only the count; dnet holds out 400 images per class from ``train`` and 200 per class
from ``extra`` (4,000 + 2,000), as the SVHN loader of Stochastic Depth (``svhn-dataset.lua``, Huang et al. 2016)
does: the first of each class in a seeded shuffle, so every run validates on the same 6,000 images.

Labels: the files store 1..10 with 10 for the digit 0. dnet's class index is the digit itself (10 -> 0, the
other labels unchanged), as torchvision's SVHN does, so predictions read as digits. The DenseNet repositories
have no SVHN loader, so no released model fixes this choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnet.core.errors import DataError
from dnet.data import mat5

HOLD_OUT_PER_CLASS = {"train": 400, "extra": 200}  # 10 × (400 + 200) = 6,000 validation images
SPLIT_SEED = 0  # the shuffle that picks them (numpy's RandomState: its stream is frozen across numpy versions)
# zlib cannot expand data by more than ~1032:1, so a header claiming more than this per file byte is a lie
_MAX_EXPANSION = 1100
_CHUNK = 4096  # images copied at a time (12 MB)


def _header(path: Path) -> tuple[int, int, int, int]:
    """The shape of ``X`` from the file's header, checked against the file size (nothing large is read)."""
    info = {v.name: v for v in mat5.variables(path)}
    if "X" not in info or "y" not in info:
        raise DataError(f"{path}: expected variables X and y (SVHN cropped digits), found {', '.join(sorted(info)) or 'none'}")
    shape = info["X"].shape
    if len(shape) != 4 or shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X has shape {shape}, expected 32×32×3×N")
    if int(np.prod(shape)) > _MAX_EXPANSION * path.stat().st_size:
        raise DataError(f"{path}: header claims {shape} but the file is only {path.stat().st_size:,} bytes")
    return shape


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as stored (32×32×3×N uint8, column-major) and the class index (the digit) of each image."""
    shape = _header(path)
    mat = mat5.read(path, ["X", "y"])
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.shape != shape:
        raise DataError(f"{path}: X has shape {x.shape} but its header says {shape}")
    if x.dtype != np.uint8 or len(y) != x.shape[3]:
        raise DataError(f"{path}: X is {x.dtype} with {x.shape[3]} images but y has {len(y)} labels")
    if len(y) == 0 or not np.all(np.isin(y, np.arange(1, 11))):
        raise DataError(f"{path}: labels must lie in 1..10 (10 is the digit 0)")
    return x, y.astype(np.int64) % 10


def images_of(x: np.ndarray, indices: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Images ``indices`` (all by default) of a stored 32×32×3×N ``X`` as N×32×32×3, written into ``out`` if given."""
    view = x.transpose(3, 0, 1, 2)
    if indices is None:
        indices = np.arange(view.shape[0])
    if out is None:
        out = np.empty((len(indices), 32, 32, 3), np.uint8)
    # a chunk at a time: np.take (and one big fancy index) would first copy the whole 1.5 GB of extra's X
    for start in range(0, len(indices), _CHUNK):
        chunk = indices[start:start + _CHUNK]
        out[start:start + len(chunk)] = view[chunk]
    return out


def hold_out(labels: np.ndarray, per_class: int, seed: int = SPLIT_SEED, *, name: str = "") -> np.ndarray:
    """Indices of the held-out images: the first ``per_class`` of each class (0..9) in a seeded shuffle."""
    order = np.random.RandomState(seed).permutation(len(labels))
    shuffled = labels[order]
    picked = []
    for digit in range(10):
        found = order[shuffled == digit][:per_class]
        if len(found) < per_class:
            raise DataError(f"{name}: only {len(found)} images of the digit {digit}, but {per_class} of each digit "
                            f"are held out for validation")
        picked.append(found)
    return np.concatenate(picked)


def train_val(train_path: Path, extra_path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(images, labels) of the training split (train + extra less the held-out images, in that order) and of the
    validation split (train's held-out images, then extra's).

    The result is allocated once (sizes from the headers); each file is read, copied in a chunk at a time and
    released before the next is read, so the peak is the result plus one file's ``X``: 1.73 + 1.52 GiB for the
    full set (3.3 GiB peak RSS and 21 s measured on full-size generated files).
    """
    files = {"train": train_path, "extra": extra_path}
    per_class = HOLD_OUT_PER_CLASS
    counts = {part: _header(path)[3] for part, path in files.items()}
    for part, n in counts.items():
        if n < 10 * per_class[part]:
            raise DataError(f"{files[part]}: {n:,} images, fewer than the {10 * per_class[part]:,} held out of it "
                            f"for validation")
    kept = {part: n - 10 * per_class[part] for part, n in counts.items()}
    at = {"train": (0, 0), "extra": (kept["train"], 10 * per_class["train"])}  # (training, validation) offsets
    total, n_val = sum(kept.values()), 10 * sum(per_class.values())
    images, labels = np.empty((total, 32, 32, 3), np.uint8), np.empty(total, np.int64)
    val_images, val_labels = np.empty((n_val, 32, 32, 3), np.uint8), np.empty(n_val, np.int64)
    for part in files:
        x, y = read_mat(files[part])
        held = hold_out(y, per_class[part], name=str(files[part]))
        keep = np.setdiff1d(np.arange(len(y)), held, assume_unique=True)
        (i, j) = at[part]
        images_of(x, keep, out=images[i:i + len(keep)])
        labels[i:i + len(keep)] = y[keep]
        images_of(x, held, out=val_images[j:j + len(held)])
        val_labels[j:j + len(held)] = y[held]
        del x, y
    return (images, labels), (val_images, val_labels)


__all__ = ["HOLD_OUT_PER_CLASS", "SPLIT_SEED", "hold_out", "images_of", "read_mat", "train_val"]
