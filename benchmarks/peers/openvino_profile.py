"""OpenVINO's per-layer counters (PERF_COUNT) of each file, summed by layer type and kernel, at one batch size.

    python -m benchmarks.peers.openvino_profile FILE.onnx|FILE.xml ... [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from benchmarks.report import print_table


def profile(path: str, *, batch: int = 8, threads: int = 2, size: int = 224) -> dict[tuple[str, str], list]:
    """(layer type, kernel) -> [executed layers, ms] of the second inference (the first allocates)."""
    import openvino as ov

    core = ov.Core()
    c = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True,
                                                           "INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    r.infer({0: x})
    r.infer({0: x})
    agg: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    for p in r.profiling_info:
        if p.status == p.Status.EXECUTED:
            agg[(p.node_type, p.exec_type)][0] += 1
            agg[(p.node_type, p.exec_type)][1] += p.real_time.total_seconds() * 1e3
    return dict(sorted(agg.items(), key=lambda kv: -kv[1][1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = []
    for f in args.files:
        agg = profile(f, batch=args.batch, threads=args.threads)
        total = sum(v[1] for v in agg.values())
        rows += [[f.rsplit("/", 1)[-1], t, k, n, f"{ms:.1f}", f"{ms / total:.0%}"] for (t, k), (n, ms) in list(agg.items())[:7]]
    print_table(f"OpenVINO per-layer counters, batch {args.batch}, {args.threads} threads (ms per run)",
                ["file", "layer", "kernel", "layers", "ms", "share"], rows, right=(3, 4, 5))


if __name__ == "__main__":
    main()
