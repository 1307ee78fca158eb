"""An evaluation's report (errors, intervals, the published number beside them), the tolerance check and the predictions CSV.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from dnet.core.atomic import atomic_write_text
from dnet.core.errors import AccuracyError, UsageError
from dnet.data.datasets import FileDataset
from dnet.models import zoo
from dnet.models.published import Comparison


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
