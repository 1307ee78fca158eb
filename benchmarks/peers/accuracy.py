"""Top-1 error on images 0-499 and top-1 agreement with FP32 for each tool's BC-100 file, in a plain ONNX Runtime
session and in OpenVINO (f32 inference precision).

    python -m benchmarks.peers.accuracy DIR       # reads DIR/bc100*.onnx, DIR/bc100.nncf.xml; writes results/peers.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmarks.peers.prepare import IMAGES, MEASURE, preprocess
from benchmarks.report import print_table, write_result

FILES = {"FP32": "bc100.onnx", "dnet cpu": "bc100.int8.onnx", "dnet tensorrt": "bc100.int8-trt.onnx",
         "dnet openvino": "bc100.int8-ov.onnx", "dnet cpu mse": "bc100.mse.int8.onnx",
         "dnet tensorrt mse": "bc100.mse.int8-trt.onnx", "dnet openvino mse": "bc100.mse.int8-ov.onnx",
         "ModelOpt": "bc100.modelopt.onnx", "NNCF (ONNX)": "bc100.nncf.onnx", "NNCF (OpenVINO IR)": "bc100.nncf.xml",
         "onnxruntime quantize_static QDQ": "bc100.ort-qdq.onnx"}


def logits_ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])


def logits_openvino(path: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    core = ov.Core()
    c = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([c(x[i:i + 100])[0] for i in range(0, len(x), 100)])


def measure(folder: Path) -> list[dict]:
    """One row per existing file of :data:`FILES`: top-1 error and agreement with FP32 in each runtime (percent)."""
    data = np.load(IMAGES)
    x, labels = preprocess(data["images"][MEASURE]), data["labels"][MEASURE]
    ref = {"ort": logits_ort(folder / FILES["FP32"], x).argmax(1), "openvino": logits_openvino(folder / FILES["FP32"], x).argmax(1)}
    out = []
    for tool, name in FILES.items():
        path = folder / name
        if not path.exists():
            continue
        row = {"tool": tool, "file": name}
        for rt, fn in (("ort", logits_ort), ("openvino", logits_openvino)):
            if rt == "ort" and name.endswith(".xml"):
                continue
            top = fn(path, x).argmax(1)
            row[rt] = {"top1_error": 100 * float(np.mean(top != labels)), "agreement": 100 * float(np.mean(top == ref[rt]))}
        out.append(row)
    return out


def table_rows(out: list[dict]) -> list[list]:
    return [[row["tool"], *(f"{row[r]['top1_error']:.1f} % / {row[r]['agreement']:.1f} %" if r in row else "–"
                            for r in ("ort", "openvino"))] for row in out]


def print_rows(out: list[dict]) -> None:
    print_table("DenseNet-BC-100 (k=12), CIFAR-10 test images 0-499, calibrated on 500-999: top-1 error / agreement "
                "with FP32", ["tool", "ONNX Runtime", "OpenVINO"], table_rows(out))


def main() -> None:
    out = measure(Path(sys.argv[1]))
    print_rows(out)
    print(f"written {write_result('peers_accuracy', {'images': 500, 'results': out})}")


if __name__ == "__main__":
    main()
