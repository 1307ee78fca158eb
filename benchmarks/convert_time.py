"""End-to-end conversion time of DenseNet-121: dnet ``.pth`` → FP32 ONNX → INT8 ONNX, calibrated on 512 images,
as one ``converters.pipeline.convert`` call (what ``dnet convert --to onnx-int8`` runs).

    python -m benchmarks.convert_time [--calib-count 512] [--threads 2] [--quick]

The calibration folder holds 512 + 64 JPEG files of real photo content (64 held out for the INT8 check): random crops (256×256) of scikit-image's
bundled photos (benchmarks/photos.py), decoded and preprocessed by the converter like any user folder. The
model is a seeded random-weight densenet121 (same file size and graph as the released one). The stages'
share (export with its parity check, calibration, quantisation and its check) is timed by wrapping the
library functions the pipeline calls. Writes benchmarks/results/convert_time.json.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def stage_timer(stages: dict[str, float], targets: list[tuple[object, str, str]]):
    """Time every call of ``module.attr`` (for each (module, attr, label)) into ``stages[label]`` while inside."""
    saved = []
    for module, attr, label in targets:
        fn = getattr(module, attr)

        def timed(*a, _fn=fn, _label=label, **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                stages[_label] = stages.get(_label, 0.0) + time.perf_counter() - t

        saved.append((module, attr, fn))
        setattr(module, attr, timed)
    try:
        yield stages
    finally:
        for module, attr, fn in saved:
            setattr(module, attr, fn)


def main() -> None:
    import torch

    from benchmarks.photos import DESCRIPTION, photo_crops, random_densenet, write_folder
    from benchmarks.report import add_quick, print_table, write_result
    from dnet.converters import export as onnx_export
    from dnet.converters import pipeline
    from dnet.converters.int8 import quantize
    from dnet.converters.int8.calibration import CalibrationSet
    from dnet.converters.int8.options import Int8Options
    from dnet.converters.pipeline import convert
    from dnet.core.specs import get_spec
    from dnet.formats.checkpoint import save_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-count", type=int, default=512)
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--threads", type=int, default=2)
    add_quick(ap, "calibrate on 64 images")
    args = ap.parse_args()
    count = 64 if args.quick else args.calib_count
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="dnet-convert-") as tmp:
        tmp = Path(tmp)
        model = random_densenet("densenet121")
        model.meta = onnx_export.model_meta(model, preprocess=get_spec("torch7"))
        src = save_checkpoint(tmp / "densenet121.pth", model, model.meta)
        write_folder(photo_crops(count + quantize.INT8_CHECK_IMAGES, seed=1), tmp / "calib")  # + the held-out check
        calib = CalibrationSet(folder=tmp / "calib", count=count)
        stages: dict[str, float] = {}
        with stage_timer(stages, [(pipeline, "export", "FP32 export + parity check"),
                                  (quantize, "calibrate", "calibration (ORT, activation ranges)"),
                                  (quantize, "densenet_layout", "quantisation (Q/DQ layout)"),
                                  (quantize, "check_int8", "INT8 check (held-out images, FP32 and INT8 runs)")]):
            t0 = time.perf_counter()
            files = convert(src, src_format="pth", target="onnx-int8", out=tmp / "densenet121.int8.onnx",
                            int8=Int8Options(calib=calib, method=args.method,
                                             min_top1=0.0,  # random weights: near-tied logits
                                             min_cosine=0.0))  # a cosine that says little (minmax: 0.983); still run
            total = time.perf_counter() - t0
        sizes = {p.name: p.stat().st_size for p in files}
    stages["rest (load, image decoding, writing)"] = total - sum(stages.values())
    path = write_result("convert_time", {
        "model": "densenet121 (random weights)", "calibration": {"images": count, "method": args.method,
                                                                 "data": DESCRIPTION + ", 256×256 JPEG files"},
        "threads": args.threads, "total_s": total, "stages_s": stages, "files": sizes,
        "quick": args.quick})
    rows = [[k, f"{v:.1f}", f"{v / total:.0%}"] for k, v in stages.items()] + [["total", f"{total:.1f}", "100%"]]
    print_table(f".pth → FP32 → INT8 ONNX, densenet121, {count} calibration images ({args.method}), "
                f"{args.threads} threads", ["stage", "s", "share"], rows)
    print(f"written {path}")


if __name__ == "__main__":
    main()
