"""CPU speed of densenet121 (random weights) as FP32 / FP16 / INT8 ONNX in ONNX Runtime vs PyTorch eager.

All variants are timed side by side in one run, interleaved round by round, on the same thread count, so the
ratios hold even on a shared, noisy machine (absolute milliseconds do not). Writes
benchmarks/results/onnx_speed.json and prints a table.

Variants: onnx-fp32 (pre-activation BNs as BatchNormalization, the default), onnx-fp32-muladd (the same BNs as
Mul/Add), onnx-fp16, onnx-int8 (the TensorRT layout: symmetric int8 activations) and onnx-int8-u8 (asymmetric
uint8 activations, ONNX Runtime's CPU layout). The random model gets BN statistics measured on a random batch
(a random-init densenet121 with identity statistics reaches activations of ~1e8, beyond float16). Inputs and
the FP16 check use real photos (scikit-image's data module when installed): on N(0, 1) noise this random model
amplifies float16 weight rounding to ~3e-3 relative L2 of the logits, on photos it stays ~7e-4 (measured).

    PYTHONPATH=$PWD python benchmarks/onnx_speed.py [--model densenet121] [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from converters import onnx as onnx_export
from converters import precision
from converters.calibration import CalibrationSet
from dnet import __version__
from dnet.cli.table import format_table
from dnet.data.specs import get_spec
from dnet.data.transforms import preprocess_array
from dnet.models import create_model
from engines import onnxruntime as ort_engine

RESULTS = Path(__file__).resolve().parent / "results"


def calibration_images(n: int) -> np.ndarray:
    """Real photos when scikit-image is installed (its data module), else smooth random images."""
    try:
        from skimage import data

        photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), data.coins()]
        photos = [p if p.ndim == 3 else np.repeat(p[..., None], 3, 2) for p in photos]
        from PIL import Image

        tiles = [np.asarray(Image.fromarray(p[..., :3]).resize((256, 256))) for p in photos]
        out = [np.roll(tiles[i % len(tiles)], 17 * i, axis=1 - (i % 2)) for i in range(n)]
        return np.stack(out).astype(np.uint8)
    except ImportError:
        rng = np.random.default_rng(0)
        return (rng.random((n, 256, 256, 3)) * 255).astype(np.uint8)


def measure_bn_statistics(model: torch.nn.Module, batch: torch.Tensor) -> None:
    """Give a randomly initialised model the BN statistics of ``batch`` (one train-mode pass, momentum 1).

    With identity BN statistics a random densenet121's activations grow to ~1e8 by the last block, beyond
    float16's range; a trained model's statistics keep them normalised, and so do these.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(batch)
    for m in bns:
        m.momentum = 0.1
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--calib-count", type=int, default=32)
    ap.add_argument("--out", default=str(RESULTS / "onnx_speed.json"))
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = create_model(args.model).eval()
    measure_bn_statistics(model, torch.randn(8, 3, 224, 224))
    spec = get_spec("torch7")
    meta = onnx_export.model_meta(model, preprocess=spec)
    files: dict[str, Path] = {}
    build: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        files["onnx-fp32"] = onnx_export.export(model, tmp / "m.onnx", meta=meta)
        build["onnx-fp32"] = time.perf_counter() - t
        t = time.perf_counter()
        files["onnx-fp32-muladd"] = onnx_export.export(model, tmp / "m.muladd.onnx", meta=meta, bn="muladd")
        build["onnx-fp32-muladd"] = time.perf_counter() - t
        # real photos (not the calibration crops), centre 224 of the 256 tiles, normalised as torch7 does
        held_out = calibration_images(args.calib_count + max(batches))[args.calib_count:, 16:240, 16:240]
        t = time.perf_counter()
        files["onnx-fp16"] = precision.to_fp16(files["onnx-fp32"], tmp / "m.fp16.onnx",
                                                check_inputs=preprocess_array(held_out, spec))
        build["onnx-fp16"] = time.perf_counter() - t
        calib = CalibrationSet(images=calibration_images(args.calib_count), count=args.calib_count, name="skimage-photos")
        t = time.perf_counter()
        files["onnx-int8"], summary = precision.to_int8(files["onnx-fp32"], tmp / "m.int8.onnx", calib=calib)
        build["onnx-int8"] = time.perf_counter() - t
        t = time.perf_counter()
        files["onnx-int8-u8"], _ = precision.to_int8(files["onnx-fp32"], tmp / "m.int8u8.onnx", calib=calib, activations="uint8")
        build["onnx-int8-u8"] = time.perf_counter() - t
        engines = {k: ort_engine.open_file(p, threads=args.threads) for k, p in files.items()}
        runners = {"torch-eager": None, **engines}
        rows, results = [], []
        for b in batches:
            x = preprocess_array(held_out[:b], spec)
            xt = torch.from_numpy(x)
            times: dict[str, list[float]] = {k: [] for k in runners}
            ref = None
            for r in range(args.rounds + 1):  # round 0 warms up
                for name, eng in runners.items():
                    t = time.perf_counter()
                    if eng is None:
                        with torch.inference_mode():
                            y = model(xt).numpy()
                    else:
                        y = eng(x)
                    dt = time.perf_counter() - t
                    if r:
                        times[name].append(dt)
                    if name == "torch-eager":
                        ref = y
                    elif r == 0:
                        results.append({"variant": name, "batch": b, "cosine_vs_torch": precision.cosine(ref, y),
                                        "rel_l2_vs_torch": precision.rel_l2(ref, y),
                                        "top1_agreement": float(np.mean(ref.argmax(1) == y.argmax(1)))})
            base = statistics.median(times["torch-eager"])
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append([name, str(b), f"{med * 1000:.1f}", f"{min(ts) * 1000:.1f}", f"{base / med:.2f}",
                             f"{times_ratio(times, name):.2f}"])
                results.append({"variant": name, "batch": b, "median_ms": med * 1000, "min_ms": min(ts) * 1000,
                                "speedup_vs_torch": base / med, "speedup_vs_onnx_fp32": times_ratio(times, name)})
    out = {"model": args.model, "threads": args.threads, "rounds": args.rounds, "dnet_version": __version__,
           "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine(), "build_s": build, "calibration": summary,
           "note": "shared 2-core machine: absolute times are noisy; ratios are measured side by side", "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(format_table(["variant", "batch", "median ms", "min ms", "× torch", "× onnx-fp32"], rows, right=(1, 2, 3, 4, 5)))
    print(f"wrote {args.out}")


def times_ratio(times: dict, name: str) -> float:
    return statistics.median(times["onnx-fp32"]) / statistics.median(times[name])


if __name__ == "__main__":
    main()
