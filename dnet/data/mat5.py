"""A reader of numeric arrays in MATLAB v5 ``.mat`` files (what SVHN's cropped digits are published as).

scipy's ``loadmat`` trusts the file's structure: a mutated file can crash the interpreter (scipy 1.17.1 segfaults
in ``_mio5.read_var_array`` on a data element of type 0). dnet reads only what it needs, the way it reads every
untrusted format: each tag is checked against the bytes that are there before anything is allocated, an array's
bytes are exactly its dimensions times its element size, a compressed array is inflated into an array of exactly
that size (never more), and anything else is one :class:`~dnet.core.errors.DataError` line.

Supported: real, non-sparse numeric arrays (double, single, 8..64-bit integers), stored plain or zlib-compressed,
in either byte order; variables of other kinds are skipped unless asked for. Arrays come back as MATLAB stores them:
column-major (Fortran order), in the class's type.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.core.errors import DataError, FileFormatError
from dnet.core.outputs import check_input_file

HEADER = 128
MI_MATRIX, MI_COMPRESSED = 14, 15
# data element types (miINT8 ... miUINT64) -> numpy type
MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# array classes (mxDOUBLE_CLASS ... mxUINT64_CLASS) -> numpy type of the array
CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
CLASS_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse", 16: "function"}
_PEEK = 4096  # decompressed bytes enough for any array header (flags, up to hundreds of dims, a name)
_CHUNK = 1 << 20  # compressed bytes read at a time
_MAX_DIMS = 32
MAX_EXPANSION = 1100  # zlib cannot expand data by more than about 1032:1


@dataclass(frozen=True)
class Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy type of the array's class, or the class's name when it is not a numeric array
    compressed: bool
    element_at: int  # file offset of the element's data (after its 8-byte tag)
    element_bytes: int  # bytes of the element's data in the file
    data_type: str | None  # numpy type of the stored values (may be narrower than dtype), None if not numeric
    data_offset: int  # offset of the values inside the (decompressed) element data
    data_bytes: int


class _Bytes:
    """A cursor over a piece of a matrix element, with the file's byte order; every read is bounds-checked."""

    def __init__(self, data: bytes, order: str, what: str) -> None:
        self.data, self.order, self.what, self.at = data, order, what, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise DataError(f"{self.what}: truncated array header")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def tag(self) -> tuple[int, int, bytes | None]:
        """(type, bytes, inline data or None) of a sub-element; the small format holds up to 4 bytes in the tag."""
        first, second = struct.unpack(self.order + "II", self.take(8))
        if first >> 16:  # small data element: bytes in the upper half, type in the lower, data in the 4 after
            n, kind = first >> 16, first & 0xFFFF
            if n > 4:
                raise DataError(f"{self.what}: a small data element claims {n} bytes (at most 4)")
            return kind, n, struct.pack(self.order + "I", second)[:n]
        return first, second, None

    def element(self, kinds: tuple[int, ...], role: str) -> bytes:
        kind, n, inline = self.tag()
        if kind not in kinds:
            raise DataError(f"{self.what}: its {role} has data type {kind}, expected one of {kinds}")
        if inline is not None:
            return inline
        data = self.take(n)
        self.take(-n % 8)  # padded to 8 bytes
        return data


def _header_of(data: bytes, order: str, path: Path, what: str, *, compressed: bool, at: int, size: int) -> Variable:
    """Parse a matrix element's header (flags, dimensions, name, the tag of its real part)."""
    b = _Bytes(data, order, what)
    kind, n, inline = b.tag()
    if kind != MI_MATRIX or inline is not None:
        raise DataError(f"{what}: an element of type {kind}, expected a matrix ({MI_MATRIX})")
    flags = b.element((6,), "array flags")
    if len(flags) != 8:
        raise DataError(f"{what}: array flags of {len(flags)} bytes (expected 8)")
    word = struct.unpack(order + "I", flags[:4])[0]
    cls, is_complex = word & 0xFF, bool(word & 0x800)
    dims_raw = b.element((5,), "dimensions")
    if len(dims_raw) % 4 or not 2 <= len(dims_raw) // 4 <= _MAX_DIMS:
        raise DataError(f"{what}: {len(dims_raw)} bytes of dimensions (2..{_MAX_DIMS} 32-bit numbers expected)")
    shape = struct.unpack(order + f"{len(dims_raw) // 4}i", dims_raw)
    if any(d < 0 for d in shape):
        raise DataError(f"{what}: negative dimensions {list(shape)}")
    name_raw = b.element((1, 2), "name")
    try:
        name = name_raw.decode("ascii")
    except UnicodeDecodeError:
        raise DataError(f"{what}: a variable name that is not ASCII") from None
    where = f"{path}: variable {name!r}"
    if cls not in CLASSES:
        return Variable(name, shape, CLASS_NAMES.get(cls, f"class {cls}"), compressed, at, size, None, 0, 0)
    if is_complex:
        return Variable(name, shape, "complex", compressed, at, size, None, 0, 0)
    b.what = where
    kind, nbytes, inline = b.tag()
    if kind not in MI_TYPES:
        raise DataError(f"{where}: its values have data type {kind}, which is no numeric type")
    itemsize = np.dtype(MI_TYPES[kind]).itemsize
    count = 1
    for d in shape:
        count *= d
    if nbytes != count * itemsize:
        raise DataError(f"{where}: dimensions {list(shape)} need {count * itemsize:,} bytes of {MI_TYPES[kind]}, "
                        f"its values hold {nbytes:,}")
    if compressed and nbytes > MAX_EXPANSION * size:
        raise DataError(f"{where}: claims {nbytes:,} bytes of values from {size:,} compressed bytes, more than zlib "
                        "can expand to")
    offset = b.at - (4 if inline is not None else 0)
    return Variable(name, shape, CLASSES[cls], compressed, at, size, MI_TYPES[kind], offset, nbytes)


def _open(path: Path):
    check_input_file(path, ".mat file")
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _walk(f, path: Path) -> tuple[str, list[Variable]]:
    """The byte order and every variable's header, reading each element's tag and at most a few KiB of it."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(HEADER)
    if len(head) < HEADER or not head.startswith(b"MATLAB 5.0 MAT-file"):
        raise DataError(f"{path}: not a readable MATLAB (v5) file (its first bytes are not 'MATLAB 5.0 MAT-file')")
    order = {b"IM": "<", b"MI": ">"}.get(head[126:128])
    if order is None:
        raise DataError(f"{path}: not a readable MATLAB (v5) file (byte-order mark {head[126:128]!r})")
    found, at = [], HEADER
    while at + 8 <= size:
        f.seek(at)
        kind, n = struct.unpack(order + "II", f.read(8))
        what = f"{path}: element at byte {at:,}"
        if kind not in (MI_MATRIX, MI_COMPRESSED):
            raise DataError(f"{what}: type {kind}, expected a matrix ({MI_MATRIX}) or a compressed one ({MI_COMPRESSED})")
        if at + 8 + n > size:
            raise DataError(f"{what}: claims {n:,} bytes, the file has {size - at - 8:,} left")
        if kind == MI_MATRIX:
            f.seek(at)
            data = f.read(8 + min(n, _PEEK))
            var = _header_of(data, order, path, what, compressed=False, at=at + 8, size=n)
            if var.data_type is not None and var.data_offset + var.data_bytes > 8 + n:
                raise DataError(f"{what}: variable {var.name!r}'s values run past its element")
            found.append(var)
        else:
            head = _inflate_start(f, at + 8, n, what)
            found.append(_header_of(head, order, path, what, compressed=True, at=at + 8, size=n))
        at += 8 + n + (-n % 8 if kind == MI_MATRIX else 0)
    return order, found  # fewer than 8 bytes after the last element are padding


def _inflate_start(f, at: int, n: int, what: str) -> bytes:
    """The first few KiB of a compressed element, inflated."""
    f.seek(at)
    inflater = zlib.decompressobj()
    out = b""
    read = 0
    while len(out) < _PEEK and read < n and not inflater.eof:
        chunk = f.read(min(_CHUNK // 16, n - read))
        if not chunk:
            break
        read += len(chunk)
        try:
            out += inflater.decompress(chunk, _PEEK - len(out))
            while inflater.unconsumed_tail and len(out) < _PEEK:
                out += inflater.decompress(inflater.unconsumed_tail, _PEEK - len(out))
        except zlib.error as e:
            raise DataError(f"{what}: corrupt compressed data ({e})") from None
    return out


def variables(path: str | os.PathLike) -> list[Variable]:
    """Every variable's name, shape and type, from the headers alone (no array is read)."""
    path = Path(path)
    try:
        with _open(path) as f:
            return _walk(f, path)[1]
    except FileFormatError as e:  # check_input_file: a FIFO, a device, a missing file
        raise DataError(str(e)) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _values(f, var: Variable, order: str, path: Path) -> np.ndarray:
    """The stored values of a numeric variable, exactly ``data_bytes`` of them, inflated if compressed."""
    out = bytearray(var.data_bytes)
    view = memoryview(out)
    what = f"{path}: variable {var.name!r}"
    if not var.compressed:
        f.seek(var.element_at - 8 + var.data_offset)
        if f.readinto(view) != var.data_bytes:
            raise DataError(f"{what}: its values run past the end of the file")
    else:
        inflater = zlib.decompressobj()
        skip, filled, read = var.data_offset, 0, 0
        f.seek(var.element_at)
        try:
            while filled < var.data_bytes and read < var.element_bytes:
                chunk = f.read(min(_CHUNK, var.element_bytes - read))
                if not chunk:
                    break
                read += len(chunk)
                while chunk and filled < var.data_bytes:
                    piece = inflater.decompress(chunk, _CHUNK)
                    chunk = inflater.unconsumed_tail
                    if skip:
                        cut = min(skip, len(piece))
                        piece, skip = piece[cut:], skip - cut
                    piece = piece[:var.data_bytes - filled]
                    view[filled:filled + len(piece)] = piece
                    filled += len(piece)
                    if inflater.eof:
                        break
                if inflater.eof:
                    break
        except zlib.error as e:
            raise DataError(f"{what}: corrupt compressed data ({e})") from None
        if filled != var.data_bytes:
            raise DataError(f"{what}: its compressed data holds {filled:,} of the {var.data_bytes:,} bytes its "
                            "dimensions need")
    values = np.frombuffer(out, dtype=np.dtype(var.data_type).newbyteorder(order))
    return values.astype(np.dtype(var.dtype), copy=values.dtype != np.dtype(var.dtype)).reshape(var.shape, order="F")


def read(path: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """The numeric arrays ``names`` (each must be there), column-major as MATLAB stores them."""
    path = Path(path)
    try:
        with _open(path) as f:
            order, found = _walk(f, path)
            by_name = {v.name: v for v in found}
            out = {}
            for name in names:
                var = by_name.get(name)
                if var is None:
                    raise DataError(f"{path}: no variable {name!r} (it holds {', '.join(sorted(by_name)) or 'none'})")
                if var.data_type is None:
                    raise DataError(f"{path}: variable {name!r} is a {var.dtype} array, not a numeric one")
                out[name] = _values(f, var, order, path)
            return out
    except FileFormatError as e:  # check_input_file: a FIFO, a device, a missing file
        raise DataError(str(e)) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


__all__ = ["Variable", "read", "variables"]
