"""DenseNet state dicts: the architecture read from the shapes, and the reverse (torchvision's keys).

A ``.pth`` holding such a state dict (plain, with ``module.`` prefixes from DataParallel, in the pre-2018
torchvision key style ``norm.1``/``conv.2``, or wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``, beside any
other entries such as ``epoch`` or ``optimizer``), in torchvision/timm's key layout or a port's
(:mod:`dnet.formats.layouts`), is turned into a :class:`~dnet.models.densenet.DenseNet` whose configuration comes from the
tensor shapes alone.
The file itself is read with ``torch.load(weights_only=True)`` by :func:`dnet.formats.checkpoint.read_pth`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import torch

from dnet.core.errors import ConfigError, FileFormatError, require_one_of
from dnet.formats import layouts
from dnet.formats.checkpoint import build_for
from dnet.formats.layouts import CONCAT_ORDERS, LAYOUTS, TORCHVISION, TORCHVISION_KEYS, KeyLayout, read_key_map
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


def unwrap(obj: object, source: str) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The state dict in ``obj`` (``module.`` prefixes removed, pre-2018 torchvision keys renamed) and the wrapper
    keys it was found under (``{"epoch", "state_dict", "best_prec1", "optimizer"}`` -> ``("state_dict",)``)."""
    path: tuple[str, ...] = ()
    while isinstance(obj, dict) and (key := next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)):
        # a state dict's values are all tensors: a dict under a wrapper key means a wrapper, whatever else it holds
        obj, path = obj[key], (*path, key)
    if not isinstance(obj, dict) or not obj:
        raise FileFormatError(f"{source}: holds {type(obj).__name__}, not a state dict (a dict of tensors)")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise FileFormatError(f"{source}: entry {k!r} is not a named tensor; not a DenseNet state dict")
        k = k.removeprefix("module.")
        if k.startswith("features."):  # torchvision's own keys only: other ports' names are left to their rules
            k = _OLD_KEY.sub(lambda m: f".{m.group(1)}{m.group(2)}.", k)
        out[k] = v
    return out, path


def _layout_for(sd: dict[str, torch.Tensor], source: str, key_map, concat_order: str | None) -> KeyLayout:
    """The layout ``sd`` is read in: the key map given, else the built-in one its keys fit, else a refusal that
    names the nearest built-in layout and the options for any other."""
    if key_map is not None:
        return key_map if isinstance(key_map, KeyLayout) else read_key_map(key_map, concat_order)
    layout = layouts.detect(list(sd))
    if layout is None:
        near, fitted = layouts.nearest(list(sd))
        what = _what_it_is(sd)
        if near is TORCHVISION and fitted:  # torchvision's names, something else wrong: the shapes will say what
            layout = TORCHVISION
        else:
            misfit = next((k for k in sd if (near.matches(k) if near.rules else TORCHVISION_KEYS.fullmatch(k)) is None), "")
            nearest = (f"the nearest is {near.name} ({near.where}: {fitted} of {len(sd)} keys fit, not {misfit!r})"
                       if fitted else
                       f"none of its keys fits a known layout ({', '.join(LAYOUTS)})")
            raise FileFormatError(
                f"{source}: no DenseNet key layout dnet knows ({what}); {nearest}; for another port give --key-map "
                "FILE (rules from its keys to torchvision's) and --concat-order new-first if it concatenates new "
                "features first"
            )
    return dataclasses.replace(layout, concat_order=concat_order) if concat_order else layout


def read_layout(obj: object, source: str, *, key_map=None,
                concat_order: str | None = None) -> tuple[dict[str, torch.Tensor], KeyLayout, dict[str, str], tuple]:
    """The state dict in ``obj`` under torchvision's names (input-first order still to be applied), its layout, each
    name's key in the file, and the wrapper keys it was under."""
    if concat_order is not None:
        require_one_of("concatenation order", concat_order, CONCAT_ORDERS, "concat_order")
    sd, wrappers = unwrap(obj, source)
    layout = _layout_for(sd, source, key_map, concat_order)
    if layout.rules:
        sd, origin = layouts.rename(sd, layout, source, strict=layout.name in LAYOUTS)
    else:
        origin = {k: k for k in sd}
    sd, origin = layouts.renumber(sd, origin)
    return sd, layout, origin, wrappers


def _what_it_is(sd: dict[str, torch.Tensor]) -> str:
    """A few words on a state dict that is not a DenseNet's, for the line that refuses it."""
    if "fc.weight" in sd and any(k.startswith("layer1.") for k in sd):
        return "a ResNet-style state dict (conv1, layer1..4, fc)"
    return f"{len(sd)} tensor{'s' if len(sd) != 1 else ''}, the first {next(iter(sd))!r}"


def _stem_fields(sd: dict[str, torch.Tensor], shape, source: str) -> dict:
    """stem, init_features and stem_width from the stem's tensors (torchvision's keys; timm's for the deep stem)."""
    conv0 = shape("features.conv0.weight")
    if len(conv0) != 4 or conv0[1] != 3:
        raise FileFormatError(f"{source}: features.conv0.weight has shape {list(conv0)}, expected (C, 3, k, k)")
    kernel, norm0 = conv0[2:], "features.norm0.weight" in sd
    if "features.conv1.weight" in sd:  # timm's deep stem: conv0 -> conv1 -> conv2, each 3x3 with BN-ReLU
        widths = [conv0[0], shape("features.conv1.weight")[0], shape("features.conv2.weight")[0]]
        if kernel != (3, 3) or not norm0:
            raise FileFormatError(f"{source}: features.conv1 follows a {kernel[0]}x{kernel[1]} features.conv0"
                                  f"{'' if norm0 else ' without features.norm0'}; timm's deep stem is three 3x3 "
                                  "convolutions, each with its BN")
        if widths[0] != widths[1]:
            raise FileFormatError(
                f"{source}: a three-convolution stem of widths {widths[0]}, {widths[1]}, {widths[2]} is timm's "
                "'deep_tiered' stem; dnet holds timm's 'deep' stem, whose first two convolutions have the same width"
            )
        return {"stem": "deep", "stem_width": widths[0], "init_features": widths[2]}
    if kernel == (7, 7) and norm0:
        return {"stem": "imagenet", "init_features": conv0[0]}
    if kernel == (3, 3) and not norm0:
        return {"stem": "cifar", "init_features": conv0[0]}
    if kernel == (3, 3):
        raise FileFormatError(
            f"{source}: a 3x3 features.conv0 with a BN (features.norm0) but no features.conv1 is no DenseNet stem dnet "
            "knows: the CIFAR stem has no BN, timm's deep stem has three 3x3 convolutions"
        )
    raise FileFormatError(f"{source}: a {kernel[0]}x{kernel[1]} first convolution"
                          f"{'' if norm0 or kernel != (7, 7) else ' without features.norm0'} is none of dnet's "
                          "DenseNet stems (CIFAR 3x3, ImageNet 7x7 with BN, timm's deep three 3x3)")


def _misfit(sd: dict[str, torch.Tensor], origin: dict[str, str] | None) -> str:
    """'; KEY fits no DenseNet dnet can express' for the first key outside torchvision's DenseNet names, if any."""
    bad = next((k for k in sd if not TORCHVISION_KEYS.fullmatch(k)), None)
    return f"; {(origin or {}).get(bad, bad)!r} fits no DenseNet dnet can express" if bad is not None else ""


def config_from_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict",
                           origin: dict[str, str] | None = None) -> DenseNetConfig:
    """The DenseNet configuration whose ``state_dict()`` has these keys and shapes (``origin``: each key's name in
    the file, for messages).

    A state dict does not record blur pooling (timm's ``BlurPool2d`` filter is not saved): when the shapes are
    those of a zoo entry with blur pooling (``densenetblur121d``) and of none without, the configuration has it.
    """

    def shape(key: str, rank: int = 4) -> tuple[int, ...]:
        if key not in sd:
            what = f" ({_what_it_is(sd)})" if key == "features.conv0.weight" else _misfit(sd, origin)
            raise FileFormatError(f"{source}: no {key!r}; not a torchvision-style DenseNet state dict{what}")
        got = tuple(sd[key].shape)
        if len(got) != rank or 0 in got:
            raise FileFormatError(f"{source}: {key} has shape {list(got)}, expected {rank} non-zero dimensions")
        return got

    stem = _stem_fields(sd, shape, source)
    layers: dict[int, set[int]] = {}
    for k in sd:
        if m := _LAYER.match(k):
            layers.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not layers or sorted(layers) != list(range(1, len(layers) + 1)):
        raise FileFormatError(f"{source}: dense blocks {sorted(layers)} are not numbered 1..n")
    blocks = []
    for b in sorted(layers):
        if sorted(layers[b]) != list(range(1, len(layers[b]) + 1)):
            gap = min(set(range(1, max(layers[b]) + 1)) - layers[b])
            after = min(n for n in layers[b] if n > gap)
            head = f"features.denseblock{b}.denselayer{after}."
            shown = next((origin or {}).get(k, k) for k in sd if k.startswith(head))  # as the file names it
            what = f" (layer {gap} of {max(layers[b])} is missing: the next one is {shown!r})"
            raise FileFormatError(f"{source}: dense layers of block {b} are not numbered 1..n{what}")
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
        cfg = DenseNetConfig(
            block_config=tuple(blocks), growth_rate=growth, bottleneck=bottleneck,
            compression=infer_compression(transitions, bottleneck), num_classes=classifier[0], bn_size=bn_size,
            conv_bias="features.conv0.bias" in sd, **stem,
        )
    except ConfigError as e:
        raise FileFormatError(f"{source}: the shapes describe no DenseNet dnet can build ({e})") from None
    if cfg.stem != "cifar" and zoo.find(cfg) is None:
        blurred = dataclasses.replace(cfg, blur_pool=True)
        if zoo.find(blurred) is not None:
            return blurred
    return cfg


def _new_first_order(m: int, c0: int, k: int) -> torch.Tensor:
    """For each input channel of a layer after ``m`` new-first layers (``[o_m, ..., o_1, x]``, ``x`` of ``c0``
    channels), the channel of that input in dnet's input-first order (``[x, o_1, ..., o_m]``)."""
    order = list(range(m * k, m * k + c0))
    for layer in range(1, m + 1):
        order += range((m - layer) * k, (m - layer + 1) * k)
    return torch.tensor(order)


def to_input_first(sd: dict[str, torch.Tensor], cfg: DenseNetConfig) -> dict[str, torch.Tensor]:
    """A state dict of a port that concatenates new features first (``torch.cat([new, x], 1)``) with the input
    channels of every layer reading a concatenation (each dense layer's norm1 and conv1, each transition, the last
    BN and the classifier) permuted to dnet's order, so the model computes exactly what the port computes."""
    out = dict(sd)

    def permute(prefix: str, order: torch.Tensor, weight_dim: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):  # the BN reading the concatenation
            if (key := f"{prefix[0]}.{name}") in out:
                out[key] = out[key].index_select(0, order)
        key = f"{prefix[1]}.weight"  # the convolution (or classifier) after it
        out[key] = out[key].index_select(weight_dim, order)

    k, last = cfg.growth_rate, len(cfg.block_config)
    for b, (n, (c0, _)) in enumerate(zip(cfg.block_config, cfg.channels(), strict=True), start=1):
        for i in range(1, n + 1):
            layer = f"features.denseblock{b}.denselayer{i}"
            permute((f"{layer}.norm1", f"{layer}.conv1"), _new_first_order(i - 1, c0, k), 1)
        reader = (f"features.transition{b}.norm", f"features.transition{b}.conv") if b < last else \
            ("features.norm5", "classifier")
        permute(reader, _new_first_order(n, c0, k), 1)
    return out


def _fill(cfg: DenseNetConfig, sd: dict[str, torch.Tensor], origin: dict[str, str], source: str) -> DenseNet:
    """The DenseNet ``cfg`` describes holding ``sd``, every key and shape compared first (named as in the file)."""
    model = build_for(cfg, sd, source)  # nothing is built that the file's tensors could not fill
    expected = model.state_dict()
    for k, v in expected.items():  # state dicts from before PyTorch 0.4.1 have no BN batch counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=v.dtype)
    missing = [k for k in expected if k not in sd]
    unexpected = [origin.get(k, k) for k in sd if k not in expected]
    if missing or unexpected:
        what = f"unexpected {unexpected[0]!r}" if unexpected else f"missing {missing[0]!r}"
        raise FileFormatError(
            f"{source}: keys do not match the DenseNet its shapes describe ({what}; {len(missing)} missing, "
            f"{len(unexpected)} unexpected)"
        )
    bad = [k for k, v in expected.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        shown = bad[0] if origin.get(bad[0], bad[0]) == bad[0] else f"{origin[bad[0]]} ({bad[0]})"
        raise FileFormatError(
            f"{source}: {shown} has shape {list(sd[bad[0]].shape)}, the inferred DenseNet needs {list(expected[bad[0]].shape)}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model


def model_from_state_dict(obj: object, path: str | os.PathLike, *, key_map=None,
                          concat_order: str | None = None) -> DenseNet:
    """The DenseNet a state dict holds (as read by ``read_pth``: torchvision/timm keys, or a port's layout from
    :mod:`dnet.formats.layouts`, or ``key_map``, a key map file), eval mode, with meta."""
    path = Path(path)
    source = path.name
    sd, layout, origin, _ = read_layout(obj, source, key_map=key_map, concat_order=concat_order)
    cfg = config_from_state_dict(sd, source, origin)
    if layout.concat_order == "new-first":
        _fill(cfg, dict(sd), origin, source)  # every key and shape checked before anything is permuted
        sd = to_input_first(sd, cfg)
    model = _fill(cfg, sd, origin, source)
    # torchvision's ports of the Lua models publish their accuracies with torchvision's preprocessing, so an
    # ImageNet-stem state dict records that one; CIFAR- and deep-stem ones are fed as the zoo says (zoo.expects).
    extra = {"format": f"{layout.name} state dict" if layout.name in LAYOUTS else "state dict",
             "key_layout": layout.name if layout.name in LAYOUTS else layout.where}
    if layout.concat_order != "input-first":
        extra["concat_order"] = layout.concat_order
    if layout.note:
        extra["layout_note"] = layout.note
    if cfg.blur_pool:
        extra["blur_pool_note"] = (f"a state dict does not record blur pooling; taken from the zoo entry "
                                   f"{zoo.name_of(cfg)} with these shapes")
    model.meta = zoo.artifact_meta(cfg, preprocess="torchvision" if cfg.stem == "imagenet" else None, source=path,
                                   extra=extra)
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
    if cfg.blur_pool:
        problems.append("blur pooling")
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
