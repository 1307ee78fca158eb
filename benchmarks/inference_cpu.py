"""CPU inference of DenseNet-121 (seeded random weights): PyTorch eager vs dnet's FP32, FP16 and INT8 ONNX in
ONNX Runtime, side by side, and the FP32 figure as a fraction of the machine's measured sgemm ceiling.

    python -m benchmarks.inference_cpu [--threads 2] [--batches 1,8] [--duration 8] [--profile] [--quick]

All engines are opened in one process and timed by ``dnet.bench.bench_engines``, interleaved round by round,
so the ratios hold on a shared, noisy machine (absolute milliseconds do not). INT8 comes in two layouts:
``int8-qdq-trt`` (symmetric int8 activations, zero point 0: the layout TensorRT consumes, what ``dnet convert
--to onnx-int8`` writes by default) and ``int8-u8-ort`` (asymmetric uint8 activations, ``--int8-activations
uint8``: ONNX Runtime's x86 layout, u8×s8 kernels). The sgemm ceiling is the best of several large
float32 matrix products on the same threads (PyTorch's and ONNX Runtime's MatMul), measured before and after
the engines. DenseNet-121 costs 2.87 G multiply-adds = 5.74 GFLOP per 224×224 image. ``--profile`` adds
ONNX Runtime's per-op profile of each ONNX variant at batch 8 (see benchmarks/ort_profile.py).
Writes benchmarks/results/inference_cpu.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from benchmarks.ort_profile import profile, rows_for
from benchmarks.photos import DESCRIPTION, photo_crops, random_densenet
from benchmarks.report import add_quick, print_table, run_times, write_result
from dnet.bench import bench_engines, open_engines
from dnet.checkpoint import save_checkpoint
from dnet.converters import export as onnx_export
from dnet.converters import precision
from dnet.converters.calibration import CalibrationSet
from dnet.data.specs import get_spec
from dnet.data.transforms import preprocess_array
from dnet.engines.onnxruntime import run as ort_run
from dnet.engines.onnxruntime import session
from dnet.similarity import cosine

GFLOP_PER_IMAGE = 2 * 2.87  # DenseNet-121, 224×224: 2.87 G multiply-adds


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 8) -> dict[str, float]:
    """Best-of-``repeats`` float32 n×n×n matrix product rate (GFLOP/s) in PyTorch and in ONNX Runtime (MLAS)."""


    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    flop = 2.0 * n ** 3

    def best(fn) -> float:
        return flop / min(run_times(fn, repeats, warmup=1)) / 1e9

    out = {"torch.mm": best(lambda: torch.mm(a, b))}
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    sess = session(proto, threads=threads)
    feed = {"a": a.numpy(), "b": b.numpy()}
    out["onnxruntime MatMul"] = best(lambda: sess.run(None, feed))
    onnx.checker.check_model(proto)
    return out


def build(tmp: Path, calib_count: int, seed: int, muladd: bool = False) -> tuple[dict[str, Path], dict]:
    """The model files, in the order they are measured: a dnet .pth checkpoint and its FP32, FP16 and two INT8 ONNX files
    (with ``muladd``, also FP32 with the pre-activation BNs as Mul/Add, last); build seconds and checks."""


    model = random_densenet("densenet121", seed=seed)
    spec = get_spec("torch7")
    meta = onnx_export.model_meta(model, preprocess=spec)
    model.meta = meta
    files, info = {}, {"build_s": {}}

    def timed(name: str, fn):
        t = time.perf_counter()
        files[name] = Path(fn())
        info["build_s"][name] = time.perf_counter() - t

    check = preprocess_array(photo_crops(4, seed=seed + 7), spec)  # photos not used for calibration
    timed("torch-eager", lambda: save_checkpoint(tmp / "densenet121.pth", model, meta))
    timed("onnx-fp32", lambda: onnx_export.export(model, tmp / "densenet121.onnx", meta=meta, check_inputs=check))
    # random weights amplify float16 rounding beyond the converter's check (trained models pass it): report it
    timed("onnx-fp16", lambda: precision.to_fp16(files["onnx-fp32"], tmp / "densenet121.fp16.onnx", check=False))
    calib = CalibrationSet(images=photo_crops(calib_count, seed=seed), count=calib_count, name="skimage photo crops")
    cache = tmp / "densenet121.calib.json"
    for name, act in (("onnx-int8-qdq-trt", "int8"), ("onnx-int8-u8-ort", "uint8")):
        def run(act=act, name=name):
            path, summary = precision.to_int8(files["onnx-fp32"], tmp / f"{name}.onnx", calib=calib, cache_path=cache,
                                              check_inputs=check, activations=act)
            info[name] = summary
            return path
        timed(name, run)
    if muladd:
        timed("onnx-fp32-muladd", lambda: onnx_export.export(model, tmp / "densenet121.muladd.onnx", meta=meta, bn="muladd"))
    info["calibration"] = {"images": calib_count, "data": DESCRIPTION, "method": "minmax"}
    ref = ort_run(files["onnx-fp32"], check)
    info["agreement_vs_fp32"] = {}
    for name in ("onnx-fp16", "onnx-int8-qdq-trt", "onnx-int8-u8-ort"):
        got = ort_run(files[name], check)
        info["agreement_vs_fp32"][name] = {"cosine": cosine(ref, got),
                                           "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1)))}
    return files, info


def main() -> None:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--duration", type=float, default=8.0, help="timed seconds per engine and batch size")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--muladd", action="store_true", help="also FP32 with BatchNormalization exported as Mul/Add")
    ap.add_argument("--profile", action="store_true", help="also profile each ONNX variant in ONNX Runtime")
    add_quick(ap, "a fast, rougher pass")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.calib_count = 2.0, 4, 16
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    ceiling_runs = [sgemm_gflops(args.threads)]
    with tempfile.TemporaryDirectory(prefix="dnet-bench-") as tmp:
        files, info = build(Path(tmp), args.calib_count, args.seed, args.muladd)
        variants = list(files)
        opened, memory = open_engines(list(files.values()), threads=args.threads)
        try:
            results = {b: bench_engines(opened, b, warmup=1.0, duration=args.duration, rounds=args.rounds,
                                        open_memory=memory) for b in batches}
        finally:
            for e in opened:
                e.close()
        ceiling_runs.append(sgemm_gflops(args.threads))
        profiles = [profile(files[v], batch=8, threads=args.threads) for v in variants[1:]] if args.profile else []
    ceiling = {k: max(r[k] for r in ceiling_runs) for k in ceiling_runs[0]}
    peak = max(ceiling.values())
    rows, out = [], []
    for b, res in results.items():
        eager, fp32 = res[0].throughput, res[1].throughput
        for v, r in zip(variants, res):
            gflops = r.throughput * GFLOP_PER_IMAGE
            d = {"variant": v, **r.to_dict(), "gflops": gflops, "fraction_of_sgemm": gflops / peak,
                 "vs_eager": r.throughput / eager, "vs_onnx_fp32": r.throughput / fp32}
            out.append(d)
            rows.append([v, b, f"{r.median_ms:.1f}", f"{r.p90_ms:.1f}", f"{r.throughput:.1f}", f"{gflops:.0f}",
                         f"{d['fraction_of_sgemm']:.0%}", f"{d['vs_eager']:.2f}×", f"{d['vs_onnx_fp32']:.2f}×"])
    b8 = {d["variant"]: d for d in out if d["batch"] == max(batches)}
    targets = {
        "fp32_vs_eager_b8": {"target": 3.0, "measured": b8["onnx-fp32"]["vs_eager"]},
        "fp32_fraction_of_sgemm_b8": {"target": 0.85, "measured": b8["onnx-fp32"]["fraction_of_sgemm"]},
        "int8_u8_ort_vs_fp32_b8": {"target": 1.5, "measured": b8["onnx-int8-u8-ort"]["vs_onnx_fp32"]},
        "int8_qdq_trt_vs_fp32_b8": {"target": 1.5, "measured": b8["onnx-int8-qdq-trt"]["vs_onnx_fp32"]},
    }
    for t in targets.values():
        t["met"] = t["measured"] >= t["target"]
    path = write_result("inference_cpu", {
        "model": f"densenet121 (random weights, seed {args.seed}, BN statistics from photo crops)",
        "threads": args.threads, "duration_s": args.duration, "rounds": args.rounds, "quick": args.quick,
        "onnxruntime": __import__("onnxruntime").__version__, "gflop_per_image": GFLOP_PER_IMAGE,
        "sgemm_gflops": ceiling, "sgemm_runs": ceiling_runs, "results": out, "targets": targets,
        "profiles": profiles, **info,
        "note": "shared machine: absolute times are noisy; ratios were measured side by side (interleaved)"})
    print_table(f"DenseNet-121, {args.threads} threads; sgemm ceiling {peak:.0f} GFLOP/s "
                f"(torch.mm {ceiling['torch.mm']:.0f}, ORT MatMul {ceiling['onnxruntime MatMul']:.0f})",
                ["variant", "batch", "median ms", "p90 ms", "img/s", "GFLOP/s", "of sgemm", "vs eager", "vs onnx-fp32"],
                rows)
    print_table("targets (largest batch)", ["target", "goal", "measured", "met"],
                [[k, t["target"], f"{t['measured']:.2f}", "yes" if t["met"] else "no"] for k, t in targets.items()])
    if profiles:
        print_table("ONNX Runtime profile, batch 8 (ms per run, top op types)", ["file", "op", "nodes", "ms", "share"],
                    [r for p in profiles for r in rows_for(p, top=6)], right=(2, 3, 4))
    print(f"written {path}")


if __name__ == "__main__":
    main()
