"""How many layers must accuracy-controlled INT8 leave in FP32 for a bound on the drop, beside NNCF's accuracy control?

Answer (docs/benchmarks.md): on the model with three planted outlier channels, exactly the two planted layers that
cost accuracy (one with ``--calib-method mse``); NNCF leaves none, in a uint8-activation file TensorRT cannot run.

Accuracy-controlled INT8 (dnet.converters.int8.mixed) on the two trained digits models: how many layers stay in FP32 for a
bound on the drop, and what the search costs; also writes the data NNCF's accuracy control runs on
(benchmarks/peers/nncf_accuracy_control.py) so the two can be set side by side.

    python -m benchmarks.studies.accuracy_control --keep DIR [--models demo,bc32,bc32-outliers] [--bounds 0.5,0.3,0.0]
        [--methods minmax,percentile]

``--keep DIR`` holds the trained models' FP32 ONNX (``demo.onnx``, ``bc32.onnx``: benchmarks/studies/calibration_sensitivity.py
trains them there, or this script does). Calibration: 300 training images (NNCF's default subset size), evenly spread;
validation: the 360 digits test images with their labels. For each model, method and bound (points), dnet's search runs
as ``dnet convert --max-drop`` runs it (file arithmetic). Writes benchmarks/results/accuracy_control.json and, in DIR,
``NAME.calib.npy`` / ``NAME.val.npz`` (preprocessed float32 inputs and labels) for the NNCF script.

``NAME-outliers`` is NAME with outlier channels, the same function: in three layers (``OUTLIER_LAYERS``, one per
dense block) the first output channel of ``conv1`` (weights and bias) is multiplied by ``OUTLIER_GAIN`` and the
weights ``conv2`` reads from that channel divided by it. relu(k·x) = k·relu(x) for k > 0, so the FP32 logits do not
change (to float rounding), but the tensor ``conv2`` reads now spans a range ``OUTLIER_GAIN`` times its other
channels', as outlier channels do in trained networks, and its per-tensor int8 grid rounds those channels to a few
steps. The two trained models lose nothing in INT8 (their all-INT8 drop is 0, so no accuracy control has anything
to do); this one gives both dnet's search and NNCF's something to revert. Written to ``DIR/NAME-outliers.onnx``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

CALIB_IMAGES = 300
OUTLIER_LAYERS = ("denseblock1.denselayer3", "denseblock2.denselayer3", "denseblock3.denselayer3")
OUTLIER_GAIN = 100.0


def with_outliers(fp32: Path, out: Path) -> Path:
    """``fp32`` with one outlier channel in each of OUTLIER_LAYERS (module doc); the same logits."""
    import onnx
    from onnx import numpy_helper

    from dnet.converters.int8.placement import layers

    proto = onnx.load(str(fp32))
    named = layers(proto)
    inits = {t.name: t for t in proto.graph.initializer}

    def scale(name: str, index, factor: float) -> None:
        w = numpy_helper.to_array(inits[name]).copy()
        w[index] *= factor
        inits[name].CopyFrom(numpy_helper.from_array(w, name))

    for layer in OUTLIER_LAYERS:
        conv1, conv2 = named[f"{layer}.conv1"], named[f"{layer}.conv2"]
        for name in conv1.input[1:]:  # weight (out, in, kh, kw) and bias (out,)
            scale(name, 0, OUTLIER_GAIN)
        scale(conv2.input[1], (slice(None), 0), 1 / OUTLIER_GAIN)
    onnx.save(proto, str(out))
    return out


def run_control(name: str, fp32: Path, x: np.ndarray, labels: np.ndarray, calib: np.ndarray, method: str,
                bound: float) -> dict:
    import onnx

    from dnet.converters.int8.mixed import control
    from dnet.converters.int8.placement import densenet_layout, layers
    from dnet.converters.int8.quantize import calibrate
    from dnet.core.errors import AccuracyError

    proto = onnx.load(str(fp32))
    ranges = calibrate(fp32, calib, method)
    named = {n: node.output[0] for n, node in layers(proto).items()}

    def build(excluded):
        q = onnx.ModelProto()
        q.CopyFrom(proto)
        densenet_layout(q, ranges, exclude=excluded)
        return q

    row = {"trained_model": name, "method": method, "bound": bound, "layers": len(named)}
    t0 = time.perf_counter()
    try:
        _, outcome = control(build, proto, named, x, labels, max_drop=bound)
    except AccuracyError as e:
        row.update(refused=str(e), seconds=time.perf_counter() - t0)
        return row
    search = outcome.steps
    row.update(seconds=time.perf_counter() - t0, fp32_top1=outcome.drop.fp32_top1, int8_top1=outcome.drop.int8_top1,
               drop=outcome.drop.points, start=outcome.start if search else outcome.drop.points, floor=outcome.floor,
               excluded=outcome.excluded, evaluations=len(search) + (2 if search else 1))
    return row


def main() -> None:
    from benchmarks.report import print_table, write_result
    from benchmarks.studies.calibration_sensitivity import trained_model
    from dnet.data.base import evenly_spread

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, required=True)
    ap.add_argument("--models", default="demo,bc32")
    ap.add_argument("--bounds", default="0.5,0.3,0.0")
    ap.add_argument("--methods", default="minmax,percentile")
    args = ap.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        base = name.removesuffix("-outliers")
        fp32, x, labels, train, _ = trained_model(base, args.keep, quick=False)
        if name != base:
            from dnet.core.similarity import cosine
            from dnet.engines.onnxruntime import run

            fp32 = with_outliers(fp32, args.keep / f"{name}.onnx")
            same = cosine(run(args.keep / f"{base}.onnx", x), run(fp32, x))
            print(f"{name}: FP32 logits against {base}'s: cosine {same:.7f}")
        calib = train[evenly_spread(len(train), CALIB_IMAGES)]
        np.save(args.keep / f"{name}.calib.npy", calib)
        np.savez(args.keep / f"{name}.val.npz", x=x, labels=labels)
        for method in args.methods.split(","):
            for bound in (float(b) for b in args.bounds.split(",")):
                rows.append(run_control(name, fp32, x, labels, calib, method, bound))
                print(rows[-1], flush=True)
    path = write_result("accuracy_control", {"calibration_images": CALIB_IMAGES, "validation": "360 digits test images",
                                             "results": rows})
    print_table("dnet accuracy control (drop in points on 360 test images; file arithmetic)",
                ["model", "method", "bound", "all-INT8 drop", "final drop", "layers in FP32", "evaluations", "s"],
                [[r["trained_model"], r["method"], f"{r['bound']:g}",
                  f"{r['start']:.2f}" if "start" in r else "–", f"{r['drop']:.2f}" if "drop" in r else "refused",
                  f"{len(r['excluded'])} of {r['layers']}" if "excluded" in r else "–",
                  r.get("evaluations", "–"), f"{r['seconds']:.1f}"] for r in rows], right=(2, 3, 4, 5, 6, 7))
    print(f"written {path}")


if __name__ == "__main__":
    main()
