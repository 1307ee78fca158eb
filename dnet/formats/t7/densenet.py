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

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dnet.core.atomic import sha256_file
from dnet.core.errors import ConfigError, FileFormatError
from dnet.formats.statedict import infer_compression
from dnet.formats.t7 import reader
from dnet.formats.t7.modules import (
    BN,
    Conv,
    Cursor,
    DisjointViews,
    Layer,
    Mod,
    check_pool,
    describe,
    flatten,
    need_conv,
    read_bn,
    read_conv,
    read_dense_layer,
    read_dropout,
    shape_text,
)
from dnet.formats.t7.reader import TorchObject
from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig

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


class _Walk:
    """The state of one walk down the top-level sequence: what has been read so far, and what the network is."""

    def __init__(self, items: list[Mod], root: str) -> None:
        self.cur, self.root = Cursor(items, root), root
        self.convs: dict[str, Conv] = {}
        self.bns: dict[str, BN] = {}
        self.dropouts: list[float] = []
        self.kinds: set[str] = set()
        self.growth = self.bottleneck = self.width = None
        self.blocks: list[int] = []
        self.transitions: list[tuple[int, int]] = []
        self.channels = 0

    def stem(self) -> tuple[Conv, str]:
        """The first convolution, and for the ImageNet stem its BN, ReLU and max pooling."""
        cur = self.cur
        conv0 = read_conv(cur.take("conv", "the first convolution"))
        if conv0.c_in != 3:
            raise FileFormatError(f"{conv0.path}: the first convolution takes {conv0.c_in} channels, a DenseNet 3 (RGB)")
        self.convs["features.conv0"] = conv0
        if (conv0.kernel, conv0.stride, conv0.pad) == (7, 2, 3):
            self.bns["features.norm0"] = read_bn(cur.take("bn", "the stem's batch normalization"))
            cur.take("relu", "the stem's ReLU")
            check_pool(cur.take("maxpool", "the stem's 3x3/2 max pooling"), 3, 2, 1, "the stem's max pooling")
            stem = "imagenet"
        elif (conv0.kernel, conv0.stride, conv0.pad) == (3, 1, 1):
            stem = "cifar"
        else:
            raise FileFormatError(
                f"{conv0.path}: a first convolution of {conv0.kernel}x{conv0.kernel}, stride {conv0.stride}, pad "
                f"{conv0.pad} is neither the CIFAR stem (3x3, stride 1, pad 1) nor the ImageNet stem (7x7, stride 2, pad 3)"
            )
        self.channels = conv0.c_out
        return conv0, stem

    def block(self) -> None:
        """One dense block: its dense layers (one growth rate, one bottleneck width), then JoinTable for custom ones."""
        cur, layers = self.cur, []
        while (m := cur.peek()) is not None and m.kind in ("sequential", "concat", "custom"):
            layer = read_dense_layer(m)
            if layer is None:
                raise FileFormatError(f"{m.path}: {m.cls} that is not a dense layer where a DenseNet has one")
            cur.i += 1
            self._layer(layer, len(self.blocks) + 1, len(layers) + 1)
            layers.append(layer)
        where = "the stem" if not self.blocks else f"transition {len(self.blocks)}"
        if not layers:
            m = cur.peek()
            if m is None:
                raise FileFormatError(f"{self.root}: the network ends after {where}, where a DenseNet has a dense block")
            if m.kind is None:
                raise m.not_densenet()
            raise FileFormatError(f"{m.path}: {m.cls} where a DenseNet has a dense layer (after {where})")
        self.blocks.append(len(layers))
        custom = layers[-1].kind == "custom"
        if custom:
            j = cur.take("join", "nn.JoinTable(2) after memory-efficient dense layers")
            dim, ndims = j.int("dimension", 2), j.fields.get("nInputDims")
            if not (dim == 2 and ndims in (None, 4) or dim == 1 and ndims == 3):
                raise j.error(f"joins along dimension {dim} (nInputDims {ndims}), a dense block along 2 (channels)")
        nxt = cur.peek()
        if nxt is not None and nxt.kind == "join" and not custom:
            raise FileFormatError(f"{nxt.path}: {nxt.cls} after standard dense layers, which output one tensor")

    def _layer(self, layer: Layer, b: int, n: int) -> None:
        c = self.channels
        if layer.norm1.features != c or layer.conv1.c_in != c:
            raise FileFormatError(
                f"{layer.path}: dense layer takes {layer.norm1.features} channels where the network has {c}"
            )
        k = layer.last.c_out
        self.growth = self.growth if self.growth is not None else k
        has_bottleneck = layer.conv2 is not None
        self.bottleneck = has_bottleneck if self.bottleneck is None else self.bottleneck
        if k != self.growth or has_bottleneck != self.bottleneck:
            raise FileFormatError(
                f"{layer.path}: this dense layer (growth {k}, bottleneck {has_bottleneck}) differs from the first "
                f"(growth {self.growth}, bottleneck {self.bottleneck}); a DenseNet has one growth rate"
            )
        if layer.conv2 is not None:
            w = layer.conv1.c_out
            self.width = self.width if self.width is not None else w
            if w != self.width or layer.norm2.features != w or layer.conv2.c_in != w:
                raise FileFormatError(f"{layer.path}: bottleneck width {w} differs from the first layer's {self.width}")
        self.kinds.add(layer.kind)
        self.dropouts += layer.dropout
        pre = f"features.denseblock{b}.denselayer{n}"
        self.bns[f"{pre}.norm1"] = layer.norm1
        self.convs[f"{pre}.conv1"] = layer.conv1
        if layer.conv2 is not None:
            self.bns[f"{pre}.norm2"] = layer.norm2
            self.convs[f"{pre}.conv2"] = layer.conv2
        self.channels = c + k

    def transition(self) -> bool:
        """BN, ReLU, then a transition (1x1 conv, [dropout], 2x2 average pooling): True; or the head's BN: False."""
        cur, c, b = self.cur, self.channels, len(self.blocks)
        bn = read_bn(cur.take("bn", "a dense layer, a transition or the final batch normalization"))
        if bn.features != c:
            raise FileFormatError(f"{bn.path}: batch normalization of {bn.features} channels after a block of {c}")
        cur.take("relu", "a ReLU after the batch normalization")
        nxt = cur.peek()
        if nxt is None or nxt.kind != "conv":
            self.bns["features.norm5"] = bn
            return False
        tc = read_conv(cur.take("conv", "the transition's convolution"))
        need_conv(tc, 1, 1, 0, "the transition's convolution")
        if tc.c_in != c:
            raise FileFormatError(f"{tc.path}: transition convolution takes {tc.c_in} channels after a block of {c}")
        if (m := cur.peek()) is not None and m.kind == "dropout":
            cur.i += 1
            p, v1 = read_dropout(m)
            self.dropouts.append(p)
            if v1:
                tc.scale(1.0 - p)
        pool = cur.take("avgpool", "the transition's 2x2 average pooling")
        check_pool(pool, 2, 2, 0, "the transition's average pooling")
        self.bns[f"features.transition{b}.norm"] = bn
        self.convs[f"features.transition{b}.conv"] = tc
        self.transitions.append((c, tc.c_out))
        self.channels = tc.c_out
        return True

    def head(self) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
        """The final average pooling, the reshape and the classifier; nothing may follow it."""
        cur, c = self.cur, self.channels
        pool = cur.take("avgpool", "a transition's convolution or the final average pooling")
        k = pool.int("kW")
        if k < 1 or pool.int("kH") != k or pool.int("padW", 0) != 0 or pool.int("padH", 0) != 0:
            raise pool.error("the final average pooling should be square with no padding")
        flat = cur.take("flatten", "nn.Reshape or nn.View before the classifier")
        for name in ("nelement", "numElements"):
            n = flat.fields.get(name)
            if isinstance(n, int) and not isinstance(n, bool) and n > 1 and n != c:
                raise flat.error(f"reshapes to {n} elements, the network has {c} channels")
        lin = cur.take("linear", "the classifier (nn.Linear)")
        w = lin.array("weight")
        if w.ndim != 2 or w.shape[1] != c or w.shape[0] == 0:
            raise lin.error(f"weight of shape {shape_text(w.shape)} after {c} channels")
        bias = lin.array("bias", (w.shape[0],)) if lin.has("bias") else np.zeros(w.shape[0], np.float32)
        if (m := cur.peek()) is not None:
            if m.kind is None:
                raise m.not_densenet()
            raise FileFormatError(f"{m.path}: {m.cls} after the classifier is not part of a DenseNet")
        return k, (w, bias)


def parse_densenet(obj: object, root: str = "model") -> Parsed:
    """Walk a Lua DenseNet module tree (as :func:`dnet.formats.t7.reader.loads` returns it): the stem, dense
    blocks separated by transitions, the head."""
    top = Mod(obj, root, DisjointViews())
    if not isinstance(obj, TorchObject):
        hint = " (fb.resnet.torch's latest.t7 and optimState files are not models: load a model_N.t7)" if isinstance(obj, dict) else ""
        raise FileFormatError(f"{root}: the file holds {describe(obj)}, not an nn module{hint}")
    if top.kind is None:
        raise top.not_densenet()
    items: list[Mod] = []
    flatten(top, items, set())
    walk = _Walk(items, root)
    conv0, stem = walk.stem()
    walk.block()
    while walk.transition():
        walk.block()
    final_pool, linear = walk.head()
    return _parsed(walk, conv0, stem, final_pool, linear, items)


def _parsed(walk: _Walk, conv0: Conv, stem: str, final_pool: int, linear, items: list[Mod]) -> Parsed:
    """The configuration and state dict of a finished walk (and the facts the metadata records)."""
    root = walk.root
    if len(walk.kinds) > 1:
        raise FileFormatError(f"{root}: mixes standard and nn.DenseConnectLayerCustom dense layers")
    if len(set(walk.dropouts)) > 1:
        raise FileFormatError(f"{root}: dropout rates differ ({sorted(set(walk.dropouts))}); a DenseNet has one")
    drop = walk.dropouts[0] if walk.dropouts else 0.0
    bn_size = 4
    if walk.bottleneck:
        if walk.width % walk.growth:
            raise FileFormatError(f"{root}: bottleneck width {walk.width} is not a multiple of the growth rate {walk.growth}")
        bn_size = walk.width // walk.growth
    compression = infer_compression(walk.transitions, bool(walk.bottleneck))
    conv_bias = any(cv.bias is not None for cv in walk.convs.values())
    try:
        cfg = DenseNetConfig(
            block_config=tuple(walk.blocks), growth_rate=walk.growth, bottleneck=bool(walk.bottleneck),
            compression=compression, init_features=conv0.c_out, stem=stem, num_classes=linear[0].shape[0],
            drop_rate=drop, bn_size=bn_size, conv_bias=conv_bias,
        )
    except ConfigError as e:  # an impossible combination
        raise FileFormatError(f"{root}: the network is not a configuration dnet can build ({e})") from None

    sd: dict[str, np.ndarray] = {}
    for name, cv in walk.convs.items():
        sd[f"{name}.weight"] = cv.weight
        if conv_bias:
            sd[f"{name}.bias"] = cv.bias if cv.bias is not None else np.zeros(cv.c_out, np.float32)
    for name, bn in walk.bns.items():
        sd[f"{name}.weight"], sd[f"{name}.bias"] = bn.weight, bn.bias
        sd[f"{name}.running_mean"], sd[f"{name}.running_var"] = bn.mean, bn.var
    sd["classifier.weight"], sd["classifier.bias"] = linear
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}
    for name in walk.bns:
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    input_size = final_pool * 2 ** len(walk.transitions) * (4 if stem == "imagenet" else 1)
    prefixes = sorted({m.cls.split(".")[0] for m in items if m.kind in ("conv", "bn")})
    return Parsed(
        cfg, state, walk.kinds.pop(), drop, input_size, any(b.running_std for b in walk.bns.values()), "/".join(prefixes),
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


def model_from_t7_object(obj: object, source: str = "", sha256: str = "") -> DenseNet:
    """The dnet model (eval mode, with ``meta``) for a module tree read from a ``.t7`` file."""
    p = parse_densenet(obj)
    model = DenseNet(p.config)
    try:
        # assign: the arrays are already private copies; copying them again costs more than reading the file
        model.load_state_dict(p.state_dict, strict=True, assign=True)
    except RuntimeError as e:  # pragma: no cover - the walk checks every shape
        raise FileFormatError(f"{source or 'model'}: weights do not fit the inferred DenseNet ({str(e).splitlines()[0]})") from None
    extra = {
        "layer_kind": p.layer_kind,
        "dropout": p.dropout,
        "lua_zoo_match": lua_zoo_match(p.config),
        "bn_running_std": p.running_std,
        "class_prefix": p.class_prefix,
    }
    meta = zoo.artifact_meta(p.config, input_size=p.input_size, extra=extra)
    model.meta = dataclasses.replace(meta, source=source, source_sha256=sha256)
    return model.eval()


def load_t7_densenet(path: str | os.PathLike, *, long_size: int | None = None) -> DenseNet:
    """Read a Lua Torch DenseNet checkpoint (``model_N.t7``) as a dnet model in eval mode."""
    path = Path(path)
    obj = reader.load(path, long_size=long_size)
    try:
        return model_from_t7_object(obj, path.name, sha256_file(path))
    except FileFormatError as e:
        raise type(e)(f"{path.name}: {e}") from None
