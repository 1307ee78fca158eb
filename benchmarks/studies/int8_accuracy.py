"""Does INT8 cost top-1 accuracy on trained DenseNets, for each INT8 layout and calibration method?

Answer (docs/benchmarks.md): the default file's INT8 error equals FP32's on both digits models with every method (at
most one image apart); 8-bit weights are exact in the file but saturate in ONNX Runtime's fused kernels on CPUs
without VNNI, hence 7-bit weights there.

FP32 vs FP16 vs INT8 top-1 error of trained DenseNets on held-out test images, for every INT8 layout and
calibration method, in the INT8 file's own arithmetic (what TensorRT computes) and as ONNX Runtime's fused x86
kernels compute it.

    python -m benchmarks.studies.int8_accuracy [--models demo,bc32] [--methods minmax,...] [--checkpoint digits.pth]
        [--keep DIR] [--quick]

Two trained models, both trained here (no download):

- ``demo``: the demo's DenseNet-BC (depth 22, k=12, 30 cosine epochs, seed 0) on the 8×8 digits, trained by
  ``dnet.apps.demo``'s own training stage (``--checkpoint`` reuses a trained one).
- ``bc32``: a larger DenseNet-BC (depth 40, k=12, 176k parameters, three blocks) trained in this script on the
  digits upscaled to 32×32 (bilinear), with augmentation (zero-pad 3 and random 32×32 crops, i.e. shifts of up
  to ±3 pixels), SGD with Nesterov momentum, cosine learning rate, 15 epochs (``--quick``: 4).

``--keep DIR`` reuses ``DIR/demo.onnx`` and ``DIR/bc32.onnx`` where they exist (benchmarks/studies/calibration_sensitivity.py
writes them there with the same training) and keeps what it trains there.

Each INT8 file is written by ``converters.pipeline.convert`` (what ``dnet convert --to onnx-int8`` runs, with its
held-out check), calibrated on 512 training images. Layouts: ``densenet`` with 7-bit weights (the default) and
8-bit weights, and ``ort`` (int8 activations, the reference). Errors on the 360 test images; "Δ" is the paired
difference with ONNX FP32 (INT8 error minus FP32 error on the same images) and "flips" the images whose
correctness changed (FP32 right and INT8 wrong / the reverse). Writes benchmarks/results/int8_accuracy.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

# (name, layout, activations, weight bits)
INT8_VARIANTS = (("densenet-w7", "densenet", 7), ("densenet-w8", "densenet", 8), ("ort-int8", "ort", 8))


def demo_checkpoint(out: Path, epochs: int | None) -> tuple[Path, dict]:
    """Train the demo's model into ``out`` (the demo's own training stage); returns the last checkpoint."""
    from dnet.apps.demo import DemoConfig, stage_train

    cfg = DemoConfig(out=str(out), quiet=True)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    tr = stage_train(cfg, out, log=lambda _: None)
    return tr.last, {"epochs": tr.epochs_done, "depth": cfg.depth, "growth_rate": cfg.growth_rate,
                     "final_error": tr.final_error}


def digits32(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The digits split upscaled to 32×32 (bilinear), uint8 N×32×32×3, and the labels."""
    from PIL import Image

    from dnet.data.datasets import open_dataset

    d = open_dataset("digits", None, split)
    big = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR)) for im in d.images])
    return big, d.labels


def train_bc32(out: Path, epochs: int, seed: int = 0) -> tuple[Path, object, dict]:
    """Train DenseNet-BC (L=40, k=12) on 32×32 digits with shift augmentation; returns its FP32 ONNX file."""
    import torch

    from dnet.converters import export as onnx_export
    from dnet.core.specs import get_spec
    from dnet.data.transforms import preprocess_array
    from dnet.models import DenseNetConfig, build_model

    spec = dataclasses.replace(get_spec("digits"), name="digits32", input_size=32)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = digits32("train")
    x = torch.from_numpy(preprocess_array(images, spec))
    y = torch.from_numpy(labels)
    model = build_model(DenseNetConfig(block_config=(6, 6, 6), growth_rate=12, num_classes=10))
    steps = epochs * int(np.ceil(len(x) / 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))  # zero-pad, then random 32×32 crops: shifts of ±3 pixels
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.from_numpy(rng.permutation(len(x))).split(64):
            dy, dx = rng.integers(0, 7, 2)
            batch = padded[idx, :, dy:dy + 32, dx:dx + 32]
            loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    meta = onnx_export.model_meta(model, preprocess=spec, input_size=32)
    model.meta = meta
    path = onnx_export.export(model, out / "bc32.onnx", meta=meta)
    info = {"model": "DenseNet-BC L=40 k=12 (6-6-6), cifar stem", "parameters": sum(p.numel() for p in model.parameters()),
            "epochs": epochs, "train_s": time.perf_counter() - t0,
            "data": "sklearn digits upscaled to 32×32 (bilinear), zero-pad 3 + random 32×32 crop"}
    return path, spec, info


def evaluate_files(files: dict, x: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Error of each file on ``x``, in the file's arithmetic and (INT8) fused; Δ and flips against ONNX FP32."""
    from dnet.engines.onnxruntime import run

    rows, ref_right = [], None
    for (label, layout, method), path in files.items():
        logits = {"file": run(path, x, fused=False)}
        if "INT8" in label:
            logits["fused"] = run(path, x)
        for arithmetic, out in logits.items():
            right = out.argmax(1) == labels
            if ref_right is None:
                ref_right = right
            rows.append({"model": label, "layout": layout, "calibration": method, "arithmetic": arithmetic,
                         "top1_error": 100.0 * (1 - right.mean()), "delta_vs_fp32": 100.0 * (ref_right.mean() - right.mean()),
                         "flips_lost": int(np.sum(ref_right & ~right)), "flips_gained": int(np.sum(~ref_right & right))})
    return rows


def measure(name: str, fp32: Path, x: np.ndarray, labels: np.ndarray, calib, tmp: Path, methods,
            refused: list) -> list[dict]:
    from dnet.converters.int8.options import Int8Options
    from dnet.converters.pipeline import convert
    from dnet.core.errors import AccuracyError
    from dnet.core.progress import Recorder

    files = {("ONNX FP32", "–", "–"): fp32,
             ("ONNX FP16", "–", "–"): convert(fp32, src_format="onnx", target="onnx-fp16", out=tmp / f"{name}.fp16.onnx")[-1]}
    checks = {}
    for method in methods:
        for variant, layout, bits in INT8_VARIANTS:
            recorder = Recorder()
            try:
                files[("ONNX INT8", variant, method)] = convert(
                    fp32, src_format="onnx", target="onnx-int8", out=tmp / f"{name}.{variant}.{method}.int8.onnx",
                    int8=Int8Options(calib=calib, method=method, layout=layout, weight_bits=bits,
                                     cache=tmp / f"{name}.{method}.calib.json"), progress=recorder)[-1]
                checks[(variant, method)] = next(c for c in recorder.checks if c["check"] == "int8_vs_fp32")
            except AccuracyError as e:  # the convert's own check refused it: say so, measure the rest
                print(f"{name} {variant} {method}: refused: {e}")
                refused.append({"trained_model": name, "layout": variant, "calibration": method, "refused": str(e)})
    rows = evaluate_files(files, x, labels)
    for r in rows:
        check = checks.get((r["layout"], r["calibration"]))
        if check and not check.get("skipped"):
            r["check_cosine"], r["check_top1"] = check["cosine"], check["top1_agreement"]
    return rows


def main() -> None:
    from benchmarks.report import add_quick, print_table, write_result
    from dnet.converters.int8.calibration import METHODS, CalibrationSet
    from dnet.converters.pipeline import convert
    from dnet.data.datasets import open_dataset
    from dnet.data.transforms import preprocess_array

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,bc32")
    ap.add_argument("--checkpoint", type=Path, help="a digits-trained dnet .pth for demo (default: train the demo's model)")
    ap.add_argument("--epochs", type=int, default=None, help="demo training epochs (default: the demo's)")
    ap.add_argument("--bc32-epochs", type=int, default=15)
    ap.add_argument("--calib-count", type=int, default=512)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--keep", type=Path, help="reuse (and keep) the trained models' FP32 ONNX files in this folder")
    add_quick(ap, "train 8 (demo) and 4 (bc32) epochs, minmax calibration only")
    args = ap.parse_args()
    methods = ["minmax"] if args.quick else args.methods.split(",")
    results, training, refused = [], {}, []
    with tempfile.TemporaryDirectory(prefix="dnet-int8acc-") as tmp:
        tmp = Path(tmp)
        models = args.keep or tmp
        models.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            kept = models / f"{name}.onnx"
            if name == "demo":
                test, train = open_dataset("digits", None, "test"), open_dataset("digits", None, "train")
                if kept.is_file() and args.keep:
                    fp32, training[name] = kept, {"reused": str(kept)}
                else:
                    ckpt, training[name] = ((args.checkpoint, {"checkpoint": str(args.checkpoint)}) if args.checkpoint
                                            else demo_checkpoint(tmp / "train", 8 if args.quick and args.epochs is None
                                                                 else args.epochs))
                    fp32 = convert(ckpt, src_format="pth", target="onnx", out=kept)[-1]
                x, labels, calib_images = preprocess_array(test.images, test.spec), test.labels, train.images
            else:
                if kept.is_file() and args.keep:
                    from dnet.core.artifact.onnxfile import read_meta, read_model

                    fp32, spec, training[name] = kept, read_meta(read_model(kept)).preprocess, {"reused": str(kept)}
                else:
                    fp32, spec, training[name] = train_bc32(models, 4 if args.quick else args.bc32_epochs)
                test_images, labels = digits32("test")
                x, calib_images = preprocess_array(test_images, spec), digits32("train")[0]
            calib = CalibrationSet(images=calib_images, count=args.calib_count, name=f"{name} training images")
            for r in measure(name, fp32, x, labels, calib, tmp, methods, refused):
                results.append({"trained_model": name, **r})
    path = write_result("int8_accuracy", {
        "data": "digits test split (360 images), sklearn; bc32: the same upscaled to 32×32", "training": training,
        "calibration_images": args.calib_count, "check_images": 64, "results": results, "refused": refused})
    print_table("test error (%), 360 images; Δ = INT8 − FP32 on the same images; flips = lost/gained",
                ["model", "file", "layout", "calibration", "arithmetic", "error %", "Δ", "flips", "check cos", "check top-1"],
                [[r["trained_model"], r["model"], r["layout"], r["calibration"], r["arithmetic"], f"{r['top1_error']:.2f}",
                  f"{r['delta_vs_fp32']:+.2f}", f"{r['flips_lost']}/{r['flips_gained']}",
                  f"{r['check_cosine']:.4f}" if "check_cosine" in r else "–",
                  f"{r['check_top1']:.0%}" if "check_top1" in r else "–"] for r in results], right=(5, 6, 7, 8, 9))
    print(f"training: {training}")
    print(f"written {path}")


if __name__ == "__main__":
    main()
