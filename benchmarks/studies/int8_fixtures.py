"""Does INT8 keep the three Lua Torch7 DenseNets of the test fixtures within cosine 0.995 of FP32 on real photos?

Answer (docs/benchmarks.md): with ``--method mse`` (and percentile) all three; with the default minmax one of three,
the other two at 0.9946-0.9947. Needs the shared test fixtures (``shared/fixtures/t7/`` beside the checkout).

    python -m benchmarks.studies.int8_fixtures [--calib-count 512] [--per-photo 64] [--method minmax] [--weight-bits 7] [--quick]

Each fixture ``.t7`` is converted by ``converters.pipeline.convert`` (what ``dnet convert --from t7 --to onnx-int8``
runs: the FP32 export and its parity check, calibration (``--method``, default minmax), the default densenet Q/DQ
layout (``--weight-bits``, default 7), and the conversion's own check on 64 held-out calibration crops), calibrated on crops of ten photos bundled
with scikit-image. It is then measured on crops of four photos calibration never saw: the two photos of
the fixtures' ``preprocess/`` folder (``chelsea.png``, ``coffee-portrait.png``; ``chelsea-257x301.png`` is chelsea again
and is left out) and scikit-image's ``astronaut`` and ``rocket``. Crops are seeded random squares (35–100% of the
short side, sometimes mirrored) resized to the fixtures' 32×32 and preprocessed with the file's own CIFAR
normalisation.

Numbers, INT8 against the FP32 ONNX file: cosine of the logits over all measured images (as flat vectors, the
number dnet's INT8 check computes), the lowest per-image cosine, and top-1 agreement, in the file's own arithmetic
(Q/DQ unfused: what TensorRT computes) and as ONNX Runtime's fused x86 integer kernels compute it (what ``dnet eval``
and ``dnet bench`` run on the CPU that runs the script). The fixtures carry seeded, untrained weights (their README), whose logits are
often near-tied, so top-1 agreement says less than the cosine.
Writes benchmarks/results/int8_fixtures.json (int8_fixtures.METHOD.wBITS.json for other than the defaults).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"
T7 = ("cifar10-densenet-bc-l40-k12", "cifar10-densenet-bc-l40-k12-optmem4", "cifar100-densenet-l40-k12-dropout")
# Photos calibration never sees: the shared fixtures' two photos, and two of scikit-image's.
MEASURE_FILES = ("chelsea.png", "coffee-portrait.png")
MEASURE_SKIMAGE = ("astronaut", "rocket")


def calibration_photos() -> tuple[str, ...]:
    """benchmarks.photos' photos without the measured ones (and without chelsea and coffee, the fixtures' photos)."""
    from benchmarks.photos import PHOTOS

    return tuple(p for p in PHOTOS if p not in (*MEASURE_SKIMAGE, "chelsea", "coffee"))


def measure_photos() -> dict[str, np.ndarray]:
    """The measured photos by name, uint8 H×W×3."""
    from PIL import Image
    from skimage import data

    from benchmarks.photos import rgb

    folder = FIXTURES / "preprocess"
    out = {}
    for name in MEASURE_FILES:
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{path} is absent: the benchmark reads ../shared/fixtures beside the checkout")
        out[name] = rgb(np.asarray(Image.open(path).convert("RGB")))
    for name in MEASURE_SKIMAGE:
        out[f"skimage:{name}"] = rgb(getattr(data, name)())
    return out


def row_cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    a, b = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    from dnet.core.similarity import cosine, top1_agreement

    return {"cosine": cosine(ref, got), "min_image_cosine": float(row_cosines(ref, got).min()),
            "top1_agreement": top1_agreement(ref, got)}


def measure(name: str, tmp: Path, calib_images: np.ndarray, calib_count: int, tests: dict[str, np.ndarray],
            method: str, weight_bits: int) -> dict:
    from dnet.converters.int8.calibration import CalibrationSet
    from dnet.converters.int8.options import Int8Options
    from dnet.converters.pipeline import convert
    from dnet.core.artifact.onnxfile import read_meta, read_model
    from dnet.core.progress import Recorder
    from dnet.data.transforms import preprocess_array
    from dnet.engines.onnxruntime import run

    src = FIXTURES / "t7" / f"{name}.t7"
    if not src.is_file():
        raise SystemExit(f"{src} is absent: the benchmark reads ../shared/fixtures beside the checkout")
    calib = CalibrationSet(images=calib_images, count=calib_count, name="crops of " + ", ".join(calibration_photos()))
    recorder = Recorder()
    fp32, _cache, int8 = convert(src, src_format="t7", target="onnx-int8", out=tmp / f"{name}.int8.onnx",
                                 int8=Int8Options(calib=calib, method=method, weight_bits=weight_bits,
                                                  min_top1=0.0),  # untrained weights: near-tied logits
                                 progress=recorder)
    (check,) = [c for c in recorder.checks if c["check"] == "int8_vs_fp32"]
    spec = read_meta(read_model(fp32)).preprocess
    x = {photo: preprocess_array(crops, spec) for photo, crops in tests.items()}
    everything = np.concatenate(list(x.values()))
    ref = run(fp32, everything)
    result = {"fixture": name, "preprocess": spec.name, "max_abs_logit": float(np.abs(ref).max()),
              "conversion_check": {k: check[k] for k in ("batch", "cosine", "top1_agreement", "min_cosine")}}
    for arithmetic, fused in (("file", False), ("fused", True)):
        got = run(int8, everything, fused=fused)
        result[arithmetic] = agreement(ref, got)
        per_photo, start = {}, 0
        for photo, batch in x.items():
            per_photo[photo] = agreement(ref[start:start + len(batch)], got[start:start + len(batch)])
            start += len(batch)
        result[arithmetic]["per_photo"] = per_photo
    return result


def main() -> None:
    from benchmarks.photos import crops_of, photo_crops
    from benchmarks.report import add_quick, print_table, write_result
    from dnet.converters.int8.calibration import METHODS
    from dnet.converters.int8.divergence import INT8_CHECK_IMAGES
    from dnet.converters.int8.placement import DEFAULT_WEIGHT_BITS, WEIGHT_BITS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-count", type=int, default=512, help="calibration crops (64 more are held out)")
    ap.add_argument("--per-photo", type=int, default=64, help="measured crops of each unseen photo")
    ap.add_argument("--method", choices=METHODS, default="minmax", help="calibration method")
    ap.add_argument("--weight-bits", type=int, choices=WEIGHT_BITS, default=DEFAULT_WEIGHT_BITS)
    add_quick(ap, "128 calibration crops, 16 measured crops per photo")
    args = ap.parse_args()
    calib_count, per_photo = (128, 16) if args.quick else (args.calib_count, args.per_photo)
    calib_images = photo_crops(calib_count + INT8_CHECK_IMAGES, size=32, seed=1, names=calibration_photos())
    tests = {photo: crops_of([img], per_photo, size=32, seed=100 + i)
             for i, (photo, img) in enumerate(measure_photos().items())}
    with tempfile.TemporaryDirectory(prefix="dnet-int8-fixtures-") as tmp:
        results = [measure(name, Path(tmp), calib_images, calib_count, tests, args.method, args.weight_bits)
                   for name in T7]
    default = (args.method, args.weight_bits) == ("minmax", DEFAULT_WEIGHT_BITS)
    path = write_result("int8_fixtures" if default else f"int8_fixtures.{args.method}.w{args.weight_bits}", {
        "calibration": {"images": calib_count, "held_out_for_the_conversion_check": INT8_CHECK_IMAGES,
                        "method": args.method, "photos": list(calibration_photos()), "size": 32},
        "measured": {"photos": list(tests), "crops_per_photo": per_photo, "images": per_photo * len(tests),
                     "size": 32},
        "layout": f"densenet, {args.weight_bits}-bit weights",
        "results": results, "quick": args.quick})
    rows = [[r["fixture"], f"{r['max_abs_logit']:.2f}", f"{r['conversion_check']['cosine']:.4f}",
             f"{r['file']['cosine']:.4f}", f"{r['fused']['cosine']:.4f}",
             f"{r['file']['min_image_cosine']:.4f}", f"{r['fused']['min_image_cosine']:.4f}",
             f"{r['file']['top1_agreement']:.1%}", f"{r['fused']['top1_agreement']:.1%}"] for r in results]
    print_table(f"INT8 (densenet layout, {args.weight_bits}-bit weights) vs FP32 logits: calibrated ({args.method}) on "
                f"{calib_count} crops of "
                f"{len(calibration_photos())} photos, measured on {per_photo * len(tests)} crops of {len(tests)} "
                f"unseen photos ({', '.join(tests)}), 32×32",
                ["fixture", "max|logit|", "convert check cos", "cos file", "cos fused", "min img cos file",
                 "min img cos fused", "top-1 file", "top-1 fused"], rows)
    print(f"written {path}")


if __name__ == "__main__":
    main()
