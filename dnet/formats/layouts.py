"""Key layouts of DenseNet state dicts: the third-party ports' names mapped to torchvision's.

A layout is an ordered list of rules (a regular expression that must match a whole key, and its replacement in
Python's ``re`` template syntax, ``\\1`` for a group) and the order in which the port concatenates a dense layer's
input and its new features. The ports the DenseNet README lists are built in (Andreas Veit's, Brandon Amos's) with
the most used CIFAR port (kuangliu/pytorch-cifar, which concatenates new features first); any other port is read
with a key map file of the same rules (:func:`read_key_map`). Layers and blocks numbered from 0, as
``nn.Sequential`` numbers them, are renumbered from 1 after the rules (:func:`renumber`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import torch

from dnet.core.errors import FileFormatError, UsageError, require_one_of
from dnet.core.outputs import check_input_file

CONCAT_ORDERS = ("input-first", "new-first")  # torch.cat([x, new]) (the paper, torchvision) or torch.cat([new, x])
KEY_MAP_MAX_BYTES = 1 << 20
KEY_MAP_MAX_RULES = 1000
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_P = r"(weight|bias)"


@dataclass(frozen=True)
class KeyLayout:
    """A state dict's key names (rules to torchvision's) and concatenation order."""

    name: str
    where: str  # the repository (or file) the layout comes from
    rules: tuple[tuple[str, str], ...]
    concat_order: str = "input-first"
    signature: tuple[str, ...] = ()  # keys (regexes) a state dict of this layout has, each at least once
    note: str = ""  # what the port computes beyond the mapped weights

    def __post_init__(self) -> None:
        require_one_of("concatenation order", self.concat_order, CONCAT_ORDERS, "concat_order")

    def matches(self, key: str) -> str | None:
        """``key`` renamed by the first rule whose pattern matches all of it, or None."""
        for pattern, replacement in self.rules:
            if m := re.fullmatch(pattern, key):
                return m.expand(replacement)
        return None

    def fits(self, keys) -> bool:
        """Whether every signature key is among ``keys``."""
        return bool(self.signature) and all(any(re.fullmatch(s, k) for k in keys) for s in self.signature)


def _port(block: str, layer: str, trans: str, final: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The rules of a CIFAR port: stem ``conv1``, dense layers ``{block}``/``{layer}`` with bn1/conv1/bn2/conv2,
    transitions ``trans{n}.{trans BN}/{trans conv}``, then the last BN and the classifier."""
    t_bn, t_conv = trans.split("/")
    bn, fc = final
    return (
        (rf"conv1\.{_P}", r"features.conv0.\1"),
        (rf"{block}(\d+)\.{layer}(\d+)\.bn([12])\.{_BN}", r"features.denseblock\1.denselayer\2.norm\3.\4"),
        (rf"{block}(\d+)\.{layer}(\d+)\.conv([12])\.{_P}", r"features.denseblock\1.denselayer\2.conv\3.\4"),
        (rf"trans(\d+)\.{t_bn}\.{_BN}", r"features.transition\1.norm.\2"),
        (rf"trans(\d+)\.{t_conv}\.{_P}", r"features.transition\1.conv.\2"),
        (rf"{bn}\.{_BN}", r"features.norm5.\1"),
        (rf"{fc}\.{_P}", r"classifier.\1"),
    )


TORCHVISION = KeyLayout("torchvision", "torchvision/timm", (), signature=(r"features\..*",))
LAYOUTS = {
    layout.name: layout
    for layout in (
        TORCHVISION,
        KeyLayout("andreasveit", "andreasveit/densenet-pytorch", _port("block", r"layer\.", "bn1/conv1", ("bn1", "fc")),
                  signature=(r"conv1\.weight", r"block\d+\.layer\.\d+\..*")),
        KeyLayout("bamos", "bamos/densenet.pytorch", _port("dense", "", "bn1/conv1", ("bn1", "fc")),
                  signature=(r"conv1\.weight", r"dense\d+\.\d+\..*", r"(trans\d+\.)?bn1\..*"),
                  note="the port's forward ends in log_softmax; dnet's logits are the classifier's output before it"),
        KeyLayout("kuangliu", "kuangliu/pytorch-cifar", _port("dense", "", "bn/conv", ("bn", "linear")),
                  concat_order="new-first", signature=(r"conv1\.weight", r"dense\d+\.\d+\..*", r"(trans\d+\.)?bn\..*")),
    )
}
# torchvision's own DenseNet key grammar (timm's deep stem included): what a mapped state dict must consist of.
TORCHVISION_KEYS = re.compile(
    rf"features\.conv[012]\.{_P}|features\.norm[0125]\.{_BN}|"
    rf"features\.denseblock\d+\.denselayer\d+\.(norm[12]\.{_BN}|conv[12]\.{_P})|"
    rf"features\.transition\d+\.(norm\.{_BN}|conv\.{_P})|classifier\.{_P}"
)


def read_key_map(path: str | os.PathLike, concat_order: str | None = None) -> KeyLayout:
    """A key map file: a JSON list of ``[pattern, replacement]`` pairs, tried in order on each key (the first whose
    pattern matches the whole key renames it; keys no rule matches are kept as they are)."""
    path = check_input_file(path, "key map")
    if path.stat().st_size > KEY_MAP_MAX_BYTES:
        raise UsageError(f"{path}: a key map is a small JSON file, this one has {path.stat().st_size:,} bytes",
                         option="key_map")
    try:
        rules = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a JSON key map ({str(e).splitlines()[0]})", option="key_map") from None
    example = 'e.g. [["^block(\\\\d+)\\\\.layer\\\\.(\\\\d+)\\\\.", "features.denseblock\\\\1.denselayer\\\\2."]]'
    if not isinstance(rules, list) or not rules or len(rules) > KEY_MAP_MAX_RULES:
        raise UsageError(f"{path}: a key map is a JSON list of 1 to {KEY_MAP_MAX_RULES} [pattern, replacement] "
                         f"pairs, {example}", option="key_map")
    out = []
    for i, rule in enumerate(rules):
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(s, str) for s in rule)):
            raise UsageError(f"{path}: rule {i + 1} is not a [pattern, replacement] pair of strings, {example}",
                             option="key_map")
        try:
            re.compile(rule[0])
        except re.error as e:
            raise UsageError(f"{path}: rule {i + 1}: {rule[0]!r} is not a regular expression ({e})",
                             option="key_map") from None
        out.append((rule[0], rule[1]))
    return KeyLayout(f"key map {path.name}", str(path), tuple(out), concat_order or "input-first")


def detect(keys: list[str]) -> KeyLayout | None:
    """The built-in layout these keys are written in, if exactly one fits."""
    fitting = [layout for layout in LAYOUTS.values() if layout.fits(keys)]
    return fitting[0] if len(fitting) == 1 else None


def nearest(keys: list[str]) -> tuple[KeyLayout, int]:
    """The built-in layout whose rules rename the most of ``keys``, and how many they rename."""
    def fitted(layout: KeyLayout) -> int:
        if layout is TORCHVISION:
            return sum(bool(TORCHVISION_KEYS.fullmatch(k)) for k in keys)
        return sum(layout.matches(k) is not None for k in keys)

    return max(((layout, fitted(layout)) for layout in LAYOUTS.values()), key=lambda t: t[1])


def rename(sd: dict[str, torch.Tensor], layout: KeyLayout, source: str, *,
           strict: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``sd`` under torchvision's names, and each new name's key in the file.

    ``strict``: a key no rule matches is refused (a built-in layout names every tensor its port has, so an extra
    one is a layer dnet's DenseNet does not have); otherwise it is kept as it is (a key map may list only the
    names that differ from torchvision's).
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for k, v in sd.items():
        try:
            new = layout.matches(k)
        except (re.error, IndexError) as e:
            raise UsageError(f"{layout.where}: a replacement does not fit its pattern for key {k!r} ({e})",
                             option="key_map") from None
        if new is None:
            if strict:
                raise FileFormatError(f"{source}: {k!r} does not fit the {layout.name} layout ({layout.where}): no "
                                      "DenseNet dnet can express has that tensor; refused")
            new = k
        if new in out:
            raise FileFormatError(f"{source}: {origin[new]!r} and {k!r} both become {new!r} in the {layout.name} "
                                  "layout; refused")
        out[new], origin[new] = v, k
    return out, origin


_NUMBERED = re.compile(r"features\.(denseblock|transition)(\d+)\.(?:denselayer(\d+)\.)?")


def renumber(sd: dict[str, torch.Tensor], origin: dict[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Blocks (with their transitions) and layers numbered from 0, as ``nn.Sequential`` numbers them, renumbered
    from 1 as torchvision's are; every layer moves when any layer 0 exists, so a missing layer stays a gap."""
    found = {k: m for k in sd if (m := _NUMBERED.match(k))}
    block_shift = int(any(m.group(1) == "denseblock" and m.group(2) == "0" for m in found.values()))
    layer_shift = int(any(m.group(3) == "0" for m in found.values()))
    if not block_shift and not layer_shift:
        return sd, origin
    out, out_origin = {}, {}
    for k, v in sd.items():
        new = k
        if m := found.get(k):
            new = f"features.{m.group(1)}{int(m.group(2)) + block_shift}."
            if m.group(3) is not None:
                new += f"denselayer{int(m.group(3)) + layer_shift}."
            new += k[m.end():]
        out[new], out_origin[new] = v, origin.get(k, k)
    return out, out_origin
