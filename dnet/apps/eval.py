"""Top-1/top-5 error of any model file on a data set, beside the paper's published number.

``evaluate`` feeds an :class:`dnet.engines.base.Engine` batches decoded in worker processes (a torch
``DataLoader``), counts top-k hits, and under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) shards the images by
rank and sums the counts over the gloo backend, so N processes give the same numbers as one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data

from dnet import engines
from dnet.core.atomic import atomic_write_text
from dnet.core.errors import AccuracyError, DataError, UsageError
from dnet.core.similarity import require_finite
from dnet.core.specs import PreprocessSpec, get_spec
from dnet.data.base import evenly_spread
from dnet.data.batches import array_batches, file_batches
from dnet.data.datasets import DATASETS, ArrayDataset, FileDataset
from dnet.models import zoo
from dnet.models.published import Comparison
from dnet.models.zoo import published_error

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# --- the arithmetic, as small pure functions ---------------------------------------------------------------

def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the true class among the ``k`` highest logits?

    Rank = how many other classes score at least as high as the true one; a hit when rank < k. A tie is
    therefore a miss (all-equal logits score 100 % error, never 0 %), and so is a row with a non-finite logit
    (deterministic, unlike a sort that breaks ties arbitrarily).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} do not match")
    true = logits[np.arange(len(labels)), labels]
    rank = (logits >= true[:, None]).sum(axis=1) - 1
    return (rank < k) & np.isfinite(logits).all(axis=1)


def error_percent(hits: int, n: int) -> float:
    return 100.0 * (n - hits) / n if n else float("nan")


def binomial_ci95(errors: int, n: int) -> float:
    """Half-width of the 95% confidence interval of an error rate, in percentage points.

    Normal approximation to the binomial, ``1.96·sqrt(p(1−p)/n)``: on 50,000 ImageNet images it is ±0.38
    points at 25% error.
    """
    if n <= 0:
        return float("nan")
    p = errors / n
    return 100.0 * Z95 * math.sqrt(p * (1.0 - p) / n)


def top5_labels(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """The ``k`` best classes per sample, best first (for the predictions file)."""
    k = min(k, logits.shape[1])
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def reduce_ten_crop(logits: np.ndarray, crops: int = 10) -> np.ndarray:
    """fb.resnet.torch's TenCrop score: the crops' outputs summed (``output:view(n, 10, C):sum(2)``).

    The Lua code sums the model outputs (logits, the models end in ``nn.Linear``), not softmaxes; we take the
    mean, which ranks classes the same way.
    """
    return logits.reshape(-1, crops, logits.shape[1]).mean(axis=1)


# --- the report ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalReport:
    engine: str
    model: str  # zoo name, "custom", or "unknown" when the file carries no metadata
    dataset: str
    split: str
    preprocess: str
    ten_crop: bool
    images: int
    top1_correct: int
    top5_correct: int
    top1_error: float  # %
    top5_error: float
    top1_ci95: float  # ± points
    top5_ci95: float
    seconds: float
    throughput: float  # images/s end to end (decoding included)
    engine_seconds: float
    engine_throughput: float  # images/s inside the engine alone
    comparisons: tuple[Comparison, ...] = ()  # top-1 then top-5, each with its published counterpart if any
    skipped: tuple[str, ...] = ()
    world_size: int = 1
    test_set: int | None = None  # images in the published test set the papers' errors are measured on
    # per image (dataset index, label, top-5 classes, top-1 hit); not part of the JSON report
    predictions: tuple = field(default=(), repr=False, compare=False)

    def comparison(self, metric: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric == metric), None)

    @property
    def published_error(self) -> float | None:
        """The published top-1 error this run is compared with (same crops and preprocessing), or None."""
        c = self.comparison("top1")
        return c.published if c is not None else None

    @property
    def delta(self) -> float | None:
        c = self.comparison("top1")
        return c.delta if c is not None else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions")
        d["skipped"] = list(self.skipped)
        d["comparisons"] = [c.to_dict() for c in self.comparisons]
        d.update(published_error=self.published_error, delta=self.delta)  # top-1's, as before
        return d

    def _part(self, metric: str, error: float, ci: float) -> str:
        c = self.comparison(metric)
        label = ("ten-crop " if self.ten_crop else "") + ("top-1" if metric == "top1" else "top-5")
        if c is not None and c.published is not None:
            paper = f"published {c.published:g}, Δ {c.delta:+.2f}, 95% CI ±{ci:.2f}"
        elif self.model in zoo.ZOO:
            paper = f"no published number, 95% CI ±{ci:.2f}"
        else:
            paper = f"95% CI ±{ci:.2f}"
        return f"{label} error {error:.2f} % ({paper})"

    def _count(self) -> str:
        """How many images; "1,000 of 10,000 images" when a published number is measured on a larger test set."""
        c = self.comparison("top1")
        if c is not None and c.published is not None and self.test_set and self.images < self.test_set:
            return f"{self.images:,} of {self.test_set:,} images"
        return f"{self.images:,} images"

    def line(self) -> str:
        """The one-line summary: ``top-1 error 25.31 % (published 25.0, Δ +0.31, 95% CI ±0.38) · top-5 ...``."""
        parts = [self._part("top1", self.top1_error, self.top1_ci95), self._part("top5", self.top5_error, self.top5_ci95),
                 self._count(), f"{self.throughput:,.0f} img/s"]
        if self.skipped:
            parts.append(f"{len(self.skipped):,} skipped")
        return " · ".join(parts)

    def lines(self) -> list[str]:
        """The summary, then for a zoo model which published number each figure is compared with, and its source."""
        out = [self.line()]
        if self.model in zoo.ZOO:
            out += [f"  {c.source_line()}" for c in self.comparisons]
        return out


def check_tolerance(report: EvalReport, tolerance: float) -> None:
    """Raise AccuracyError (exit 3) when the top-1 error is worse than its published counterpart by more than
    ``tolerance`` points (the counterpart of the same kind: ten-crop against ten-crop, torch7 against torch7)."""
    c = report.comparison("top1")
    if c is None or c.published is None:
        kind = f" ({c.kind})" if c is not None else ""
        raise UsageError(f"a tolerance needs a published error, and there is none for model {report.model!r} "
                         f"on {report.dataset} with {report.preprocess} preprocessing{kind}", option="tolerance")
    if c.delta > tolerance:
        raise AccuracyError(f"{'ten-crop ' if report.ten_crop else ''}top-1 error {c.measured:.2f} % is {c.delta:+.2f} "
                            f"points from the published {c.published:g} % ({c.kind}, {c.source}), more than the "
                            f"tolerance of {tolerance:g}")


def write_predictions(path: str | os.PathLike, report: EvalReport, dataset, *, inputs=()) -> None:
    """CSV: index, file (or empty for array data sets), label, prediction, top5 (space separated), correct."""
    names = [str(p) for p in dataset.paths] if isinstance(dataset, FileDataset) else None
    lines = ["index,file,label,prediction,top5,correct"]
    for index, label, top5, hit in report.predictions:
        file = names[index].replace('"', '""') if names else ""
        lines.append(f'{index},"{file}",{label},{top5[0]},{" ".join(map(str, top5))},{int(hit)}')
    atomic_write_text(path, "\n".join(lines) + "\n", inputs=inputs)


# --- feeding the engine ----------------------------------------------------------------------------------

def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def choose_spec(engine, dataset, preprocess: str | PreprocessSpec | None) -> PreprocessSpec:
    """Explicit override, else the model file's own preprocessing, else the data set's (CIFAR, SVHN, digits)."""
    if preprocess is not None:
        return get_spec(preprocess) if isinstance(preprocess, str) else preprocess
    meta = getattr(engine, "meta", None)
    if meta is not None:
        return meta.preprocess
    if dataset.spec is not None:
        return dataset.spec
    raise UsageError(f"{engine.path.name} carries no preprocessing metadata; say how to feed it: name a "
                     f"preprocessing (torch7 or torchvision)", option="preprocess")


def evaluate(engine_or_path, dataset: ArrayDataset | FileDataset, *, batch: int = 32, limit: int | None = None,
             workers: int | None = None, preprocess: str | PreprocessSpec | None = None, ten_crop: bool = False,
             skip_bad: bool = False, progress: bool = True) -> EvalReport:
    """Evaluate a model file (or an open Engine) on ``dataset``; see the module docstring."""
    if isinstance(engine_or_path, str | os.PathLike):
        with engines.open(engine_or_path) as engine:
            return evaluate(engine, dataset, batch=batch, limit=limit, workers=workers, preprocess=preprocess,
                            ten_crop=ten_crop, skip_bad=skip_bad, progress=progress)
    engine = engine_or_path
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if len(dataset) == 0:
        raise DataError(f"data set {dataset.name} holds no images")
    spec = choose_spec(engine, dataset, preprocess)
    if ten_crop and (isinstance(dataset, ArrayDataset) or spec.interpolation != "lua-bicubic"):
        raise UsageError("ten crops need an image data set (imagenet, folder) and the torch7 preprocessing",
                         option="ten_crop")
    meta = engine.meta
    if meta is not None and meta.num_classes != dataset.num_classes:
        raise DataError(f"the model has {meta.num_classes} classes but data set {dataset.name} has "
                        f"{dataset.num_classes}; evaluate it on the data set it was trained for")
    fixed = engine.input_shape[0] if engine.input_shape[0] > 0 else None
    if fixed is not None:
        batch = fixed // 10 if ten_crop else fixed
        if batch < 1:
            raise UsageError(f"{engine.path.name} has a fixed batch of {fixed}, too small for ten crops")

    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}", option="limit")
    n = len(dataset)
    # --limit N: N images spread evenly over the set (sorted sets such as ImageNet keep every class), the ones
    # a conversion's --val-count N picks of the same folder
    indices = np.arange(n) if limit is None else evenly_spread(n, limit)
    rank, world = _distributed()
    group_owned = False
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            group_owned = True
        indices = indices[rank::world]  # shard by rank: every image is seen by exactly one process

    if isinstance(dataset, FileDataset):
        workers = default_workers() if workers is None else workers
        batches = file_batches(dataset, indices, spec, ten_crop, batch, workers)
    else:
        batches = array_batches(dataset, indices, spec, batch)

    bar = None
    if progress and rank == 0 and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(indices), unit="img", desc=f"eval {dataset.name}", file=sys.stderr, leave=False)
    top1 = top5 = seen = 0
    skipped: list[str] = []
    predictions = []
    engine_seconds = 0.0
    start = time.perf_counter()
    try:
        for x, labels, idx, errors in batches:
            if not skip_bad and any(errors):
                raise DataError(next(e for e in errors if e))
            ok = np.asarray([not e for e in errors], dtype=bool)
            skipped += [e for e in errors if e]
            if not ok.any():
                continue
            x, labels, idx = x[ok], labels[ok], idx[ok]
            feed = x.reshape((-1,) + x.shape[2:]) if ten_crop else x
            rows = len(feed)
            if fixed is not None and rows < fixed:  # a static-batch engine: pad the last batch
                feed = np.concatenate([feed, np.zeros((fixed - rows,) + feed.shape[1:], feed.dtype)])
            t0 = time.perf_counter()
            logits = require_finite(engine(feed)[:rows], Path(engine.path).name)
            engine_seconds += time.perf_counter() - t0
            if ten_crop:
                logits = require_finite(reduce_ten_crop(logits), Path(engine.path).name)
            if logits.shape[1] != dataset.num_classes:
                raise DataError(f"the model has {logits.shape[1]} classes but data set {dataset.name} has "
                                f"{dataset.num_classes}; evaluate it on the data set it was trained for")
            h1, h5 = topk_hits(logits, labels, 1), topk_hits(logits, labels, 5)
            top1 += int(h1.sum())
            top5 += int(h5.sum())
            seen += len(labels)
            best = top5_labels(logits)
            predictions += [(int(i), int(lab), tuple(int(c) for c in b), bool(h))
                            for i, lab, b, h in zip(idx, labels, best, h1, strict=True)]
            if bar is not None:
                bar.update(len(errors))
                bar.set_postfix_str(f"top-1 err {error_percent(top1, seen):.2f} %")
        seconds = time.perf_counter() - start
        if world > 1:
            seen, top1, top5, seconds, engine_seconds, skipped, predictions = _sum_over_ranks(
                seen, top1, top5, seconds, engine_seconds, skipped, predictions)
    finally:
        if bar is not None:
            bar.close()
        if group_owned:
            dist.destroy_process_group()

    if seen == 0:
        raise DataError(f"no image of {dataset.name} could be evaluated ({len(skipped):,} skipped)")
    model = meta.model if meta is not None else "unknown"
    augmented = bool(meta.extra.get("augmented", True)) if meta is not None else True
    e1, e5 = error_percent(top1, seen), error_percent(top5, seen)
    comparisons = zoo.comparisons(model if meta is not None else None, dataset.name, spec.name,
                                  {"top1": e1, "top5": e5}, ten_crop=ten_crop, augmented=augmented)
    return EvalReport(
        engine=str(Path(engine.path).name), model=model, dataset=dataset.name, split=dataset.split,
        preprocess=spec.name, ten_crop=ten_crop, images=seen, top1_correct=top1, top5_correct=top5,
        top1_error=e1, top5_error=e5, top1_ci95=binomial_ci95(seen - top1, seen),
        top5_ci95=binomial_ci95(seen - top5, seen), seconds=seconds,
        throughput=seen / seconds if seconds > 0 else float("inf"), engine_seconds=engine_seconds,
        engine_throughput=seen / engine_seconds if engine_seconds > 0 else float("inf"),
        comparisons=comparisons,
        skipped=tuple(sorted(skipped)), world_size=world, predictions=tuple(sorted(predictions)),
        test_set=DATASETS[dataset.name].test_images if dataset.name in DATASETS and dataset.split == "test" else None,
    )


def _sum_over_ranks(seen, top1, top5, seconds, engine_seconds, skipped, predictions):
    """Counts summed, times the slowest rank's, skipped files and predictions gathered (gloo)."""
    counts = torch.tensor([seen, top1, top5], dtype=torch.int64)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    times = torch.tensor([seconds, engine_seconds], dtype=torch.float64)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (skipped, predictions))
    all_skipped = [s for part in gathered for s in part[0]]
    all_predictions = [p for part in gathered for p in part[1]]
    seen, top1, top5 = (int(v) for v in counts.tolist())
    return seen, top1, top5, float(times[0]), float(times[1]), all_skipped, all_predictions


__all__ = ["Comparison", "EvalReport", "binomial_ci95", "check_tolerance", "evaluate", "published_error",
           "reduce_ten_crop",
           "topk_hits", "top5_labels", "write_predictions"]
