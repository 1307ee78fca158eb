"""How many calibration images does INT8 need?

Answer (docs/benchmarks.md): on the two trained digits models every size from 32 to 1024 gives the same INT8 with
every method; a briefly trained model lost accuracy with 32 images. Keep the default 512 and use at least 256.

Δ top-1 error and INT8 logits cosine against FP32 across calibration
set sizes, random draws (seeds) and calibration methods, on the two trained models of benchmarks/studies/int8_accuracy.py.

    python -m benchmarks.studies.calibration_sensitivity [--models demo,bc32] [--sizes 32,64,128,256,512,1024]
        [--seeds 0,1,2] [--methods minmax,entropy,percentile] [--keep DIR] [--quick]

Models (trained here, no download; ``--keep DIR`` keeps their FP32 ONNX files and reuses them on the next run):
``demo``, the demo's DenseNet-BC-22 on 8×8 digits, and ``bc32``, a DenseNet-BC-40 (k=12) on digits upscaled to 32×32
(benchmarks/studies/int8_accuracy.py trains both the same way).

For each size N and seed s, N images are drawn without replacement (``numpy.random.default_rng(s)``) from the 1,437
digits training images, the FP32 file is calibrated on them (``dnet.converters.int8.quantize.calibrate``, what ``dnet
convert`` runs) and written in the default INT8 layout (``dnet.converters.int8.placement``, 7-bit weights); the INT8 graph runs in
its own arithmetic (Q/DQ unfused, what TensorRT computes) on the 360 digits test images. "Δ" is INT8 error minus FP32
error on those images, in points (one image is 0.28), "cosine" that of the logits against FP32's. The draws of one size
overlap (at N=1024 any two draws share about 70% of their images), so the spread at large N understates what another
data set would show. Writes benchmarks/results/calibration_sensitivity.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = (32, 64, 128, 256, 512, 1024)
SEEDS = (0, 1, 2)
# What the README's recommendation asks of a size: on every seed, INT8 within this of FP32 and this cosine.
MAX_DELTA, MIN_COSINE = 0.5, 0.99


def trained_model(name: str, keep: Path, quick: bool) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(FP32 ONNX, test inputs, test labels, training inputs for calibration, training facts) of ``name``."""
    from benchmarks.studies.int8_accuracy import demo_checkpoint, digits32, train_bc32
    from dnet.converters.pipeline import convert
    from dnet.core.artifact.onnxfile import read_meta, read_model
    from dnet.data.datasets import open_dataset
    from dnet.data.transforms import preprocess_array

    fp32 = keep / f"{name}.onnx"
    info: dict = {"reused": str(fp32)} if fp32.is_file() else {}
    if name == "demo":
        test, train = open_dataset("digits", None, "test"), open_dataset("digits", None, "train")
        if not fp32.is_file():
            ckpt, info = demo_checkpoint(keep / "train", 8 if quick else None)
            convert(ckpt, src_format="pth", target="onnx", out=fp32)
        spec = read_meta(read_model(fp32)).preprocess
        return fp32, preprocess_array(test.images, spec), test.labels, preprocess_array(train.images, spec), info
    if not fp32.is_file():
        _, _, info = train_bc32(keep, 4 if quick else 15)  # writes keep/bc32.onnx
    spec = read_meta(read_model(fp32)).preprocess
    test_images, labels = digits32("test")
    return fp32, preprocess_array(test_images, spec), labels, preprocess_array(digits32("train")[0], spec), info


def measure(name: str, fp32: Path, x: np.ndarray, labels: np.ndarray, train: np.ndarray, sizes, seeds,
            methods) -> list[dict]:
    import onnx

    from dnet.converters.int8.placement import densenet_layout
    from dnet.converters.int8.quantize import calibrate
    from dnet.core.similarity import cosine
    from dnet.engines.onnxruntime import run

    ref = run(fp32, x)
    ref_right = ref.argmax(1) == labels
    proto = onnx.load(str(fp32))
    rows = []
    for method in methods:
        for size in sizes:
            for seed in seeds:
                idx = np.random.default_rng(seed).choice(len(train), size=min(size, len(train)), replace=False)
                t0 = time.perf_counter()
                ranges = calibrate(fp32, train[np.sort(idx)], method)
                seconds = time.perf_counter() - t0
                q = onnx.ModelProto()
                q.CopyFrom(proto)
                densenet_layout(q, ranges)
                got = run(q, x, fused=False)
                right = got.argmax(1) == labels
                rows.append({"trained_model": name, "method": method, "size": size, "seed": seed,
                             "fp32_error": 100.0 * (1 - ref_right.mean()), "int8_error": 100.0 * (1 - right.mean()),
                             "delta": 100.0 * (ref_right.mean() - right.mean()), "cosine": cosine(ref, got),
                             "flips_lost": int(np.sum(ref_right & ~right)), "flips_gained": int(np.sum(~ref_right & right)),
                             "calibration_s": seconds})
                r = rows[-1]
                print(f"{name} {method} N={size} seed={seed}: Δ {r['delta']:+.2f}, cosine {r['cosine']:.5f}, "
                      f"calibration {seconds:.1f} s", flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per model, method and size: Δ and cosine over the seeds (mean, worst), calibration time."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["trained_model"], r["method"], r["size"]), []).append(r)
    out = []
    for (model, method, size), rs in groups.items():
        deltas, cosines = [r["delta"] for r in rs], [r["cosine"] for r in rs]
        out.append({"trained_model": model, "method": method, "size": size, "seeds": len(rs),
                    "delta_mean": statistics.fmean(deltas), "delta_worst": max(deltas), "delta_best": min(deltas),
                    "cosine_mean": statistics.fmean(cosines), "cosine_worst": min(cosines),
                    "calibration_s": statistics.fmean(r["calibration_s"] for r in rs),
                    "meets": bool(max(deltas) <= MAX_DELTA and min(cosines) >= MIN_COSINE)})
    return out


def smallest_sufficient(summary: list[dict]) -> dict:
    """Per model and method: the smallest size from which every larger size meets the bounds on every seed."""
    found: dict = {}
    for key in sorted({(s["trained_model"], s["method"]) for s in summary}):
        sizes = sorted((s["size"], s["meets"]) for s in summary if (s["trained_model"], s["method"]) == key)
        ok = [size for i, (size, _) in enumerate(sizes) if all(m for _, m in sizes[i:])]
        found[f"{key[0]}/{key[1]}"] = ok[0] if ok else None
    return found


def main() -> None:
    from benchmarks.report import add_quick, print_table, write_result
    from dnet.converters.int8.calibration import METHODS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,bc32")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--keep", type=Path, help="folder for the trained models' FP32 ONNX files (reused when present)")
    add_quick(ap, "sizes 32,256, seed 0, minmax, shorter training")
    args = ap.parse_args()
    sizes = [32, 256] if args.quick else [int(s) for s in args.sizes.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    methods = ["minmax"] if args.quick else args.methods.split(",")
    rows, training = [], {}
    with tempfile.TemporaryDirectory(prefix="dnet-calibsize-") as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for name in args.models.split(","):
            fp32, x, labels, train, training[name] = trained_model(name, keep, args.quick)
            rows += measure(name, fp32, x, labels, train, sizes, seeds, methods)
    summary = summarise(rows)
    recommended = smallest_sufficient(summary)
    path = write_result("calibration_sensitivity", {
        "data": "digits: calibration drawn from the 1,437 training images, evaluated on the 360 test images "
                "(bc32: upscaled to 32×32)", "sizes": sizes, "seeds": seeds, "methods": methods,
        "bounds": {"max_delta": MAX_DELTA, "min_cosine": MIN_COSINE}, "training": training,
        "seconds": time.perf_counter() - t0, "results": rows, "summary": summary,
        "smallest_sufficient": recommended})
    print_table(f"Δ = INT8 − FP32 top-1 error (points) on 360 test images over {len(seeds)} draws; cosine of the logits",
                ["model", "method", "N", "Δ mean", "Δ best..worst", "cos mean", "cos worst", "calib s", "meets"],
                [[s["trained_model"], s["method"], s["size"], f"{s['delta_mean']:+.2f}",
                  f"{s['delta_best']:+.2f}..{s['delta_worst']:+.2f}", f"{s['cosine_mean']:.4f}",
                  f"{s['cosine_worst']:.4f}", f"{s['calibration_s']:.1f}", "yes" if s["meets"] else "no"]
                 for s in summary], right=(2, 3, 4, 5, 6, 7))
    print(f"smallest size from which every larger one meets Δ ≤ {MAX_DELTA} and cosine ≥ {MIN_COSINE} on every draw: "
          + ", ".join(f"{k} {v}" for k, v in recommended.items()))
    print(f"training: {training}")
    print(f"written {path}")


if __name__ == "__main__":
    main()
