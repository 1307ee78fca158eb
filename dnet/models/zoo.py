"""The model zoo: every configuration the paper and the original repository name, with published numbers.

Every published number is a :class:`dnet.models.published.Published`: the error, what it measures (data set,
top-1 or top-5, one crop or ten, the preprocessing it was measured with, whether the model was trained with
augmentation) and the key of its source in ``dnet.models.published.SOURCES``. ``dnet eval`` compares each measured
figure with the number of the same kind and says which source it compares against. The sources are collected in
shared/design/PAPER.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from dnet import __version__
from dnet.core.artifact.meta import ArtifactMeta, warn_once
from dnet.core.atomic import sha256_file
from dnet.core.errors import UnknownModelError
from dnet.core.specs import PreprocessSpec, get_spec
from dnet.models.config import DenseNetConfig
from dnet.models.published import Comparison, Published, kind_of


@dataclass(frozen=True)
class ZooEntry:
    name: str
    config: DenseNetConfig
    dataset: str  # "cifar" (CIFAR-10/100 and SVHN rows) or "imagenet"
    published_params: str  # as printed in the source, e.g. "0.8M" or "7,978,856"; "-" when none is published
    published: tuple[Published, ...] = ()  # per kind, the number published with the released model comes first
    config_source: tuple[str, ...] = ()  # keys of SOURCES for the configuration and the parameter count
    note: str = ""  # what the sources leave open, and how the name counts layers

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

    @property
    def convolutions(self) -> int:
        """Convolutions in the network: every weighted layer but the classifier (the '264' of DenseNet-264)."""
        return self.config.depth - 1

    def published_for(self, dataset: str, *, metric: str = "top1", crops: int = 1, preprocess: str | None = None,
                      augmented: bool = True) -> tuple[Published, ...]:
        """The published numbers of this kind, the one published with the released model first (may be empty)."""
        return tuple(p for p in self.published
                     if p.matches(dataset, metric=metric, crops=crops, preprocess=preprocess, augmented=augmented))


# CIFAR/SVHN table columns in order: C10, C10+, C100, C100+, SVHN (SVHN: trained without augmentation only).
_CIFAR_COLUMNS_IN_ORDER = (("cifar10", False), ("cifar10", True), ("cifar100", False), ("cifar100", True), ("svhn", None))


def _cifar(name, depth, k, bc, params, errors, *, source="CVPR17-T2", note="", **fields) -> ZooEntry:
    cfg = DenseNetConfig.from_depth(depth, k, bottleneck=bc, stem="cifar", num_classes=10, **fields)
    published = tuple(Published(e, ds, source, augmented=aug)
                      for e, (ds, aug) in zip(errors, _CIFAR_COLUMNS_IN_ORDER, strict=True) if e is not None)
    return ZooEntry(name, cfg, "cifar", params, published, (source,), note)


def _imagenet(name, blocks, k, init, params, *published: Published, config_source: tuple[str, ...],
              note: str = "") -> ZooEntry:
    cfg = DenseNetConfig(
        block_config=blocks, growth_rate=k, bottleneck=True, compression=0.5, init_features=init,
        stem="imagenet", num_classes=1000,
    )
    return ZooEntry(name, cfg, "imagenet", params, published, config_source, note)


def _lua(error: float, source: str) -> Published:
    """A single-crop top-1 error of a Lua model, measured with fb.resnet.torch's preprocessing."""
    return Published(error, "imagenet", source, preprocess="torch7")


def _table3(top1: float, top1_ten: float, top5: float, top5_ten: float) -> tuple[Published, ...]:
    """CVPR 2017 Table 3: single-crop / 10-crop top-1, then single-crop / 10-crop top-5 (fb.resnet.torch)."""
    kinds = (("top1", 1, top1), ("top1", 10, top1_ten), ("top5", 1, top5), ("top5", 10, top5_ten))
    return tuple(Published(e, "imagenet", "CVPR17-T3", metric=m, crops=c, preprocess="torch7") for m, c, e in kinds)


def _torchvision(acc1: float, acc5: float) -> tuple[Published, ...]:
    """torchvision's acc@1 / acc@5 of its port of the Lua model, as errors."""
    return (Published(round(100.0 - acc1, 3), "imagenet", "TV", preprocess="torchvision"),
            Published(round(100.0 - acc5, 3), "imagenet", "TV", metric="top5", preprocess="torchvision"))


_NAMED_BY_CONVOLUTIONS = ("the name counts convolutions only: with the classifier it has {} weighted layers "
                          "(121/169/201/161 count the classifier too)")

_ENTRIES = [
    # CIFAR/SVHN, [CVPR17-T2]: errors C10, C10+, C100, C100+, SVHN. Basic DenseNet: 16 initial channels.
    _cifar("densenet-l40-k12", 40, 12, False, "1.0M", (7.00, 5.24, 27.55, 24.42, 1.79)),
    _cifar("densenet-l100-k12", 100, 12, False, "7.0M", (5.77, 4.10, 23.79, 20.20, 1.67)),
    _cifar("densenet-l100-k24", 100, 24, False, "27.2M", (5.83, 3.74, 23.42, 19.25, 1.59)),
    _cifar("densenet-bc-l100-k12", 100, 12, True, "0.8M", (5.92, 4.51, 24.15, 22.27, 1.76)),
    _cifar("densenet-bc-l250-k24", 250, 24, True, "15.3M", (5.19, 3.62, 19.64, 17.60, 1.74)),
    _cifar("densenet-bc-l190-k40", 190, 40, True, "25.6M", (None, 3.46, None, 17.18, None)),
    # [REPO-WIDE]: C10+ and C100+ only.
    _cifar("wide-densenet-bc-l40-k36", 40, 36, True, "1.5M", (None, 4.58, None, 22.30, None), source="REPO-WIDE"),
    _cifar("wide-densenet-bc-l40-k48", 40, 48, True, "2.7M", (None, 3.99, None, 20.29, None), source="REPO-WIDE"),
    _cifar("wide-densenet-bc-l40-k60", 40, 60, True, "4.3M", (None, 4.01, None, 19.99, None), source="REPO-WIDE"),
    # ImageNet: the README's number for the released Lua model first, then CVPR Table 3, then torchvision's port.
    _imagenet("densenet121", (6, 12, 24, 16), 32, 64, "7,978,856", _lua(25.0, "REPO-IN"),
              *_table3(25.02, 23.61, 7.71, 6.66), *_torchvision(74.434, 91.972), config_source=("CVPR17-T1", "TV")),
    _imagenet("densenet169", (6, 12, 32, 32), 32, 64, "14,149,480", _lua(23.6, "REPO-IN"),
              *_table3(23.80, 22.08, 6.85, 5.92), *_torchvision(75.600, 92.806), config_source=("CVPR17-T1", "TV")),
    _imagenet("densenet201", (6, 12, 48, 32), 32, 64, "20,013,928", _lua(22.5, "REPO-IN"),
              *_table3(22.58, 21.46, 6.34, 5.54), *_torchvision(76.896, 93.370), config_source=("CVPR17-T1", "TV")),
    _imagenet("densenet161", (6, 12, 36, 24), 48, 96, "28,681,000", _lua(22.2, "REPO-IN"),
              *_torchvision(77.138, 93.560), config_source=("TV",)),
    # Tech-report models (trained with the memory-efficient implementation), released as .t7 files; blocks and
    # stems as the definitions generated from those files give them [T7-DEFS]. No parameter count is published
    # for them, except the abstract's "73M" for its 264-layer model.
    _imagenet("densenet264", (6, 12, 64, 48), 32, 64, "-", _lua(22.1, "REPO-TR"), *_table3(22.15, 20.80, 6.12, 5.29),
              config_source=("CVPR17-T1", "T7-DEFS"),
              note="blocks 6-12-64-48, 64 initial channels; " + _NAMED_BY_CONVOLUTIONS.format(265)
                   + "; CVPR Table 3's DenseNet-264 and the README's tech-report model share the architecture"),
    _imagenet("densenet232", (6, 12, 48, 48), 48, 96, "-", _lua(21.2, "REPO-TR"), config_source=("T7-DEFS",),
              note="blocks 6-12-48-48, 96 initial channels: 232 convolutions, 55,570,984 parameters; "
                   + _NAMED_BY_CONVOLUTIONS.format(233)),
    _imagenet("densenet-cosine264-k32", (6, 12, 64, 48), 32, 64, "-", _lua(21.6, "REPO-TR"), config_source=("T7-DEFS",),
              note="cosine learning rate 0.5·lr0·(1+cos(π·t/T)) per iteration, t counted from 1; blocks 6-12-64-48, "
                   "64 initial channels; " + _NAMED_BY_CONVOLUTIONS.format(265)),
    _imagenet("densenet-cosine264-k48", (6, 12, 64, 48), 48, 96, "73M", _lua(20.4, "REPO-TR"), _lua(20.26, "MEM-ABS"),
              config_source=("T7-DEFS", "MEM-ABS"),
              note="cosine learning rate; blocks 6-12-64-48, 96 initial channels: 72,686,632 parameters, the "
                   "abstract's '264-layer DenseNet (73M parameters)' (the abstract names no schedule or growth rate; "
                   "this is the only 264-layer model with 73M); " + _NAMED_BY_CONVOLUTIONS.format(265)),
]


ZOO: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}

# -- timm's deep-stem DenseNets ---------------------------------------------------------------------------------------
# [TIMM] huggingface/pytorch-image-models, timm/models/densenet.py (timm 1.0): 2k initial channels, the deep stem of
# width k; densenetblur121d adds BlurPool2d to the stem only (aa_stem_only). [TIMM-RES] the same repository's
# results/results-imagenet.csv: param_count (M), top-1/top-5 error at 224 (bicubic, crop 0.875, timm's pipeline).
TIMM_PREPROCESS_NOTE = ("timm's pipeline is Pillow bicubic resize to 256, centre crop 224, ImageNet mean/std; "
                        "torch7 (bicubic, 256, 224, the same mean/std) is the nearest dnet spec")


def _timm(name, blocks, k, params, *published: Published, blur: bool, note: str = "") -> ZooEntry:
    cfg = DenseNetConfig(block_config=blocks, growth_rate=k, bottleneck=True, compression=0.5, init_features=2 * k,
                         stem="deep", blur_pool=blur, num_classes=1000)
    return ZooEntry(name, cfg, "imagenet", params, published, ("TIMM",), note)


ZOO.update((e.name, e) for e in [
    # timm's own pipeline (Pillow bicubic, crop 0.875) is not a dnet preprocessing, so dnet eval finds no counterpart
    _timm("densenetblur121d", (6, 12, 24, 16), 32, "8.00M",
          Published(23.426, "imagenet", "TIMM-RES", preprocess="timm"),
          Published(6.812, "imagenet", "TIMM-RES", metric="top5", preprocess="timm"),
          blur=True, note="timm's DenseNet-121 with a deep stem and blur pooling (ra_in1k)"),
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
WEIGHT_SOURCES = ("torch7", "torchvision", "timm")


@dataclass(frozen=True)
class WeightsFile:
    source: str  # one of WEIGHT_SOURCES
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


def comparisons(model: str | None, dataset: str, preprocess: str, measured: dict[str, float], *,
                ten_crop: bool = False, augmented: bool = True) -> tuple[Comparison, ...]:
    """A Comparison per measured metric ({"top1": %, "top5": %}) with the zoo model's published number of the same
    kind (:meth:`ZooEntry.published_for`); a model not in the zoo has none."""
    entry, crops = ZOO.get(model or ""), 10 if ten_crop else 1
    out = []
    for metric, value in measured.items():
        found = entry.published_for(dataset, metric=metric, crops=crops, preprocess=preprocess,
                                    augmented=augmented) if entry is not None else ()
        out.append(Comparison.of(metric, kind_of(dataset, metric, crops, preprocess, augmented), value, found))
    return tuple(out)


def published_error(model: str | None, dataset: str, preprocess: str, *, ten_crop: bool = False,
                    augmented: bool = True, metric: str = "top1") -> float | None:
    """The zoo's published error of this kind (the released model's number first), or None."""
    entry = ZOO.get(model or "")
    found = entry.published_for(dataset, metric=metric, crops=10 if ten_crop else 1, preprocess=preprocess,
                                augmented=augmented) if entry is not None else ()
    return found[0].error if found else None


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


def name_problem(meta: ArtifactMeta, features: int | None = None, network: DenseNetConfig | None = None) -> str | None:
    """What is wrong with the zoo name a file's metadata gives (``dnet.model``): no zoo model, or not the network
    the file holds (its recorded ``dnet.config``; ``network``: the one its weights build, for a checkpoint;
    ``features``: the channels its graph's classifier takes); None when nothing is."""
    if meta.model == "custom":
        return None
    entry = ZOO.get(meta.model)
    if entry is None:
        return f"{meta.model!r}, which is no zoo model"
    try:
        config = DenseNetConfig.from_dict(meta.config) if meta.config else None
    except Exception:  # noqa: BLE001 (a malformed record, whatever its values raise, says nothing about the name)
        config = None
    if config is not None and architecture(config) != architecture(entry.config):
        other = find(config)
        return f"{entry.name}, but dnet.config records {other.name if other else 'a custom DenseNet'}"
    if network is not None and architecture(network) != architecture(entry.config):
        other = find(network)
        return f"{entry.name}, but the weights are {other.name if other else 'a custom DenseNet'}"
    if features is not None and features != entry.config.num_features:
        return (f"{entry.name}, whose classifier takes {entry.config.num_features:,} channels; the graph's takes "
                f"{features:,}")
    return None


def checked_name(meta: ArtifactMeta | None, where: str, features: int | None = None,
                 network: DenseNetConfig | None = None) -> ArtifactMeta | None:
    """``meta`` with a zoo name that disagrees with the file (:func:`name_problem`) taken as "custom", so no published
    number of another network is compared with it; said once, in a warning naming the file and the key."""
    problem = name_problem(meta, features, network) if meta is not None else None
    if problem is None:
        return meta
    warn_once(f"{where}:dnet.model", f"{where}: metadata key dnet.model says {problem}: the name is ignored (taken "
              "as custom, compared with no published number)")
    return dataclasses.replace(meta, model="custom")


def resolve_config(name_or_config: str | DenseNetConfig, *, num_classes: int | None = None) -> DenseNetConfig:
    """A zoo name or a configuration, with the class count replaced when given."""
    cfg = get(name_or_config).config if isinstance(name_or_config, str) else name_or_config
    if num_classes is not None:
        cfg = dataclasses.replace(cfg, num_classes=num_classes)
    return cfg
