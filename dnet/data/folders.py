"""Data sets that are folders of image files: one subfolder per class, and ImageNet's validation layouts."""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dnet.core.errors import DataError, UsageError
from dnet.data.base import FileDataset, need_root
from dnet.data.images import IMAGE_SUFFIXES, is_image

# --- folders of image files -------------------------------------------------------------------------------

def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image(p))


def _empty_class(folder: Path) -> str:
    return f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})"


def labelled_folder(root: Path, empty: Callable[[Path], str] = _empty_class
                    ) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image files, labels) of ``root``'s class subfolders: the sorted names are the class indices,
    each class's images are found recursively, sorted. No subfolders: no classes (the caller says what that means);
    a class folder without images raises DataError(``empty(folder)``); an unreadable ``root`` raises OSError."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for index, cls in enumerate(classes):
        found = images_under(root / cls)
        if not found:
            raise DataError(empty(root / cls))
        paths += found
        labels += [index] * len(found)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def class_folders(root: Path, name: str) -> FileDataset:
    classes, paths, labels = labelled_folder(root)
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected one subfolder of images per class)")
    return FileDataset(name, "test", paths, labels, len(classes), classes)


def folder(root, split: str, *, download: bool = False) -> FileDataset:
    if download:
        raise UsageError("--download does not apply to a folder of images")
    root = need_root("folder", root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    return dataclasses.replace(class_folders(root, "folder"), split=split)


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


def imagenet(root, split: str, *, download: bool = False) -> FileDataset:
    if download:
        raise UsageError("ImageNet cannot be downloaded automatically (it needs an account at image-net.org); "
                         "pass --data with the validation folder")
    root = _imagenet_root(need_root("imagenet", root), split)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subdirs:
        odd = [p.name for p in subdirs if not SYNSET.match(p.name)]
        if odd:
            raise DataError(f"{root}: subfolder {sorted(odd)[0]!r} is not a synset id (expected nXXXXXXXX folders; "
                            f"for any other class-per-folder layout use --dataset folder)")
        return dataclasses.replace(class_folders(root, "imagenet"), split=split)
    images = images_under(root)
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
