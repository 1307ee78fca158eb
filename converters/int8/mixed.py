"""Mixed precision under an accuracy bound: which layers of an INT8 file stay in float, chosen by hand or by a search.

``dnet convert --to onnx-int8 --val DIR --max-drop PTS`` quantises every layer, measures the drop on the validation
images, and while the drop exceeds ``PTS`` leaves one more layer in float (FP32, or FP16 for TensorRT: see
dnet.converters.int8.placement), until the bound holds. ``--int8-exclude PATTERN`` names layers by hand.

- **The drop** is the FP32 file's top-1 accuracy minus the INT8 file's, in points, on the ``--val`` images, the INT8
  file run in its own arithmetic (Q/DQ unfused: what TensorRT computes). Labels come from one subfolder per class
  (sorted names are the class indices, as ``dnet eval --dataset folder`` reads them). A folder of images without class
  subfolders has no labels: the drop is then 100 minus the INT8 file's top-1 agreement with the FP32 file, in points.
- **The search** is greedy, one layer a step: the layers are ranked once, by the relative error each adds to the error
  of the input it was fed in the all-INT8 file (dnet.converters.int8.divergence.layer_divergence, the measure of ``dnet
  compare --per-layer``), and the next layer in that order is left in float until the drop is within the bound. Then
  each layer the search added is tried back in INT8 (least sensitive first) and stays INT8 where the bound still
  holds, since the ranking is only an estimate. Before searching, the drop with every layer in float is measured:
  what remains then is the dense blocks' int8 feature maps (a block's concatenation stays on its int8 grid); a bound
  that this does not meet is refused at once.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from dnet.converters.convs import CONV_NAME
from dnet.converters.int8.calibration import read_array, read_images
from dnet.converters.int8.divergence import layer_divergence
from dnet.converters.int8.placement import CLASSIFIER, FALLBACKS
from dnet.converters.int8.placement import layers as qdq_layers
from dnet.core.artifact.onnxfile import read_meta
from dnet.core.errors import AccuracyError, DataError, UsageError, require_one_of
from dnet.core.specs import PreprocessSpec
from dnet.data.arrays import ImageArrays, check_labels
from dnet.data.base import evenly_spread
from dnet.data.datasets import FileDataset, open_images
from dnet.data.folders import labelled_folder
from dnet.data.images import IMAGE_SUFFIXES, list_images
from dnet.engines.onnxruntime import session

RUN_CHUNK = 32  # images per ONNX Runtime run when measuring accuracy
RANKING_IMAGES = 64  # validation images the per-layer divergence is measured on (evenly spread)


# --- the validation images --------------------------------------------------------------------------------


def _empty_class(folder: Path) -> str:
    return f"validation class folder {folder} contains no images ({', '.join(IMAGE_SUFFIXES)})"


@dataclass(frozen=True)
class ValidationSet:
    """A folder of validation images: one subfolder per class (labels), or images alone (agreement with FP32); or
    what ``dnet.data.datasets.open_images`` reads (an .npz/.npy, a CIFAR binary folder, ``dataset``'s test split)."""

    folder: Path | None
    count: int | None = 1000  # evenly spread over the folder; None: every image
    dataset: str | None = None  # ``folder`` holds this data set (dnet.data.datasets.DATASETS): its test split

    def __post_init__(self) -> None:
        if self.count is not None and self.count <= 0:
            raise UsageError(f"the number of validation images must be positive, got {self.count}", option="val_count")

    def open(self, num_classes: int | None) -> Validation:
        """List the images and their labels (nothing decoded); a class count unlike the model's is refused."""
        found = open_images(self.folder, self.dataset, split="test")
        if found is not None:
            return self._open_set(found, num_classes)
        folder = Path(self.folder)
        if not folder.is_dir():
            raise DataError(f"validation folder {folder} does not exist or is not a folder")
        try:
            classes, files, labels = labelled_folder(folder, _empty_class)
        except OSError as e:
            raise DataError(f"validation folder {folder} cannot be read ({e.strerror})") from None
        if not classes:
            files, labels = list_images(folder, recursive=False, what="validation folder"), None
        elif num_classes is not None and len(classes) != num_classes:
            raise DataError(f"the model has {num_classes} classes but the validation folder {folder} has "
                            f"{len(classes)} class subfolders; give one subfolder per class (sorted names are "
                            "the class indices), or images without subfolders (then the drop is measured as "
                            "agreement with FP32)")
        chosen = evenly_spread(len(files), self.count) if self.count is not None else np.arange(len(files))
        return Validation(folder, [files[i] for i in chosen], labels[chosen] if labels is not None else None)

    def _open_set(self, found: ImageArrays | FileDataset, num_classes: int | None) -> Validation:
        """An array or a data set: labels checked against the model's classes (when known)."""
        where = str(self.folder or self.dataset)
        if num_classes is not None and isinstance(found, FileDataset) and found.num_classes != num_classes:
            raise DataError(f"the model has {num_classes} classes but the validation images {where} have "
                            f"{found.num_classes}")
        if num_classes is not None and found.labels is not None:
            check_labels(found.labels, num_classes, f"validation images {where}")
        n = len(found.labels) if isinstance(found, FileDataset) else len(found.images)
        chosen = evenly_spread(n, self.count) if self.count is not None else np.arange(n)
        labels = found.labels[chosen] if found.labels is not None else None
        if isinstance(found, FileDataset):
            return Validation(Path(where), [found.paths[i] for i in chosen], labels, f"the {found.name} data set")
        return Validation(Path(where), [], labels, f"{found.name}", images=found.images[chosen])


@dataclass(frozen=True)
class Validation:
    folder: Path
    files: list[Path]
    labels: np.ndarray | None  # None: no class subfolders
    labels_from: str = "class subfolders"
    images: np.ndarray | None = None  # uint8 N×H×W×3 instead of files

    @property
    def basis(self) -> str:
        return f"labels from {self.labels_from}" if self.labels is not None else "top-1 agreement with FP32, no labels"

    def load(self, spec: PreprocessSpec) -> np.ndarray:
        if self.images is not None:
            return read_array(self.images, spec, len(self.images))
        return read_images(self.files, spec, what="validation image")


# --- layers ---------------------------------------------------------------------------------------------------


def model_layers(model) -> list[str]:
    """The layer names a dnet DenseNet's INT8 file will have (qdq.layers), from its modules: checked before export."""
    import torch

    names = [n.removeprefix("features.") for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    names = [n for n in names if CONV_NAME.fullmatch(n)]
    return names + [CLASSIFIER] if isinstance(getattr(model, CLASSIFIER, None), torch.nn.Linear) else names


def resolve(patterns: Iterable[str], layers: list[str]) -> list[str]:
    """The layers (network order) matched by shell-style ``patterns`` (``denseblock3.*``, ``transition?.conv``); a
    pattern that matches no layer is refused."""
    chosen: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(layers, pattern)
        if not hits:
            shown = ", ".join(layers[:3]) + (f", … {layers[-1]}" if len(layers) > 3 else "")
            raise UsageError(f"the exclude pattern {pattern!r} names no layer of this model (its {len(layers)} layers: "
                             f"{shown})", option="int8_exclude")
        chosen.update(hits)
    return [n for n in layers if n in chosen]


# --- accuracy ---------------------------------------------------------------------------------------------------


def predictions(model: str | os.PathLike | onnx.ModelProto, images: np.ndarray, *, fused: bool = True) -> np.ndarray:
    """Top-1 class of each image (ONNX Runtime, in chunks)."""
    sess = session(model, fused=fused)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + RUN_CHUNK]})[0].argmax(1)
                           for i in range(0, len(images), RUN_CHUNK)])


@dataclass(frozen=True)
class Drop:
    fp32_top1: float  # % (with no labels: 100, FP32's agreement with itself)
    int8_top1: float  # % (with no labels: agreement with FP32)
    images: int

    @property
    def points(self) -> float:
        return self.fp32_top1 - self.int8_top1


def drop(fp32_pred: np.ndarray, int8_pred: np.ndarray, labels: np.ndarray | None) -> Drop:
    truth = labels if labels is not None else fp32_pred
    return Drop(100.0 * float(np.mean(fp32_pred == truth)), 100.0 * float(np.mean(int8_pred == truth)), len(truth))


# --- the search -------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What accuracy control did: the layers left in float, the drop measured, and each step of the search."""

    excluded: list[str]  # network order
    drop: Drop
    by_hand: list[str] = field(default_factory=list)
    max_drop: float | None = None
    start: float | None = None  # drop with the layers excluded by hand only (when a search ran)
    floor: float | None = None  # drop with every layer in float (when a search ran)
    ranking: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)

    def to_dict(self, val: Validation, fallback: str) -> dict:
        d = {"val": str(val.folder), "images": self.drop.images, "basis": val.basis,
             "fp32_top1": self.drop.fp32_top1, "int8_top1": self.drop.int8_top1, "drop": self.drop.points,
             "max_drop": self.max_drop, "excluded": self.excluded, "fallback": fallback,
             "excluded_by_hand": self.by_hand}
        if self.steps:
            d["search"] = {"ranked_by": "error added per layer (dnet.converters.int8.divergence.layer_divergence), "
                                        f"measured once on {min(RANKING_IMAGES, self.drop.images)} validation images",
                           "start": self.start, "floor": self.floor, "ranking": self.ranking, "steps": self.steps,
                           "evaluations": len(self.steps) + 2}
        return d


# --- what to_int8 is asked for -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixedPrecision:
    """Layers of an INT8 file left in ``fallback`` precision: named by ``exclude`` patterns, and chosen by the search
    while the drop on ``val`` exceeds ``max_drop`` points (``val`` without a bound: the drop is measured only)."""

    exclude: tuple[str, ...] = ()
    fallback: str = FALLBACKS[0]
    val: ValidationSet | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        require_one_of("the precision of excluded layers", self.fallback, FALLBACKS, "int8_fallback")
        if self.max_drop is not None and not self.max_drop >= 0:
            raise UsageError(f"the accuracy bound must be 0 points or more, got {self.max_drop}", option="max_drop")
        if self.max_drop is not None and self.val is None:
            raise UsageError("an accuracy bound needs validation images to measure the drop on: give their folder",
                             option="val")

    def prepare(self, fp32: onnx.ModelProto, spec: PreprocessSpec | None, layout: str = "densenet") -> Plan:
        """Resolve the patterns against ``fp32``'s layers and read the validation images."""
        if layout != "densenet" and self != MixedPrecision():
            raise UsageError("layers in higher precision and accuracy control need the densenet INT8 layout",
                             option="int8_layout")
        meta = read_meta(fp32)
        layers = {n: node.output[0] for n, node in qdq_layers(fp32).items()}
        by_hand = resolve(self.exclude, list(layers))
        validation = self.val.open(meta.num_classes if meta is not None else None) if self.val is not None else None
        if validation is not None and spec is None:
            raise UsageError("the ONNX file does not say how to preprocess validation images; name a preprocessing",
                             option="preprocess")
        images = validation.load(spec) if validation is not None else None
        return Plan(self, fp32, layers, by_hand, validation, images)


@dataclass(frozen=True)
class Plan:
    request: MixedPrecision
    fp32: onnx.ModelProto
    layers: dict[str, str]  # every layer (network order) -> the tensor its node writes
    by_hand: list[str]
    validation: Validation | None
    images: np.ndarray | None

    def choose(self, build: Callable[[list[str]], onnx.ModelProto]) -> tuple[onnx.ModelProto, dict | None]:
        """The INT8 graph to keep (``build(excluded)`` makes one) and the summary's "accuracy" (None: not measured)."""
        if self.validation is None:
            return build(self.by_hand), None
        _, outcome = control(build, self.fp32, self.layers, self.images, self.validation.labels,
                             by_hand=self.by_hand, max_drop=self.request.max_drop)
        # once more, so that whatever build() records last describes the kept graph
        return build(outcome.excluded), outcome.to_dict(self.validation, self.request.fallback)


def control(build: Callable[[list[str]], onnx.ModelProto], fp32: onnx.ModelProto, layers: dict[str, str],
            images: np.ndarray, labels: np.ndarray | None, *, by_hand: Iterable[str] = (),
            max_drop: float | None = None) -> tuple[onnx.ModelProto, Outcome]:
    """The INT8 graph that meets ``max_drop`` with the fewest layers in float the search finds (module doc).

    ``build(excluded)`` makes the INT8 graph with those layers in float; ``layers`` maps every layer (network order)
    to the float tensor its node writes in ``fp32`` (and in the INT8 graph). ``max_drop`` None measures the drop of
    ``build(by_hand)`` only. Raises AccuracyError when even every layer in float exceeds ``max_drop``.
    """
    fp32_pred = predictions(fp32, images)

    def measure(excluded: list[str]) -> tuple[onnx.ModelProto, Drop]:
        proto = build(excluded)
        return proto, drop(fp32_pred, predictions(proto, images, fused=False), labels)

    excluded = [n for n in layers if n in set(by_hand)]
    proto, d = measure(excluded)
    outcome = Outcome(excluded, d, list(excluded), max_drop)
    if max_drop is None or d.points <= max_drop:
        return proto, outcome
    _, floor = measure(list(layers))
    outcome.start, outcome.floor = d.points, floor.points
    if floor.points > max_drop:
        raise AccuracyError(
            f"the accuracy bound cannot be met: INT8 drops {d.points:.2f} points on {d.images} validation images "
            f"({d.fp32_top1:.2f}% → {d.int8_top1:.2f}%), and still {floor.points:.2f} with all {len(layers)} layers "
            f"in float (what remains is the dense blocks' int8 feature maps), above the bound of {max_drop:g}; "
            "no INT8 file was written (allow a larger drop, or calibrate on more or other images)", option="max_drop")
    sample = images[evenly_spread(len(images), RANKING_IMAGES)]
    ranked = layer_divergence(fp32, proto, {n: t for n, t in layers.items() if n not in excluded}, sample)
    outcome.ranking = [{"layer": r.layer, "rel_error": r.rel_error, "input_rel_error": r.input_rel_error,
                        "added": r.added} for r in ranked]
    added: list[str] = []
    for r in ranked:
        added.append(r.layer)
        proto, d = measure(excluded + added)
        outcome.steps.append({"exclude": r.layer, "drop": d.points})
        if d.points <= max_drop:
            break
    for name in reversed(added[:-1]):  # the ranking is an estimate: give back what the bound does not need
        trial = [n for n in added if n != name]
        candidate, dt = measure(excluded + trial)
        outcome.steps.append({"include": name, "drop": dt.points})
        if dt.points <= max_drop:
            added, proto, d = trial, candidate, dt
    outcome.excluded = [n for n in layers if n in set(excluded + added)]
    outcome.drop = d
    return proto, outcome
