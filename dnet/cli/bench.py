"""``dnet bench``: latency percentiles and throughput of one or more model files, side by side."""

from __future__ import annotations

import json

import click

from dnet.apps.bench import BATCH_SIZES, bench_engines, layer_profile, open_engines, tensorrt_only, use_cuda_graphs
from dnet.cli.groups import Alias, verb
from dnet.cli.main import reports_errors, warn
from dnet.cli.options import (
    MAX_INPUT_SIZE,
    MAX_ITERATIONS,
    MAX_SECONDS,
    MAX_THREADS,
    amount,
    count,
    default_arg,
    json_option,
    parse_batch_sizes,
    provider_option,
    quiet_option,
)
from dnet.cli.progress import progress_for
from dnet.core.table import format_table
from dnet.engines.base import PROVIDERS

SECTIONS = (
    ("Timing", ("--batch-sizes", "--warmup", "--duration", "--iterations", "--warmup-iterations", "--input-size")),
    ("Runtime", ("--provider", "--threads", "--cuda-graph", "--per-layer")),
)
ALIASES = (Alias("--engine", None, "pass the model files as the arguments: dnet bench FILE..."),
           Alias("--batch", "--batch-sizes"))


@verb("bench", sections=SECTIONS, aliases=ALIASES)
@click.argument("paths", metavar="FILE...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--batch-sizes", "batches", default=",".join(map(str, BATCH_SIZES)), show_default=True,
              metavar="N,N,...", help="Batch sizes to measure, comma-separated.")
@click.option("--warmup", type=amount(0, MAX_SECONDS), default=default_arg(bench_engines, "warmup"), show_default=True,
              help="Warm-up seconds per engine.")
@click.option("--duration", type=amount(0.01, MAX_SECONDS), default=default_arg(bench_engines, "duration"),
              show_default=True, help="Timed seconds per engine and batch size.")
@click.option("--iterations", type=count(1, MAX_ITERATIONS), default=None,
              help="Timed runs per engine and batch size (instead of --duration).")
@click.option("--warmup-iterations", type=count(0, MAX_ITERATIONS), default=None,
              help="Untimed runs per engine and batch size before timing (instead of --warmup).")
@click.option("--input-size", type=count(1, MAX_INPUT_SIZE), default=None,
              help="Input height and width (default: each model's own; a fixed-size model takes only its own).")
@click.option("--threads", type=count(1, MAX_THREADS), default=None, help="CPU threads (default: the runtime's).")
@provider_option(PROVIDERS, "the engines run")
@click.option("--cuda-graph", is_flag=True, help="TensorRT plans: replay each shape from a CUDA graph (trtexec --useCudaGraph).")
@click.option("--per-layer", is_flag=True, help="TensorRT plans: per-layer times from TensorRT's profiler, after the latency table.")
@json_option()
@quiet_option()
@reports_errors
def bench_cmd(paths, batches, warmup, duration, iterations, warmup_iterations, input_size, threads, provider, cuda_graph,
              per_layer, as_json, quiet) -> None:
    """Latency (mean, median, p90, p95, p99), throughput and memory of each model FILE (.plan, .onnx, .xml, .pth,
    .t7; ratios are to the first) and batch size.

    Memory is the resident memory an engine added when opened and first run at that batch size.
    """
    sizes = parse_batch_sizes(batches)
    progress = progress_for(quiet)
    progress.stage(f"opening {len(paths)} engine(s)")
    opened, memory = open_engines(list(paths), provider=provider, threads=threads)
    for e in opened:
        if input_size is None and e.meta is None and min(e.input_shape[2:]) <= 0:
            warn(f"{e.path.name} has no fixed height and width and no dnet metadata: timed at 224×224 (choose the "
                 "size with --input-size)")
    layers = []
    try:
        if per_layer:
            tensorrt_only(opened, "per_layer")
        if cuda_graph:
            use_cuda_graphs(opened)
        results = []
        for b in sizes:
            progress.stage(f"batch {b}: {len(opened)} engine(s) side by side")
            results += bench_engines(opened, b, warmup=warmup, duration=duration, open_memory=memory,
                                     input_size=input_size, iterations=iterations, warmup_iterations=warmup_iterations)
        if per_layer:
            progress.stage("per-layer times (TensorRT profiler)")
            for e in opened:
                if cuda_graph:
                    e.use_cuda_graph(False)  # TensorRT cannot profile a graph replay
                layers += [row for b in sizes for row in layer_profile(e, b, input_size=input_size)]
    finally:
        progress.close()
        for e in opened:
            e.close()
    if as_json:
        out = [r.to_dict() for r in results]
        click.echo(json.dumps({"results": out, "per_layer": layers} if per_layer else out, indent=2))
        return
    base = {}
    for r in results:  # results come grouped by batch size, the first engine first
        base.setdefault(r.batch, r)
    rows = [
        [r.engine, r.kind, r.precision, r.batch, r.iterations, f"{r.mean_ms:.2f}", f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}",
         f"{r.p95_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.throughput:.1f}", f"{r.throughput / base[r.batch].throughput:.2f}×",
         f"{r.memory_mb:.0f}"]
        for r in results
    ]
    headers = ["engine", "kind", "prec", "batch", "iters", "mean ms", "median", "p90", "p95", "p99", "img/s", "vs first", "mem MB"]
    click.echo(format_table(headers, rows, right=range(3, len(headers))))
    for key in dict.fromkeys((row["engine"], row["batch"]) for row in layers):
        click.echo(f"\n{key[0]}, batch {key[1]}: per-layer times (TensorRT profiler, mean of 10 runs; profiled layers "
                   "run one by one, so they add up to more than the latency)")
        click.echo(format_table(["layer", "prec", "ms", "share"], [
            [r["layer"], r["precision"], f"{r['ms']:.3f}", f"{100 * r['share']:.1f}%"]
            for r in layers if (r["engine"], r["batch"]) == key], right=(2, 3)))
