"""The model zoo: every configuration the paper and the original repository name, with published numbers.

Sources (collected in shared/design/PAPER.md):
- [CVPR17-T2] Huang et al., CVPR 2017, Table 2 (CIFAR/SVHN error, %, params).
- [REPO-WIDE] liuzhuang13/DenseNet README, Wide-DenseNet-BC table.
- [REPO-IN] liuzhuang13/DenseNet README, ImageNet table (original Lua Torch models, single centre crop).
- [TV] torchvision model docs, acc@1 / acc@5 of the ports of the Lua models (bilinear resize).
- [MEM] "Memory-Efficient Implementation of DenseNets", arXiv 1707.06990, ImageNet results.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from dnet import __version__
from dnet.artifact.meta import ArtifactMeta
from dnet.data.specs import PreprocessSpec, get_spec
from dnet.errors import UnknownModelError
from dnet.files import sha256_file
from dnet.models.densenet import DenseNetConfig

# Published error keys: dataset (+ "+" for standard augmentation) and, for ImageNet, the preprocessing
# the number was measured with ("imagenet/torch7" = fb.resnet.torch bicubic, "imagenet/torchvision").
CIFAR_KEYS = ("c10", "c10+", "c100", "c100+", "svhn")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    config: DenseNetConfig
    dataset: str  # "cifar" (CIFAR-10/100 and SVHN rows) or "imagenet"
    published_params: str  # as printed in the source, e.g. "0.8M" or "7,978,856"
    errors: dict[str, float] = field(default_factory=dict)  # key -> top-1 error in %
    top5_errors: dict[str, float] = field(default_factory=dict)
    source: str = ""
    note: str = ""  # what is uncertain about this entry, if anything

    @property
    def preprocess(self) -> str:
        """The preprocessing this model was trained and published with (timm's pretrained_cfg does the same)."""
        return expects(self.config)[0]

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def family(self) -> str:
        if self.name.startswith("wide-"):
            return "Wide-DenseNet-BC"
        return "DenseNet-BC" if self.config.bottleneck else "DenseNet"

    @property
    def weights(self) -> dict[str, WeightsFile]:
        """The published files of trained weights for this model, by source (none for the CIFAR models)."""
        return WEIGHTS.get(self.name, {})

    def published_error(self, dataset: str, preprocess: str | None = None, augmented: bool = True) -> float | None:
        """The published top-1 error for an evaluation, or None when the source gives none."""
        if self.dataset == "imagenet":
            return self.errors.get(f"imagenet/{preprocess or 'torch7'}")
        key = {"cifar10": "c10", "cifar100": "c100", "svhn": "svhn"}.get(dataset)
        if key is None:
            return None
        if key != "svhn" and augmented:
            key += "+"
        return self.errors.get(key)


def _cifar(name, depth, k, bc, params, errors, *, source="[CVPR17-T2]", note="", **fields) -> ZooEntry:
    cfg = DenseNetConfig.from_depth(depth, k, bottleneck=bc, stem="cifar", num_classes=10, **fields)
    keys = dict(zip(CIFAR_KEYS, errors, strict=False))
    return ZooEntry(name, cfg, "cifar", params, {k: v for k, v in keys.items() if v is not None}, {}, source, note)


def _imagenet(name, blocks, k, init, params, top1, *, tv=None, source="[REPO-IN]", note="") -> ZooEntry:
    cfg = DenseNetConfig(
        block_config=blocks, growth_rate=k, bottleneck=True, compression=0.5, init_features=init,
        stem="imagenet", num_classes=1000,
    )
    errors = {"imagenet/torch7": top1}
    top5 = {}
    if tv is not None:  # torchvision acc@1 / acc@5 -> error
        errors["imagenet/torchvision"] = round(100.0 - tv[0], 3)
        top5["imagenet/torchvision"] = round(100.0 - tv[1], 3)
        source += " [TV]"
    return ZooEntry(name, cfg, "imagenet", params, errors, top5, source, note)


_ENTRIES = [
    # CIFAR/SVHN, [CVPR17-T2]: errors C10, C10+, C100, C100+, SVHN. Basic DenseNet: 16 initial channels.
    _cifar("densenet-l40-k12", 40, 12, False, "1.0M", (7.00, 5.24, 27.55, 24.42, 1.79)),
    _cifar("densenet-l100-k12", 100, 12, False, "7.0M", (5.77, 4.10, 23.79, 20.20, 1.67)),
    _cifar("densenet-l100-k24", 100, 24, False, "27.2M", (5.83, 3.74, 23.42, 19.25, 1.59)),
    _cifar("densenet-bc-l100-k12", 100, 12, True, "0.8M", (5.92, 4.51, 24.15, 22.27, 1.76)),
    _cifar("densenet-bc-l250-k24", 250, 24, True, "15.3M", (5.19, 3.62, 19.64, 17.60, 1.74)),
    _cifar("densenet-bc-l190-k40", 190, 40, True, "25.6M", (None, 3.46, None, 17.18, None)),
    # [REPO-WIDE]: C10+ and C100+ only.
    _cifar("wide-densenet-bc-l40-k36", 40, 36, True, "1.5M", (None, 4.58, None, 22.30, None), source="[REPO-WIDE]"),
    _cifar("wide-densenet-bc-l40-k48", 40, 48, True, "2.7M", (None, 3.99, None, 20.29, None), source="[REPO-WIDE]"),
    _cifar("wide-densenet-bc-l40-k60", 40, 60, True, "4.3M", (None, 4.01, None, 19.99, None), source="[REPO-WIDE]"),
    # ImageNet, [REPO-IN] top-1 error of the Lua models; [TV] acc@1/acc@5 of the same weights in PyTorch.
    _imagenet("densenet121", (6, 12, 24, 16), 32, 64, "7,978,856", 25.0, tv=(74.434, 91.972)),
    _imagenet("densenet169", (6, 12, 32, 32), 32, 64, "14,149,480", 23.6, tv=(75.600, 92.806)),
    _imagenet("densenet201", (6, 12, 48, 32), 32, 64, "20,013,928", 22.5, tv=(76.896, 93.370)),
    _imagenet("densenet161", (6, 12, 36, 24), 48, 96, "28,681,000", 22.2, tv=(77.138, 93.560)),
    # [MEM] technical-report models, trained with the memory-efficient implementation.
    _imagenet("densenet264", (6, 12, 64, 48), 32, 64, "-", 22.1, source="[MEM]",
              note="blocks 6-12-64-48 (timm agrees; counted as 121 is, that is 265 weighted layers); "
                   "parameter count not published"),
    _imagenet("densenet232", (6, 32, 48, 48), 48, 96, "-", 21.2, source="[MEM]",
              note="blocks 6-32-48-48 and 96 initial channels are not confirmed by a primary source "
                   "(taken from one third-party port; it has 273 weighted layers, and no block list gives exactly 232); "
                   "parameter count not published"),
    _imagenet("densenet-cosine264-k32", (6, 12, 64, 48), 32, 64, "-", 21.6, source="[MEM]",
              note="cosine learning rate 0.5·lr0·(1+cos(π·t/T)) per iteration; blocks as DenseNet-264"),
    _imagenet("densenet-cosine264-k48", (6, 12, 64, 48), 48, 96, "-", 20.4, source="[MEM]",
              note="cosine learning rate; blocks assumed as DenseNet-264 and 2k = 96 initial channels, "
                   "not confirmed by a primary source"),
]

ZOO: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}

# -- timm's deep-stem DenseNets ---------------------------------------------------------------------------------------
# [TIMM] huggingface/pytorch-image-models, timm/models/densenet.py (timm 1.0): 2k initial channels, the deep stem of
# width k; densenetblur121d adds BlurPool2d to the stem only (aa_stem_only). [TIMM-RES] the same repository's
# results/results-imagenet.csv: param_count (M), top-1/top-5 error at 224 (bicubic, crop 0.875, timm's pipeline).
TIMM_PREPROCESS_NOTE = ("timm's pipeline is Pillow bicubic resize to 256, centre crop 224, ImageNet mean/std; "
                        "torch7 (bicubic, 256, 224, the same mean/std) is the nearest dnet spec")


def _timm(name, blocks, k, params, *, blur, errors=None, top5=None, note="") -> ZooEntry:
    cfg = DenseNetConfig(block_config=blocks, growth_rate=k, bottleneck=True, compression=0.5, init_features=2 * k,
                         stem="deep", blur_pool=blur, num_classes=1000)
    return ZooEntry(name, cfg, "imagenet", params, errors or {}, top5 or {}, "[TIMM] [TIMM-RES]", note)


ZOO.update((e.name, e) for e in [
    _timm("densenetblur121d", (6, 12, 24, 16), 32, "8.00M", blur=True, errors={"imagenet/timm": 23.426},
          top5={"imagenet/timm": 6.812}, note="timm's DenseNet-121 with a deep stem and blur pooling (ra_in1k)"),
    _timm("densenet264d", (6, 12, 64, 48), 48, "-", blur=False,
          note="timm's DenseNet-264 (k=48) with a deep stem; timm publishes it untrained (densenet264d.untrained)"),
])

# -- published weight files -------------------------------------------------------------------------------------------
# torch7: the Lua .t7 downloads of the liuzhuang13/DenseNet README (Google Drive; the README withdrew the links on
#   2024-01-09, commit e3d24fb, "the pre-trained models in Torch are deprecated"; ids from its 2023-10-30 version,
#   99b4daf). No checksum published: dnet records the sha256 of what it fetched.
# torchvision: torchvision/models/densenet.py; a file name carries the first 8 hex digits of its sha256.
# timm: the Hugging Face Hub repository of timm's default pretrained tag (densenet121 -> ra_in1k, its own training;
#   tv_in1k re-hosts torchvision's weights); pytorch_model.bin, a plain state dict.
SOURCES = ("torch7", "torchvision", "timm")


@dataclass(frozen=True)
class WeightsFile:
    source: str  # one of SOURCES
    url: str
    filename: str  # its name in dnet's cache
    sha256: str = ""  # the full digest or the prefix the publisher gives; "" when none is published
    preprocess: str = "torch7"  # the spec the published accuracy was measured with (the nearest dnet spec)
    published_size: str = ""  # as the publisher states it
    note: str = ""


def _drive(name: str, file_id: str, size: str, resource_key: str = "") -> WeightsFile:
    url = f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"
    if resource_key:
        url += f"&resourcekey={resource_key}"
    return WeightsFile("torch7", url, name, published_size=size,
                       note="link withdrawn from the DenseNet README on 2024-01-09; the file may be gone")


def _tv(name: str, prefix: str) -> WeightsFile:
    return WeightsFile("torchvision", f"https://download.pytorch.org/models/{name}-{prefix}.pth", f"{name}-{prefix}.pth",
                       sha256=prefix, preprocess="torchvision")


def _hub(tag: str) -> WeightsFile:
    own = tag.endswith(".ra_in1k")  # timm's own training; tv_in1k is torchvision's weights, fed as torchvision feeds them
    return WeightsFile("timm", f"https://huggingface.co/timm/{tag}/resolve/main/pytorch_model.bin", f"{tag}.pth",
                       preprocess="torch7" if own else "torchvision", note=TIMM_PREPROCESS_NOTE if own else "")


WEIGHTS: dict[str, dict[str, WeightsFile]] = {
    "densenet121": {"torch7": _drive("densenet-121.t7", "0B8ReS-sYUS-HWFViYlVlZk9sdHc", "64.5MB"),
                    "torchvision": _tv("densenet121", "a639ec97"), "timm": _hub("densenet121.ra_in1k")},
    "densenet169": {"torch7": _drive("densenet-169.t7", "0B8ReS-sYUS-HY25Dc2VrUGlVSGc", "114.4MB"),
                    "torchvision": _tv("densenet169", "b2777c0a"), "timm": _hub("densenet169.tv_in1k")},
    "densenet201": {"torch7": _drive("densenet-201.t7", "0B8ReS-sYUS-HaDdpNmlWRjJkd3c", "161.8MB"),
                    "torchvision": _tv("densenet201", "c1103571"), "timm": _hub("densenet201.tv_in1k")},
    "densenet161": {"torch7": _drive("densenet-161.t7", "0B8ReS-sYUS-HVXp2RExSTmMzZVU", "230.8MB"),
                    "torchvision": _tv("densenet161", "8d451a50"), "timm": _hub("densenet161.tv_in1k")},
    "densenet264": {"torch7": _drive("densenet-264.t7", "0By1NwtA2JPGzdVRqOEotMUZrbTA", "256MB", "0-5D_u52k6wCy6doaLwdBfqw")},
    "densenet232": {"torch7": _drive("densenet-232.t7", "0By1NwtA2JPGzdkRDaWQ5M3VHTDg", "426MB", "0-yl4XWJ2J6GZaF6RPj43QHQ")},
    "densenet-cosine264-k32": {"torch7": _drive("densenet-cosine-264-k32.t7", "0By1NwtA2JPGzRDhxWGo2a3pOTjA", "256MB",
                                                "0-AOIBvppNz9cdDcuKvH7_aQ")},
    "densenet-cosine264-k48": {"torch7": _drive("densenet-cosine-264-k48.t7", "0By1NwtA2JPGzcnFDSE1HQVh4c0k", "557MB",
                                                "0-uAyd9bsTas2twCzAZ1DUpA")},
    "densenetblur121d": {"timm": _hub("densenetblur121d.ra_in1k")},
}


def names() -> list[str]:
    return list(ZOO)


def get(name: str) -> ZooEntry:
    """The zoo entry called ``name``; an unknown name raises with the closest names."""
    try:
        return ZOO[name]
    except KeyError:
        close = difflib.get_close_matches(name, ZOO, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else f"; see 'dnet models' ({len(ZOO)} names)"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def expects(config: DenseNetConfig) -> tuple[str, str | None]:
    """The preprocessing a DenseNet of this configuration is fed, and a note when that is a guess.

    The ImageNet stem: fb.resnet.torch's (``torch7``), as the Lua models were trained and evaluated. timm's deep
    stem: timm's pipeline (Pillow bicubic resize to 256, centre crop 224, ImageNet mean/std), whose nearest dnet
    spec is ``torch7`` (bicubic, 256, 224, the same mean/std). The CIFAR
    stem: the Lua CIFAR loaders' normalisation, CIFAR-100's for 100 classes, else CIFAR-10's (SVHN-trained and
    custom models record their own data set's spec when dnet trains them).
    """
    if config.stem == "imagenet":
        return "torch7", None
    if config.stem == "deep":
        return "torch7", TIMM_PREPROCESS_NOTE
    if config.num_classes == 100:
        return "cifar100", None
    if config.num_classes == 10:
        return "cifar10", None
    return "cifar10", (
        f"the Lua code has no data loader for {config.num_classes} classes with the CIFAR stem; "
        "CIFAR-10's per-channel mean and std are assumed"
    )


def name_of(config: DenseNetConfig) -> str:
    """The zoo name of this architecture, or "custom"."""
    entry = find(config)
    return entry.name if entry is not None else "custom"


def artifact_meta(config: DenseNetConfig, *, name: str | None = None, preprocess: str | PreprocessSpec | None = None,
                  input_size: int | None = None, source: str | os.PathLike | None = None,
                  extra: dict | None = None) -> ArtifactMeta:
    """The one way dnet describes a model: zoo name (or "custom"), classes, input size, preprocessing, source.

    Defaults come from the configuration (:func:`expects`, ``config.input_size``); ``source`` is the file the
    weights came from (its name and sha256 are recorded).
    """
    spec_name, note = expects(config)
    spec = get_spec(preprocess or spec_name) if not isinstance(preprocess, PreprocessSpec) else preprocess
    extra = dict(extra or {})
    if note and preprocess is None:
        extra["preprocess_note"] = note
    src = Path(source) if source is not None else None
    return ArtifactMeta(
        model=name or name_of(config), num_classes=config.num_classes,
        input_size=input_size or config.input_size,
        preprocess=spec, source=src.name if src is not None else "",
        source_sha256=sha256_file(src) if src is not None and src.is_file() else "",
        config=config.to_dict(), dnet_version=__version__, extra=extra,
    )


def architecture(config: DenseNetConfig) -> tuple:
    """What makes two configurations the same network, class count, dropout and convolution biases aside."""
    c = config
    return (c.block_config, c.growth_rate, c.bottleneck, c.compression, c.init_features, c.stem, c.bn_size,
            c.stem_width, c.blur_pool)


def find(config: DenseNetConfig) -> ZooEntry | None:
    """The zoo entry with this architecture (class count and dropout aside), if any."""
    for entry in ZOO.values():
        if architecture(entry.config) == architecture(config):
            return entry
    return None
