"""dnet's CPU INT8 file in a plain ``onnxruntime.InferenceSession`` against the same file in dnet's engine.

densenet121 (random weights, BN statistics from photo crops) and its CPU INT8 file, built as the peer benchmark
builds them (``benchmarks.peers.speed.build``, 64 calibration crops); FP32 and INT8 in plain sessions and INT8 in
dnet's ONNX Runtime engine, interleaved round by round (``dnet.apps.bench.bench_engines``), 2 threads. Also counts the
tensors the engine's load-time uint8 rewrite would still change in the file (0: the file carries it).

    python -m benchmarks.plain_vs_engine [--folder DIR] [--quick]

Result: benchmarks/results/plain_vs_engine.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx

from benchmarks.inference_cpu import PlainOrtEngine
from benchmarks.peers import speed
from benchmarks.report import add_quick, print_table, write_result
from dnet import engines
from dnet.apps.bench import bench_engines
from dnet.converters.int8.rewrites import int8_activations_as_uint8

THREADS = 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, help="keep (and reuse) the files here [default: a temporary folder]")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per file, batch size and round")
    add_quick(ap, "2 rounds of 1 s")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 1.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        speed.build(folder, calib_count=64, reuse=True)
        rewritten = int8_activations_as_uint8(onnx.load(str(folder / speed.DNET)))
        opened = [PlainOrtEngine(folder / speed.FP32, THREADS), PlainOrtEngine(folder / speed.DNET, THREADS),
                  engines.open(folder / speed.DNET, threads=THREADS)]
        rows, results = [], {}
        for batch in (1, 8):
            fp32, plain, engine = bench_engines(opened, batch, duration=args.seconds, rounds=args.rounds)
            results[f"b{batch}"] = {"fp32_plain_ms": fp32.median_ms, "int8_plain_ms": plain.median_ms,
                                    "int8_engine_ms": engine.median_ms,
                                    "plain_vs_engine": plain.throughput / engine.throughput,
                                    "int8_vs_fp32_plain": plain.throughput / fp32.throughput}
            r = results[f"b{batch}"]
            rows.append([batch, f"{r['fp32_plain_ms']:.1f}", f"{r['int8_plain_ms']:.1f}", f"{r['int8_engine_ms']:.1f}",
                         f"{r['plain_vs_engine']:.3f}", f"{r['int8_vs_fp32_plain']:.2f}×"])
        for e in opened:
            e.close()
    path = write_result("plain_vs_engine", {"threads": THREADS, "rounds": args.rounds, "seconds": args.seconds,
                                            "tensors_the_engine_rewrites": rewritten, "results": results})
    print_table(f"densenet121 CPU INT8 file: plain session vs dnet's engine ({THREADS} threads; the engine's rewrite "
                f"changes {rewritten} tensors)",
                ["batch", "FP32 plain ms", "INT8 plain ms", "INT8 engine ms", "plain/engine", "INT8/FP32 plain"], rows)
    print(f"\n{path}")


if __name__ == "__main__":
    main()
