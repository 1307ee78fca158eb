"""Experiment: can the TensorRT-layout INT8 (symmetric int8 activations) run fused in ONNX Runtime on x86?

ONNX Runtime converts an int8 Q->DQ pair to uint8 only when the Q feeds one DQ, and gives each consumer of a
shared DQ its own copy; DenseNet's exported graph concatenates all earlier features afresh for every layer, so
each 3x3 convolution's output feeds many Concats, keeps int8 while its input became uint8, and 54 of
densenet121's 120 convolutions run as DQ -> float Conv -> Q. Chaining the concatenations
(Concat(previous Concat, new features), same values) makes every tensor feed one Concat. This script measures
both graphs (FP32 and TRT-layout INT8) with ONNX Runtime's profiler and the INT8 agreement with FP32 on photo
crops: chaining fuses every convolution, but re-quantises the earlier features at every layer.

    python -m benchmarks.int8_concat_chain [--model densenet121] [--calib-count 16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx


def main() -> None:
    from benchmarks.ort_profile import profile
    from benchmarks.photos import photo_crops, random_densenet
    from benchmarks.report import print_table, write_result
    from dnet.converters import export as onnx_export
    from dnet.converters.graph import chain_concats
    from dnet.converters.int8 import quantize
    from dnet.converters.int8.calibration import CalibrationSet
    from dnet.data.specs import get_spec
    from dnet.data.transforms import preprocess_array
    from dnet.engines.onnxruntime import run as ort_run
    from dnet.similarity import cosine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    spec = get_spec("torch7")
    model = random_densenet(args.model)
    calib = CalibrationSet(images=photo_crops(args.calib_count), count=args.calib_count, name="photo crops")
    check = preprocess_array(photo_crops(8, seed=7), spec)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="dnet-chain-") as tmp:
        tmp = Path(tmp)
        fp32 = onnx_export.export(model, tmp / "m.onnx", meta=onnx_export.model_meta(model, preprocess=spec))
        proto = onnx.load(str(fp32))
        chained = chain_concats(proto)
        onnx.save(proto, str(tmp / "chained.onnx"))
        for graph, src in (("fresh concats (export)", fp32), (f"chained ({chained} rewritten)", tmp / "chained.onnx")):
            q, _ = quantize.to_int8(src, tmp / f"{src.stem}.int8.onnx", calib=calib, cache_path=tmp / f"{src.stem}.json",
                                     layout="ort", check_images=0)  # the experiment is about the ort layout
            ref, got = ort_run(src, check), ort_run(q, check)
            for label, f in (("FP32", src), ("INT8 qdq-trt", q)):
                p = profile(f, batch=8, threads=args.threads, runs=5)
                fused = p["executed_ops"].get("com.microsoft.QLinearConv", 0)
                r = {"graph": graph, "file": label, "run_ms_b8": p["run_ms_median"], "qlinearconv": fused,
                     "float_conv_between_qdq": p["executed_ops"].get("Conv", 0), "top_ops_ms": dict(list(p["per_op_ms"].items())[:5])}
                if label != "FP32":
                    r["cosine_vs_fp32"] = cosine(ref, got)
                results.append(r)
                rows.append([graph, label, f"{r['run_ms_b8']:.0f}", fused, r["float_conv_between_qdq"],
                             f"{r['cosine_vs_fp32']:.4f}" if "cosine_vs_fp32" in r else "–"])
    path = write_result("int8_concat_chain", {"model": args.model, "threads": args.threads, "results": results,
                                              "note": "one profiled run per file, not interleaved: rough"})
    print_table(f"{args.model}, batch 8, {args.threads} threads (ONNX Runtime profiler, median of 5 runs)",
                ["graph", "file", "ms", "QLinearConv", "float Conv in Q/DQ", "cosine vs FP32"], rows, right=(2, 3, 4, 5))
    print(f"written {path}")


if __name__ == "__main__":
    main()
