"""Published numbers: each error rate with what exactly it measures and where it is printed, and the comparison
of a measured error with its published counterpart.

A :class:`Published` number carries its data set, metric (top-1/top-5), crops (1 or 10), the preprocessing it
was measured with (ImageNet), whether the model was trained with augmentation (CIFAR's "+"), and the key of its
source in ``SOURCES``. A :class:`Comparison` puts a measured figure beside the number of the same kind (found by
``dnet.models.zoo.ZooEntry.published_for``), so ten-crop is compared with ten-crop and top-5 with top-5, and says
which source it is.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES: dict[str, str] = {
    "CVPR17-T1": "Huang et al., Densely Connected Convolutional Networks, CVPR 2017, Table 1 (ImageNet architectures)",
    "CVPR17-T2": "Huang et al., Densely Connected Convolutional Networks, CVPR 2017, Table 2 (CIFAR and SVHN error)",
    "CVPR17-T3": "Huang et al., Densely Connected Convolutional Networks, CVPR 2017, Table 3 (ImageNet validation "
                 "error, single-crop / 10-crop, top-1 / top-5)",
    "REPO-WIDE": "liuzhuang13/DenseNet README, Wide-DenseNet-BC table",
    "REPO-IN": "liuzhuang13/DenseNet README, ImageNet 'Models in the original paper' (Lua Torch models, "
               "224x224 1-crop top-1 error)",
    "REPO-TR": "liuzhuang13/DenseNet README, ImageNet 'Models in the tech report' (Lua Torch models, top-1 error)",
    "MEM-ABS": "Pleiss et al., Memory-Efficient Implementation of DenseNets, arXiv 1707.06990, abstract "
               "(a 264-layer DenseNet with 73M parameters, single-crop top-1 error)",
    "T7-DEFS": "mingminzhen/densenet-efficient-model README: model definitions generated from the released .t7 files",
    "TIMM": "huggingface/pytorch-image-models, timm/models/densenet.py (timm 1.0): the deep-stem DenseNets",
    "TIMM-RES": "huggingface/pytorch-image-models, results/results-imagenet.csv (timm's pipeline: Pillow bicubic, "
                "crop 0.875)",
    "TV": "torchvision model documentation (ImageNet-1K acc@1 / acc@5 and parameter counts of the ports of the Lua "
          "models; Resize 256 bilinear, CenterCrop 224)",
}

METRICS = ("top1", "top5")
_CIFAR_COLUMNS = {"cifar10": "C10", "cifar100": "C100", "svhn": "SVHN"}


def kind_of(dataset: str, metric: str, crops: int, preprocess: str | None, augmented: bool | None) -> str:
    """A measurement's kind in the tables' words: 'C10+ top-1' (CIFAR, + = augmented), 'SVHN top-5',
    '1-crop top-1, torch7' (ImageNet and other image folders: crops and preprocessing)."""
    name = "top-1" if metric == "top1" else "top-5"
    if dataset in _CIFAR_COLUMNS and crops == 1:
        plus = "+" if augmented and dataset != "svhn" else ""
        return f"{_CIFAR_COLUMNS[dataset]}{plus} {name}"
    where = "" if dataset == "imagenet" else f" on {dataset}"
    return f"{crops}-crop {name}, {preprocess}{where}"


@dataclass(frozen=True)
class Published:
    """One published error rate (%), what exactly it measures, and its source (a key of ``SOURCES``)."""

    error: float
    dataset: str  # "cifar10", "cifar100", "svhn" or "imagenet"
    source: str
    metric: str = "top1"  # "top1" or "top5"
    crops: int = 1  # 1: single (centre) crop; 10: fb.resnet.torch's ten-crop
    preprocess: str | None = None  # ImageNet: the evaluation pipeline ("torch7", "torchvision"); else None
    augmented: bool | None = None  # CIFAR: trained with standard augmentation ("+"); None: the table has one kind

    def __post_init__(self) -> None:
        if self.source not in SOURCES or self.metric not in METRICS or self.crops not in (1, 10):
            raise ValueError(f"bad published number {self!r}")

    @property
    def citation(self) -> str:
        return SOURCES[self.source]

    @property
    def kind(self) -> str:
        """What the number measures: 'C10+ top-1', '10-crop top-5, torch7' (see :func:`kind_of`)."""
        return kind_of(self.dataset, self.metric, self.crops, self.preprocess, self.augmented)

    def matches(self, dataset: str, *, metric: str = "top1", crops: int = 1, preprocess: str | None = None,
                augmented: bool = True) -> bool:
        """Whether this number is the counterpart of a measurement of that kind."""
        if (self.dataset, self.metric, self.crops) != (dataset, metric, crops):
            return False
        if self.preprocess is not None and self.preprocess != preprocess:
            return False
        return self.augmented is None or self.augmented == augmented

    def to_dict(self) -> dict:
        return {"error": self.error, "dataset": self.dataset, "metric": self.metric, "crops": self.crops,
                "preprocess": self.preprocess, "augmented": self.augmented, "kind": self.kind,
                "source": self.source, "citation": self.citation}


@dataclass(frozen=True)
class Comparison:
    """One measured error beside its published counterpart: the same data set, metric, crops and preprocessing."""

    metric: str  # "top1" or "top5"
    kind: str  # what was measured, in the tables' words: "10-crop top-1, torch7", "C10+ top-1"
    measured: float  # %
    published: float | None = None  # the number published with the released model when sources differ
    source: str | None = None  # its key in dnet.models.zoo.SOURCES
    citation: str | None = None
    others: tuple[tuple[float, str], ...] = ()  # (error, source key) of the same kind from other sources

    @classmethod
    def of(cls, metric: str, kind: str, measured: float, found: tuple[Published, ...]) -> Comparison:
        """``measured`` beside ``found``, the published numbers of its kind in order of preference (the released
        model's own first; see ``dnet.models.zoo.ZooEntry.published_for``)."""
        if not found:
            return cls(metric, kind, measured)
        first, rest = found[0], found[1:]
        return cls(metric, kind, measured, first.error, first.source, first.citation,
                   tuple((p.error, p.source) for p in rest))

    @property
    def delta(self) -> float | None:
        """measured − published, in points."""
        return None if self.published is None else round(self.measured - self.published, 6)

    @property
    def label(self) -> str:
        return "top-1" if self.metric == "top1" else "top-5"

    def to_dict(self) -> dict:
        return {"metric": self.metric, "kind": self.kind, "measured": self.measured, "published": self.published,
                "delta": self.delta, "source": self.source, "citation": self.citation,
                "others": [{"error": e, "source": key} for e, key in self.others]}

    def source_line(self) -> str:
        """'top-1 (1-crop top-1, torch7) compared with 25.0 from [REPO-IN] ...' or '... : no published number'."""
        if self.published is None:
            return f"{self.label} ({self.kind}): no published number"
        line = f"{self.label} ({self.kind}) compared with {self.published:g} from [{self.source}] {self.citation}"
        if self.others:
            line += "; also published: " + ", ".join(f"{e:g} [{key}]" for e, key in self.others)
        return line


__all__ = ["METRICS", "SOURCES", "Comparison", "Published", "kind_of"]
