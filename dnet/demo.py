"""The demo pipeline on the built-in digits data set: train → convert → eval → report.

Each stage is the library code a user's command runs (``dnet train``, ``converters.pipeline.convert``,
``dnet.eval.evaluate``), not an imitation. A stage whose library is not part of this build is skipped with
the reason, and the report says so.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dnet.data.datasets import open_dataset
from dnet.errors import AccuracyError
from dnet.files import atomic_path, atomic_write_text
from dnet.train.recipe import recipe
from dnet.train.trainer import TrainResult, train

REPORT_JSON = "report.json"
REPORT_PNG = "accuracy_vs_latency.png"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's choices: a 22-layer DenseNet-BC (k=12) on digits, trained long enough for ≥ 97%."""

    out: str | None = None  # default runs/demo-<time>
    epochs: int = 30
    depth: int = 22
    growth_rate: int = 12  # 71,686 parameters; 30 cosine epochs reach 99.7% (seed 0)
    batch: int = 64
    lr_schedule: str = "cosine"
    seed: int = 0
    threads: int = 1  # one thread is fastest for 8×8 images and immune to a busy machine
    calib_images: int = 512  # INT8 calibration: this many training images
    min_accuracy: float = 97.0  # the demo's promise for the FP32 model, in %
    quiet: bool = False


@dataclass(frozen=True)
class Row:
    """One line of the report: a model file and what it measured."""

    label: str
    file: str
    error: float  # top-1 error, %
    delta: float | None  # error minus the FP32 reference's, points
    latency_ms: float | None  # batch 1, median
    throughput: float | None  # images/s at the evaluation batch
    size_bytes: int


@dataclass
class DemoResult:
    out: Path
    train: TrainResult | None = None
    files: dict[str, Path] = field(default_factory=dict)  # label -> model file
    rows: list[Row] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (stage, why)
    written: list[Path] = field(default_factory=list)


def stage_train(cfg: DemoConfig, out: Path, log: Callable[[str], None]) -> TrainResult:
    tc = recipe("digits", depth=cfg.depth, growth_rate=cfg.growth_rate, bc=True, epochs=cfg.epochs,
                batch=cfg.batch, lr_schedule=cfg.lr_schedule, seed=cfg.seed, threads=cfg.threads, out=str(out / "train"),
                quiet=cfg.quiet)
    return train(tc, log=log)


def stage_convert(cfg: DemoConfig, checkpoint: Path, out: Path) -> dict[str, Path]:
    """FP32, FP16 and INT8 ONNX from the checkpoint; INT8 calibrated on training images."""
    from converters.pipeline import convert  # ImportError: the stage is skipped

    calib = open_dataset("digits", None, "train").images[: cfg.calib_images]
    files = {}
    for precision in PRECISIONS:
        paths = convert(checkpoint, src_format="pth", target="onnx", out=out / f"model.{precision}.onnx",
                        precision=precision, calib_images=calib)
        files[f"ONNX {precision.upper()}"] = Path(paths[-1])
    return files


def measure_latency(path: Path, input_size: int, runs: int = 50) -> float:
    """Median batch-1 latency (ms) of a model file through ``engines.open``."""
    import engines

    x = np.zeros((1, 3, input_size, input_size), np.float32)
    with engines.open(path) as engine:
        for _ in range(5):
            engine(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            engine(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure_throughput(path: Path, input_size: int, batch: int = 64, runs: int = 10) -> float:
    import engines

    x = np.zeros((batch, 3, input_size, input_size), np.float32)
    with engines.open(path) as engine:
        engine(x)
        t0 = time.perf_counter()
        for _ in range(runs):
            engine(x)
        return batch * runs / (time.perf_counter() - t0)


def stage_eval(files: dict[str, Path], input_size: int) -> list[tuple[str, Path, float, float | None]]:
    """(label, file, error %, throughput) of each file on the digits test split via ``dnet.eval.evaluate``."""
    from dnet.eval import evaluate  # ImportError: the stage is skipped

    test = open_dataset("digits", None, "test")
    out = []
    for label, path in files.items():
        report = evaluate(path, test)
        out.append((label, path, float(report.top1_error), getattr(report, "throughput", None)))
    return out


def make_rows(measured: list[tuple[str, Path, float, float | None]], input_size: int) -> list[Row]:
    """Report rows; Δ is against the first row (the FP32 reference)."""
    rows = []
    ref = measured[0][2] if measured else math.nan
    for i, (label, path, error, throughput) in enumerate(measured):
        rows.append(Row(label, str(path), error, None if i == 0 else error - ref, measure_latency(path, input_size),
                        throughput if throughput is not None else measure_throughput(path, input_size),
                        Path(path).stat().st_size))
    return rows


def format_report(rows: list[Row]) -> str:
    from dnet.cli.table import format_table

    body = [[r.label, Path(r.file).name, f"{r.error:.2f}", "–" if r.delta is None else f"{r.delta:+.2f}",
             "–" if r.latency_ms is None else f"{r.latency_ms:.2f}",
             "–" if r.throughput is None else f"{r.throughput:,.0f}", f"{r.size_bytes / 1024:,.0f} KiB"]
            for r in rows]
    return format_table(["model", "file", "error %", "Δ vs FP32", "latency ms (b=1)", "img/s", "size"], body,
                        right=(2, 3, 4, 5, 6))


def plot_accuracy_latency(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.latency_ms is None:
            continue
        ax.scatter(r.latency_ms, 100.0 - r.error)
        ax.annotate(r.label, (r.latency_ms, 100.0 - r.error), textcoords="offset points", xytext=(5, 5))
    accs = [100.0 - r.error for r in rows if r.latency_ms is not None]
    if accs:
        ax.set_ylim(min(accs) - 1.0, 100.2)  # accuracy cannot exceed 100%
    ax.set_xlabel("latency, batch 1 (ms)")
    ax.set_ylabel("top-1 accuracy on digits test (%)")
    ax.set_title("DenseNet-BC on digits: accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_demo(cfg: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage; write the report (table, JSON, PNG) into ``cfg.out``."""
    out = Path(cfg.out) if cfg.out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)

    log("== 1/4 train")
    result.train = tr = stage_train(cfg, out, log)
    # The last epoch's model, not the best one: choosing by test error would flatter the test error.
    accuracy = 100.0 - tr.final_error
    log(f"FP32 test accuracy {accuracy:.2f}% after {tr.epochs_done} epochs (the demo promises ≥ {cfg.min_accuracy:g}%)")
    result.files["PyTorch FP32"] = tr.last
    input_size = tr.meta.input_size

    log("== 2/4 convert")
    try:
        result.files.update(stage_convert(cfg, tr.last, out))
        for label, path in result.files.items():
            log(f"{label:<14} {path}")
    except ImportError as e:
        result.skipped.append(("convert", f"converters.pipeline is not in this build ({e})"))
        log(f"skipped: {result.skipped[-1][1]}")

    log("== 3/4 eval")
    try:
        measured = stage_eval(result.files, input_size)
    except ImportError as e:
        result.skipped.append(("eval", f"dnet.eval is not in this build ({e}); the PyTorch row uses the "
                                       "training run's own test evaluation"))
        log(f"skipped: {result.skipped[-1][1]}")
        measured = [("PyTorch FP32", tr.last, tr.final_error, None)]
    result.rows = make_rows(measured, input_size)

    log("== 4/4 report")
    table = format_report(result.rows)
    log(table)
    png = out / REPORT_PNG
    plot_accuracy_latency(result.rows, png)
    doc = {"rows": [asdict(r) for r in result.rows], "skipped": [{"stage": s, "why": w} for s, w in result.skipped],
           "train": {"run_dir": str(tr.run_dir), "epochs": tr.epochs_done, "final_error": tr.final_error,
                     "best_error": tr.best_error}}
    atomic_write_text(out / REPORT_JSON, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "report.txt", table + "\n")
    result.written = [tr.run_dir, *[p for p in result.files.values() if p != tr.last], out / "report.txt",
                      out / REPORT_JSON, png]
    log("written:")
    for p in [tr.run_dir / "metrics.csv", tr.run_dir / "curves.png", tr.last, *result.written[1:]]:
        log(f"  {p}")
    for stage, why in result.skipped:
        log(f"stage {stage} skipped: {why}")
    int8 = [r for r in result.rows if "INT8" in r.label]
    if accuracy < cfg.min_accuracy:
        raise AccuracyError(f"FP32 test accuracy {accuracy:.2f}% is below the demo's {cfg.min_accuracy:g}%")
    if int8 and int8[0].delta is not None and int8[0].delta > 1.0:
        raise AccuracyError(f"INT8 error is {int8[0].delta:.2f} points above FP32 (the demo allows 1)")
    return result
