"""The training recipe: one frozen dataclass, one field per ``dnet train`` option, defaults per data set.

Defaults follow the DenseNet repository (``opts.lua``, ``train.lua``) and the paper (Sec. 4.2): SGD with
Nesterov momentum 0.9, dampening 0, weight decay 1e-4 on every parameter (the Lua ``optim.sgd`` decays the
flat parameter vector, BN and biases included), initial lr 0.1; CIFAR/SVHN batch 64, lr ÷10 at 50% and 75%
of the epochs, 300 (CIFAR) / 40 (SVHN) epochs; ImageNet batch 256, 90 epochs, ÷10 every 30. SVHN (Sec. 4.1, no
Lua loader exists): train + extra less 6,000 held-out images, pixels ÷ 255, no augmentation (so dropout 0.2),
and the model with the lowest validation error kept as best.pth (``dnet.data.svhn``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dnet.core.errors import ConfigError, UsageError
from dnet.data.datasets import TRAINABLE
from dnet.models import zoo
from dnet.models.config import from_fields
from dnet.models.densenet import DenseNetConfig

SCHEDULES = ("multistep", "step30", "cosine")

# Per data set: batch, epochs, lr schedule. Digits is dnet's built-in demo set (8×8 images, 1,437 training
# images), not a paper data set: its epochs and default model are dnet's choice for a CPU demo.
_DEFAULTS = {
    "cifar10": dict(batch=64, epochs=300, lr_schedule="multistep"),
    "cifar100": dict(batch=64, epochs=300, lr_schedule="multistep"),
    "svhn": dict(batch=64, epochs=40, lr_schedule="multistep", augment=False),  # paper: SVHN without augmentation
    "imagenet": dict(batch=256, epochs=90, lr_schedule="step30"),
    "digits": dict(batch=64, epochs=30, lr_schedule="multistep"),
}
# The model trained when neither --model nor model fields are given.
_DEFAULT_MODEL = {
    "cifar10": dict(model="densenet-bc-l100-k12"),
    "cifar100": dict(model="densenet-bc-l100-k12"),
    "svhn": dict(model="densenet-bc-l100-k12"),
    "imagenet": dict(model="densenet121"),
    "digits": dict(model="custom", depth=22, growth_rate=12, bc=True),
}
MODEL_FIELDS = ("depth", "growth_rate", "bc", "init_features", "compression")

# Fields a resumed run may change: where things are and how fast they run, never what is computed.
RESUMABLE = frozenset({"epochs", "data", "out", "workers", "threads", "quiet", "download", "memory_efficient", "channels_last"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. ``model`` is a zoo name, or "custom" with the fields below."""

    dataset: str = "cifar10"
    data: str | None = None  # data folder; None for digits (built in)
    model: str = "densenet-bc-l100-k12"  # zoo name, or "custom": built from depth/growth_rate/bc/...
    depth: int | None = None  # custom CIFAR-style model: L = 6n+4 (BC) or 3n+4
    growth_rate: int | None = None
    bc: bool | None = None
    init_features: int | None = None
    compression: float | None = None
    num_classes: int | None = None  # None: the data set's class count
    drop_rate: float | None = None  # None: 0.2 without augmentation, else 0 (the paper's rule)
    epochs: int = 300
    batch: int = 64  # per process; the global batch is batch × world size
    lr: float = 0.1
    lr_schedule: str = "multistep"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    decay_bn_bias: bool = True  # the Lua code decays every parameter; False excludes BN weights and biases
    augment: bool = True
    memory_efficient: bool = False
    amp: bool = False
    channels_last: bool = False
    sync_bn: bool = False
    workers: int = 0
    threads: int | None = None  # CPU threads for torch (None: torch's default); 1 is fastest for tiny inputs
    seed: int = 0
    download: bool = False
    out: str | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in TRAINABLE:
            raise UsageError(f"unknown data set {self.dataset!r}; choose from {', '.join(TRAINABLE)}", option="dataset")
        if self.lr_schedule not in SCHEDULES:
            raise UsageError(f"unknown lr schedule {self.lr_schedule!r}; choose from {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.workers < 0:
            raise UsageError(f"--workers must be 0 or more, got {self.workers}")

    @property
    def effective_drop_rate(self) -> float:
        """The paper's rule: dropout 0.2 when training without data augmentation, none with it."""
        if self.drop_rate is not None:
            return float(self.drop_rate)
        return 0.0 if self.augment else 0.2

    def model_config(self, num_classes: int) -> DenseNetConfig:
        """The network to train, with the data set's class count and the dropout rule applied."""
        if self.num_classes is not None and self.num_classes != num_classes:
            raise ConfigError(
                f"the model would have {self.num_classes} classes but data set {self.dataset} has {num_classes}; "
                f"drop --num-classes (the class count is taken from the data set)"
            )
        given = {k: getattr(self, k) for k in MODEL_FIELDS if getattr(self, k) is not None}
        if self.model != "custom":
            if given:
                raise UsageError(f"give a zoo model (--model {self.model}) or model fields "
                                 f"({', '.join('--' + k.replace('_', '-') for k in given)}), not both")
            base = zoo.get(self.model).config
            return dataclasses.replace(base, num_classes=num_classes, drop_rate=self.effective_drop_rate)
        if self.depth is None:
            raise UsageError("a custom model needs --depth (and optionally --growth-rate, --bc, --init-features)")
        bc = True if self.bc is None else self.bc
        extra = {k: v for k, v in (("init_features", self.init_features), ("compression", self.compression))
                 if v is not None}
        return DenseNetConfig.from_depth(self.depth, self.growth_rate or 12, bottleneck=bc, stem="cifar",
                                         num_classes=num_classes, drop_rate=self.effective_drop_rate, **extra)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return from_fields(cls, d, "training configuration")

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields (outside ``RESUMABLE``) where ``other`` would train differently: 'name: a -> b'."""
        out = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name not in RESUMABLE and a != b:
                out.append(f"{f.name}: {a!r} -> {b!r}")
        return out


def recipe(dataset: str, **overrides) -> TrainConfig:
    """The paper's recipe for ``dataset`` with the given fields replaced (None values are ignored)."""
    if dataset not in TRAINABLE:
        raise UsageError(f"unknown data set {dataset!r}; choose from {', '.join(TRAINABLE)}", option="dataset")
    fields = dict(_DEFAULTS[dataset])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if any(k in overrides for k in MODEL_FIELDS):
        overrides.setdefault("model", "custom")
    elif "model" not in overrides:
        fields.update(_DEFAULT_MODEL[dataset])
    fields.update(overrides)
    return TrainConfig(dataset=dataset, **fields)
