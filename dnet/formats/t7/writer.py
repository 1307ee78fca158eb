"""A Torch7 binary *writer*, and the Lua DenseNet module tree for a dnet model: the reverse of the reader and mapping.

Written from the format (torch7 ``File.lua`` ``writeObject``, ``generic/Tensor.c`` / ``generic/Storage.c``
``write``), not from dnet's reader, so that reading what it writes checks the reader against the format.
:func:`lua_densenet` builds the object tree that liuzhuang13/DenseNet's ``models/densenet.lua`` builds and
fb.resnet.torch's ``checkpoint.save`` writes, filled with the weights of a dnet model: every parameter a view
into one flat storage (``getParameters()``), gradients into a second one, cudnn or nn class names, either
dense-layer kind. The tests and ``benchmarks/t7_load`` make their ``.t7`` files with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from dnet.formats.t7.reader import Storage, Table, TorchObject

T7Storage = Storage  # a storage to write is what the reader returns: a class name and a 1-D array


@dataclass(eq=False)
class T7Tensor:
    """A tensor as Torch keeps it: a view (sizes, strides, 1-based offset) of a storage."""

    typename: str
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int  # 1-based, as in the file
    storage: T7Storage | None


@dataclass(eq=False)
class LuaFunction:
    """A function object (type tag 8) with some bytes for its bytecode: for the refusal tests."""

    bytecode: bytes = b"\x1bLJ\x01fake"
    upvalues: dict = field(default_factory=dict)


_DTYPES = {"Double": "<f8", "Float": "<f4", "Half": "<f2", "Byte": "u1", "Char": "i1", "Short": "<i2", "Int": "<i4", "Long": "<i8"}


def tensor(a: np.ndarray, kind: str = "Float", prefix: str = "torch.") -> T7Tensor:
    """A contiguous tensor with its own storage."""
    a = np.ascontiguousarray(a, dtype=_DTYPES[kind])
    if a.size == 0:
        return T7Tensor(f"{prefix}{kind}Tensor", (), (), 1, None)
    strides = tuple(s // a.itemsize for s in a.strides)
    return T7Tensor(f"{prefix}{kind}Tensor", a.shape, strides, 1, T7Storage(f"{prefix}{kind}Storage", a.reshape(-1)))


def empty(kind: str = "Float") -> T7Tensor:
    return T7Tensor(f"torch.{kind}Tensor", (), (), 1, None)


class Writer:
    def __init__(self, long_size: int = 8) -> None:
        self.out: list[bytes] = []
        self.memo: dict[int, int] = {}
        self.keep: list[object] = []
        self.lf = "<q" if long_size == 8 else "<i"
        self.long_size = long_size

    def int(self, v: int) -> None:
        self.out.append(struct.pack("<i", v))

    def long(self, v: int) -> None:
        self.out.append(struct.pack(self.lf, v))

    def string(self, s: str | bytes) -> None:
        b = s.encode() if isinstance(s, str) else s
        self.int(len(b))
        self.out.append(b)

    def _ref(self, obj: object) -> bool:
        """Write the index; True when the object was written before (only the index is then needed)."""
        if id(obj) in self.memo:
            self.int(self.memo[id(obj)])
            return True
        self.memo[id(obj)] = len(self.memo) + 1
        self.keep.append(obj)
        self.int(self.memo[id(obj)])
        return False

    def head(self, typename: str, version: int = 1) -> None:
        self.string(f"V {version}")
        self.string(typename)

    def object(self, v: object) -> None:
        if v is None:
            self.int(0)
        elif isinstance(v, bool):
            self.int(5)
            self.int(1 if v else 0)
        elif isinstance(v, int | float):
            self.int(1)
            self.out.append(struct.pack("<d", float(v)))
        elif isinstance(v, str | bytes):
            self.int(2)
            self.string(v)
        elif isinstance(v, np.ndarray):
            self.object(tensor(v))
        elif isinstance(v, LuaFunction):
            self.int(8)
            if not self._ref(v):
                self.string(v.bytecode)
                self.object(Table(v.upvalues))
        elif isinstance(v, dict):
            self.int(3)
            if not self._ref(v):
                self.int(len(v))
                for k, x in v.items():
                    self.object(k)
                    self.object(x)
        elif isinstance(v, T7Storage):
            self.int(4)
            if not self._ref(v):
                self.head(v.typename)
                data = v.data
                if v.typename.endswith("LongStorage") and self.long_size == 4:
                    data = data.astype("<i4")
                self.long(data.shape[0])
                self.out.append(data.tobytes())
        elif isinstance(v, T7Tensor):
            self.int(4)
            if not self._ref(v):
                self.head(v.typename)
                self.int(len(v.sizes))
                for s in (*v.sizes, *v.strides):
                    self.long(s)
                self.long(v.offset)
                self.object(v.storage)
        elif isinstance(v, TorchObject):
            self.int(4)
            if not self._ref(v):
                self.head(v.typename, v.version or 1)
                self.object(v.fields)
        else:
            raise TypeError(f"cannot write {type(v).__name__}")


def dumps(obj: object, long_size: int = 8) -> bytes:
    w = Writer(long_size)
    w.object(obj)
    return b"".join(w.out)


def long_storage(values: list[int]) -> T7Storage:
    return T7Storage("torch.LongStorage", np.array(values, dtype="<i8"))


# -- Lua DenseNet module trees ----------------------------------------------------------------------------------


class _Params:
    """getParameters(): every weight and bias a view into one flat storage (gradients into a second)."""

    def __init__(self, with_grads: bool = True) -> None:
        self.chunks: list[np.ndarray] = []
        self.views: list[tuple[T7Tensor, T7Tensor | None]] = []
        self.size = 0
        self.flat = T7Storage("torch.FloatStorage", np.zeros(0, np.float32))
        self.grad_flat = T7Storage("torch.FloatStorage", np.zeros(0, np.float32))
        self.with_grads = with_grads

    def add(self, a: np.ndarray) -> tuple[T7Tensor, T7Tensor]:
        a = np.ascontiguousarray(a, dtype=np.float32)
        strides = tuple(s // 4 for s in a.strides)
        t = T7Tensor("torch.FloatTensor", a.shape, strides, self.size + 1, self.flat)
        g = T7Tensor("torch.FloatTensor", a.shape, strides, self.size + 1, self.grad_flat) if self.with_grads else empty()
        self.chunks.append(a.reshape(-1))
        self.size += a.size
        return t, g

    def finish(self) -> None:
        self.flat.data = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.grad_flat.data = np.zeros(self.size, np.float32) if self.with_grads else np.zeros(0, np.float32)


def _module(typename: str, **fields) -> TorchObject:
    base = {"train": False, "_type": "torch.FloatTensor", "output": empty(), "gradInput": empty()}
    base.update(fields)
    return TorchObject(typename, Table(base), 1)


@dataclass
class LuaStyle:
    """How the Lua file looks: class prefix, dense-layer kind, conv biases, BN kind, dropout."""

    prefix: str = "cudnn"  # "cudnn" or "nn" for convolution, BN, ReLU, average pooling
    layer_kind: str = "standard"  # "standard" | "custom"
    wrap_concat: bool = True  # standard layers as nn.Sequential{nn.Concat}; False: a bare nn.Concat
    running_std: bool = False  # nn before 2016: BN keeps running_std = 1/sqrt(var + eps)
    bn_eps: float = 1e-5
    dropout: float = 0.0  # nn.Dropout after every conv but the first (the model's weights are used as they are)
    dropout_v2: bool = True
    flatten: str = "nn.Reshape"  # or "nn.View"
    with_grads: bool = True


def lua_densenet(model, style: LuaStyle | None = None) -> TorchObject:
    """The module tree ``models/densenet.lua`` would build, holding ``model``'s weights (dnet names in)."""
    s = style or LuaStyle()
    cfg = model.config
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    params = _Params(s.with_grads)
    P = s.prefix

    def conv(name: str, stride: int, pad: int) -> TorchObject:
        w = sd[f"{name}.weight"]
        wt, wg = params.add(w)
        f = {"weight": wt, "gradWeight": wg, "nInputPlane": w.shape[1], "nOutputPlane": w.shape[0], "kW": w.shape[3],
             "kH": w.shape[2], "dW": stride, "dH": stride, "padW": pad, "padH": pad, "groups": 1,
             "finput": empty(), "fgradInput": empty()}
        if f"{name}.bias" in sd:
            f["bias"], f["gradBias"] = params.add(sd[f"{name}.bias"])
        return _module(f"{P}.SpatialConvolution", **f)

    def bn(name: str, first: bool = False) -> TorchObject:
        wt, wg = params.add(sd[f"{name}.weight"])
        bt, bg = params.add(sd[f"{name}.bias"])
        mean, var = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
        f = {"weight": wt, "bias": bt, "gradWeight": wg, "gradBias": bg, "running_mean": tensor(mean),
             "eps": s.bn_eps, "momentum": 0.1, "affine": True, "save_mean": empty(), "save_std": empty()}
        # the dnet model's BN uses eps 1e-5: store the statistics a Lua BN with eps s.bn_eps needs for equal outputs
        var_lua = (var.astype(np.float64) + 1e-5 - s.bn_eps).astype(np.float32)
        if s.running_std:
            f["running_std"] = tensor((1.0 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(np.float32))
        else:
            f["running_var"] = tensor(var_lua)
        if first:
            f["__shareGradInputKey"] = "first"
        return TorchObject(f"{P}.SpatialBatchNormalization", _module("x", **f).fields, 1 if s.running_std else 2)

    def relu() -> TorchObject:
        return _module(f"{P}.ReLU", inplace=True, threshold=0, val=0)

    def dropout() -> TorchObject:
        return _module("nn.Dropout", p=s.dropout, v2=s.dropout_v2, noise=empty())

    def seq(mods: list[TorchObject]) -> TorchObject:
        return _module("nn.Sequential", modules=Table({i: m for i, m in enumerate(mods, 1)}))

    def avgpool(k: int, d: int) -> TorchObject:
        return _module(f"{P}.SpatialAveragePooling", kW=k, kH=k, dW=d, dH=d, padW=0, padH=0, ceil_mode=False,
                       count_include_pad=True, divide=True)

    top: list[TorchObject] = []
    top.append(conv("features.conv0", *((2, 3) if cfg.stem == "imagenet" else (1, 1))))
    if cfg.stem == "imagenet":
        top += [bn("features.norm0"), relu(),
                _module("nn.SpatialMaxPooling", kW=3, kH=3, dW=2, dH=2, padW=1, padH=1, ceil_mode=False, indices=empty())]
    opt = Table({"growthRate": cfg.growth_rate, "bottleneck": cfg.bottleneck, "optMemory": 4, "dataset": "cifar10",
                 "dropRate": s.dropout, "tensorType": "torch.FloatTensor"})
    shared_input_c = T7Storage("torch.FloatStorage", np.zeros(16, np.float32))
    nb = len(cfg.block_config)
    for b, n in enumerate(cfg.block_config, 1):
        for i in range(1, n + 1):
            pre = f"features.denseblock{b}.denselayer{i}"
            ops1 = [bn(f"{pre}.norm1", first=True), relu()]
            if cfg.bottleneck:
                ops2 = [conv(f"{pre}.conv1", 1, 0), bn(f"{pre}.norm2"), relu(), conv(f"{pre}.conv2", 1, 1)]
            else:
                ops2 = [conv(f"{pre}.conv1", 1, 1)]
            if s.layer_kind == "custom":
                net1, net2 = seq(ops1), seq(ops2)
                # checkpoint.save's deepCopy: distinct module objects, the same tensors
                copy1 = TorchObject(net1.typename, Table(net1.fields), 1)
                copy2 = TorchObject(net2.typename, Table(net2.fields), 1)
                layer = _module(
                    "nn.DenseConnectLayerCustom", net1=net1, net2=net2, modules=Table({1: copy1, 2: copy2}), opt=opt,
                    input_c=T7Tensor("torch.FloatTensor", (2, 4), (4, 1), 1 + 2 * (i % 2), shared_input_c),
                    saved_bn_running_mean=empty(), saved_bn_running_var=empty(), train=False,
                    output=Table(), gradInput=Table(),
                )
            else:
                ops = ops1 + ops2
                if s.dropout > 0:  # after each conv
                    ops = [m for op in ops for m in ([op, dropout()] if op.typename.endswith("Convolution") else [op])]
                concat = _module("nn.Concat", dimension=2, modules=Table({1: _module("nn.Identity"), 2: seq(ops)}),
                                 outputSize=long_storage([2, 1, 1, 1]), size=long_storage([2, 1, 1, 1]))
                layer = seq([concat]) if s.wrap_concat else concat
            top.append(layer)
        if s.layer_kind == "custom":
            top.append(_module("nn.JoinTable", dimension=2, size=long_storage([1]), gradInput=Table()))
        if b < nb:
            top += [bn(f"features.transition{b}.norm"), relu(), conv(f"features.transition{b}.conv", 1, 0)]
            if s.dropout > 0:
                top.append(dropout())
            top.append(avgpool(2, 2))
    c = cfg.num_features
    final = 7 if cfg.stem == "imagenet" else 8
    top += [bn("features.norm5"), relu(), avgpool(final, final)]
    if s.flatten == "nn.View":
        top.append(_module("nn.View", size=long_storage([c]), numElements=c, numInputDims=3))
    else:
        top.append(_module("nn.Reshape", size=long_storage([c]), batchsize=long_storage([1, c]), nelement=c))
    wt, wg = params.add(sd["classifier.weight"])
    bt, bg = params.add(sd["classifier.bias"])
    top.append(_module("nn.Linear", weight=wt, bias=bt, gradWeight=wg, gradBias=bg))
    params.finish()
    return seq(top)
