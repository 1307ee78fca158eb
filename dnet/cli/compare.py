"""``dnet compare REF OTHER``: where two model files start to disagree, stage by stage or convolution by convolution."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from dnet.apps.compare import LayerReport, compare, compare_layers
from dnet.apps.compare_plot import plot_layers
from dnet.cli.groups import verb
from dnet.cli.main import reports_errors
from dnet.cli.options import MAX_BATCH, count, default_arg, json_option, quiet_option
from dnet.cli.progress import progress_for
from dnet.core.errors import UsageError
from dnet.core.outputs import check_output_path
from dnet.core.table import format_table

RANKED = 5  # layers named under the per-layer table


def _plot_path(other: Path, plot: Path | None) -> Path:
    """--plot, else OTHER's name with .layers.png, beside OTHER."""
    return plot if plot is not None else other.with_name(f"{other.stem}.layers.png")


def _layer_text(report: LayerReport, plot: Path | None) -> str:
    g = f"{report.logits.rel_error:.3e}"
    rows = [[r.depth, r.layer, "×".join(map(str, r.shape[1:])), f"{r.rel_error:.3e}", f"{r.cosine:.6f}", f"{r.max_abs:.3e}",
             f"{r.input_rel_error:.3e}", f"{r.added:+.3e}"] for r in report.rows]
    rows.append(["", "logits", "×".join(map(str, report.logits.shape[1:])), g, f"{report.logits.cosine:.6f}",
                 f"{report.logits.max_abs:.3e}", "", ""])
    mode = ("ONNX Runtime with its Q/DQ fusions (--fused)" if report.fused
            else "ONNX Runtime computing Q/DQ as written (basic graph optimizations)")
    lines = [f"{Path(report.other).name} against {Path(report.ref).name}: {report.count} inputs ({report.inputs}), {mode}",
             format_table(["#", "layer", "shape", "rel error", "cosine", "max|Δ|", "input rel", "added"], rows,
                          right=(0, 3, 4, 5, 6, 7)),
             f"logits of the files as they are: top-1 agreement {report.logits.top1_agreement:.1%}",
             "compared: each Conv's float output (in a Q/DQ file the tensor before its QuantizeLinear; a BatchNorm the "
             "exporter folded into the Conv, such as conv1's norm2, is included) and the input it read; "
             "added = rel error − input rel",
             "most error added: " + ", ".join(f"{i + 1}. {r.layer} {r.added:+.3g}" for i, r in enumerate(report.ranking(RANKED)))]
    if report.pairing == "position":
        lines.append("paired by position: a file does not name its convolutions")
    if report.unmatched:
        lines.append(f"only in one file: {', '.join(report.unmatched)}")
    lines += [f"outputs: {f.line()}" for f in report.fusion]
    if plot is not None:
        lines.append(f"plot: {plot}")
    return "\n".join(lines)


@contextlib.contextmanager
def _running(quiet: bool, stage: str):
    """``stage …`` on the terminal while the comparison runs (a minute on densenet121), then its seconds."""
    progress = progress_for(quiet)
    progress.stage(stage)
    try:
        yield
    finally:
        progress.close()


@verb("compare")
@click.argument("ref", type=click.Path(path_type=Path))
@click.argument("other", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), help="Folder of images (default: random inputs).")
@click.option("--count", type=count(1, MAX_BATCH), default=default_arg(compare, "count"), show_default=True,
              help="Inputs to compare on.")
@click.option("--per-layer", is_flag=True, help="Compare every convolution of two ONNX files, rank the layers, plot.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="OUT.png",
              help="Where --per-layer writes its plot (default: OTHER's name with .layers.png, beside it).")
@click.option("--no-plot", is_flag=True, help="With --per-layer: write no plot.")
@click.option("--fused", is_flag=True,
              help="With --per-layer: let ONNX Runtime fuse Q/DQ into integer kernels (the extra outputs split them).")
@json_option("the comparison")
@quiet_option()
@reports_errors
def compare_cmd(ref, other, images, count, per_layer, plot, no_plot, fused, as_json, quiet) -> None:
    """Run REF and OTHER on the same inputs; compare every dense block, transition and the logits."""
    if not per_layer and (plot is not None or no_plot or fused):
        raise UsageError("--plot, --no-plot and --fused go with --per-layer")
    if per_layer:
        inputs = [ref, other] + ([images] if images is not None else [])
        # before the comparison, not after it: never one of the model files, a device or a FIFO
        target = None if no_plot else check_output_path(_plot_path(other, plot), inputs=inputs)
        with _running(quiet, f"{other.name} against {ref.name}: every convolution on {count} inputs"):
            report = compare_layers(ref, other, images=images, count=count, fused=fused)
        if target is not None:
            plot_layers(report, target, inputs=inputs)
        if as_json:
            click.echo(json.dumps({**report.to_dict(), "plot": str(target) if target else None}, indent=1))
        else:
            click.echo(_layer_text(report, target))
        return
    with _running(quiet, f"{other.name} against {ref.name}: every stage on {count} inputs"):
        rows = compare(ref, other, images=images, count=count)
    if as_json:
        click.echo(json.dumps({"ref": str(ref), "other": str(other), "inputs": str(images) if images else "random",
                               "count": count, "stages": [r.to_dict() for r in rows]}, indent=1))
        return
    table = [[r.stage, "×".join(map(str, r.shape[1:])), f"{r.rel_error:.3e}", f"{r.cosine:.6f}", f"{r.max_abs:.3e}",
              "" if r.top1_agreement is None else f"{r.top1_agreement:.1%}"] for r in rows]
    click.echo(format_table(["stage", "shape", "rel error", "cosine", "max|Δ|", "top-1 agree"], table, right=(2, 3, 4, 5)))
