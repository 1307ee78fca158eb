"""NNCF's INT8 post-training quantization of an FP32 ONNX file, two ways (runs in its scratch venv, see README.md).

    .venv-peers/nncf/bin/python benchmarks/peers/nncf_quantize.py FP32.onnx CALIB.npy OUT_STEM

``OUT_STEM.onnx``: ``nncf.quantize`` on the ONNX model (NNCF's ONNX backend: a Q/DQ ONNX file, which ONNX Runtime,
OpenVINO and the TensorRT lint read). ``OUT_STEM.xml`` (+ ``.bin``): ``nncf.quantize`` on the OpenVINO model read
from the same ONNX file (NNCF's OpenVINO backend, what OpenVINO's documentation recommends), saved as IR. Both at
NNCF's defaults (mixed preset, CPU target), on the same calibration images, each one at a time (batch 1, as NNCF's
examples feed it). Imports neither dnet nor the benchmark's other modules. Prints one JSON line with the seconds.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    import nncf
    import onnx
    import openvino as ov

    src, calib, stem = sys.argv[1:4]
    data = np.load(calib)
    fp32 = onnx.load(src)
    name = fp32.graph.input[0].name  # NNCF's ONNX backend feeds ONNX Runtime a dict
    seconds = {}
    t0 = time.perf_counter()
    q = nncf.quantize(fp32, nncf.Dataset([{name: data[i:i + 1]} for i in range(len(data))]), subset_size=len(data))
    onnx.save(q, f"{stem}.onnx")
    seconds["onnx"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = nncf.quantize(ov.Core().read_model(src), nncf.Dataset([data[i:i + 1] for i in range(len(data))]),
                      subset_size=len(data))
    ov.save_model(q, f"{stem}.xml")  # compresses weights to FP16 by default: INT8 weights are already integer
    seconds["openvino"] = time.perf_counter() - t0
    print(json.dumps({"tool": "nncf", "version": nncf.__version__, "openvino": ov.__version__, "seconds": seconds,
                      "calibration_images": len(data), "output": [f"{stem}.onnx", f"{stem}.xml"]}))


if __name__ == "__main__":
    main()
