"""The demo pipeline on the built-in digits data set: train → convert → eval → report.

Each stage is the library code a user's command runs (``dnet train``, ``dnet.converters.pipeline.convert``,
``dnet.apps.eval.loop.evaluate``, ``dnet.apps.bench``), not an imitation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dnet import engines
from dnet.apps.bench import bench_engines
from dnet.apps.eval.loop import evaluate
from dnet.apps.train.recipe import recipe
from dnet.apps.train.trainer import TrainResult, train
from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.options import Int8Options
from dnet.converters.pipeline import convert
from dnet.core.atomic import atomic_path, atomic_write_text
from dnet.core.errors import AccuracyError
from dnet.core.progress import Recorder
from dnet.core.table import format_table
from dnet.data.datasets import open_dataset

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
    bench_seconds: float = 1.0  # timed seconds per file and batch size for latency and throughput
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
    throughput: float | None  # images/s at the training batch size
    size_bytes: int


@dataclass
class DemoResult:
    out: Path
    train: TrainResult | None = None
    files: dict[str, Path] = field(default_factory=dict)  # label -> model file
    rows: list[Row] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)  # the conversion's checks and their numbers

    def to_dict(self) -> dict:
        """What ``dnet demo --json`` prints: the folder, the training run, each model file, its numbers, the checks."""
        tr = self.train
        return {
            "out": str(self.out),
            "train": None if tr is None else {"run_dir": str(tr.run_dir), "epochs": tr.epochs_done,
                                              "final_error": tr.final_error, "best_error": tr.best_error},
            "files": {label: str(path) for label, path in self.files.items()},
            "rows": [asdict(r) for r in self.rows],
            "checks": self.checks,
            "written": [str(p) for p in self.written],
        }


def stage_train(cfg: DemoConfig, out: Path, log: Callable[[str], None]) -> TrainResult:
    tc = recipe("digits", depth=cfg.depth, growth_rate=cfg.growth_rate, bc=True, epochs=cfg.epochs,
                batch=cfg.batch, lr_schedule=cfg.lr_schedule, seed=cfg.seed, threads=cfg.threads, out=str(out / "train"),
                quiet=cfg.quiet)
    return train(tc, log=log)


def stage_convert(cfg: DemoConfig, checkpoint: Path, out: Path, progress: Recorder | None = None) -> dict[str, Path]:
    """FP32, FP16 and INT8 ONNX from the checkpoint (``dnet convert``'s library); INT8 calibrated on training images.
    ``progress`` hears the conversion's stages and checks."""
    calib = CalibrationSet(images=open_dataset("digits", None, "train").images, count=cfg.calib_images,
                           name="digits/train")
    *_, int8 = convert(checkpoint, src_format="pth", target="onnx-int8", out=out / "digits.int8.onnx",
                       int8=Int8Options(calib=calib), progress=progress)
    fp32 = out / "digits.onnx"  # kept beside the INT8 file by the chain
    *_, fp16 = convert(fp32, src_format="onnx", target="onnx-fp16", out=out / "digits.fp16.onnx",
                       int8=Int8Options(calib=calib), progress=progress)
    return {"ONNX FP32": fp32, "ONNX FP16": Path(fp16), "ONNX INT8": Path(int8)}


def stage_eval(cfg: DemoConfig, files: dict[str, Path]) -> list[Row]:
    """Each file's error on the digits test split (``dnet eval``'s library) and its speed (``dnet bench``'s),
    the speeds measured side by side; Δ is against the first file (the FP32 reference)."""
    test = open_dataset("digits", None, "test")
    errors = {label: evaluate(path, test, progress=False).top1_error for label, path in files.items()}
    opened = [engines.open(p, threads=cfg.threads) for p in files.values()]
    try:
        latency = bench_engines(opened, 1, warmup=0.2, duration=cfg.bench_seconds)
        throughput = bench_engines(opened, cfg.batch, warmup=0.2, duration=cfg.bench_seconds)
    finally:
        for e in opened:
            e.close()
    ref = next(iter(errors.values()))
    return [Row(label, str(path), errors[label], None if i == 0 else errors[label] - ref, lat.median_ms,
                thr.throughput, Path(path).stat().st_size)
            for i, ((label, path), lat, thr) in enumerate(zip(files.items(), latency, throughput))]


def format_report(rows: list[Row]) -> str:
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
        # points often coincide (same accuracy, similar latency): stagger the labels so each stays legible
        ax.annotate(r.label, (r.latency_ms, 100.0 - r.error), textcoords="offset points",
                    xytext=(5, 5 - 12 * (rows.index(r) % 4)))
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


def write_report(result: DemoResult, table: str) -> tuple[Path, Path, Path]:
    """report.txt, report.json and the plot in ``result.out``, each written atomically (a failed or interrupted write
    keeps the previous file); their paths."""
    tr = result.train
    doc = {"rows": [asdict(r) for r in result.rows],
           "train": {"run_dir": str(tr.run_dir), "epochs": tr.epochs_done, "final_error": tr.final_error,
                     "best_error": tr.best_error}, "checks": result.checks}
    paths = result.out / "report.txt", result.out / REPORT_JSON, result.out / REPORT_PNG
    atomic_write_text(paths[0], table + "\n")
    atomic_write_text(paths[1], json.dumps(doc, indent=2) + "\n")
    plot_accuracy_latency(result.rows, paths[2])
    return paths


def run_demo(cfg: DemoConfig = DemoConfig(), log: Callable[[str], None] = print,
             progress: Recorder | None = None) -> DemoResult:
    """Run every stage; write the report (table, JSON, PNG) into ``cfg.out``. ``progress`` (a ``dnet.core.progress.Recorder``)
    hears the conversion's stages; the checks it records land in ``result.checks``."""
    progress = progress or Recorder()
    out = Path(cfg.out) if cfg.out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)

    log("== 1/4 train")
    result.train = tr = stage_train(cfg, out, log)
    # The last epoch's model, not the best one: choosing by test error would flatter the test error.
    accuracy = 100.0 - tr.final_error
    log(f"FP32 test accuracy {accuracy:.2f}% after {tr.epochs_done} epochs (the demo promises ≥ {cfg.min_accuracy:g}%)")
    result.files["PyTorch FP32"] = tr.last

    log("== 2/4 convert")
    result.files.update(stage_convert(cfg, tr.last, out, progress))
    result.checks = list(progress.checks)
    for label, path in result.files.items():
        log(f"{label:<14} {path}")

    log("== 3/4 eval")
    result.rows = stage_eval(cfg, result.files)

    log("== 4/4 report")
    table = format_report(result.rows)
    log(table)
    report, doc, png = write_report(result, table)
    result.written = [tr.run_dir, *[p for p in result.files.values() if p != tr.last], report, doc, png]
    log("written:")
    for p in [tr.run_dir / "metrics.csv", tr.run_dir / "curves.png", tr.last, *result.written[1:]]:
        log(f"  {p}")
    int8 = [r for r in result.rows if "INT8" in r.label]
    if accuracy < cfg.min_accuracy:
        raise AccuracyError(f"FP32 test accuracy {accuracy:.2f}% is below the demo's {cfg.min_accuracy:g}%")
    if int8 and int8[0].delta is not None and int8[0].delta > 1.0:
        raise AccuracyError(f"INT8 error is {int8[0].delta:.2f} points above FP32 (the demo allows 1)")
    return result
