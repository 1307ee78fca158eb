"""Third-party DenseNet ports, written by the tests: random weights under each port's own key names, saved as the
port saves them, and each port's forward pass computed here from those tensors (functional, independent of dnet).

Key names and forward passes follow the ports' model files: andreasveit/densenet-pytorch ``densenet.py``
(``block{b}.layer.{i}``, ``trans{b}.bn1/conv1``, ``bn1``, ``fc``; ``torch.cat([x, out], 1)``), bamos/densenet.pytorch
``densenet.py`` (``dense{b}.{i}``, ``trans{b}.bn1/conv1``, ``bn1``, ``fc``; ``torch.cat((x, out), 1)``; the forward
ends in ``log_softmax``), kuangliu/pytorch-cifar ``models/densenet.py`` (``dense{b}.{i}``, ``trans{b}.bn/conv``, ``bn``,
``linear``; ``torch.cat([out, x], 1)``: new features first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Port:
    name: str
    layer: str  # f-string of b (block, from 1) and i (layer, from 0)
    trans: tuple[str, str]  # BN and conv names inside trans{b}
    final: tuple[str, str]  # the last BN and the classifier
    new_first: bool = False
    log_softmax: bool = False

    def layer_key(self, b: int, i: int) -> str:
        return self.layer.format(b=b, i=i)


PORTS = {
    "andreasveit": Port("andreasveit", "block{b}.layer.{i}", ("bn1", "conv1"), ("bn1", "fc")),
    "bamos": Port("bamos", "dense{b}.{i}", ("bn1", "conv1"), ("bn1", "fc"), log_softmax=True),
    "kuangliu": Port("kuangliu", "dense{b}.{i}", ("bn", "conv"), ("bn", "linear"), new_first=True),
}


def _bn(sd: dict, key: str, c: int, g: torch.Generator) -> None:
    sd[f"{key}.weight"] = 1 + 0.2 * torch.randn(c, generator=g)
    sd[f"{key}.bias"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{key}.running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{key}.running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{key}.num_batches_tracked"] = torch.tensor(7)


def _conv(sd: dict, key: str, c_out: int, c_in: int, size: int, g: torch.Generator) -> None:
    sd[f"{key}.weight"] = torch.randn(c_out, c_in, size, size, generator=g) * math.sqrt(2 / (c_in * size * size))


def port_state_dict(port: Port, blocks: tuple[int, ...], k: int, *, bottleneck: bool, theta: float, init: int,
                    classes: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """A port's state dict (its key names, its order of tensors) for this configuration, random weights."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv1", init, 3, 3, g)
    c = init
    for b, n in enumerate(blocks, start=1):
        for i in range(n):
            key = port.layer_key(b, i)
            _bn(sd, f"{key}.bn1", c, g)
            if bottleneck:
                _conv(sd, f"{key}.conv1", 4 * k, c, 1, g)
                _bn(sd, f"{key}.bn2", 4 * k, g)
                _conv(sd, f"{key}.conv2", k, 4 * k, 3, g)
            else:
                _conv(sd, f"{key}.conv1", k, c, 3, g)
            c += k
        if b < len(blocks):
            out = math.floor(c * theta)
            _bn(sd, f"trans{b}.{port.trans[0]}", c, g)
            _conv(sd, f"trans{b}.{port.trans[1]}", out, c, 1, g)
            c = out
    _bn(sd, port.final[0], c, g)
    sd[f"{port.final[1]}.weight"] = torch.randn(classes, c, generator=g) / math.sqrt(c)
    sd[f"{port.final[1]}.bias"] = 0.1 * torch.randn(classes, generator=g)
    return sd


def port_forward(port: Port, sd: dict[str, torch.Tensor], x: torch.Tensor, blocks: tuple[int, ...],
                 new_first: bool | None = None) -> torch.Tensor:
    """The port's own forward pass in eval mode, from its state dict."""
    new_first = port.new_first if new_first is None else new_first

    def bn(t: torch.Tensor, key: str) -> torch.Tensor:
        return F.batch_norm(t, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                            sd[f"{key}.bias"], training=False, eps=1e-5)

    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for b, n in enumerate(blocks, start=1):
        for i in range(n):
            key = port.layer_key(b, i)
            w1 = sd[f"{key}.conv1.weight"]
            h = F.conv2d(F.relu(bn(out, f"{key}.bn1")), w1, padding=w1.shape[-1] // 2)
            if f"{key}.conv2.weight" in sd:
                h = F.conv2d(F.relu(bn(h, f"{key}.bn2")), sd[f"{key}.conv2.weight"], padding=1)
            out = torch.cat([h, out] if new_first else [out, h], 1)
        if b < len(blocks):
            out = F.conv2d(F.relu(bn(out, f"trans{b}.{port.trans[0]}")), sd[f"trans{b}.{port.trans[1]}.weight"])
            out = F.avg_pool2d(out, 2)
    out = F.relu(bn(out, port.final[0]))
    out = F.avg_pool2d(out, out.shape[-1]).flatten(1)
    logits = F.linear(out, sd[f"{port.final[1]}.weight"], sd[f"{port.final[1]}.bias"])
    return F.log_softmax(logits, 1) if port.log_softmax else logits
