"""FP32 vs FP16 vs INT8 top-1 error of the digits-trained demo model on the held-out digits test split (360
images), for each calibration method (minmax, entropy, percentile) and both INT8 layouts.

    python -m benchmarks.int8_accuracy [--checkpoint digits.pth] [--quick]

Without ``--checkpoint`` the model is trained first exactly as ``dnet demo`` trains it (``dnet.demo``'s
config: DenseNet-BC, depth 22, k=12, 30 cosine epochs, seed 0; ``--quick``: 8 epochs). Every file is
converted by ``converters.pipeline.convert`` (what ``dnet convert`` runs) and evaluated by
``dnet.eval.evaluate`` (what ``dnet eval`` runs). INT8 calibration: 512 training images. Layouts:
``int8-qdq-trt`` (symmetric int8 activations, the TensorRT layout) and ``int8-u8-ort`` (uint8 activations,
ONNX Runtime's CPU layout). Writes benchmarks/results/int8_accuracy.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

LAYOUTS = {"int8-qdq-trt": "int8", "int8-u8-ort": "uint8"}


def trained_checkpoint(out: Path, epochs: int | None) -> tuple[Path, dict]:
    """Train the demo's model into ``out`` (the demo's own training stage); returns the last checkpoint."""
    from dnet.demo import DemoConfig, stage_train

    cfg = DemoConfig(out=str(out), quiet=True)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    tr = stage_train(cfg, out, log=lambda _: None)
    return tr.last, {"epochs": tr.epochs_done, "depth": cfg.depth, "growth_rate": cfg.growth_rate,
                     "final_error": tr.final_error}


def main() -> None:
    from benchmarks.report import add_quick, print_table, write_result
    from dnet.converters.calibration import METHODS, CalibrationSet
    from dnet.converters.pipeline import convert
    from dnet.data.datasets import open_dataset
    from dnet.eval import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="a digits-trained dnet .pth (default: train the demo's model)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs when training (default: the demo's)")
    ap.add_argument("--train-out", type=Path, help="keep the trained run here (default: a temporary folder)")
    ap.add_argument("--calib-count", type=int, default=512)
    add_quick(ap, "train 8 epochs instead of the demo's 30")
    args = ap.parse_args()
    test = open_dataset("digits", None, "test")
    calib = CalibrationSet(images=open_dataset("digits", None, "train").images, count=args.calib_count,
                           name="digits/train")
    with tempfile.TemporaryDirectory(prefix="dnet-int8acc-") as tmp:
        tmp = Path(tmp)
        training = {"checkpoint": str(args.checkpoint)} if args.checkpoint else {}
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt, training = trained_checkpoint(args.train_out or tmp / "train", 8 if args.quick and args.epochs is None else args.epochs)
        fp32 = convert(ckpt, src_format="pth", target="onnx", out=tmp / "digits.onnx")[-1]
        files = {("PyTorch FP32", "–", "–"): ckpt, ("ONNX FP32", "–", "–"): fp32,
                 ("ONNX FP16", "–", "–"): convert(fp32, src_format="onnx", target="onnx-fp16",
                                                  out=tmp / "digits.fp16.onnx")[-1]}
        for method in METHODS:
            for layout, act in LAYOUTS.items():
                files[("ONNX INT8", layout, method)] = convert(
                    fp32, src_format="onnx", target="onnx-int8", out=tmp / f"digits.{layout}.{method}.int8.onnx",
                    calib=calib, calib_method=method, int8_activations=act,
                    calib_cache=tmp / f"digits.{method}.calib.json")[-1]
        errors = {key: evaluate(path, test, batch=64, progress=False).top1_error for key, path in files.items()}
    ref = errors[("ONNX FP32", "–", "–")]
    results = [{"model": k[0], "layout": k[1], "calibration": k[2], "top1_error": e, "delta_vs_fp32": e - ref}
               for k, e in errors.items()]
    int8 = [r for r in results if r["model"] == "ONNX INT8"]
    worst = max(r["delta_vs_fp32"] for r in int8)
    path = write_result("int8_accuracy", {
        "data": "digits test split (360 images), sklearn", "training": training,
        "calibration_images": args.calib_count, "results": results,
        "target": {"max_int8_drop_points": 1.0, "worst_drop": worst, "met": worst <= 1.0}})
    print_table("digits test error (%), 360 images", ["model", "INT8 layout", "calibration", "error %", "Δ vs FP32"],
                [[r["model"], r["layout"], r["calibration"], f"{r['top1_error']:.2f}", f"{r['delta_vs_fp32']:+.2f}"]
                 for r in results], right=(3, 4))
    print(f"worst INT8 drop {worst:+.2f} points (target ≤ 1.0: {'met' if worst <= 1.0 else 'missed'})")
    print(f"written {path}")


if __name__ == "__main__":
    main()
