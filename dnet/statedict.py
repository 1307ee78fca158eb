"""torchvision/timm-style DenseNet state dicts: the architecture read from the shapes, and the reverse.

A ``.pth`` holding such a state dict (plain, with ``module.`` prefixes from DataParallel, in the pre-2018
torchvision key style ``norm.1``/``conv.2``, or wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``) is
turned into a :class:`~dnet.models.densenet.DenseNet` whose configuration comes from the tensor shapes alone.
The file itself is read with ``torch.load(weights_only=True)`` by :func:`dnet.checkpoint.read_pth`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from dnet.checkpoint import build_for
from dnet.errors import ConfigError, FileFormatError
from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
_OLD_KEY = re.compile(r"\.(norm|relu|conv|pool)\.(\d+)\.")  # torchvision before 0.3: norm.1 -> norm1
_LAYER = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.")
_TRANSITION = re.compile(r"^features\.transition(\d+)\.conv\.weight$")


def infer_compression(transitions: list[tuple[int, int]], bottleneck: bool) -> float:
    """The θ with floor(θ·c_in) = c_out for every transition (c_in, c_out), a round value where possible.

    With no transition θ is irrelevant and the paper's default is returned (0.5 for DenseNet-BC, else 1).
    """
    if not transitions:
        return 0.5 if bottleneck else 1.0
    lo, hi = 0.0, 1.0
    for c_in, c_out in transitions:
        if not 0 < c_out <= c_in:
            raise FileFormatError(f"a transition from {c_in} to {c_out} channels does not compress (0 < θ ≤ 1)")
        lo, hi = max(lo, c_out / c_in), min(hi, (c_out + 1) / c_in)

    def fits(t: float) -> bool:
        return 0 < t <= 1 and all(math.floor(c_in * t) == c_out for c_in, c_out in transitions)

    for t in (0.5, 1.0):
        if fits(t):
            return t
    for digits in range(1, 7):  # the shortest decimal in [lo, hi) that reproduces every width
        step = 10**-digits
        t = round(math.ceil(lo / step) * step, digits)
        while t < hi + step:
            if fits(t):
                return t
            t = round(t + step, digits)
    raise FileFormatError(f"transition widths {transitions} do not follow one compression factor θ")


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return _unwrap(obj[key], source)
    if not isinstance(obj, dict) or not obj:
        raise FileFormatError(f"{source}: holds {type(obj).__name__}, not a state dict (a dict of tensors)")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise FileFormatError(f"{source}: entry {k!r} is not a named tensor; not a DenseNet state dict")
        k = k.removeprefix("module.")
        k = _OLD_KEY.sub(lambda m: f".{m.group(1)}{m.group(2)}.", k)
        out[k] = v
    return out


def config_from_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict") -> DenseNetConfig:
    """The DenseNet configuration whose ``state_dict()`` has these keys and shapes."""

    def shape(key: str, rank: int = 4) -> tuple[int, ...]:
        if key not in sd:
            raise FileFormatError(f"{source}: no {key!r}; not a torchvision-style DenseNet state dict")
        got = tuple(sd[key].shape)
        if len(got) != rank or 0 in got:
            raise FileFormatError(f"{source}: {key} has shape {list(got)}, expected {rank} non-zero dimensions")
        return got

    conv0 = shape("features.conv0.weight")
    if len(conv0) != 4 or conv0[1] != 3:
        raise FileFormatError(f"{source}: features.conv0.weight has shape {list(conv0)}, expected (C, 3, k, k)")
    if conv0[2:] == (7, 7) and "features.norm0.weight" in sd:
        stem = "imagenet"
    elif conv0[2:] == (3, 3):
        stem = "cifar"
    else:
        raise FileFormatError(f"{source}: a {conv0[2]}x{conv0[3]} first convolution is neither DenseNet stem")
    layers: dict[int, set[int]] = {}
    for k in sd:
        if m := _LAYER.match(k):
            layers.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not layers or sorted(layers) != list(range(1, len(layers) + 1)):
        raise FileFormatError(f"{source}: dense blocks {sorted(layers)} are not numbered 1..n")
    blocks = []
    for b in sorted(layers):
        if sorted(layers[b]) != list(range(1, len(layers[b]) + 1)):
            raise FileFormatError(f"{source}: dense layers of block {b} are not numbered 1..n")
        blocks.append(len(layers[b]))
    first = "features.denseblock1.denselayer1"
    bottleneck = f"{first}.conv2.weight" in sd
    c1 = shape(f"{first}.conv1.weight")
    if bottleneck:
        growth = shape(f"{first}.conv2.weight")[0]
        if c1[0] % growth:
            raise FileFormatError(f"{source}: bottleneck width {c1[0]} is not a multiple of the growth rate {growth}")
        bn_size = c1[0] // growth
    else:
        growth, bn_size = c1[0], 4
    transitions = []
    for b in range(1, len(blocks)):
        w = shape(f"features.transition{b}.conv.weight")
        transitions.append((w[1], w[0]))
    classifier = shape("classifier.weight", 2)
    try:
        return DenseNetConfig(
            block_config=tuple(blocks), growth_rate=growth, bottleneck=bottleneck,
            compression=infer_compression(transitions, bottleneck), init_features=conv0[0], stem=stem,
            num_classes=classifier[0], bn_size=bn_size, conv_bias="features.conv0.bias" in sd,
        )
    except ConfigError as e:
        raise FileFormatError(f"{source}: the shapes describe no DenseNet dnet can build ({e})") from None


def model_from_state_dict(obj: object, path: str | os.PathLike) -> DenseNet:
    """The DenseNet a torchvision/timm-style state dict holds (as read by ``read_pth``), eval mode, with meta."""
    path = Path(path)
    source = path.name
    sd = _unwrap(obj, source)
    cfg = config_from_state_dict(sd, source)
    model = build_for(cfg, sd, source)  # nothing is built that the file's tensors could not fill
    expected = model.state_dict()
    for k, v in expected.items():  # state dicts from before PyTorch 0.4.1 have no BN batch counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=v.dtype)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise FileFormatError(
            f"{source}: keys do not match the DenseNet its shapes describe ({what}; {len(missing)} missing, "
            f"{len(unexpected)} unexpected)"
        )
    bad = [k for k, v in expected.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise FileFormatError(
            f"{source}: {bad[0]} has shape {list(sd[bad[0]].shape)}, the inferred DenseNet needs {list(expected[bad[0]].shape)}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True, assign=True)
    # torchvision's ports of the Lua models publish their accuracies with torchvision's preprocessing, so an
    # ImageNet state dict records that one; CIFAR-stem ones are fed as the zoo says (zoo.expects).
    model.meta = zoo.artifact_meta(cfg, preprocess="torchvision" if cfg.stem == "imagenet" else None, source=path,
                                   extra={"format": "torchvision state dict"})
    return model.eval()


def torchvision_state_dict(model: DenseNet) -> dict[str, torch.Tensor]:
    """``model``'s weights under torchvision's plain keys, for ``torchvision.models.DenseNet``.

    torchvision's DenseNet has only the ImageNet stem, bottleneck layers, θ = 0.5 and no convolution bias;
    any other model is refused, since torchvision could not load it.
    """
    cfg = model.config
    problems = []
    if cfg.stem != "imagenet":
        problems.append(f"the {cfg.stem} stem (torchvision has only the ImageNet 7x7 stem)")
    if not cfg.bottleneck:
        problems.append("no bottleneck layers")
    if cfg.compression != 0.5:
        problems.append(f"compression {cfg.compression}")
    if cfg.conv_bias:
        problems.append("convolution biases")
    if problems:
        raise ConfigError(
            f"torchvision's DenseNet cannot hold this model ({'; '.join(problems)}); write a dnet checkpoint instead"
        )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
