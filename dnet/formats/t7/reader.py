"""A safe reader for Torch7's binary serialization format (``torch.save`` / ``torch.load``).

The format (torch7 ``File.lua`` ``writeObject``, ``generic/Tensor.c`` and ``generic/Storage.c`` ``write``):
every object starts with an int type tag: 0 nil, 1 number (float64), 2 string (int length + bytes),
3 table, 4 torch object, 5 boolean (int), 6/7/8 functions. Tables, torch objects and functions then carry an
int index; an index seen before is a reference to the same object (shared storages, cycles). A table is an
int entry count and that many key/value objects. A torch object is an optional ``"V <n>"`` version string,
the class name, then the class's own ``write`` output: for tensors nDim, sizes, strides, the 1-based storage
offset and the storage object; for storages the element count and the raw elements; for any other class one
object, usually the table of its fields. Little-endian; ``long`` is 8 bytes (Linux, macOS) or 4 (Windows).

Safety: nothing is ever executed (function objects are refused with their byte offset: a DenseNet
checkpoint never holds one); every count read from the file is checked against the bytes that are left
before anything is allocated; every stride is checked against its storage; nesting is bounded; any truncation
or inconsistency raises one :class:`~dnet.core.errors.FileFormatError` naming the byte offset. Storages become numpy
arrays that view the file's bytes (a private copy-on-write mapping of the file, so they are writable, share memory
exactly as the file's tensors share storages, and only what is parsed is ever read: a corrupt 2 GB file fails at
its first bad byte without being read whole); tensors are strided views of them. Only regular files are read
(a FIFO would hang, a pipe reads as empty). A caller that copies tensors out of the file refuses overlapping ones
(``dnet.formats.t7.modules.DisjointViews``), so what it copies is bounded by what the file holds.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnet.core.errors import FileFormatError, UnsafeFileError
from dnet.core.outputs import check_input_file

TYPE_NIL, TYPE_NUMBER, TYPE_STRING, TYPE_TABLE, TYPE_TORCH, TYPE_BOOLEAN = 0, 1, 2, 3, 4, 5
FUNCTION_TAGS = {6: "a Lua function", 7: "a Lua function (legacy recursive)", 8: "a Lua function"}

MAX_DEPTH = 200  # objects nested deeper than this are refused (a DenseNet-264 file nests about 10 deep)
MAX_NAME = 4096  # class names and version strings longer than this are refused
MAX_DIMS = 32  # numpy's own limit is 64; Torch7 tensors in practice have at most 5

# element type of each Torch7 tensor/storage kind; "Long" depends on the file's long size.
_KINDS = {
    "Double": "<f8", "Float": "<f4", "Half": "<f2", "Byte": "u1", "Char": "i1",
    "Short": "<i2", "Int": "<i4", "Long": None,
}
# cutorch names: torch.CudaTensor is float; the others say their type after "Cuda".
_CUDA = {"Cuda": "Float", **{f"Cuda{k}": k for k in _KINDS}}


def _tensor_kind(class_name: str) -> tuple[str, str] | None:
    """("Tensor" | "Storage", element kind) for the numeric Torch classes, CUDA names as their CPU type."""
    if not class_name.startswith("torch."):
        return None
    name = class_name[6:]
    for what in ("Tensor", "Storage"):
        if name.endswith(what):
            kind = name[: -len(what)]
            kind = _CUDA.get(kind, kind)
            if kind in _KINDS:
                return what, kind
    return None


class Table(dict):
    """A Lua table: a dict hashed by identity, so a table can be a key (even of itself) as in Lua."""

    __hash__ = object.__hash__

    def as_list(self) -> list | None:
        """The values in order when the keys are exactly 1..n (a Lua array), else None."""
        n = len(self)
        if all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n for k in self):
            return [self[i] for i in range(1, n + 1)]
        return None


@dataclass(eq=False)
class TorchObject:
    """An instance of a Torch class dnet has no special reader for: its class name and its fields."""

    typename: str
    fields: object = None  # normally a Table of the instance's fields
    version: int = 0

    def __getitem__(self, key):
        if isinstance(self.fields, dict):
            return self.fields[key]
        raise KeyError(key)

    def get(self, key, default=None):
        return self.fields.get(key, default) if isinstance(self.fields, dict) else default

    def __repr__(self) -> str:
        keys = sorted(map(str, self.fields)) if isinstance(self.fields, dict) else type(self.fields).__name__
        return f"TorchObject({self.typename!r}, fields={keys})"


@dataclass(eq=False)
class Storage:
    """A Torch storage: its class name and elements (a 1-D numpy array viewing the file buffer)."""

    typename: str
    data: np.ndarray


@dataclass(eq=False)
class _Pending:
    """Placeholder for an object whose reading has begun; a reference to it from inside itself is refused."""

    typename: str = field(default="")


class _Reader:
    def __init__(self, buf: bytearray, long_size: int, max_depth: int) -> None:
        self.buf = buf
        self.view = memoryview(buf)
        self.n = len(buf)
        self.pos = 0
        self.long_fmt = "<q" if long_size == 8 else "<i"
        self.long_size = long_size
        self.long_dtype = np.dtype("<i8" if long_size == 8 else "<i4")
        self.max_depth = max_depth
        self.memo: dict[int, object] = {}
        self.depth = 0

    # -- primitives -------------------------------------------------------------------------------------------
    def fail(self, what: str, at: int | None = None) -> FileFormatError:
        return FileFormatError(f"corrupt or truncated Torch7 file at byte {self.pos if at is None else at}: {what}")

    def need(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or nbytes > self.n - self.pos:
            raise self.fail(f"{what} needs {nbytes} bytes, {self.n - self.pos} left")

    def int(self) -> int:
        self.need(4, "an int")
        (v,) = struct.unpack_from("<i", self.buf, self.pos)
        self.pos += 4
        return v

    def long(self) -> int:
        self.need(self.long_size, "a long")
        (v,) = struct.unpack_from(self.long_fmt, self.buf, self.pos)
        self.pos += self.long_size
        return v

    def longs(self, count: int) -> list[int]:
        self.need(count * self.long_size, f"{count} longs")
        out = list(struct.unpack_from(f"<{count}{self.long_fmt[1]}", self.buf, self.pos))
        self.pos += count * self.long_size
        return out

    def double(self) -> float:
        self.need(8, "a number")
        (v,) = struct.unpack_from("<d", self.buf, self.pos)
        self.pos += 8
        return v

    def raw_string(self, limit: int | None = None) -> str:
        at = self.pos
        size = self.int()
        if size < 0:
            raise self.fail(f"negative string length {size}", at)
        if limit is not None and size > limit:
            raise self.fail(f"a name of {size} bytes (at most {limit} accepted)", at)
        if size > self.n - self.pos:
            raise self.fail(f"a string of {size} bytes does not fit in the {self.n - self.pos} bytes left", at)
        s = bytes(self.view[self.pos : self.pos + size]).decode("utf-8", errors="surrogateescape")
        self.pos += size
        return s

    # -- objects ----------------------------------------------------------------------------------------------
    def object(self):
        at = self.pos
        tag = self.int()
        if tag == TYPE_NIL:
            return None
        if tag == TYPE_NUMBER:
            v = self.double()
            # Lua has only doubles; integral values (sizes, counts, indices) come back as ints.
            return int(v) if v.is_integer() and abs(v) < 2**53 else v
        if tag == TYPE_STRING:
            return self.raw_string()
        if tag == TYPE_BOOLEAN:
            return self.int() == 1
        if tag in FUNCTION_TAGS:
            raise UnsafeFileError(
                f"refused: the Torch7 file holds {FUNCTION_TAGS[tag]} (type tag {tag}) at byte {at}; "
                "dnet never runs code from a file, and a DenseNet checkpoint holds none"
            )
        if tag not in (TYPE_TABLE, TYPE_TORCH):
            raise self.fail(f"unknown type tag {tag}", at)
        index = self.int()
        if index in self.memo:
            obj = self.memo[index]
            if isinstance(obj, _Pending):
                raise self.fail(f"object {index} refers to itself before it is complete", at)
            return obj
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.fail(f"objects nested deeper than {self.max_depth} levels", at)
        try:
            return self.table(index) if tag == TYPE_TABLE else self.torch(index, at)
        finally:
            self.depth -= 1

    def table(self, index: int) -> Table:
        at = self.pos
        return self.entries(index, self.int(), "a table", at)

    def entries(self, index: int, size: int, what: str, at: int) -> Table:
        """``size`` key/value pairs into a new table registered as ``index`` (a table may hold itself)."""
        # every entry is at least a key and a value, each at least one 4-byte tag
        if size < 0 or size * 8 > self.n - self.pos:
            raise self.fail(f"{what} of {size} entries does not fit in the {self.n - self.pos} bytes left", at)
        t = Table()
        self.memo[index] = t
        for _ in range(size):
            key_at = self.pos
            k = self.object()
            v = self.object()
            try:
                t[k] = v
            except TypeError:
                raise self.fail(f"a table key of type {type(k).__name__} cannot be used", key_at) from None
        return t

    def torch(self, index: int, at: int):
        version = 0
        name = self.raw_string(MAX_NAME)
        if name.startswith("V "):
            try:
                version = int(name[2:])
            except ValueError:
                raise self.fail(f"bad class version string {name[:40]!r}", at) from None
            name = self.raw_string(MAX_NAME)
        if not name:
            raise self.fail("empty class name", at)
        kind = _tensor_kind(name)
        if kind is not None:
            self.memo[index] = _Pending(name)
            obj = self.tensor(name, kind[1]) if kind[0] == "Tensor" else self.storage(name, kind[1])
            self.memo[index] = obj
            return obj
        if name in ("tds.Hash", "tds.Vec"):
            return self.tds(index, name)
        obj = TorchObject(name, None, version)
        self.memo[index] = obj  # before the fields: an object may refer to itself
        obj.fields = self.object()
        return obj

    def dtype(self, kind: str) -> np.dtype:
        return self.long_dtype if kind == "Long" else np.dtype(_KINDS[kind])

    def storage(self, name: str, kind: str) -> Storage:
        at = self.pos
        size = self.long()
        dt = self.dtype(kind)
        if size < 0 or size * dt.itemsize > self.n - self.pos:
            raise self.fail(f"{name} of {size} elements does not fit in the {self.n - self.pos} bytes left", at)
        data = np.frombuffer(self.buf, dtype=dt, count=size, offset=self.pos)
        self.pos += size * dt.itemsize
        return Storage(name, data)

    def tensor(self, name: str, kind: str) -> np.ndarray:
        at = self.pos
        ndim = self.int()
        if not 0 <= ndim <= MAX_DIMS:
            raise self.fail(f"{name} with {ndim} dimensions", at)
        sizes = self.longs(ndim)
        strides = self.longs(ndim)
        offset = self.long() - 1  # Lua's 1-based offset
        st_at = self.pos
        storage = self.object()
        dt = self.dtype(kind)
        if storage is not None and not isinstance(storage, Storage):
            raise self.fail(f"{name} whose storage is a {type(storage).__name__}", st_at)
        if storage is not None and storage.data.dtype != dt:
            raise self.fail(f"{name} over a {storage.typename}", st_at)
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides):
            raise self.fail(f"{name} with negative sizes or strides {sizes} {strides}", at)
        numel = 1
        for s in sizes:
            numel *= s
        if ndim == 0 or numel == 0:
            span = 1
            for s in sizes:
                span *= max(s, 1)
            if span > self.n:  # numpy refuses such shapes even when empty; no real file has them
                raise self.fail(f"empty {name} of size {sizes}", at)
            return np.empty(sizes if ndim else (0,), dtype=dt)
        if storage is None:
            raise self.fail(f"{name} of {numel} elements has no storage", at)
        n = storage.data.shape[0]
        # The stride of a size-1 dimension addresses nothing (Torch7 ignores it); a huge one would only overflow
        # numpy's byte arithmetic. Every other stride is bounded by the span check below.
        strides = [0 if s == 1 else st for s, st in zip(sizes, strides, strict=True)]
        last = offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
        # A view may not reach outside its storage, nor cover more elements than the storage holds
        # (stride-0 expansion): so no copy of anything read can be larger than the file.
        if offset < 0 or last >= n or numel > n:
            raise self.fail(
                f"{name} of size {sizes}, stride {strides}, offset {offset + 1} does not fit its storage of {n} elements",
                at,
            )
        return np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=sizes, strides=[st * dt.itemsize for st in strides], writeable=True
        )

    def tds(self, index: int, name: str):
        """tds.Hash (a long count, then key/value objects) and tds.Vec (a long count, then values)."""
        at = self.pos
        size = self.long()
        if name == "tds.Hash":
            return self.entries(index, size, name, at)
        if size < 0 or size * 4 > self.n - self.pos:
            raise self.fail(f"{name} of {size} entries does not fit in the {self.n - self.pos} bytes left", at)
        out: list = []
        self.memo[index] = out
        for _ in range(size):
            out.append(self.object())
        return out


def loads(data: bytes | bytearray, *, long_size: int | None = None, max_depth: int = MAX_DEPTH):
    """The object a Torch7 binary serialization holds.

    ``long_size`` is 8 (Linux, macOS) or 4 (Windows); None tries 8 and then 4, and reports the error of the
    8-byte reading if neither reads the whole file.
    """
    buf = data if isinstance(data, bytearray | mmap.mmap) else bytearray(data)
    if long_size not in (None, 4, 8):
        raise ValueError("long_size must be 4, 8 or None")
    if len(buf) >= 4 and not 0 <= struct.unpack_from("<i", buf, 0)[0] <= 8:
        head = bytes(buf[:8])
        if head[:1].isdigit() and b"\n" in head:
            raise FileFormatError(
                "an ASCII-format Torch7 file; dnet reads the binary format (torch.save(file, obj) without 'ascii')"
            )
        raise FileFormatError(f"not a Torch7 binary file: it does not start with a type tag (first bytes {head.hex(' ')})")
    sizes = (long_size,) if long_size else (8, 4)
    first_error: FileFormatError | None = None
    for size in sizes:
        r = _Reader(buf, size, max_depth)
        try:
            if r.n == 0:
                raise r.fail("the file is empty")
            obj = r.object()
            if r.pos != r.n:
                raise r.fail(f"{r.n - r.pos} bytes follow the end of the object")
            return obj
        except UnsafeFileError:
            raise
        except FileFormatError as e:
            first_error = first_error or e
        except RecursionError:
            first_error = first_error or r.fail("objects nested too deeply for this Python")
    assert first_error is not None
    raise first_error


def _map(path: Path):
    """The file's bytes as a private, writable, lazily read mapping (a bytearray for an empty file)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # O_NONBLOCK: a FIFO swapped in cannot hang
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced by something else since it was checked
            raise FileFormatError(f"{path}: is not a regular file; dnet reads a Torch7 file from a file")
        if st.st_size == 0:
            return bytearray()
        return mmap.mmap(fd, st.st_size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)


def load(path: str | os.PathLike, *, long_size: int | None = None, max_depth: int = MAX_DEPTH):
    """Read a ``.t7`` file; errors name the file."""
    path = check_input_file(path, "Torch7 file")
    try:
        buf = _map(path)
    except (OSError, ValueError) as e:
        raise FileFormatError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        return loads(buf, long_size=long_size, max_depth=max_depth)
    except FileFormatError as e:
        raise type(e)(f"{path.name}: {e}") from None
