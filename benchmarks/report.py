"""What every benchmark script shares: where results go and how they are printed."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from dnet.core import cpu
from dnet.core.atomic import atomic_write_text
from dnet.core.table import format_table

RESULTS = Path(os.environ.get("DNET_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def machine() -> dict:
    """The machine a result was measured on: the CPU's model and INT8-relevant flags head its table in the docs."""
    return {"cpu_model": cpu.model_name(), "cpu_flags": cpu.int8_flags_text(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average": os.getloadavg()}


def add_quick(parser, what: str) -> None:
    """``--quick``: a fast, rougher pass (``what`` it changes); ``make bench QUICK=1`` sets it for every script."""
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("DNET_BENCH_QUICK")),
                        help=f"{what} (also: DNET_BENCH_QUICK=1)")


def write_result(name: str, payload: dict) -> Path:
    """Write ``results/NAME.json`` atomically, with the machine and the time it was measured."""
    folder = Path(os.environ.get("DNET_BENCH_RESULTS") or RESULTS)  # read when writing: a caller may set it late
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    body = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **payload}
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")
    return path


def print_table(title: str, headers: list[str], rows: list[list], right=None) -> None:
    print(f"\n{title}\n{cpu.model_name()}; {cpu.int8_flags_text()}; {time.strftime('%Y-%m-%d')}")
    print(format_table(headers, rows, right=range(1, len(headers)) if right is None else right))


def run_times(fn, repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
