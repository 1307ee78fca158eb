"""Architecture summary from the configuration alone: channels per block, parameters and multiply-adds.

Everything is counted analytically (no model is built, no tensor allocated, torch is not imported), so ``dnet models``
lists the zoo in well under a second and ``dnet info NAME --input-size 100000`` costs nothing.
``tests/models/test_summary.py`` checks every count against a built model's, for every zoo entry.

Multiply-adds are counted as thop counts them for timm's tables: a convolution ``out elements × in channels × kh × kw``,
the classifier ``in × out``, a BatchNorm two per element (scale and shift), a 2×2 average pool five per output element
(four adds and a divide); ReLU, max-pool and the global average are free.

timm's blur pooling (``blur_pool``) is a fixed 3×3 binomial filter, not a parameter: it adds nothing to ``params``.
Its arithmetic is counted like a pooling's, in ``macs`` and not in ``conv_macs`` (which holds the learned
convolutions and the classifier): nine multiply-adds per output element, per channel (a depthwise 3×3, stride 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnet.core.errors import ConfigError
from dnet.models.config import POOLED_STEMS, DenseNetConfig


@dataclass(frozen=True)
class Summary:
    params: int
    macs: int  # all layers, counted as thop does for timm's tables: conv + linear + BN (2/element) + pooling + blur
    conv_macs: int  # learned convolutions and the classifier only
    input_size: int
    blocks: list[dict]  # per dense block: layers, in/out channels, spatial size


def count_params(model: Any) -> int:
    """Parameters of a built model (anything with ``.parameters()``); :func:`param_count` needs no model."""
    return sum(p.numel() for p in model.parameters())


def _config(model_or_config) -> DenseNetConfig:
    return model_or_config if isinstance(model_or_config, DenseNetConfig) else model_or_config.config


class _Counter:
    """Walks the network in order, adding each layer's parameters and multiply-adds."""

    def __init__(self, cfg: DenseNetConfig, size: int) -> None:
        self.cfg, self.size = cfg, size
        self.params = self.conv_macs = self.other_macs = 0

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        self.size = (self.size + 2 * padding - kernel) // stride + 1
        self._check_size()
        self.params += c_in * c_out * kernel * kernel + (c_out if self.cfg.conv_bias else 0)
        self.conv_macs += self.size * self.size * c_out * c_in * kernel * kernel

    def bn(self, c: int) -> None:
        self.params += 2 * c
        self.other_macs += 2 * c * self.size * self.size

    def pool(self, c: int, kernel: int, stride: int, padding: int = 0, *, average: bool) -> None:
        self.size = (self.size + 2 * padding - kernel) // stride + 1
        self._check_size()
        if average:
            self.other_macs += c * self.size * self.size * (kernel * kernel + 1)

    def blur(self, c: int) -> None:
        """timm's BlurPool2d: reflect padding 1 (needs at least 2×2), a fixed 3×3 filter per channel, stride 2."""
        self._check_size(minimum=2)  # reflect padding of 1 needs two rows and two columns
        self.size = (self.size + 2 - 3) // 2 + 1
        self.other_macs += c * self.size * self.size * 9

    def _check_size(self, minimum: int = 1) -> None:
        if self.size < minimum:
            raise ConfigError("input_size: too small for this network (a feature map would shrink below 1×1)",
                              option="input_size")


def param_count(model_or_config) -> int:
    """The exact parameter count of a DenseNet of this configuration (no model is built)."""
    cfg = _config(model_or_config)
    return summarize(cfg, max(cfg.input_size, 2 ** (len(cfg.block_config) + 2))).params


def summarize(model_or_config, input_size: int) -> Summary:
    """Parameters and multiply-adds of a DenseNet (a configuration, or a model's ``.config``) at ``input_size``."""
    cfg = _config(model_or_config)
    if input_size < 1:
        raise ConfigError(f"input_size: must be a positive integer, got {input_size}", option="input_size")
    n = _Counter(cfg, input_size)
    c0 = cfg.init_features
    if cfg.stem == "imagenet":  # conv 7×7/2, BN, ReLU
        n.conv(3, c0, 7, stride=2, padding=3)
        n.bn(c0)
    elif cfg.stem == "deep":  # timm: conv 3×3/2 to stem_width, conv 3×3 to stem_width, conv 3×3 to c0, each BN-ReLU
        w = cfg.stem_width
        for c_in, c_out, stride in ((3, w, 2), (w, w, 1), (w, c0, 1)):
            n.conv(c_in, c_out, 3, stride=stride, padding=1)
            n.bn(c_out)
    elif cfg.stem == "cifar":  # conv 3×3
        n.conv(3, c0, 3, padding=1)
    else:
        raise ConfigError(f"stem: no analytic count for stem {cfg.stem!r}; add it to dnet.models.summary")
    if cfg.stem in POOLED_STEMS:
        if cfg.blur_pool:  # max-pool 3×3/1, then the blur with stride 2
            n.pool(c0, 3, 1, 1, average=False)
            n.blur(c0)
        else:  # max-pool 3×3/2
            n.pool(c0, 3, 2, 1, average=False)
    channels, blocks = cfg.channels(), []
    k, width = cfg.growth_rate, cfg.bn_size * cfg.growth_rate
    for i, (layers, (c_in, c_out)) in enumerate(zip(cfg.block_config, channels, strict=True)):
        for j in range(layers):
            c = c_in + j * k
            n.bn(c)
            if cfg.bottleneck:  # BN-ReLU-conv1×1(bn_size·k)-BN-ReLU-conv3×3(k)
                n.conv(c, width, 1)
                n.bn(width)
                n.conv(width, k, 3, padding=1)
            else:
                n.conv(c, k, 3, padding=1)
        blocks.append({"block": i + 1, "layers": layers, "in_channels": c_in, "out_channels": c_out,
                       "spatial": n.size})
        if i != len(cfg.block_config) - 1:  # transition: BN-ReLU-conv1×1(⌊θ·c⌋)-avg-pool 2×2/2
            n.bn(c_out)
            n.conv(c_out, channels[i + 1][0], 1)
            n.pool(channels[i + 1][0], 2, 2, average=True)
    features = cfg.num_features
    n.bn(features)  # norm5; then ReLU and the global average (free)
    n.params += features * cfg.num_classes + cfg.num_classes
    n.conv_macs += features * cfg.num_classes
    return Summary(n.params, n.conv_macs + n.other_macs, n.conv_macs, input_size, blocks)


__all__ = ["Summary", "count_params", "param_count", "summarize"]
