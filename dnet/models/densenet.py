"""DenseNet and DenseNet-BC, one definition for every network of the paper and the Lua code.

Module and parameter names follow torchvision's ``models/densenet.py`` exactly, so ImageNet models load
torchvision weights with ``strict=True`` (and the reverse). Where the Lua code (liuzhuang13/DenseNet,
``models/densenet.lua``) differs from torchvision, dnet follows Lua: dropout after every convolution but the
first (also after the bottleneck's 1x1 and the transition's conv), optional convolution biases, and the Lua
initialisation.

timm's deep-stem variants (``densenet264d``, ``densenetblur121d``) are two configuration fields: ``stem="deep"``
(three 3x3 convolutions, timm's key names ``conv0``/``norm0``/``conv1``/``norm1``/``conv2``/``norm2``) and
``blur_pool`` (timm's ``BlurPool2d`` after a stride-1 max-pooling in the stem).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

# The configuration lives in a torch-free module (the zoo and `dnet models` read it without PyTorch); re-exported here.
from dnet.models.config import INPUT_SIZE, POOLED_STEMS, STEMS, DenseNetConfig


def _dropout(x: Tensor, p: float, training: bool) -> Tensor:
    return F.dropout(x, p=p, training=training) if p > 0 else x


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3, or BN-ReLU-Conv1x1(bn_size·k)-BN-ReLU-Conv3x3 for DenseNet-BC."""

    def __init__(self, in_features: int, cfg: DenseNetConfig, memory_efficient: bool) -> None:
        super().__init__()
        k, bias = cfg.growth_rate, cfg.conv_bias
        self.bottleneck = cfg.bottleneck
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        if cfg.bottleneck:
            self.conv1 = nn.Conv2d(in_features, cfg.bn_size * k, 1, bias=bias)
            self.norm2 = nn.BatchNorm2d(cfg.bn_size * k)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cfg.bn_size * k, k, 3, padding=1, bias=bias)
        else:
            self.conv1 = nn.Conv2d(in_features, k, 3, padding=1, bias=bias)
        self.drop_rate = float(cfg.drop_rate)
        self.memory_efficient = memory_efficient

    @staticmethod
    def _norm(bn: nn.BatchNorm2d, x: Tensor, update_stats: bool) -> Tensor:
        if update_stats:
            return bn(x)
        # The recomputation in the backward pass: the same batch statistics, but the running statistics it
        # updates are throwaway copies, so BN's running mean and variance change once per step, not twice.
        return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, True, bn.momentum, bn.eps)

    def _recomputable(self, features: list[Tensor], update_stats: bool) -> Tensor:
        """Concatenation, BN, ReLU, first convolution (+ dropout, and for BC the second BN-ReLU).

        In memory-efficient mode this is what the backward pass recomputes: only its output (bn_size·k
        channels for BC, k otherwise) is kept per layer, not the concatenation of all earlier features.
        """
        x = self.conv1(self.relu1(self._norm(self.norm1, torch.cat(features, 1), update_stats)))
        x = _dropout(x, self.drop_rate, self.training)
        if self.bottleneck:
            x = self.relu2(self._norm(self.norm2, x, update_stats))
        return x

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and self.training and any(f.requires_grad for f in features):
            calls = [0]

            def recomputable(*feats: Tensor) -> Tensor:
                calls[0] += 1
                return self._recomputable(list(feats), update_stats=calls[0] == 1)

            x = cp.checkpoint(recomputable, *features, use_reentrant=False)
        else:
            x = self._recomputable(features, update_stats=True)
        if self.bottleneck:
            x = _dropout(self.conv2(x), self.drop_rate, self.training)
        return x


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_features: int, cfg: DenseNetConfig, memory_efficient: bool) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_features + i * cfg.growth_rate, cfg, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1(floor(theta·c))-[Dropout]-AvgPool2.

    In memory-efficient mode BN-ReLU-Conv is recomputed in the backward pass, so the BN output of the whole
    concatenated block (the widest tensor of the network) is not kept.
    """

    def __init__(self, in_features: int, out_features: int, cfg: DenseNetConfig, memory_efficient: bool) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_features))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(in_features, out_features, 1, bias=cfg.conv_bias))
        if cfg.drop_rate > 0:
            self.add_module("drop", nn.Dropout(cfg.drop_rate))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))
        self.memory_efficient = memory_efficient

    def _recomputable(self, x: Tensor, update_stats: bool) -> Tensor:
        x = self.conv(self.relu(_DenseLayer._norm(self.norm, x, update_stats)))
        return self.drop(x) if hasattr(self, "drop") else x

    def forward(self, x: Tensor) -> Tensor:
        if self.memory_efficient and self.training and x.requires_grad:
            calls = [0]

            def recomputable(t: Tensor) -> Tensor:
                calls[0] += 1
                return self._recomputable(t, update_stats=calls[0] == 1)

            x = cp.checkpoint(recomputable, x, use_reentrant=False)
        else:
            x = self._recomputable(x, update_stats=True)
        return self.pool(x)


class BlurPool(nn.Module):
    """timm's ``BlurPool2d`` (filter size 3, stride 2, reflect padding): a fixed per-channel binomial blur.

    The filter is a non-persistent buffer, as in timm, so it is not part of the state dict.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4.0
        self.register_buffer("filt", (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, [1, 1, 1, 1], mode="reflect"), self.filt, stride=2, groups=self.filt.shape[0])


def _stem(cfg: DenseNetConfig) -> list[tuple[str, nn.Module]]:
    """The stem's modules under torchvision's names (timm's for the deep stem)."""
    bias, c = cfg.conv_bias, cfg.init_features
    if cfg.stem == "cifar":
        return [("conv0", nn.Conv2d(3, c, 3, padding=1, bias=bias))]
    if cfg.blur_pool:
        pool: nn.Module = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BlurPool(c))
    else:
        pool = nn.MaxPool2d(3, stride=2, padding=1)
    if cfg.stem == "imagenet":
        return [("conv0", nn.Conv2d(3, c, 7, stride=2, padding=3, bias=bias)), ("norm0", nn.BatchNorm2d(c)),
                ("relu0", nn.ReLU(inplace=True)), ("pool0", pool)]
    w = cfg.stem_width
    convs = [(3, w, 2), (w, w, 1), (w, c, 1)]
    out: list[tuple[str, nn.Module]] = []
    for i, (c_in, c_out, stride) in enumerate(convs):
        out += [(f"conv{i}", nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)),
                (f"norm{i}", nn.BatchNorm2d(c_out)), (f"relu{i}", nn.ReLU(inplace=True))]
    return [*out, ("pool0", pool)]


class DenseNet(nn.Module):
    """A DenseNet built from a :class:`DenseNetConfig`.

    ``memory_efficient`` recomputes each layer's concatenation, BN, ReLU and first convolution (and for BC
    the second BN-ReLU), and each transition's BN-ReLU-Conv, in the backward pass, so activation memory grows linearly with depth; outputs and
    gradients are unchanged.
    ``meta`` is filled by loaders with where the weights came from (an ``ArtifactMeta``), else None.
    """

    def __init__(self, config: DenseNetConfig, *, memory_efficient: bool = False) -> None:
        super().__init__()
        self.config = config
        self.meta = None
        cfg = config
        self.features = nn.Sequential(OrderedDict(_stem(cfg)))
        channels = cfg.channels()
        for i, (n, (c_in, c_out)) in enumerate(zip(cfg.block_config, channels, strict=False)):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, c_in, cfg, memory_efficient))
            if i != len(cfg.block_config) - 1:
                transition = _Transition(c_out, channels[i + 1][0], cfg, memory_efficient)
                self.features.add_module(f"transition{i + 1}", transition)
        # torchvision names the last BN norm5 whatever the number of blocks; so does dnet.
        self.features.add_module("norm5", nn.BatchNorm2d(cfg.num_features))
        self.classifier = nn.Linear(cfg.num_features, cfg.num_classes)
        self.reset_parameters()

    @property
    def memory_efficient(self) -> bool:
        return any(m.memory_efficient for m in self.modules() if isinstance(m, _DenseLayer | _Transition))

    def set_memory_efficient(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, _DenseLayer | _Transition):
                m.memory_efficient = on

    def reset_parameters(self) -> None:
        """The Lua initialisation: conv N(0, sqrt(2 / (kW·kH·nOutputPlane))), BN γ=1 β=0, linear bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (kh * kw * m.out_channels)))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def stages(self) -> list[str]:
        """Names of the dense blocks and transitions, in order (per-stage comparison uses them)."""
        return [n for n, _ in self.features.named_children() if n.startswith(("denseblock", "transition"))]

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = F.relu(x, inplace=True)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))


def measure_bn_statistics(model: nn.Module, batch: Tensor) -> nn.Module:
    """Set BN running statistics to those of ``batch`` (one train-mode pass, momentum 1), as a trained model
    has; random-weight models for tests and benchmarks use it to keep activations normalised. Eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(batch)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()


__all__ = ["INPUT_SIZE", "POOLED_STEMS", "STEMS", "DenseNet", "DenseNetConfig", "measure_bn_statistics"]
