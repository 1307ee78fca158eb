"""Images kept as numpy arrays: an ``.npz`` or ``.npy`` file of uint8 pixels, read without unpickling anything.

The forms read (``read_image_arrays``):

- ``.npz`` with ``images`` (and ``labels``, integer, one per image); any other key is ignored. An ``.npz`` without
  ``images`` that holds a single array (``np.savez(f, x)``'s ``arr_0``, or ModelOpt's one array keyed by the input
  name) is read as the images.
- ``.npy``: one array of images.
- Images are uint8, N×H×W×3 (RGB), N×H×W or N×H×W×1 (grey, replicated to three channels as ``image.load(path, 3)``
  does), or N×3×H×W (channels first). Float arrays are refused: dnet feeds a model its own preprocessing, so it
  takes pixels before normalisation.

Nothing is allocated before the sizes a header claims are checked against the bytes the file holds: an ``.npy`` and
an uncompressed ``.npz`` member are memory-mapped (only the images used are read), a compressed member is inflated
only when its claimed size is one that deflate can produce from its compressed bytes.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.core.artifact.pthfile import ZIP_MAGIC
from dnet.core.errors import DataError
from dnet.data.images import check_pixels

ARRAY_SUFFIXES = (".npz", ".npy")
IMAGES_KEY, LABELS_KEY = "images", "labels"
NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER = 64 * 1024  # an .npy header is a short dict literal; numpy itself refuses above 10,000 bytes
DEFLATE_RATIO = 1032  # deflate's largest expansion: a member claiming more than this × its compressed bytes lies
ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes; the last two fields: name and extra lengths


@dataclass(frozen=True)
class ImageArrays:
    """Images (uint8 N×H×W×3, RGB, possibly a read-only memory map) and their labels (int64 N, or None)."""

    images: np.ndarray
    labels: np.ndarray | None
    name: str  # how messages and summaries name the images, e.g. "test.npz" or "cifar10 test_batch.bin"

    def __len__(self) -> int:
        return len(self.images)


def is_array_file(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` names an ``.npz``/``.npy`` file (read by :func:`read_image_arrays`)."""
    return path is not None and Path(path).suffix.lower() in ARRAY_SUFFIXES and Path(path).is_file()


@dataclass(frozen=True)
class _Member:
    """One array of the file, located but not read: where its data starts (None: compressed) and its header."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int | None  # byte offset of the raw data in the file, for a memory map
    info: zipfile.ZipInfo | None = None


def _parse_header(read, path: Path, key: str, available: int) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """An .npy header through ``read(n)``: (shape, dtype, fortran order, header length); checked, nothing allocated."""
    where = f"{path}" + (f" ({key!r})" if key else "")
    magic = read(8)
    if len(magic) < 8 or not magic.startswith(NPY_MAGIC):
        raise DataError(f"{where}: not a numpy array (no .npy header); dnet reads .npy/.npz arrays and never unpickles")
    major = magic[6]
    if major not in (1, 2, 3):
        raise DataError(f"{where}: .npy format version {major}.{magic[7]} is not one numpy writes")
    size_bytes = read(2 if major == 1 else 4)
    length = int.from_bytes(size_bytes, "little") if len(size_bytes) == (2 if major == 1 else 4) else -1
    start = 8 + len(size_bytes)
    if length < 0 or length > MAX_HEADER or start + length > available:
        raise DataError(f"{where}: truncated or corrupt .npy header")
    text = read(length)
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        shape, descr, fortran = tuple(header["shape"]), header["descr"], bool(header["fortran_order"])
        dtype = np.dtype(descr) if isinstance(descr, str) else None
        if dtype is None or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError, MemoryError, RecursionError):
        raise DataError(f"{where}: corrupt .npy header") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (a pickle); dnet never unpickles: save uint8 arrays")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > available - start - length:
        dims = "×".join(map(str, shape)) or "scalar"
        raise DataError(f"{where}: the header claims a {dims} {dtype} array ({claimed:,} bytes) but only "
                        f"{max(0, available - start - length):,} bytes follow it (truncated?)")
    return shape, dtype, fortran, start + length


def _npy_members(path: Path, size: int) -> dict[str, _Member]:
    with open(path, "rb") as f:
        shape, dtype, fortran, data = _parse_header(f.read, path, "", size)
    return {"": _Member("", shape, dtype, fortran, data)}


def _npz_members(path: Path, size: int) -> dict[str, _Member]:
    """The arrays of an .npz, each located and its header checked; none read."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz (zip) file ({e})") from None
    members = {}
    with archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                continue
            key = info.filename[:-4]
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                local = raw.read(ZIP_LOCAL_HEADER.size)
                if len(local) < ZIP_LOCAL_HEADER.size or not local.startswith(ZIP_MAGIC):
                    raise DataError(f"{path} ({key!r}): corrupt zip entry")
                *_, name_len, extra_len = ZIP_LOCAL_HEADER.unpack(local)
                begin = info.header_offset + ZIP_LOCAL_HEADER.size + name_len + extra_len
                available = min(info.file_size, max(0, size - begin))
                raw.seek(begin)
                shape, dtype, fortran, header = _parse_header(raw.read, path, key, available)
                members[key] = _Member(key, shape, dtype, fortran, begin + header, info)
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.file_size > max(info.compress_size, 1) * DEFLATE_RATIO or info.compress_size > size:
                    raise DataError(f"{path} ({key!r}): claims {info.file_size:,} bytes from {info.compress_size:,} "
                                    "compressed ones, more than deflate can hold (corrupt or crafted)")
                try:
                    with archive.open(info) as member:
                        shape, dtype, fortran, _ = _parse_header(member.read, path, key, info.file_size)
                except DataError:
                    raise
                except Exception as e:  # noqa: BLE001 (zlib.error, BadZipFile, a short read: a corrupt entry)
                    raise DataError(f"{path} ({key!r}): corrupt compressed entry ({e})") from None
                members[key] = _Member(key, shape, dtype, fortran, None, info)
            else:
                raise DataError(f"{path} ({key!r}): zip compression method {info.compress_type} is not one "
                                "numpy writes (stored or deflated)")
    return members


def _read(path: Path, m: _Member) -> np.ndarray:
    """The member's array: a read-only memory map where it is stored raw, else inflated (its size checked)."""
    order = "F" if m.fortran else "C"
    if m.offset is not None:
        if math.prod(m.shape) == 0:
            return np.zeros(m.shape, m.dtype, order=order)
        return np.memmap(path, dtype=m.dtype, mode="r", offset=m.offset, shape=m.shape, order=order)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(m.info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 (zlib.error, BadZipFile, a short read: all mean a corrupt entry)
        raise DataError(f"{path} ({m.key!r}): corrupt compressed entry ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _as_rgb(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 N×H×W×3 from the accepted layouts (module doc); grey is replicated without copying."""
    shape = images.shape
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim == 4 and shape[3] not in (1, 3) and shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # N×C×H×W, channels first
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DataError(f"{where}: an array of shape {'×'.join(map(str, shape))}; expected images N×H×W×3 (RGB) or "
                        "N×H×W (grey)")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"{where}: holds no images (shape {'×'.join(map(str, shape))})")
    check_pixels(images.shape[2], images.shape[1], where)
    if images.shape[3] == 1:
        images = np.broadcast_to(images, images.shape[:3] + (3,))
    return images


def read_image_arrays(path: str | os.PathLike, *, need_labels: bool = False) -> ImageArrays:
    """The images (and ``labels``, when the file has them) of an ``.npz``/``.npy`` file (module doc)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if magic.startswith(ZIP_MAGIC) or (not magic.startswith(NPY_MAGIC) and path.suffix.lower() == ".npz"):
        members = _npz_members(path, size)
    else:
        members = _npy_members(path, size)
    if "" in members:
        chosen, labels_member = members[""], None
    elif IMAGES_KEY in members:
        chosen, labels_member = members[IMAGES_KEY], members.get(LABELS_KEY)
    elif len(members) == 1:
        chosen, labels_member = next(iter(members.values())), None
    else:
        keys = ", ".join(repr(k) for k in members) or "none"
        raise DataError(f"{path}: no {IMAGES_KEY!r} array (its arrays: {keys}); an .npz holds {IMAGES_KEY!r} "
                        f"(uint8 N×H×W×3) and {LABELS_KEY!r} (one integer class per image), or one array of images")
    where = f"{path}" + (f" ({chosen.key!r})" if chosen.key else "")
    if chosen.dtype != np.uint8:
        hint = (" (preprocessed tensors?): dnet applies the model's own preprocessing, so it takes the pixels before "
                "normalisation, 0-255") if chosen.dtype.kind == "f" else ""
        raise DataError(f"{where}: images must be uint8, not {chosen.dtype}{hint}")
    if need_labels and labels_member is None:
        raise DataError(f"{path}: no {LABELS_KEY!r} array; the images' classes are needed (an .npz with "
                        f"{IMAGES_KEY!r} and {LABELS_KEY!r})")
    if labels_member is not None:
        lw = f"{path} ({LABELS_KEY!r})"
        if labels_member.dtype.kind not in "iu" or len(labels_member.shape) != 1:
            raise DataError(f"{lw}: labels must be integers, one per image; got {labels_member.dtype} "
                            f"{'×'.join(map(str, labels_member.shape))}")
        if labels_member.shape[0] != (chosen.shape[0] if chosen.shape else -1):
            raise DataError(f"{path}: {labels_member.shape[0]:,} labels for "
                            f"{chosen.shape[0] if chosen.shape else 0:,} images")
    images = _as_rgb(_read(path, chosen), where)
    labels = None
    if labels_member is not None:
        labels = np.asarray(_read(path, labels_member)).astype(np.int64)
        if len(labels) and labels.min() < 0:
            raise DataError(f"{path} ({LABELS_KEY!r}): label {int(labels.min())} is negative")
    return ImageArrays(images, labels, path.name)


def check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
    """Every label a class of the model's: 0 ≤ label < ``num_classes``."""
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"{name}: label {int(labels.max())} out of range for {num_classes} classes")


__all__ = ["ARRAY_SUFFIXES", "IMAGES_KEY", "LABELS_KEY", "ImageArrays", "check_labels", "is_array_file",
           "read_image_arrays"]
