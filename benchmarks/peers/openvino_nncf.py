"""OpenVINO's own post-training INT8 (NNCF) of dnet's FP32 DenseNet-121 beside dnet's INT8 file in OpenVINO.

    python -m benchmarks.inference_cpu --keep /tmp/d121          # writes the files and calib.npy
    /path/to/scratch-venv/bin/python benchmarks/peers/openvino_nncf.py --folder /tmp/d121 [--threads 2]

NNCF pulls in its own dependencies, so it runs from a scratch virtual environment with only ``openvino`` and
``nncf`` (``python -m venv v && v/bin/pip install nncf==3.4.0 openvino==2026.4.1``); this script imports neither
dnet nor torch. NNCF quantizes the FP32 file (``nncf.quantize``, default preset, calibrated on the same photo
crops as dnet's file), and the FP32 file, NNCF's INT8 model and dnet's ``onnx-int8-densenet.onnx`` run in
OpenVINO's CPU plugin, timed interleaved round by round. Writes benchmarks/results/openvino_nncf.json.
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


def compiled(core, model, threads: int):
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                             "INFERENCE_PRECISION_HINT": "f32"})


def main() -> None:
    import nncf
    import openvino as ov

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-round", type=int, default=3)
    args = ap.parse_args()
    core = ov.Core()
    calib = np.load(args.folder / "calib.npy")
    fp32 = core.read_model(str(args.folder / "densenet121.onnx"))
    t0 = time.perf_counter()
    nncf_model = nncf.quantize(core.read_model(str(args.folder / "densenet121.onnx")),
                               nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]), subset_size=len(calib))
    quantize_s = time.perf_counter() - t0
    models = {"openvino-fp32": compiled(core, fp32, args.threads),
              "openvino-nncf-int8": compiled(core, nncf_model, args.threads),
              "openvino-dnet-int8-densenet": compiled(core, core.read_model(str(args.folder / "onnx-int8-densenet.onnx")),
                                                      args.threads)}
    requests = {k: m.create_infer_request() for k, m in models.items()}
    check = calib[-8:]
    ref = requests["openvino-fp32"].infer({0: check})[0].copy()
    agreement = {}
    for k, r in requests.items():
        got = r.infer({0: check})[0]
        cos = float((ref.ravel() @ got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got)))
        agreement[k] = {"cosine": cos, "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1)))}
    results = []
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        times = {k: [] for k in requests}
        for r in requests.values():
            r.infer({0: x})
        for _ in range(args.rounds):
            for k, r in requests.items():
                for _ in range(args.per_round):
                    t = time.perf_counter()
                    r.infer({0: x})
                    times[k].append(time.perf_counter() - t)
        ref_ms = np.median(times["openvino-fp32"])
        for k, v in times.items():
            results.append({"variant": k, "batch": batch, "median_ms": 1e3 * float(np.median(v)),
                            "vs_openvino_fp32": float(ref_ms / np.median(v))})
    body = {"benchmark": "openvino_nncf", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "load_average": os.getloadavg()},
            "openvino": ov.__version__, "nncf": nncf.__version__, "threads": args.threads, "calibration_images": len(calib),
            "nncf_quantize_s": quantize_s, "agreement_vs_openvino_fp32_on_8_calibration_images": agreement,
            "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "openvino_nncf.json").write_text(json.dumps(body, indent=2) + "\n")
    for r in results:
        print(f"{r['variant']:30s} batch {r['batch']:2d} {r['median_ms']:8.1f} ms  {r['vs_openvino_fp32']:.2f}× OpenVINO FP32")
    print(json.dumps(agreement, indent=1))
    print(f"written {RESULTS / 'openvino_nncf.json'}")


if __name__ == "__main__":
    main()
