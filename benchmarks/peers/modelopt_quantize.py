"""NVIDIA ModelOpt's INT8 post-training quantization of an FP32 ONNX file (runs in its scratch venv, see README.md).

    .venv-peers/modelopt/bin/python benchmarks/peers/modelopt_quantize.py FP32.onnx CALIB.npy OUT.onnx

Imports neither dnet nor the benchmark's other modules: only ModelOpt and numpy. ModelOpt's defaults for INT8
(its own calibration method, its Q/DQ placement for TensorRT, the ``concat_elimination`` pass), calibrated on the
CPU execution provider, FP32 kept as the high-precision type (its default is FP16, a GPU type). Prints one JSON line:
the seconds it took and ModelOpt's version.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    import modelopt
    from modelopt.onnx.quantization import quantize

    src, calib, out = sys.argv[1:4]
    data = np.load(calib)
    t0 = time.perf_counter()
    quantize(src, quantize_mode="int8", calibration_data=data, calibration_eps=["cpu"], high_precision_dtype="fp32",
             output_path=out, log_level="WARNING")
    print(json.dumps({"tool": "modelopt", "version": modelopt.__version__, "seconds": time.perf_counter() - t0,
                      "calibration_images": len(data), "output": out}))


if __name__ == "__main__":
    main()
