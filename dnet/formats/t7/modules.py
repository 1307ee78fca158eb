"""Reading the modules of a Lua DenseNet (``models/densenet.lua``): each nn module of the tree as a checked value.

Every accessor checks what it reads (types, shapes, kernel sizes) and names the module's path in the tree
(``model.modules[3].modules[1]``) when something is not what a DenseNet holds. ``dnet.formats.t7.densenet``
walks the whole network with these.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.array_utils import byte_bounds

from dnet.core.errors import FileFormatError
from dnet.formats.t7.reader import Storage, Table, TorchObject

DNET_EPS = 1e-5  # torch.nn.BatchNorm2d's eps, which every dnet BN uses
PREFIXES = ("cudnn.", "nn.")
# The classes a Lua DenseNet is made of (without prefix), and what each one is called in messages.
KINDS = {
    "SpatialConvolution": "conv", "SpatialConvolutionMM": "conv", "SpatialBatchNormalization": "bn",
    "ReLU": "relu", "SpatialMaxPooling": "maxpool", "SpatialAveragePooling": "avgpool", "Dropout": "dropout",
    "Reshape": "flatten", "View": "flatten", "Linear": "linear", "JoinTable": "join", "Concat": "concat",
    "Identity": "identity", "Sequential": "sequential", "DenseConnectLayerCustom": "custom",
}


class DisjointViews:
    """The bytes of the file taken by tensors a caller copies out of it; a tensor overlapping one taken is refused.

    A Lua DenseNet's parameters never share bytes (``getParameters()`` flattens them into disjoint views of one
    storage), while buffers of memory-optimised models may. A caller that copies parameters takes each one here
    first, so overlapping views of one storage cannot turn a small file into a large model.
    """

    def __init__(self) -> None:
        self.spans: list[tuple[int, int, str]] = []
        self.taken: dict[str, int] = {}

    def take(self, a: np.ndarray, name: str) -> None:
        if a.size == 0 or self.taken.get(name) == id(a):
            return
        lo, hi = byte_bounds(a)
        i = bisect.bisect_left(self.spans, (lo,))
        for j in (i - 1, i):
            if 0 <= j < len(self.spans):
                other_lo, other_hi, other = self.spans[j]
                if other_lo < hi and lo < other_hi:
                    raise FileFormatError(f"{name} shares bytes of the file with {other}; tensors of a model never "
                                          "overlap, and overlapping ones would make a small file a large model")
        self.spans.insert(i, (lo, hi, name))
        self.taken[name] = id(a)


class Mod:
    """A module of the tree with its path (``model.modules[3].modules[1]``) and checked field access."""

    def __init__(self, obj: object, path: str, views: DisjointViews | None = None) -> None:
        self.obj, self.path = obj, path
        self.views = views  # the tensors copied so far: overlapping ones are refused (see DisjointViews)
        self.cls = obj.typename if isinstance(obj, TorchObject) else describe(obj)
        base = None
        for p in PREFIXES:
            if self.cls.startswith(p):
                base = self.cls[len(p):]
        self.kind = KINDS.get(base) if base else None
        self.fields = obj.fields if isinstance(obj, TorchObject) and isinstance(obj.fields, dict) else {}

    def error(self, what: str) -> FileFormatError:
        return FileFormatError(f"{self.path}: {self.cls}: {what}")

    def not_densenet(self) -> FileFormatError:
        return FileFormatError(f"{self.path}: {self.cls} is not part of a DenseNet")

    def has(self, name: str) -> bool:
        return self.fields.get(name) is not None

    def int(self, name: str, default: int | None = None) -> int:
        v = self.fields.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"field {name!r} is {describe(v)}, expected an integer")
        return v

    def number(self, name: str, default: float | None = None) -> float:
        v = self.fields.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(f"field {name!r} is {describe(v)}, expected a number")
        return float(v)

    def flag(self, name: str, default: bool) -> bool:
        v = self.fields.get(name, default)
        if not isinstance(v, bool):
            raise self.error(f"field {name!r} is {describe(v)}, expected a boolean")
        return v

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        v = self.fields.get(name)
        if not isinstance(v, np.ndarray):
            raise self.error(f"field {name!r} is {describe(v)}, expected a tensor")
        if v.dtype.kind != "f":
            raise self.error(f"tensor {name!r} holds {v.dtype} values, expected floating point")
        if shape is not None and v.shape != shape:
            raise self.error(f"tensor {name!r} has shape {shape_text(v.shape)}, expected {shape_text(shape)}")
        if self.views is not None:
            self.views.take(v, f"{self.path}.{name}")
        return np.array(v, dtype=np.float32)  # a copy: the model never aliases the file buffer

    def children(self) -> list[Mod]:
        mods = self.fields.get("modules")
        items = mods.as_list() if isinstance(mods, Table) else None
        if items is None:
            raise self.error("has no list of modules")
        return [Mod(m, f"{self.path}.modules[{i}]", self.views) for i, m in enumerate(items, 1)]


def describe(v: object) -> str:
    if v is None:
        return "missing"
    if isinstance(v, TorchObject):
        return v.typename
    if isinstance(v, np.ndarray):
        return f"a tensor of shape {shape_text(v.shape)}"
    if isinstance(v, Storage):
        return v.typename
    if isinstance(v, dict):
        return "a Lua table"
    return {"str": "a string", "bool": "a boolean", "int": "a number", "float": "a number"}.get(type(v).__name__, type(v).__name__)


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) if shape else "empty"


# -- modules ---------------------------------------------------------------------------------------------------


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kH, kW)
    bias: np.ndarray | None
    kernel: int
    stride: int
    pad: int
    path: str

    @property
    def c_in(self) -> int:
        return self.weight.shape[1]

    @property
    def c_out(self) -> int:
        return self.weight.shape[0]

    def scale(self, factor: float) -> None:
        self.weight *= np.float32(factor)
        if self.bias is not None:
            self.bias *= np.float32(factor)


@dataclass
class BN:
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray  # for dnet's eps of 1e-5
    running_std: bool
    path: str

    @property
    def features(self) -> int:
        return self.mean.shape[0]


def read_conv(m: Mod) -> Conv:
    w = m.fields.get("weight")
    if not isinstance(w, np.ndarray):
        raise m.error(f"field 'weight' is {describe(w)}, expected a tensor")
    kw, kh, dw, dh = m.int("kW"), m.int("kH"), m.int("dW", 1), m.int("dH", 1)
    pw, ph = m.int("padW", 0), m.int("padH", 0)
    if m.has("groups") and m.int("groups") != 1:
        raise m.error(f"grouped convolution (groups = {m.int('groups')}) is not part of a DenseNet")
    if (kw, dw, pw) != (kh, dh, ph):
        raise m.error(f"non-square convolution {kw}x{kh}, stride {dw},{dh}, pad {pw},{ph} is not part of a DenseNet")
    if w.ndim == 2:  # nn.SpatialConvolutionMM and old nn.SpatialConvolution keep (out, in·kH·kW)
        n_in = m.int("nInputPlane")
        if w.shape[1] != n_in * kh * kw:
            raise m.error(f"weight of shape {shape_text(w.shape)} does not match nInputPlane {n_in} and kernel {kw}x{kh}")
        weight = m.array("weight").reshape(w.shape[0], n_in, kh, kw)
    else:
        weight = m.array("weight")
        if weight.ndim != 4 or weight.shape[2:] != (kh, kw):
            raise m.error(f"weight of shape {shape_text(weight.shape)} does not match kernel {kw}x{kh}")
    bias = m.array("bias", (weight.shape[0],)) if m.has("bias") else None
    if 0 in weight.shape:
        raise m.error("empty weight")
    return Conv(weight, bias, kw, dw, pw, m.path)


def read_bn(m: Mod) -> BN:
    if m.has("running_mean"):
        mean = m.array("running_mean")
    else:
        raise m.error("has no running_mean")
    if mean.ndim != 1 or mean.shape[0] == 0:
        raise m.error(f"running_mean of shape {shape_text(mean.shape)}")
    n = mean.shape[0]
    eps = m.number("eps", DNET_EPS)
    if not math.isfinite(eps) or eps < 0:
        raise m.error(f"eps {eps} is not a non-negative number")
    if m.has("running_var"):
        var = m.array("running_var", (n,)).astype(np.float64) + (eps - DNET_EPS)
        running_std = False
    elif m.has("running_std"):  # nn before mid-2016: running_std holds 1/sqrt(var + eps)
        std = m.array("running_std", (n,)).astype(np.float64)
        with np.errstate(divide="ignore"):
            var = 1.0 / np.square(std) - DNET_EPS
        running_std = True
    else:
        raise m.error("has neither running_var nor running_std")
    worst = float(np.min(var)) if n else 0.0
    if not worst >= -1e-12:  # also catches NaN
        raise m.error(
            f"a running variance of {worst:.3g} (after folding eps {eps:g} into dnet's 1e-5) cannot be represented"
        )
    affine = m.has("weight") or m.has("bias")
    weight = m.array("weight", (n,)) if affine else np.ones(n, np.float32)
    bias = m.array("bias", (n,)) if affine else np.zeros(n, np.float32)
    return BN(weight, bias, mean, np.maximum(var, 0.0).astype(np.float32), running_std, m.path)


def read_dropout(m: Mod) -> tuple[float, bool]:
    """(p, v1): v1 dropout (``v2`` false) multiplies by 1 - p at inference."""
    p = m.number("p", 0.5)
    if not 0.0 <= p < 1.0:
        raise m.error(f"dropout probability {p} outside [0, 1)")
    if m.fields.get("stochastic_inference") is True:
        raise m.error("dropout that stays active at inference (stochastic_inference) cannot be reproduced")
    v2 = m.fields.get("v2", False)  # files older than nn's v2 dropout have no field and the v1 behaviour
    return p, v2 is not True


def check_pool(m: Mod, kernel: int, stride: int, pad: int, what: str) -> None:
    got = (m.int("kW"), m.int("kH"), m.int("dW", 1), m.int("dH", 1), m.int("padW", 0), m.int("padH", 0))
    if got != (kernel, kernel, stride, stride, pad, pad):
        raise m.error(
            f"{what} should be {kernel}x{kernel}, stride {stride}, pad {pad}; this one is "
            f"{got[0]}x{got[1]}, stride {got[2]},{got[3]}, pad {got[4]},{got[5]}"
        )
    if m.flag("ceil_mode", False):
        raise m.error(f"{what} with ceil_mode is not what dnet's DenseNet computes")


# -- dense layers ----------------------------------------------------------------------------------------------


@dataclass
class Layer:
    kind: str  # "standard" | "custom"
    norm1: BN
    conv1: Conv
    norm2: BN | None = None
    conv2: Conv | None = None
    dropout: list[float] = field(default_factory=list)
    path: str = ""

    @property
    def last(self) -> Conv:
        return self.conv2 if self.conv2 is not None else self.conv1


def read_layer(ops: list[Mod], kind: str, path: str) -> Layer:
    """BN, ReLU, Conv, [Dropout], [BN, ReLU, Conv, [Dropout]] -> a Layer."""
    expect = ["bn", "relu", "conv"]
    seen: list[object] = []
    dropout: list[float] = []
    for m in ops:
        if m.kind is None:
            raise m.not_densenet()
        want = expect[len(seen) % 3] if len(seen) < 6 else None
        if m.kind == "dropout" and seen and isinstance(seen[-1], Conv):
            p, v1 = read_dropout(m)
            dropout.append(p)
            if v1:
                seen[-1].scale(1.0 - p)
            continue
        if m.kind != want:
            wanted = {"bn": "a batch normalization", "relu": "a ReLU", "conv": "a convolution", None: "nothing"}[want]
            raise FileFormatError(f"{m.path}: {m.cls} where a dense layer has {wanted}")
        if m.kind == "bn":
            seen.append(read_bn(m))
        elif m.kind == "conv":
            seen.append(read_conv(m))
        else:
            seen.append(m)
    if len(seen) not in (3, 6):
        raise FileFormatError(f"{path}: a dense layer needs BN, ReLU, conv [, BN, ReLU, conv]; it has {len(seen)} of those")
    layer = Layer(kind, seen[0], seen[2], path=path, dropout=dropout)
    if len(seen) == 6:
        layer.norm2, layer.conv2 = seen[3], seen[5]
        need_conv(layer.conv1, 1, 1, 0, "the bottleneck convolution")
        need_conv(layer.conv2, 3, 1, 1, "the dense layer's 3x3 convolution")
    else:
        need_conv(layer.conv1, 3, 1, 1, "the dense layer's 3x3 convolution")
    return layer


def need_conv(c: Conv, kernel: int, stride: int, pad: int, what: str) -> None:
    if (c.kernel, c.stride, c.pad) != (kernel, stride, pad):
        raise FileFormatError(
            f"{c.path}: {what} should be {kernel}x{kernel}, stride {stride}, pad {pad}; "
            f"this one is {c.kernel}x{c.kernel}, stride {c.stride}, pad {c.pad}"
        )


def read_dense_layer(m: Mod) -> Layer | None:
    """The dense layer ``m`` is, or None when it is not one."""
    if m.kind == "custom":
        kids = m.children()
        if len(kids) != 2 or any(k.kind != "sequential" for k in kids):
            raise m.error("expected modules {net1, net2}, both nn.Sequential")
        return read_layer(kids[0].children() + kids[1].children(), "custom", m.path)
    concat = m
    if m.kind == "sequential":
        kids = m.children()
        if len(kids) != 1 or kids[0].kind != "concat":
            return None
        concat = kids[0]
    if concat.kind != "concat":
        return None
    if concat.int("dimension", 2) != 2:
        raise concat.error(f"concatenates along dimension {concat.int('dimension')}, a dense layer along 2 (channels)")
    branches = concat.children()
    if len(branches) != 2:
        raise concat.error(f"has {len(branches)} branches, a dense layer has 2 (nn.Identity and the new features)")
    if branches[1].kind == "identity" and branches[0].kind == "sequential":
        raise concat.error("puts the new features before the input; dnet's dense layer concatenates the input first")
    for b, want in zip(branches, ("identity", "sequential"), strict=True):
        if b.kind is None:
            raise b.not_densenet()
        if b.kind != want:
            raise FileFormatError(f"{b.path}: {b.cls} where a dense layer has nn.{want.capitalize()}")
    return read_layer(branches[1].children(), "standard", concat.path)


# -- the top-level sequence -----------------------------------------------------------------------------------


def flatten(m: Mod, out: list[Mod], seen: set[int]) -> None:
    """The top-level sequence of modules, with plain nn.Sequential containers opened (dense layers kept)."""
    if m.kind == "sequential" and is_dense_layer(m) is False:
        if id(m.obj) in seen:  # a container inside itself: a file can say so, a network cannot be so
            raise m.error("contains itself")
        seen.add(id(m.obj))
        for child in m.children():
            flatten(child, out, seen)
    else:
        out.append(m)


def is_dense_layer(m: Mod) -> bool:
    kids = m.fields.get("modules")
    items = kids.as_list() if isinstance(kids, Table) else None
    return bool(items) and len(items) == 1 and Mod(items[0], "").kind == "concat"


class Cursor:
    def __init__(self, items: list[Mod], root: str) -> None:
        self.items, self.i, self.root = items, 0, root

    def peek(self) -> Mod | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self, kind: str, what: str) -> Mod:
        m = self.peek()
        if m is None:
            raise FileFormatError(f"{self.root}: the network ends where a DenseNet has {what}")
        if m.kind is None:
            raise m.not_densenet()
        if m.kind != kind:
            raise FileFormatError(f"{m.path}: {m.cls} where a DenseNet has {what}")
        self.i += 1
        return m
