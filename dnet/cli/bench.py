"""``dnet bench``: latency percentiles and throughput of one or more model files, side by side."""

from __future__ import annotations

import json

import click

from dnet.bench import bench_engines, layer_profile, open_engines, tensorrt_only, use_cuda_graphs
from dnet.cli.main import reports_errors
from dnet.cli.options import parse_batch_sizes
from dnet.table import format_table


@click.command("bench")
@click.option("--engine", "paths", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Model file (.plan, .onnx, .pth, .t7); repeat to compare (ratios are to the first).")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Warm-up seconds per engine.")
@click.option("--duration", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="Timed seconds per engine and batch size.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: the runtime's).")
@click.option("--provider", default=None, help="Execution provider: cpu, cuda, tensorrt (default cpu).")
@click.option("--cuda-graph", is_flag=True, help="TensorRT plans: replay each shape from a CUDA graph (trtexec --useCudaGraph).")
@click.option("--per-layer", is_flag=True, help="TensorRT plans: per-layer times from TensorRT's profiler, after the latency table.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@reports_errors
def bench_cmd(paths, batches, warmup, duration, threads, provider, cuda_graph, per_layer, as_json) -> None:
    """Latency (mean, median, p90, p95, p99), throughput and memory of each engine and batch size.

    Memory is the resident memory an engine added when opened and first run at that batch size.
    """
    sizes = parse_batch_sizes(batches)
    opened, memory = open_engines(list(paths), provider=provider, threads=threads)
    layers = []
    try:
        if per_layer:
            tensorrt_only(opened, "per_layer")
        if cuda_graph:
            use_cuda_graphs(opened)
        results = []
        for b in sizes:
            results += bench_engines(opened, b, warmup=warmup, duration=duration, open_memory=memory)
        if per_layer:
            for e in opened:
                if cuda_graph:
                    e.use_cuda_graph(False)  # TensorRT cannot profile a graph replay
                layers += [row for b in sizes for row in layer_profile(e, b)]
    finally:
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
