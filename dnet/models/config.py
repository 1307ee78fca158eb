"""What a DenseNet is, as data: :class:`DenseNetConfig`, without PyTorch.

The zoo, ``dnet models`` and ``dnet info`` read configurations (and count parameters and multiply-adds from them,
``dnet.models.summary``) without importing torch; ``dnet.models.densenet`` builds the network from one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from dnet.core.errors import ConfigError

STEMS = ("cifar", "imagenet", "deep")
# The input each stem was designed for: CIFAR/SVHN 32×32 images; ImageNet 224×224 crops (the paper, Sec. 4.1).
INPUT_SIZE = {"cifar": 32, "imagenet": 224, "deep": 224}
POOLED_STEMS = ("imagenet", "deep")  # the stems that end in a stride-2 pooling


@dataclass(frozen=True)
class DenseNetConfig:
    """Every field of a DenseNet; the defaults are the paper's DenseNet-BC on CIFAR."""

    block_config: tuple[int, ...] = (16, 16, 16)  # dense layers per block
    growth_rate: int = 12  # k
    bottleneck: bool = True  # BC: BN-ReLU-Conv1x1(bn_size*k) before the 3x3
    compression: float = 0.5  # theta: a transition keeps floor(theta * c) channels
    init_features: int = 24  # output channels of the first convolution
    stem: str = "cifar"  # "cifar": 3x3 conv; "imagenet": 7x7/2 conv, BN, ReLU, 3x3/2 max-pool; "deep": see below
    num_classes: int = 10
    drop_rate: float = 0.0
    bn_size: int = 4  # bottleneck width in multiples of k
    conv_bias: bool = False  # some Lua checkpoints (nn backend) have convolution biases
    # timm's "deep" stem: 3x3/2 conv to stem_width, 3x3 conv to stem_width, 3x3 conv to init_features, each followed
    # by BN-ReLU, then the 3x3/2 max-pool. None means timm's choice, the growth rate (set when the config is made).
    stem_width: int | None = None
    # timm's anti-aliased stem (BlurPool2d, aa_stem_only): 3x3/1 max-pool, then a 3x3 binomial blur [1 2 1]²/16
    # with stride 2 on reflect-padded input, per channel.
    blur_pool: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_config", tuple(int(n) for n in self.block_config))
        if self.stem == "deep" and self.stem_width is None:
            object.__setattr__(self, "stem_width", self.growth_rate)
        self.validate()

    def validate(self) -> None:
        if not self.block_config:
            raise ConfigError("block_config: at least one dense block is needed")
        if any(n <= 0 for n in self.block_config):
            raise ConfigError(f"block_config: every block needs at least one layer, got {self.block_config}")
        if self.growth_rate <= 0:
            raise ConfigError(f"growth_rate: must be a positive integer, got {self.growth_rate}")
        if not 0.0 < self.compression <= 1.0:
            raise ConfigError(f"compression: theta must lie in (0, 1], got {self.compression}")
        if self.init_features <= 0:
            raise ConfigError(f"init_features: must be a positive integer, got {self.init_features}")
        if self.stem not in STEMS:
            raise ConfigError(f"stem: must be one of {', '.join(STEMS)}, got {self.stem!r}")
        if self.num_classes <= 0:
            raise ConfigError(f"num_classes: must be a positive integer, got {self.num_classes}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"drop_rate: must lie in [0, 1), got {self.drop_rate}")
        if self.bn_size <= 0:
            raise ConfigError(f"bn_size: must be a positive integer, got {self.bn_size}")
        if self.stem != "deep" and self.stem_width is not None:
            raise ConfigError(f"stem_width: only the deep stem has a width of its own, not the {self.stem} stem")
        if self.stem == "deep" and self.stem_width <= 0:
            raise ConfigError(f"stem_width: must be a positive integer, got {self.stem_width}")
        if self.blur_pool and self.stem not in POOLED_STEMS:
            raise ConfigError(f"blur_pool: the {self.stem} stem has no pooling to blur (only the imagenet and deep stems)")
        for i, (_, c_out) in enumerate(self.channels()[:-1]):  # a θ so small that a transition keeps nothing
            if math.floor(c_out * self.compression) < 1:
                raise ConfigError(f"compression: theta {self.compression} leaves transition {i + 1} no channels "
                                  f"(⌊{c_out}·θ⌋ = 0)")

    @classmethod
    def from_depth(cls, depth: int, growth_rate: int, *, bottleneck: bool, **fields) -> DenseNetConfig:
        """The paper's CIFAR rule: L = 3·n + 4 (DenseNet) or 6·n + 4 (DenseNet-BC), three equal blocks."""
        per_layer = 6 if bottleneck else 3
        if depth < 4 + per_layer or (depth - 4) % per_layer:
            kind = "DenseNet-BC" if bottleneck else "DenseNet"
            raise ConfigError(
                f"depth: {kind} needs depth = {per_layer}·n + 4 with n ≥ 1 (e.g. {per_layer * 6 + 4}), got {depth}"
            )
        n = (depth - 4) // per_layer
        fields.setdefault("compression", 0.5 if bottleneck else 1.0)
        fields.setdefault("init_features", 2 * growth_rate if bottleneck else 16)
        return cls(block_config=(n, n, n), growth_rate=growth_rate, bottleneck=bottleneck, **fields)

    @property
    def depth(self) -> int:
        """Layers with weights: convolutions and the classifier, counted as the paper counts them."""
        per_layer = 2 if self.bottleneck else 1
        stem = 3 if self.stem == "deep" else 1
        return sum(self.block_config) * per_layer + len(self.block_config) - 1 + stem + 1

    def channels(self) -> list[tuple[int, int]]:
        """(input channels, output channels) of every dense block, in order."""
        out, c = [], self.init_features
        for i, n in enumerate(self.block_config):
            c_out = c + n * self.growth_rate
            out.append((c, c_out))
            c = c_out if i == len(self.block_config) - 1 else math.floor(c_out * self.compression)
        return out

    @property
    def input_size(self) -> int:
        """The input height and width this configuration's stem was designed for."""
        return INPUT_SIZE[self.stem]

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.channels()[-1][1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["block_config"] = list(self.block_config)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DenseNetConfig:
        return from_fields(cls, d, "configuration")


def from_fields(cls, d: dict, what: str):
    """``cls(**d)`` for a dataclass, refusing keys it has no field for (a misspelt key in a saved configuration
    must not be dropped silently): 'unknown {what} fields: a, b'."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {what} fields: {', '.join(unknown)}")
    return cls(**d)


__all__ = ["INPUT_SIZE", "POOLED_STEMS", "STEMS", "DenseNetConfig", "from_fields"]
