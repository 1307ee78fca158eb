"""Calibration images for INT8, and the calibration cache (activation ranges keyed by tensor name).

Images come from a folder (decoded with Pillow, fed through the model's own preprocessing), from an
in-memory uint8 N×H×W×3 array (``ArrayDataset.images``), or from what ``dnet.data.datasets.open_images`` reads (an
``.npz``/``.npy`` file, a CIFAR binary folder, a data set by name). The cache is JSON bound to the FP32 model by its
sha256, so a second conversion of the same model reuses the ranges instead of calibrating again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dnet.core.atomic import atomic_write_text
from dnet.core.errors import DataError, FileFormatError
from dnet.core.outputs import check_input_file
from dnet.core.specs import PreprocessSpec
from dnet.data.base import evenly_spread
from dnet.data.datasets import FileDataset, open_images
from dnet.data.images import list_images
from dnet.data.transforms import preprocess, preprocess_array

CACHE_FORMAT = "dnet.calibration"
CACHE_VERSION = 1
METHODS = ("minmax", "entropy", "percentile", "mse")
MAX_CACHE_BYTES = 64 << 20  # a cache holds two numbers per tensor: kilobytes


def split(n_total: int, count: int, held_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration indices and disjoint held-out indices (for checking), each spread evenly over ``n_total``.

    The held-out images are chosen first, then up to ``count`` calibration images from the rest, so a check never
    sees an image the ranges were measured on. A set smaller than ``count + held_out`` gives the check what
    calibration leaves over, but at least a quarter of the set.
    """
    n_check = min(held_out, max(n_total - count, n_total // 4))
    check = evenly_spread(n_total, n_check) if n_check > 0 else np.array([], dtype=int)
    rest = np.setdiff1d(np.arange(n_total), check)
    return rest[evenly_spread(len(rest), count)], check


def read_folder(folder: str | os.PathLike, spec: PreprocessSpec, count: int, *, held_out: int = 0,
                checking: bool = False, what: str = "calibration") -> np.ndarray:
    """Up to ``count`` images of ``folder`` (recursively, sorted, evenly spread) as float32 N×3×H×W.

    With ``held_out``, the calibration images leave that many aside (:func:`split`); ``checking`` reads those.
    ``what`` names the images in messages ("calibration image ..."); "" for none.
    """
    files = list_images(folder, what=f"{what} folder" if what else "image folder")
    calib, check = split(len(files), count, held_out)
    return read_images([files[i] for i in (check if checking else calib)], spec, what=f"{what} image" if what else "")


def read_images(files: list[Path], spec: PreprocessSpec, what: str = "calibration image") -> np.ndarray:
    """Image files through ``spec`` as float32 N×3×H×W; an undecodable one raises a DataError naming it (``what``)."""
    out = []
    for path in files:
        try:  # the one decoder (pixel limit, 16-bit scaling) and a result of the model's input size
            out.append(preprocess(path, spec))
        except DataError as e:
            raise DataError(f"{what} {e}" if what else str(e)) from None
    return np.stack(out) if out else np.zeros((0, 3, spec.input_size, spec.input_size), np.float32)


def read_array(images: np.ndarray, spec: PreprocessSpec, count: int, *, held_out: int = 0,
               checking: bool = False) -> np.ndarray:
    """Up to ``count`` images of a uint8 N×H×W×3 array (evenly spread) through ``spec`` (held out: read_folder)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise DataError(f"calibration images must be uint8 N×H×W×3, got {images.dtype} {images.shape}")
    if not len(images):
        raise DataError("calibration array holds no images")
    calib, check = split(len(images), count, held_out)
    chosen = images[check if checking else calib]
    if not len(chosen):
        return np.zeros((0, 3, spec.input_size, spec.input_size), np.float32)
    if spec.resize is None and chosen.shape[1:3] == (spec.input_size, spec.input_size):
        return preprocess_array(chosen, spec)
    return np.stack([preprocess(Image.fromarray(im), spec) for im in chosen])


@dataclass(frozen=True)
class CalibrationSet:
    """Where calibration images come from; read only when calibration actually runs (a cache hit reads none)."""

    folder: Path | None = None  # a folder of images, an .npz/.npy file, a CIFAR binary folder, or dataset's folder
    images: np.ndarray | None = None  # uint8 N×H×W×3
    count: int = 512
    name: str = ""  # how the summary names the data, e.g. "digits/train"
    dataset: str | None = None  # ``folder`` holds this data set (dnet.data.datasets.DATASETS): its train split

    def __post_init__(self) -> None:
        if (self.folder is None and self.dataset is None) == (self.images is None):
            raise DataError("calibration needs exactly one of an image folder or an image array")
        if self.count <= 0:
            raise DataError(f"calibration count must be positive, got {self.count}")

    def describe(self) -> str:
        return self.name or (str(self.folder or self.dataset) if self.images is None else "array")

    def source(self) -> np.ndarray | list[Path]:
        """The images as an array, or the image files (a folder of them); nothing decoded."""
        if self.images is not None:
            return self.images
        found = open_images(self.folder, self.dataset, split="train")
        if found is None:
            return list_images(self.folder, what="calibration folder")
        return found.paths if isinstance(found, FileDataset) else found.images

    def _read(self, spec: PreprocessSpec, held_out: int, checking: bool) -> np.ndarray:
        images = self.source()
        if isinstance(images, np.ndarray):
            return read_array(images, spec, self.count, held_out=held_out, checking=checking)
        calib, check = split(len(images), self.count, held_out)
        return read_images([images[i] for i in (check if checking else calib)], spec)

    def load(self, spec: PreprocessSpec, held_out: int = 0) -> np.ndarray:
        """The calibration images, leaving ``held_out`` images of the set aside for :meth:`load_held_out`."""
        return self._read(spec, held_out, checking=False)

    def load_held_out(self, spec: PreprocessSpec, held_out: int) -> np.ndarray:
        """Up to ``held_out`` images of the set that :meth:`load` with the same number never returns."""
        return self._read(spec, held_out, checking=True)


# --- the cache ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationCache:
    model_sha256: str  # of the FP32 ONNX the ranges were measured on
    method: str
    images: int
    data: str
    ranges: dict[str, tuple[float, float]]  # tensor name -> (lowest, highest)

    def to_json(self) -> str:
        return json.dumps({
            "format": CACHE_FORMAT, "version": CACHE_VERSION, "model_sha256": self.model_sha256,
            "method": self.method, "images": self.images, "data": self.data,
            "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(self.ranges.items())},
        }, indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationCache:
        path = check_input_file(path, "calibration cache")
        try:
            size = path.stat().st_size
            if size > MAX_CACHE_BYTES:  # a model or an image set named by mistake: not read whole
                raise ValueError(f"{size:,} bytes; a calibration cache is JSON of at most {MAX_CACHE_BYTES:,}")
            d = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(d, dict):
                raise ValueError(f"JSON {type(d).__name__}, not an object")
            if d.get("format") != CACHE_FORMAT or d.get("version") != CACHE_VERSION:
                raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}")
            ranges = {str(k): (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
            return cls(str(d["model_sha256"]), str(d["method"]), int(d["images"]), str(d.get("data", "")), ranges)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, KeyError, TypeError, IndexError,
                AttributeError, RecursionError) as e:
            raise FileFormatError(f"{path}: not a dnet calibration cache ({str(e)[:120]}); dnet neither reads nor "
                                  "overwrites it: name another calibration cache file", option="calib_cache") from None
