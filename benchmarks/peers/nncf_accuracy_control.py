"""NNCF's ``quantize_with_accuracy_control`` on the same FP32 files, calibration and validation data as
benchmarks/studies/accuracy_control.py: how many layers it leaves in FP32 for the same bound.

    python -m benchmarks.studies.accuracy_control --keep DIR                  # dnet's side; writes the data
    /path/to/scratch-venv/bin/python benchmarks/peers/nncf_accuracy_control.py --folder DIR [--bounds 0.5,0.3,0.0]

NNCF runs from a scratch virtual environment (``python -m venv v && v/bin/pip install nncf==3.4.0 onnxruntime==1.32.0
onnx==1.23.2``: no torch, no OpenVINO); this script imports neither dnet nor torch. NNCF quantizes the ONNX model itself
(its own Q/DQ placement, 8-bit weights) on the same 300 calibration images, ranks and reverts groups of quantizers
against the same 360 labelled test images; its validation function runs ONNX Runtime with basic optimizations only, so
Q/DQ is computed as written, as dnet's search measures (8-bit weights would otherwise saturate in the fused x86 kernels
of a CPU without VNNI). "Layers in FP32" counts the Conv and Gemm nodes whose weight is not behind a DequantizeLinear.
Writes benchmarks/results/nncf_accuracy_control.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(os.environ.get("DNET_BENCH_RESULTS", Path(__file__).resolve().parents[1] / "results"))


def top1(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 64]})[0].argmax(1) for i in range(0, len(x), 64)])


def float_layers(model) -> list[str]:
    producers = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 1:
            w = producers.get(n.input[1])
            if w is None or w.op_type != "DequantizeLinear":
                out.append(n.name)
    return out


def main() -> None:
    import nncf
    import onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--models", default="demo,bc32")
    ap.add_argument("--bounds", default="0.5,0.3,0.0")
    ap.add_argument("--signed", action="store_true",
                    help="force signed (int8, zero point 0) activations, the only kind TensorRT accepts: NNCF otherwise "
                    "quantizes non-negative tensors (ReLU outputs) as uint8. NNCF 3.4.0's ONNX backend refuses it "
                    "('Quantization parameter constraints specified in NNCF config are incompatible with HW "
                    "capabilities as specified in HW config type CPU'), with target_device ANY and GPU alike")
    args = ap.parse_args()
    advanced = None
    if args.signed:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

        advanced = AdvancedQuantizationParameters(
            activations_quantization_params=QuantizationParameters(signedness_to_force=True))
    rows = []
    for name in args.models.split(","):
        fp32 = onnx.load(str(args.folder / f"{name}.onnx"))
        calib = np.load(args.folder / f"{name}.calib.npy")
        val = np.load(args.folder / f"{name}.val.npz")
        x, labels = val["x"], val["labels"]
        inp = fp32.graph.input[0].name  # NNCF's ONNX backend feeds ONNX Runtime a dict
        items = [(x[i:i + 1], labels[i:i + 1]) for i in range(len(x))]
        fp32_acc = float(np.mean(top1(fp32, x) == labels))

        def validate(model, data) -> tuple[float, list[float]]:
            batch = np.concatenate([d[0] for d in data])
            right = (top1(model, batch) == np.concatenate([d[1] for d in data])).astype(float)
            return float(right.mean()), list(right)

        calibration = nncf.Dataset([{inp: calib[i:i + 1]} for i in range(len(calib))])
        plain = nncf.quantize(fp32, calibration, subset_size=len(calib), advanced_parameters=advanced)
        plain_acc = float(np.mean(top1(plain, x) == labels))
        for bound in (float(b) for b in args.bounds.split(",")):
            t0 = time.perf_counter()
            q = nncf.quantize_with_accuracy_control(fp32, calibration, nncf.Dataset(items, lambda d, inp=inp: {inp: d[0]}), validate,
                                                    max_drop=bound / 100, subset_size=len(calib),
                                                    advanced_quantization_parameters=advanced)
            acc = float(np.mean(top1(q, x) == labels))
            rows.append({"trained_model": name, "signed": args.signed, "bound": bound, "fp32_top1": 100 * fp32_acc,
                         "all_int8_drop": 100 * (fp32_acc - plain_acc), "final_drop": 100 * (fp32_acc - acc),
                         "float_layers_plain": float_layers(plain), "float_layers": float_layers(q),
                         "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    body = {"benchmark": "nncf_accuracy_control", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "load_average": os.getloadavg()},
            "nncf": nncf.__version__, "results": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "nncf_accuracy_control.signed.json" if args.signed else "nncf_accuracy_control.json"
    (RESULTS / name).write_text(json.dumps(body, indent=2) + "\n")
    for r in rows:
        print(f"{r['trained_model']:5s} bound {r['bound']:g}: all-INT8 drop {r['all_int8_drop']:.2f}, final "
              f"{r['final_drop']:.2f}, layers in FP32 {len(r['float_layers'])} (plain quantize: "
              f"{len(r['float_layers_plain'])}), {r['seconds']:.1f} s")
    print(f"written {RESULTS / name}")


if __name__ == "__main__":
    main()
