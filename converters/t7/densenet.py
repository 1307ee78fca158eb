"""The module tree of liuzhuang13/DenseNet's Lua models, read as a dnet configuration and state dict.

What the Lua code builds (``models/densenet.lua``, ``models/DenseConnectLayer.lua``, and the older root
``densenet.lua`` / ``densenet-imagenet.lua``), and what this walker accepts, with ``cudnn.`` or ``nn.`` class
prefixes:

- stem: ``SpatialConvolution`` 3x3/1 pad 1 (CIFAR), or 7x7/2 pad 3, BN, ReLU, ``SpatialMaxPooling`` 3/2 pad 1
  (ImageNet);
- dense layers, one after another in the top ``nn.Sequential``: the standard kind ``[nn.Sequential{]
  nn.Concat(2){nn.Identity, nn.Sequential{BN, ReLU, [Conv1x1, (Dropout), BN, ReLU,] Conv3x3, (Dropout)}}[}]``,
  or ``nn.DenseConnectLayerCustom`` whose ``modules`` are ``{BN, ReLU}`` and ``{[Conv1x1, BN, ReLU,] Conv3x3}``
  (its ``net1``/``net2`` fields are copies made by checkpoint.save's deepCopy and are not read), followed by
  ``nn.JoinTable(2)`` at the end of each block;
- transitions BN, ReLU, Conv1x1, (Dropout), ``SpatialAveragePooling`` 2/2; the end BN, ReLU,
  ``SpatialAveragePooling(k)``, ``nn.Reshape`` or ``nn.View``, ``nn.Linear``.

Everything is inferred from the tensors and module fields: stem, layers per block, growth rate, bottleneck
width, compression, initial channels, dropout, classes, convolution biases. Only weights, biases, running
statistics, ``eps``, kernel/stride/padding fields, ``ceil_mode``, the dropout fields and the module order are
used. BN files from older nn versions (``running_std`` = 1/sqrt(var + eps)) and BN eps other than 1e-5 are
folded into ``running_var`` for dnet's eps of 1e-5, which is exact. Old ``nn.Dropout`` (``v2`` false) scales
by 1 - p at inference; that factor is folded into the convolution before it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dnet.converters.t7 import reader
from dnet.converters.t7.reader import Storage, Table, TorchObject
from dnet import __version__
from dnet.artifact import ArtifactMeta
from dnet.data.specs import get_spec
from dnet.errors import ConfigError, FileFormatError
from dnet.files import sha256_file
from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig
from dnet.statedict import infer_compression

DNET_EPS = 1e-5  # torch.nn.BatchNorm2d's eps, which every dnet BN uses
PREFIXES = ("cudnn.", "nn.")
# The classes a Lua DenseNet is made of (without prefix), and what each one is called in messages.
KINDS = {
    "SpatialConvolution": "conv", "SpatialConvolutionMM": "conv", "SpatialBatchNormalization": "bn",
    "ReLU": "relu", "SpatialMaxPooling": "maxpool", "SpatialAveragePooling": "avgpool", "Dropout": "dropout",
    "Reshape": "flatten", "View": "flatten", "Linear": "linear", "JoinTable": "join", "Concat": "concat",
    "Identity": "identity", "Sequential": "sequential", "DenseConnectLayerCustom": "custom",
}


class _Mod:
    """A module of the tree with its path (``model.modules[3].modules[1]``) and checked field access."""

    def __init__(self, obj: object, path: str) -> None:
        self.obj, self.path = obj, path
        self.cls = obj.typename if isinstance(obj, TorchObject) else _what(obj)
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
            raise self.error(f"field {name!r} is {_what(v)}, expected an integer")
        return v

    def number(self, name: str, default: float | None = None) -> float:
        v = self.fields.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(f"field {name!r} is {_what(v)}, expected a number")
        return float(v)

    def flag(self, name: str, default: bool) -> bool:
        v = self.fields.get(name, default)
        if not isinstance(v, bool):
            raise self.error(f"field {name!r} is {_what(v)}, expected a boolean")
        return v

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        v = self.fields.get(name)
        if not isinstance(v, np.ndarray):
            raise self.error(f"field {name!r} is {_what(v)}, expected a tensor")
        if v.dtype.kind != "f":
            raise self.error(f"tensor {name!r} holds {v.dtype} values, expected floating point")
        if shape is not None and v.shape != shape:
            raise self.error(f"tensor {name!r} has shape {_shape(v.shape)}, expected {_shape(shape)}")
        return np.array(v, dtype=np.float32)  # a copy: the model never aliases the file buffer

    def children(self) -> list[_Mod]:
        mods = self.fields.get("modules")
        items = mods.as_list() if isinstance(mods, Table) else None
        if items is None:
            raise self.error("has no list of modules")
        return [_Mod(m, f"{self.path}.modules[{i}]") for i, m in enumerate(items, 1)]


def _what(v: object) -> str:
    if v is None:
        return "missing"
    if isinstance(v, TorchObject):
        return v.typename
    if isinstance(v, np.ndarray):
        return f"a tensor of shape {_shape(v.shape)}"
    if isinstance(v, Storage):
        return v.typename
    if isinstance(v, dict):
        return "a Lua table"
    return {"str": "a string", "bool": "a boolean", "int": "a number", "float": "a number"}.get(type(v).__name__, type(v).__name__)


def _shape(shape: tuple[int, ...]) -> str:
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


def _conv(m: _Mod) -> Conv:
    w = m.fields.get("weight")
    if not isinstance(w, np.ndarray):
        raise m.error(f"field 'weight' is {_what(w)}, expected a tensor")
    kw, kh, dw, dh = m.int("kW"), m.int("kH"), m.int("dW", 1), m.int("dH", 1)
    pw, ph = m.int("padW", 0), m.int("padH", 0)
    if m.has("groups") and m.int("groups") != 1:
        raise m.error(f"grouped convolution (groups = {m.int('groups')}) is not part of a DenseNet")
    if (kw, dw, pw) != (kh, dh, ph):
        raise m.error(f"non-square convolution {kw}x{kh}, stride {dw},{dh}, pad {pw},{ph} is not part of a DenseNet")
    if w.ndim == 2:  # nn.SpatialConvolutionMM and old nn.SpatialConvolution keep (out, in·kH·kW)
        n_in = m.int("nInputPlane")
        if w.shape[1] != n_in * kh * kw:
            raise m.error(f"weight of shape {_shape(w.shape)} does not match nInputPlane {n_in} and kernel {kw}x{kh}")
        weight = m.array("weight").reshape(w.shape[0], n_in, kh, kw)
    else:
        weight = m.array("weight")
        if weight.ndim != 4 or weight.shape[2:] != (kh, kw):
            raise m.error(f"weight of shape {_shape(weight.shape)} does not match kernel {kw}x{kh}")
    bias = m.array("bias", (weight.shape[0],)) if m.has("bias") else None
    if 0 in weight.shape:
        raise m.error("empty weight")
    return Conv(weight, bias, kw, dw, pw, m.path)


def _bn(m: _Mod) -> BN:
    if m.has("running_mean"):
        mean = m.array("running_mean")
    else:
        raise m.error("has no running_mean")
    if mean.ndim != 1 or mean.shape[0] == 0:
        raise m.error(f"running_mean of shape {_shape(mean.shape)}")
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


def _dropout(m: _Mod) -> tuple[float, bool]:
    """(p, v1): v1 dropout (``v2`` false) multiplies by 1 - p at inference."""
    p = m.number("p", 0.5)
    if not 0.0 <= p < 1.0:
        raise m.error(f"dropout probability {p} outside [0, 1)")
    if m.fields.get("stochastic_inference") is True:
        raise m.error("dropout that stays active at inference (stochastic_inference) cannot be reproduced")
    v2 = m.fields.get("v2", False)  # files older than nn's v2 dropout have no field and the v1 behaviour
    return p, v2 is not True


def _check_pool(m: _Mod, kernel: int, stride: int, pad: int, what: str) -> None:
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


def _layer_ops(ops: list[_Mod], kind: str, path: str) -> Layer:
    """BN, ReLU, Conv, [Dropout], [BN, ReLU, Conv, [Dropout]] -> a Layer."""
    expect = ["bn", "relu", "conv"]
    seen: list[object] = []
    dropout: list[float] = []
    for m in ops:
        if m.kind is None:
            raise m.not_densenet()
        want = expect[len(seen) % 3] if len(seen) < 6 else None
        if m.kind == "dropout" and seen and isinstance(seen[-1], Conv):
            p, v1 = _dropout(m)
            dropout.append(p)
            if v1:
                seen[-1].scale(1.0 - p)
            continue
        if m.kind != want:
            wanted = {"bn": "a batch normalization", "relu": "a ReLU", "conv": "a convolution", None: "nothing"}[want]
            raise FileFormatError(f"{m.path}: {m.cls} where a dense layer has {wanted}")
        if m.kind == "bn":
            seen.append(_bn(m))
        elif m.kind == "conv":
            seen.append(_conv(m))
        else:
            seen.append(m)
    if len(seen) not in (3, 6):
        raise FileFormatError(f"{path}: a dense layer needs BN, ReLU, conv [, BN, ReLU, conv]; it has {len(seen)} of those")
    layer = Layer(kind, seen[0], seen[2], path=path, dropout=dropout)
    if len(seen) == 6:
        layer.norm2, layer.conv2 = seen[3], seen[5]
        _need_conv(layer.conv1, 1, 1, 0, "the bottleneck convolution")
        _need_conv(layer.conv2, 3, 1, 1, "the dense layer's 3x3 convolution")
    else:
        _need_conv(layer.conv1, 3, 1, 1, "the dense layer's 3x3 convolution")
    return layer


def _need_conv(c: Conv, kernel: int, stride: int, pad: int, what: str) -> None:
    if (c.kernel, c.stride, c.pad) != (kernel, stride, pad):
        raise FileFormatError(
            f"{c.path}: {what} should be {kernel}x{kernel}, stride {stride}, pad {pad}; "
            f"this one is {c.kernel}x{c.kernel}, stride {c.stride}, pad {c.pad}"
        )


def _dense_layer(m: _Mod) -> Layer | None:
    """The dense layer ``m`` is, or None when it is not one."""
    if m.kind == "custom":
        kids = m.children()
        if len(kids) != 2 or any(k.kind != "sequential" for k in kids):
            raise m.error("expected modules {net1, net2}, both nn.Sequential")
        return _layer_ops(kids[0].children() + kids[1].children(), "custom", m.path)
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
    return _layer_ops(branches[1].children(), "standard", concat.path)


# -- the whole network -----------------------------------------------------------------------------------------


@dataclass
class Parsed:
    """What the walk found: the dnet configuration, its state dict, and facts for the metadata."""

    config: DenseNetConfig
    state_dict: dict[str, torch.Tensor]
    layer_kind: str  # "standard" | "custom"
    dropout: float
    input_size: int
    running_std: bool
    class_prefix: str


def _flatten(m: _Mod, out: list[_Mod], seen: set[int]) -> None:
    """The top-level sequence of modules, with plain nn.Sequential containers opened (dense layers kept)."""
    if m.kind == "sequential" and _dense_layer_shape(m) is False:
        if id(m.obj) in seen:  # a container inside itself: a file can say so, a network cannot be so
            raise m.error("contains itself")
        seen.add(id(m.obj))
        for child in m.children():
            _flatten(child, out, seen)
    else:
        out.append(m)


def _dense_layer_shape(m: _Mod) -> bool:
    kids = m.fields.get("modules")
    items = kids.as_list() if isinstance(kids, Table) else None
    return bool(items) and len(items) == 1 and _Mod(items[0], "").kind == "concat"


class _Cursor:
    def __init__(self, items: list[_Mod], root: str) -> None:
        self.items, self.i, self.root = items, 0, root

    def peek(self) -> _Mod | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self, kind: str, what: str) -> _Mod:
        m = self.peek()
        if m is None:
            raise FileFormatError(f"{self.root}: the network ends where a DenseNet has {what}")
        if m.kind is None:
            raise m.not_densenet()
        if m.kind != kind:
            raise FileFormatError(f"{m.path}: {m.cls} where a DenseNet has {what}")
        self.i += 1
        return m


def parse_densenet(obj: object, root: str = "model") -> Parsed:
    """Walk a Lua DenseNet module tree (as :func:`converters.t7.reader.loads` returns it)."""
    top = _Mod(obj, root)
    if not isinstance(obj, TorchObject):
        hint = " (fb.resnet.torch's latest.t7 and optimState files are not models: load a model_N.t7)" if isinstance(obj, dict) else ""
        raise FileFormatError(f"{root}: the file holds {_what(obj)}, not an nn module{hint}")
    if top.kind is None:
        raise top.not_densenet()
    items: list[_Mod] = []
    _flatten(top, items, set())
    cur = _Cursor(items, root)
    dropouts: list[float] = []
    kinds: set[str] = set()

    # stem
    conv0 = _conv(cur.take("conv", "the first convolution"))
    if conv0.c_in != 3:
        raise FileFormatError(f"{conv0.path}: the first convolution takes {conv0.c_in} channels, a DenseNet 3 (RGB)")
    sd: dict[str, np.ndarray] = {}
    convs: dict[str, Conv] = {"features.conv0": conv0}
    bns: dict[str, BN] = {}
    if (conv0.kernel, conv0.stride, conv0.pad) == (7, 2, 3):
        stem = "imagenet"
        bns["features.norm0"] = _bn(cur.take("bn", "the stem's batch normalization"))
        cur.take("relu", "the stem's ReLU")
        _check_pool(cur.take("maxpool", "the stem's 3x3/2 max pooling"), 3, 2, 1, "the stem's max pooling")
    elif (conv0.kernel, conv0.stride, conv0.pad) == (3, 1, 1):
        stem = "cifar"
    else:
        raise FileFormatError(
            f"{conv0.path}: a first convolution of {conv0.kernel}x{conv0.kernel}, stride {conv0.stride}, pad {conv0.pad} "
            "is neither the CIFAR stem (3x3, stride 1, pad 1) nor the ImageNet stem (7x7, stride 2, pad 3)"
        )
    c = conv0.c_out
    growth = bottleneck = width = None
    blocks: list[int] = []
    transitions: list[tuple[int, int]] = []
    final_pool = None
    linear = None
    while True:
        layers: list[Layer] = []
        while (m := cur.peek()) is not None and m.kind in ("sequential", "concat", "custom"):
            layer = _dense_layer(m)
            if layer is None:
                raise FileFormatError(f"{m.path}: {m.cls} that is not a dense layer where a DenseNet has one")
            cur.i += 1
            b, n = len(blocks) + 1, len(layers) + 1
            if layer.norm1.features != c or layer.conv1.c_in != c:
                raise FileFormatError(
                    f"{layer.path}: dense layer takes {layer.norm1.features} channels where the network has {c}"
                )
            k = layer.last.c_out
            growth = growth if growth is not None else k
            has_bottleneck = layer.conv2 is not None
            bottleneck = has_bottleneck if bottleneck is None else bottleneck
            if k != growth or has_bottleneck != bottleneck:
                raise FileFormatError(
                    f"{layer.path}: this dense layer (growth {k}, bottleneck {has_bottleneck}) differs from the first "
                    f"(growth {growth}, bottleneck {bottleneck}); a DenseNet has one growth rate"
                )
            if layer.conv2 is not None:
                w = layer.conv1.c_out
                width = width if width is not None else w
                if w != width or layer.norm2.features != w or layer.conv2.c_in != w:
                    raise FileFormatError(f"{layer.path}: bottleneck width {w} differs from the first layer's {width}")
            kinds.add(layer.kind)
            dropouts += layer.dropout
            pre = f"features.denseblock{b}.denselayer{n}"
            bns[f"{pre}.norm1"] = layer.norm1
            convs[f"{pre}.conv1"] = layer.conv1
            if layer.conv2 is not None:
                bns[f"{pre}.norm2"] = layer.norm2
                convs[f"{pre}.conv2"] = layer.conv2
            layers.append(layer)
            c += k
        where = "the stem" if not blocks else f"transition {len(blocks)}"
        if not layers:
            m = cur.peek()
            if m is None:
                raise FileFormatError(f"{root}: the network ends after {where}, where a DenseNet has a dense block")
            if m.kind is None:
                raise m.not_densenet()
            raise FileFormatError(f"{m.path}: {m.cls} where a DenseNet has a dense layer (after {where})")
        blocks.append(len(layers))
        custom = layers[-1].kind == "custom"
        if custom:
            j = cur.take("join", "nn.JoinTable(2) after memory-efficient dense layers")
            dim, ndims = j.int("dimension", 2), j.fields.get("nInputDims")
            if not (dim == 2 and ndims in (None, 4) or dim == 1 and ndims == 3):
                raise j.error(f"joins along dimension {dim} (nInputDims {ndims}), a dense block along 2 (channels)")
        nxt = cur.peek()
        if nxt is not None and nxt.kind == "join" and not custom:
            raise FileFormatError(f"{nxt.path}: {nxt.cls} after standard dense layers, which output one tensor")
        b = len(blocks)
        bn = _bn(cur.take("bn", "a dense layer, a transition or the final batch normalization"))
        if bn.features != c:
            raise FileFormatError(f"{bn.path}: batch normalization of {bn.features} channels after a block of {c}")
        cur.take("relu", "a ReLU after the batch normalization")
        nxt = cur.peek()
        if nxt is not None and nxt.kind == "conv":  # a transition
            tc = _conv(cur.take("conv", "the transition's convolution"))
            _need_conv(tc, 1, 1, 0, "the transition's convolution")
            if tc.c_in != c:
                raise FileFormatError(f"{tc.path}: transition convolution takes {tc.c_in} channels after a block of {c}")
            if (m := cur.peek()) is not None and m.kind == "dropout":
                cur.i += 1
                p, v1 = _dropout(m)
                dropouts.append(p)
                if v1:
                    tc.scale(1.0 - p)
            pool = cur.take("avgpool", "the transition's 2x2 average pooling")
            _check_pool(pool, 2, 2, 0, "the transition's average pooling")
            bns[f"features.transition{b}.norm"] = bn
            convs[f"features.transition{b}.conv"] = tc
            transitions.append((c, tc.c_out))
            c = tc.c_out
            continue
        bns["features.norm5"] = bn
        pool = cur.take("avgpool", "a transition's convolution or the final average pooling")
        k = pool.int("kW")
        if k < 1 or pool.int("kH") != k or pool.int("padW", 0) != 0 or pool.int("padH", 0) != 0:
            raise pool.error("the final average pooling should be square with no padding")
        final_pool = k
        flat = cur.take("flatten", "nn.Reshape or nn.View before the classifier")
        for name in ("nelement", "numElements"):
            n = flat.fields.get(name)
            if isinstance(n, int) and not isinstance(n, bool) and n > 1 and n != c:
                raise flat.error(f"reshapes to {n} elements, the network has {c} channels")
        lin = cur.take("linear", "the classifier (nn.Linear)")
        w = lin.array("weight")
        if w.ndim != 2 or w.shape[1] != c or w.shape[0] == 0:
            raise lin.error(f"weight of shape {_shape(w.shape)} after {c} channels")
        bias = lin.array("bias", (w.shape[0],)) if lin.has("bias") else np.zeros(w.shape[0], np.float32)
        linear = (w, bias)
        break
    if (m := cur.peek()) is not None:
        if m.kind is None:
            raise m.not_densenet()
        raise FileFormatError(f"{m.path}: {m.cls} after the classifier is not part of a DenseNet")

    if len(kinds) > 1:
        raise FileFormatError(f"{root}: mixes standard and nn.DenseConnectLayerCustom dense layers")
    if len(set(dropouts)) > 1:
        raise FileFormatError(f"{root}: dropout rates differ ({sorted(set(dropouts))}); a DenseNet has one")
    drop = dropouts[0] if dropouts else 0.0
    bn_size = 4
    if bottleneck:
        if width % growth:
            raise FileFormatError(f"{root}: bottleneck width {width} is not a multiple of the growth rate {growth}")
        bn_size = width // growth
    compression = infer_compression(transitions, bool(bottleneck))
    conv_bias = any(cv.bias is not None for cv in convs.values())
    try:
        cfg = DenseNetConfig(
            block_config=tuple(blocks), growth_rate=growth, bottleneck=bool(bottleneck), compression=compression,
            init_features=conv0.c_out, stem=stem, num_classes=linear[0].shape[0], drop_rate=drop, bn_size=bn_size,
            conv_bias=conv_bias,
        )
    except ConfigError as e:  # an impossible combination
        raise FileFormatError(f"{root}: the network is not a configuration dnet can build ({e})") from None

    for name, cv in convs.items():
        sd[f"{name}.weight"] = cv.weight
        if conv_bias:
            sd[f"{name}.bias"] = cv.bias if cv.bias is not None else np.zeros(cv.c_out, np.float32)
    for name, bn in bns.items():
        sd[f"{name}.weight"], sd[f"{name}.bias"] = bn.weight, bn.bias
        sd[f"{name}.running_mean"], sd[f"{name}.running_var"] = bn.mean, bn.var
    sd["classifier.weight"], sd["classifier.bias"] = linear
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}
    for name in bns:
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    input_size = final_pool * 2 ** len(transitions) * (4 if stem == "imagenet" else 1)
    prefixes = sorted({m.cls.split(".")[0] for m in items if m.kind in ("conv", "bn")})
    return Parsed(
        cfg, state, kinds.pop(), drop, input_size, any(b.running_std for b in bns.values()), "/".join(prefixes),
    )


# -- metadata and the public entry point -----------------------------------------------------------------------


def lua_zoo_match(cfg: DenseNetConfig) -> str | None:
    """The zoo entry this file is the Lua code's version of: same blocks, growth, bottleneck, compression and
    stem; the initial width may differ (densenet.lua always starts with 2k channels, the paper's basic
    DenseNet with 16), as may the class count and dropout."""
    for entry in zoo.ZOO.values():
        a = entry.config
        if (a.block_config, a.growth_rate, a.bottleneck, a.compression, a.stem, a.bn_size) == (
            cfg.block_config, cfg.growth_rate, cfg.bottleneck, cfg.compression, cfg.stem, cfg.bn_size
        ) and cfg.init_features in (a.init_features, 2 * cfg.growth_rate):
            return entry.name
    return None


def preprocess_name(cfg: DenseNetConfig) -> tuple[str, str | None]:
    """The preprocessing the original Lua code fed this network, and a note when it is a guess."""
    if cfg.stem == "imagenet":
        return "torch7", None
    if cfg.num_classes == 100:
        return "cifar100", None
    if cfg.num_classes == 10:
        return "cifar10", None
    return "cifar10", (
        f"the Lua code has no data loader for {cfg.num_classes} classes with the CIFAR stem; "
        "CIFAR-10's per-channel mean and std are assumed"
    )


def model_from_t7_object(obj: object, source: str = "", sha256: str = "") -> DenseNet:
    """The dnet model (eval mode, with ``meta``) for a module tree read from a ``.t7`` file."""
    p = parse_densenet(obj)
    model = DenseNet(p.config)
    try:
        # assign: the arrays are already private copies; copying them again costs more than reading the file
        model.load_state_dict(p.state_dict, strict=True, assign=True)
    except RuntimeError as e:  # pragma: no cover - the walk checks every shape
        raise FileFormatError(f"{source or 'model'}: weights do not fit the inferred DenseNet ({str(e).splitlines()[0]})") from None
    entry = zoo.find(p.config)
    spec, note = preprocess_name(p.config)
    extra = {
        "layer_kind": p.layer_kind,
        "dropout": p.dropout,
        "lua_zoo_match": lua_zoo_match(p.config),
        "bn_running_std": p.running_std,
        "class_prefix": p.class_prefix,
    }
    if note:
        extra["preprocess_note"] = note
    model.meta = ArtifactMeta(
        model=entry.name if entry else "custom", num_classes=p.config.num_classes, input_size=p.input_size,
        preprocess=get_spec(spec), source=source, source_sha256=sha256, config=p.config.to_dict(), extra=extra,
        dnet_version=__version__,
    )
    return model.eval()


def load_t7_densenet(path: str | os.PathLike, *, long_size: int | None = None) -> DenseNet:
    """Read a Lua Torch DenseNet checkpoint (``model_N.t7``) as a dnet model in eval mode."""
    path = Path(path)
    obj = reader.load(path, long_size=long_size)
    try:
        return model_from_t7_object(obj, path.name, sha256_file(path))
    except FileFormatError as e:
        raise type(e)(f"{path.name}: {e}") from None
