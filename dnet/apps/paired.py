"""Is a drop real? Two model files evaluated on the same images, and the paired difference of their top-1 error.

Each image is scored by both files, so the outcomes are paired: a 2×2 table of images both got right (``both_right``),
only the engine (``engine_only``), only the reference (``reference_only``), neither (``both_wrong``). Only the discordant
images carry information about the difference:

- Δ top-1 error = (reference_only − engine_only) / n, in points: positive when the engine gets more images wrong.
- Its 95% interval is Newcombe's hybrid score interval for paired proportions (R. G. Newcombe, "Improved confidence
  intervals for the difference between binomial proportions based on paired data", Statistics in Medicine 17 (1998)
  2635-2650, method 10): the Wilson score intervals of the two accuracies, combined by square-and-add with the
  (continuity-corrected) correlation of the paired outcomes. It is one of the intervals Fagerland, Lydersen and Laake
  recommend ("Recommended tests and confidence intervals for paired binomial proportions", Statistics in Medicine 33
  (2014) 2850-2875). Not the Wald interval on the paired differences: with few discordant images, which is what INT8
  against FP32 gives, Wald's coverage is poor, and with none it has zero width ("Δ 0 ± 0"), claiming a certainty
  that one test set cannot give. Newcombe's interval stays sensible there and needs no iteration.
- The exact McNemar test: without a real difference, each discordant image is equally likely to favour either file,
  so ``engine_only`` ~ Binomial(engine_only + reference_only, 1/2); the two-sided p-value is that binomial test's
  (scipy.stats.binomtest), 1 when no image is discordant.

:func:`evaluate_paired` decodes every image once and feeds the same batch to both engines (through
:func:`dnet.apps.eval.loop.evaluate`, so decoding, batching, ten-crop and skipped images behave exactly as in ``dnet eval``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from dnet.apps.eval.loop import choose_spec, evaluate
from dnet.apps.eval.metrics import Z95, reduce_ten_crop, top5_labels, topk_hits
from dnet.apps.eval.report import EvalReport
from dnet.core.errors import DataError, DnetError, UsageError
from dnet.core.similarity import require_finite
from dnet.core.specs import PreprocessSpec
from dnet.data.datasets import ArrayDataset, FileDataset
from dnet.engines.base import Engine

INTERVAL = "Newcombe hybrid score (1998, method 10)"
LOST_CLASSES = 5  # classes listed, those with the largest net loss first


# --- the statistics, as small pure functions ---------------------------------------------------------------

def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def newcombe_paired(n11: int, n10: int, n01: int, n00: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for p1 − p2 = (n10 − n01)/n from a paired 2×2 table.

    ``n11``: both positive; ``n10``: only the first; ``n01``: only the second; ``n00``: neither.
    """
    n = n11 + n10 + n01 + n00
    if n <= 0:
        raise ValueError("an empty table has no interval")
    first, second = n11 + n10, n11 + n01
    p1, p2 = first / n, second / n
    (l1, u1), (l2, u2) = wilson(first, n, z), wilson(second, n, z)
    margins = first * (n - first) * second * (n - second)
    a = n11 * n00 - n10 * n01
    # the correlation of the paired outcomes, continuity-corrected as Newcombe does: shrunk by n/2 when positive
    phi = 0.0 if margins == 0 or 0 <= a <= n / 2 else (a - n / 2 if a > 0 else a) / math.sqrt(margins)
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return lower, upper


def mcnemar_exact(n10: int, n01: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of n10 out of the n10 + n01 discordant pairs at 1/2."""
    discordant = n10 + n01
    return 1.0 if discordant == 0 else float(binomtest(n10, discordant, 0.5).pvalue)


# --- the report ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassLoss:
    index: int
    name: str
    images: int
    lost: int  # images of this class only the reference got right
    gained: int  # ... only the engine

    @property
    def net(self) -> int:
        return self.lost - self.gained

    @property
    def label(self) -> str:
        return f"class {self.index}" if self.name == str(self.index) else f"{self.name} (class {self.index})"


@dataclass(frozen=True)
class PairedReport:
    engine: str
    reference: str
    dataset: str
    preprocess: str
    images: int
    both_right: int
    engine_only: int  # images only the engine got right
    reference_only: int  # images only the reference got right
    both_wrong: int
    engine_error: float  # top-1, %
    reference_error: float
    delta: float  # engine − reference, points
    ci95: tuple[float, float]  # of delta, points
    p_value: float  # exact McNemar, two-sided
    lost_classes: tuple[ClassLoss, ...]
    interval: str = INTERVAL
    report: EvalReport | None = None  # the engine's own evaluation (predictions, skipped images, ...)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("report")
        d["ci95"] = list(self.ci95)
        d["lost_classes"] = [{**asdict(c), "net": c.net} for c in self.lost_classes]
        d["engine_report"] = self.report.to_dict() if self.report is not None else None
        return d

    def lines(self) -> list[str]:
        lo, hi = self.ci95
        lost = ", ".join(f"{c.label} −{c.net} ({c.lost} lost, {c.gained} gained, of {c.images})" for c in self.lost_classes)
        return [
            f"top-1 error {self.engine_error:.2f} % ({self.engine}) vs {self.reference_error:.2f} % ({self.reference}) "
            f"on the same {self.images:,} images",
            f"Δ top-1 error {self.delta:+.2f} points (95% CI {lo:+.2f} to {hi:+.2f}, {self.interval}) · "
            f"exact McNemar p = {self.p_value:.4g}",
            f"only {self.engine} right: {self.engine_only:,} · only {self.reference} right: {self.reference_only:,} · "
            f"both right: {self.both_right:,} · both wrong: {self.both_wrong:,}",
            f"classes that lost most: {lost or 'none'}",
        ] + ([f"{len(self.report.skipped):,} images skipped (undecodable)"] if self.report and self.report.skipped else [])


def paired_report(engine: str, reference: str, labels: np.ndarray, engine_hit: np.ndarray, reference_hit: np.ndarray,
                  *, dataset: str = "", preprocess: str = "", class_names=None, report: EvalReport | None = None
                  ) -> PairedReport:
    """The paired statistics of per-image top-1 outcomes (booleans, one per image, same order as ``labels``)."""
    labels = np.asarray(labels, np.int64)
    e, r = np.asarray(engine_hit, bool), np.asarray(reference_hit, bool)
    if not len(labels) == len(e) == len(r) or not len(labels):
        raise ValueError(f"{len(labels)} labels, {len(e)} and {len(r)} outcomes")
    n = len(labels)
    n11, n10, n01 = int(np.sum(e & r)), int(np.sum(e & ~r)), int(np.sum(~e & r))
    n00 = n - n11 - n10 - n01
    lo, hi = newcombe_paired(n11, n10, n01, n00)  # of accuracy(engine) − accuracy(reference)
    classes = []
    for c in np.unique(labels):
        mine = labels == c
        lost, gained = int(np.sum(mine & ~e & r)), int(np.sum(mine & e & ~r))
        if lost > gained:
            name = str(class_names[c]) if class_names is not None and c < len(class_names) else str(int(c))
            classes.append(ClassLoss(int(c), name, int(mine.sum()), lost, gained))
    classes.sort(key=lambda c: (-c.net, -c.lost, c.index))
    return PairedReport(
        engine=engine, reference=reference, dataset=dataset, preprocess=preprocess, images=n, both_right=n11,
        engine_only=n10, reference_only=n01, both_wrong=n00, engine_error=100.0 * (n - n11 - n10) / n,
        reference_error=100.0 * (n - n11 - n01) / n, delta=100.0 * (n01 - n10) / n, ci95=(-100.0 * hi, -100.0 * lo),
        p_value=mcnemar_exact(n10, n01), lost_classes=tuple(classes[:LOST_CLASSES]), report=report)


# --- feeding both engines the same batches -----------------------------------------------------------------

def _run(engine: Engine, batch: np.ndarray) -> np.ndarray:
    """The engine's logits; a fixed-batch engine gets the batch in pieces of its size, the last one padded."""
    n = engine.input_shape[0]
    if n <= 0:
        return engine(batch)
    pieces = []
    for start in range(0, len(batch), n):
        part = batch[start:start + n]
        pad = np.zeros((n - len(part),) + part.shape[1:], part.dtype)
        pieces.append(engine(np.concatenate([part, pad]) if len(pad) else part)[:len(part)])
    return np.concatenate(pieces)


class _Both(Engine):
    """What :func:`dnet.apps.eval.loop.evaluate` sees: the engine, which also feeds every batch it gets to the reference."""

    kind = "paired"

    def __init__(self, engine: Engine, reference: Engine) -> None:
        self.engine, self.reference = engine, reference
        self.path, self.meta, self.device = engine.path, engine.meta, engine.device
        self.input_shape = (-1, *engine.input_shape[1:])
        self.mine: list[np.ndarray] = []
        self.theirs: list[np.ndarray] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        mine, theirs = _run(self.engine, batch), require_finite(_run(self.reference, batch), self.reference.path.name)
        if mine.shape != theirs.shape:
            raise DataError(f"{self.engine.path.name} gives {mine.shape[1]} classes but {self.reference.path.name} "
                            f"{theirs.shape[1]}; compare two files of the same model")
        self.mine.append(np.asarray(mine, np.float32))
        self.theirs.append(np.asarray(theirs, np.float32))
        return mine


def _check_same_inputs(engine: Engine, reference: Engine, dataset, preprocess) -> None:
    """Refuse, in one line, two files that one decoding cannot feed both."""
    a, b = engine.path.name, reference.path.name
    if engine.meta is not None and reference.meta is not None and engine.meta.num_classes != reference.meta.num_classes:
        raise DataError(f"{a} has {engine.meta.num_classes} classes but {b} has {reference.meta.num_classes}; "
                        "compare two files of the same model")
    sizes = [tuple(e.input_shape[2:]) for e in (engine, reference)]
    if all(min(s) > 0 for s in sizes) and sizes[0] != sizes[1]:
        raise UsageError(f"{a} takes {sizes[0][0]}×{sizes[0][1]} inputs but {b} takes {sizes[1][0]}×{sizes[1][1]}; "
                         "the same images cannot feed both")
    if preprocess is None:
        spec_a, spec_b = choose_spec(engine, dataset, None), choose_spec(reference, dataset, None)
        if spec_a != spec_b:
            raise UsageError(f"{a} expects {spec_a.name} preprocessing at {spec_a.input_size} but {b} {spec_b.name} at "
                             f"{spec_b.input_size}; the same images cannot feed both (name one preprocessing for both)",
                             option="preprocess")


def evaluate_paired(engine: Engine, reference: Engine, dataset: ArrayDataset | FileDataset, *, batch: int = 32,
                    limit: int | None = None, workers: int | None = None, preprocess: str | PreprocessSpec | None = None,
                    ten_crop: bool = False, skip_bad: bool = False, progress: bool = True) -> PairedReport:
    """Evaluate ``engine`` and ``reference`` on the same decoded images; the paired difference of their top-1 error."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("a paired evaluation runs in one process; run it without torchrun")
    _check_same_inputs(engine, reference, dataset, preprocess)
    both = _Both(engine, reference)
    report = evaluate(both, dataset, batch=batch, limit=limit, workers=workers, preprocess=preprocess,
                      ten_crop=ten_crop, skip_bad=skip_bad, progress=progress)
    mine, theirs = np.concatenate(both.mine), np.concatenate(both.theirs)
    if ten_crop:
        mine, theirs = reduce_ten_crop(mine), reduce_ten_crop(theirs)
    labels = np.asarray([p[1] for p in report.predictions], np.int64)
    # evaluate() feeds images in index order and reports its predictions sorted by index: the rows line up. Check it.
    if len(mine) != len(labels) or not np.array_equal(top5_labels(mine)[:, 0], [p[2][0] for p in report.predictions]):
        raise DnetError(f"paired evaluation lost track of which logits belong to which image ({len(mine)} rows, "
                        f"{len(labels)} images); this is a bug in dnet")
    return paired_report(Path(engine.path).name, Path(reference.path).name, labels, topk_hits(mine, labels, 1),
                         topk_hits(theirs, labels, 1), dataset=dataset.name, preprocess=report.preprocess,
                         class_names=getattr(dataset, "class_names", None), report=report)


__all__ = ["INTERVAL", "ClassLoss", "PairedReport", "evaluate_paired", "mcnemar_exact", "newcombe_paired",
           "paired_report", "wilson"]
