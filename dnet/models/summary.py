"""Architecture summary: channels per block, parameter count and multiply-adds at an input size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnet.models.densenet import DenseNet


@dataclass(frozen=True)
class Summary:
    params: int
    macs: int  # all layers, counted as thop does for timm's tables: conv + linear + BN (2/element) + pooling
    conv_macs: int  # convolutions and the classifier only
    input_size: int
    blocks: list[dict]  # per dense block: layers, in/out channels, spatial size


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summarize(model: DenseNet, input_size: int) -> Summary:
    macs = 0
    other = 0
    sizes: dict[str, int] = {}

    def conv_hook(m: nn.Module, inp, out) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs += out.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            macs += m.in_features * m.out_features * out.shape[0]

    def other_hook(m: nn.Module, inp, out) -> None:
        nonlocal other
        if isinstance(m, nn.BatchNorm2d):
            other += 2 * inp[0].numel()  # scale and shift per element
        elif isinstance(m, nn.AvgPool2d):
            other += out.numel() * (m.kernel_size * m.kernel_size + 1)

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks += [m.register_forward_hook(other_hook) for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.AvgPool2d))]
    for name, child in model.features.named_children():
        if name.startswith("denseblock"):
            hooks.append(child.register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-1])))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    cfg = model.config
    blocks = [
        {"block": i + 1, "layers": n, "in_channels": c_in, "out_channels": c_out, "spatial": sizes[f"denseblock{i + 1}"]}
        for i, (n, (c_in, c_out)) in enumerate(zip(cfg.block_config, cfg.channels(), strict=False))
    ]
    return Summary(count_params(model), macs + other, macs, input_size, blocks)
