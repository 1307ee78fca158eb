"""CPU inference of DenseNet-121 (seeded random weights): PyTorch eager vs dnet's FP32, FP16 and INT8 ONNX in
ONNX Runtime and in OpenVINO, side by side, each precision as a fraction of its own measured ceiling.

    python -m benchmarks.inference_cpu [--threads 2] [--batches 1,8] [--duration 8] [--profile] [--quick] [--keep DIR]

All engines are opened in one process and timed by ``dnet.apps.bench.bench_engines``, interleaved round by round,
so the ratios hold on a shared, noisy machine (absolute milliseconds do not). INT8 comes in two files:
``int8-densenet`` (dnet's DenseNet-aware layout, what ``dnet convert --to onnx-int8`` writes: TensorRT's Q/DQ
rules, one scale per dense block), ``int8-ort`` (onnxruntime.quantization's placement, int8 activations, also
TensorRT-compatible; the reference). ``openvino-*``
rows run the FP32 file and the two TensorRT-compatible INT8 files in OpenVINO's CPU plugin (the ``openvino``
package, when installed); ``onnx-int8-densenet-plain-ort`` runs dnet's INT8 file in an ONNX Runtime session made
without dnet's session factory (which gives int8 activations uint8 zero points, see dnet.engines.onnxruntime). The sgemm ceiling is the best of several 2048³ float32 products on the same threads
(PyTorch's and ONNX Runtime's MatMul); the int8 ceiling the best 2048³ u8×s8 MatMulInteger of ONNX Runtime
(MLAS, the kernels its QLinearConv uses), both measured before and after the engines. DenseNet-121 costs 2.87 G
multiply-adds = 5.74 GFLOP (or int8 GOP) per 224×224 image. ``--profile`` adds ONNX Runtime's per-op profile
of each ONNX variant at batch 8 (see benchmarks/ort_profile.py); ``--keep DIR`` keeps the model files and the
calibration images (``calib.npy``) for benchmarks/peers/openvino_nncf.py. Writes benchmarks/results/inference_cpu.json.
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
from dnet.apps.bench import bench_engines, open_engines
from dnet.converters import export as onnx_export
from dnet.converters import precision
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationSet
from dnet.core.similarity import cosine, top1_agreement
from dnet.core.specs import get_spec
from dnet.data.transforms import preprocess_array
from dnet.engines.base import Engine
from dnet.engines.onnxruntime import run as ort_run
from dnet.engines.onnxruntime import session
from dnet.formats.checkpoint import save_checkpoint

GFLOP_PER_IMAGE = 2 * 2.87  # DenseNet-121, 224×224: 2.87 G multiply-adds
# (variant, layout) of the INT8 files, in the order they are measured
INT8_FILES = (("onnx-int8-densenet", "densenet"), ("onnx-int8-ort", "ort"))
OPENVINO = ("onnx-fp32", "onnx-int8-densenet", "onnx-int8-ort")  # the files OpenVINO runs


def _matmul_proto(op: str, a_type: int, b_type: int, out_type: int, n: int) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], op,
                              [helper.make_tensor_value_info("a", a_type, [n, n]),
                               helper.make_tensor_value_info("b", b_type, [n, n])],
                              [helper.make_tensor_value_info("c", out_type, [n, n])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(proto)
    return proto


def ceilings(threads: int, n: int = 2048, repeats: int = 8) -> dict[str, float]:
    """Best-of-``repeats`` n×n×n matrix product rates on ``threads``: float32 (PyTorch, ONNX Runtime MatMul) in
    GFLOP/s and u8×s8 -> int32 (ONNX Runtime MatMulInteger) in GOP/s (a multiply-add counts 2, as for FLOP)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    ops = 2.0 * n ** 3

    def best(fn) -> float:
        return ops / min(run_times(fn, repeats, warmup=1)) / 1e9

    out = {"torch.mm": best(lambda: torch.mm(a, b))}
    sess = session(_matmul_proto("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, n), threads=threads)
    feed = {"a": a.numpy(), "b": b.numpy()}
    out["onnxruntime MatMul"] = best(lambda: sess.run(None, feed))
    rng = np.random.default_rng(0)
    sess = session(_matmul_proto("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, n),
                   threads=threads)
    feed = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-127, 128, (n, n), dtype=np.int8)}
    out["onnxruntime MatMulInteger u8s8"] = best(lambda: sess.run(None, feed))
    return out


class OpenVinoEngine(Engine):
    """An ONNX file in OpenVINO's CPU plugin (FP32 inference precision, so INT8 files run their Q/DQ as int8)."""

    kind = "openvino"

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        self.path, self.meta = Path(path), None
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.request.infer({0: batch})[0].copy()


def build(tmp: Path, calib_count: int, seed: int, muladd: bool = False,
          check_images: int = quantize.INT8_CHECK_IMAGES) -> tuple[dict[str, Path], dict]:
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
    # calibration images and, beside them, the held-out images every INT8 conversion is checked on
    calib_images = photo_crops(calib_count + check_images, seed=seed)
    calib = CalibrationSet(images=calib_images, count=calib_count, name="skimage photo crops")
    cache = tmp / "densenet121.calib.json"
    for name, layout in INT8_FILES:
        def run(layout=layout, name=name):
            # random weights: near-tied logits, and minmax's cosine on them can fall below the default bound (0.983
            # on 64 crops, 0.987 on --quick's 16): the check still runs and its numbers are recorded, it never refuses
            path, summary = quantize.to_int8(files["onnx-fp32"], tmp / f"{name}.onnx", calib=calib, cache_path=cache,
                                              layout=layout, min_top1=0.0, min_cosine=0.0,
                                              check_images=check_images)
            info[name] = summary
            return path
        timed(name, run)
    if muladd:
        timed("onnx-fp32-muladd", lambda: onnx_export.export(model, tmp / "densenet121.muladd.onnx", meta=meta, bn="muladd"))
    info["calibration"] = {"images": calib_count, "data": DESCRIPTION, "method": "minmax"}
    np.save(tmp / "calib.npy", preprocess_array(calib_images[:calib_count], spec))
    info["agreement_vs_fp32"] = {}
    ref = ort_run(files["onnx-fp32"], check)
    for name in ("onnx-fp16", *(f[0] for f in INT8_FILES)):
        got = ort_run(files[name], check)
        info["agreement_vs_fp32"][name] = {"cosine": cosine(ref, got), "top1_agreement": top1_agreement(ref, got)}
    return files, info


class PlainOrtEngine(Engine):
    """An ONNX file in an ONNX Runtime session made without dnet's session factory (no uint8 zero points)."""

    kind = "onnxruntime-plain"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        self.path, self.meta = Path(path), None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": batch})[0]


def open_openvino(files: dict[str, Path], threads: int) -> dict[str, Engine]:
    """OpenVINO engines for the files it is measured on; none when the ``openvino`` package is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("openvino is not installed: no OpenVINO rows (pip install openvino, see README Benchmarks)")
        return {}
    return {v.replace("onnx-", "openvino-"): OpenVinoEngine(files[v], threads) for v in OPENVINO}


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
    ap.add_argument("--no-openvino", action="store_true", help="leave out the OpenVINO rows")
    ap.add_argument("--keep", type=Path, help="keep the model files and calib.npy in this folder")
    add_quick(ap, "a fast, rougher pass")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.calib_count = 2.0, 4, 16
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    ceiling_runs = [ceilings(args.threads)]
    with tempfile.TemporaryDirectory(prefix="dnet-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files, info = build(folder, args.calib_count, args.seed, args.muladd, 16 if args.quick else 64)
        opened, memory = open_engines(list(files.values()), threads=args.threads)
        engines = dict(zip(files, opened))
        engines["onnx-int8-densenet-plain-ort"] = PlainOrtEngine(files["onnx-int8-densenet"], args.threads)
        memory.append(0.0)
        if not args.no_openvino:
            engines.update(open_openvino(files, args.threads))
            memory += [0.0] * (len(engines) - len(memory))
        check = preprocess_array(photo_crops(4, seed=args.seed + 7), get_spec("torch7"))
        ref = engines["onnx-fp32"](check)
        for v in (v for v in engines if v.startswith("openvino-")):
            got = engines[v](check)
            info["agreement_vs_fp32"][v] = {"cosine": cosine(ref, got), "top1_agreement": top1_agreement(ref, got)}
        variants = list(engines)
        try:
            results = {b: bench_engines(list(engines.values()), b, warmup=1.0, duration=args.duration,
                                        rounds=args.rounds, open_memory=memory) for b in batches}
        finally:
            for e in engines.values():
                e.close()
        ceiling_runs.append(ceilings(args.threads))
        profiles = [profile(files[v], batch=8, threads=args.threads) for v in list(files)[1:]] if args.profile else []
    ceiling = {k: max(r[k] for r in ceiling_runs) for k in ceiling_runs[0]}
    peak = max(ceiling["torch.mm"], ceiling["onnxruntime MatMul"])
    peak8 = ceiling["onnxruntime MatMulInteger u8s8"]
    rows, out = [], []
    for b, res in results.items():
        eager, fp32 = res[0].throughput, res[1].throughput
        for v, r in zip(variants, res):
            gflops = r.throughput * GFLOP_PER_IMAGE
            int8 = "int8" in v
            d = {"variant": v, **r.to_dict(), "gflops": gflops, "fraction_of_sgemm": gflops / peak,
                 "fraction_of_int8_gemm": gflops / peak8 if int8 else None,
                 "vs_eager": r.throughput / eager, "vs_onnx_fp32": r.throughput / fp32}
            out.append(d)
            rows.append([v, b, f"{r.median_ms:.1f}", f"{r.throughput:.1f}", f"{gflops:.0f}",
                         f"{gflops / (peak8 if int8 else peak):.0%} {'int8' if int8 else 'sgemm'}",
                         f"{d['vs_eager']:.2f}×", f"{d['vs_onnx_fp32']:.2f}×"])
    by = {(d["variant"], d["batch"]): d for d in out}
    big, small = max(batches), min(batches)

    def measured(variant: str, batch: int) -> float | None:
        return by[(variant, batch)]["vs_onnx_fp32"] if (variant, batch) in by else None

    ratios = {  # the numbers docs/benchmarks.md holds against its thresholds
        f"int8_densenet_vs_fp32_b{big}": measured("onnx-int8-densenet", big),
        f"int8_densenet_vs_fp32_b{small}": measured("onnx-int8-densenet", small),
        f"openvino_int8_densenet_vs_fp32_b{big}": measured("openvino-int8-densenet", big),
        f"fp32_fraction_of_sgemm_b{big}": by[("onnx-fp32", big)]["fraction_of_sgemm"],
    }
    path = write_result("inference_cpu", {
        "model": f"densenet121 (random weights, seed {args.seed}, BN statistics from photo crops)",
        "threads": args.threads, "duration_s": args.duration, "rounds": args.rounds, "quick": args.quick,
        "onnxruntime": __import__("onnxruntime").__version__, "openvino": _openvino_version(),
        "gflop_per_image": GFLOP_PER_IMAGE, "ceilings_gops": ceiling, "ceiling_runs": ceiling_runs, "results": out,
        "ratios": ratios, "profiles": profiles, **info,
        "note": "shared machine: absolute times are noisy; ratios were measured side by side (interleaved)"})
    print_table(f"DenseNet-121, {args.threads} threads; sgemm ceiling {peak:.0f} GFLOP/s (torch.mm "
                f"{ceiling['torch.mm']:.0f}, ORT MatMul {ceiling['onnxruntime MatMul']:.0f}); int8 ceiling {peak8:.0f} "
                "GOP/s (ORT MatMulInteger u8×s8)",
                ["variant", "batch", "median ms", "img/s", "G(FL)OP/s", "of ceiling", "vs eager", "vs onnx-fp32"], rows)
    print_table("agreement with onnx-fp32 on 4 photo crops", ["variant", "cosine", "top-1 agreement"],
                [[v, f"{a['cosine']:.4f}", f"{a['top1_agreement']:.0%}"] for v, a in info["agreement_vs_fp32"].items()])
    print_table("ratios", ["ratio", "measured"], [[k, "–" if v is None else f"{v:.2f}"] for k, v in ratios.items()])
    if profiles:
        print_table("ONNX Runtime profile, batch 8 (ms per run, top op types)", ["file", "op", "nodes", "ms", "share"],
                    [r for p in profiles for r in rows_for(p, top=6)], right=(2, 3, 4))
    print(f"written {path}")


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


if __name__ == "__main__":
    main()
