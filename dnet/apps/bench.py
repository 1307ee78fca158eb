"""Latency and throughput of model files, measured the way trtexec users expect.

Several engines are measured side by side: after each one's warm-up, the timed iterations are interleaved
in rounds (engine A a slice, engine B a slice, ...), so drift of a shared machine hits every engine alike and
the ratios stay meaningful. Inputs are random but fixed (seeded).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np

from dnet import engines
from dnet.core.artifact.layers import precisions_by_layer, read_layers
from dnet.core.errors import UsageError

PERCENTILES = (50, 90, 95, 99)
BATCH_SIZES = (1, 8, 32)  # measured when none are named: one image, a small batch, a server's batch


@dataclass(frozen=True)
class BenchResult:
    engine: str  # file name
    kind: str  # torch | onnxruntime | tensorrt
    precision: str
    batch: int
    iterations: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float  # images per second, from the mean latency
    memory_mb: float  # resident memory the engine added when opened, plus the peak of its first run at this batch

    def to_dict(self) -> dict:
        return asdict(self)


def latency_stats(seconds: list[float], batch: int) -> dict[str, float]:
    """Mean, median, p90, p95, p99 in milliseconds and throughput in images/s."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, PERCENTILES)
    mean = float(ms.mean())
    return {"mean_ms": mean, "median_ms": float(p50), "p90_ms": float(p90), "p95_ms": float(p95),
            "p99_ms": float(p99), "throughput": batch * 1e3 / mean}


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), else the peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1 << 20) if os.uname().sysname == "Darwin" else peak / 1024


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak resident memory to the current one (Linux ``clear_refs``); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MB) since the last :func:`reset_peak` (Linux VmHWM), else since the process began."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if os.uname().sysname == "Darwin" else peak / 1024


def open_engines(paths: list, *, provider: str | None = None, threads: int | None = None) -> tuple[list, list[float]]:
    """Open each model file; also return the resident memory (MB) each added when opened."""
    opened, memory = [], []
    try:
        for p in paths:
            before = rss_mb()
            opened.append(engines.open(p, provider=provider, threads=threads))
            memory.append(rss_mb() - before)
    except BaseException:
        for e in opened:
            e.close()
        raise
    return opened, memory


def _input(engine, batch: int, seed: int = 0, input_size: int | None = None) -> np.ndarray:
    _, c, h, w = engine.input_shape
    size = input_size or (engine.meta.input_size if engine.meta is not None else 224)
    if input_size is not None and ((h > 0 and h != input_size) or (w > 0 and w != input_size)):
        raise UsageError(f"{engine.path.name} takes {h}×{w} inputs only, not {input_size}×{input_size}; export the "
                         f"model at that size to measure it there", option="input_size")
    h, w = (h if h > 0 else size), (w if w > 0 else size)
    return np.random.default_rng(seed).standard_normal((batch, c, h, w)).astype(np.float32)


def _rounds(total: int, rounds: int) -> list[int]:
    """``total`` iterations spread over at most ``rounds`` rounds, the first rounds taking the remainder."""
    rounds = max(1, min(rounds, total))
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def bench_engines(opened: list, batch: int, *, warmup: float = 1.0, duration: float = 5.0, rounds: int = 5,
                  min_iterations: int = 10, open_memory: list[float] | None = None, input_size: int | None = None,
                  iterations: int | None = None, warmup_iterations: int | None = None) -> list[BenchResult]:
    """Measure every engine at one batch size, interleaving the timed iterations in ``rounds`` rounds.

    Each engine gets about ``duration`` seconds of timed runs in all (at least ``min_iterations``), or exactly
    ``iterations`` runs when given, after ``warmup`` seconds of untimed runs, or exactly ``warmup_iterations``
    when given (besides the first run, which allocates, is measured for memory and is never timed).
    ``input_size`` (default: each model's own) sets the input height and width.
    """
    if iterations is not None and iterations < 1:
        raise UsageError(f"iterations must be at least 1, got {iterations}", option="iterations")
    if warmup_iterations is not None and warmup_iterations < 0:
        raise UsageError(f"warm-up iterations must be 0 or more, got {warmup_iterations}", option="warmup_iterations")
    inputs = [_input(e, batch, input_size=input_size) for e in opened]
    per_iter, memory = [], list(open_memory or [0.0] * len(opened))
    for i, (eng, x) in enumerate(zip(opened, inputs)):
        before = rss_mb()
        reset_peak()
        t_first = time.perf_counter()
        eng(x)  # first call: allocation, graph optimisation; its transient peak (workspaces) counts too
        t_first = time.perf_counter() - t_first
        memory[i] += max(0.0, peak_rss_mb() - before)
        t_end, n, t0 = time.perf_counter() + warmup, 0, time.perf_counter()
        while (n < warmup_iterations) if warmup_iterations is not None else (n < 2 or time.perf_counter() < t_end):
            eng(x)
            n += 1
        per_iter.append(max(1e-6, (time.perf_counter() - t0) / n if n else t_first))
    times: list[list[float]] = [[] for _ in opened]
    for r in range(rounds if iterations is None else len(_rounds(iterations, rounds))):
        for i, (eng, x) in enumerate(zip(opened, inputs)):
            if iterations is not None:
                n = _rounds(iterations, rounds)[r]
            else:
                n = max(1, int(np.ceil(max(duration / rounds / per_iter[i], min_iterations / rounds))))
            for _ in range(n):
                t0 = time.perf_counter()
                eng(x)
                times[i].append(time.perf_counter() - t0)
    results = []
    for eng, t, mem in zip(opened, times, memory):
        precision = eng.meta.precision if eng.meta is not None else "fp32"
        results.append(BenchResult(eng.path.name, eng.kind, precision, batch, len(t), **latency_stats(t, batch),
                                   memory_mb=mem))
    return results


# ---------------------------------------------------------------------------------------------------------------
# TensorRT only: CUDA graphs (trtexec --useCudaGraph) and per-layer times (IProfiler).


ONLY_TENSORRT = {"cuda_graph": "CUDA graphs", "per_layer": "per-layer times"}  # option -> what it gives


def tensorrt_only(opened: list, option: str) -> None:
    """Refuse, before anything is measured, an option that only TensorRT plans support when another engine is given."""
    for eng in opened:
        if eng.kind != "tensorrt":
            raise UsageError(f"{ONLY_TENSORRT[option]} are for TensorRT .plan engines, not {eng.path.name} "
                             f"({eng.kind})", option=option)


def use_cuda_graphs(opened: list) -> None:
    """Replay every engine's fixed shapes from CUDA graphs (trtexec --useCudaGraph); only TensorRT plans can."""
    tensorrt_only(opened, "cuda_graph")
    for eng in opened:
        eng.use_cuda_graph()


def layer_profile(engine, batch: int, runs: int = 10, input_size: int | None = None) -> list[dict]:
    """Mean milliseconds of each layer of a TensorRT engine at one batch size, with its precision (from the layers
    file beside the plan, "?" without it) and its share of the summed layer times."""
    tensorrt_only([engine], "per_layer")
    x = _input(engine, batch, input_size=input_size)
    engine(x)  # warm-up
    times = engine.layer_times(x, runs)
    precision = precisions_by_layer(read_layers(engine.path) or [])
    total = sum(ms for _, ms in times) or 1.0
    return [{"engine": engine.path.name, "batch": batch, "layer": name, "precision": precision.get(name, "?"),
             "ms": ms, "share": ms / total} for name, ms in times]
