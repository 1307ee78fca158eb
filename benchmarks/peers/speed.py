"""CPU speed of each tool's INT8 DenseNet-121 against FP32, in a plain ``onnxruntime.InferenceSession``, in OpenVINO
and (dnet's CPU file) in dnet's own ONNX Runtime engine; interleaved rounds, ratios to FP32 in the same run.

The model is benchmarks/inference_cpu.py's: densenet121, seeded random weights, BN statistics from photo crops
(benchmarks/photos.py). Every tool calibrates on the same photo crops (64 by default: ModelOpt's calibration of a
224×224 model is slow on a CPU). The int8/FP32 ceiling ratio is inference_cpu's: ONNX Runtime's u8×s8
MatMulInteger rate over the best float32 matrix product rate, measured before and after the engines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

MODEL = "densenet121"
FP32, DNET, CALIB = "densenet121.onnx", "densenet121.int8.onnx", "densenet121.calib.npy"
DNET_OV, DNET_CACHE = "densenet121.int8-ov.onnx", "densenet121.calib.json"  # dnet's OpenVINO target; its ranges
BUILD = "build.json"  # what build() measured (seconds, dnet's calibration summary), read back with reuse
MODELOPT, NNCF = "densenet121.modelopt.onnx", "densenet121.nncf"  # NNCF: .onnx (ONNX backend), .xml (OpenVINO)


def build(folder: Path, calib_count: int = 64, seed: int = 0, reuse: bool = False) -> dict:
    """densenet121 as FP32 ONNX, dnet's CPU and OpenVINO INT8 files and the calibration array the peers read (same
    crops); one calibration cache serves both dnet files. ``reuse``: keep the FP32 file and the array if there, and
    make only a missing dnet file (delete both to rebuild them after a layout change)."""
    from benchmarks.photos import DESCRIPTION, photo_crops, random_densenet
    from dnet.converters import export as onnx_export
    from dnet.converters.int8 import quantize
    from dnet.converters.int8.calibration import CalibrationSet
    from dnet.core.specs import get_spec
    from dnet.data.transforms import preprocess_array

    folder.mkdir(parents=True, exist_ok=True)
    info: dict = {"calibration": {"images": calib_count, "data": DESCRIPTION}, "build_s": {}}
    if reuse and all((folder / f).exists() for f in (FP32, DNET, DNET_OV, CALIB)):
        try:
            info = json.loads((folder / BUILD).read_text())
        except (OSError, ValueError):
            pass
        return {**info, "reused": True}
    spec = get_spec("torch7")
    model = random_densenet(MODEL, seed=seed)
    meta = onnx_export.model_meta(model, preprocess=spec)
    model.meta = meta
    check = 16
    images = photo_crops(calib_count + check, seed=seed)
    if not (reuse and (folder / FP32).exists()):  # reused, the peers' files stay made from the same FP32 file
        t = time.perf_counter()
        onnx_export.export(model, folder / FP32, meta=meta)
        info["build_s"]["fp32"] = time.perf_counter() - t
    t = time.perf_counter()
    # random weights: near-tied logits and a cosine no trained model has; speed is measured, the check is recorded
    calib = CalibrationSet(images=images, count=calib_count, name="photo crops")
    _, info["dnet"] = quantize.to_int8(folder / FP32, folder / DNET, target="cpu", min_top1=0.0, min_cosine=0.0,
                                       check_images=check, calib=calib, cache_path=folder / DNET_CACHE)
    info["build_s"]["dnet"] = time.perf_counter() - t  # calibration included: the OpenVINO file reads its cache
    _, info["dnet_openvino"] = quantize.to_int8(folder / FP32, folder / DNET_OV, target="openvino", min_top1=0.0,
                                                min_cosine=0.0, check_images=check, calib=calib,
                                                cache_path=folder / DNET_CACHE)
    if not (reuse and (folder / CALIB).exists()):
        np.save(folder / CALIB, preprocess_array(images[:calib_count], spec))
    (folder / BUILD).write_text(json.dumps(info, default=str))
    return info


# (tool, file, runtimes it runs in): "plain" a plain onnxruntime.InferenceSession, "dnet" dnet's engine
ENGINES = (("FP32", FP32, ("plain", "dnet", "openvino")), ("dnet cpu", DNET, ("plain", "dnet", "openvino")),
           ("dnet openvino", DNET_OV, ("plain", "openvino")),
           ("ModelOpt", MODELOPT, ("plain", "openvino")), ("NNCF (ONNX)", f"{NNCF}.onnx", ("plain", "openvino")),
           ("NNCF (OpenVINO IR)", f"{NNCF}.xml", ("openvino",)))
RUNTIMES = {"plain": "onnxruntime.InferenceSession", "dnet": "dnet's engine", "openvino": "OpenVINO"}


def _open(runtime: str, path: Path, threads: int):
    from benchmarks.inference_cpu import OpenVinoEngine, PlainOrtEngine
    from dnet import engines

    if runtime == "plain":
        return PlainOrtEngine(path, threads)
    if runtime == "openvino":
        return OpenVinoEngine(path, threads)
    return engines.open(path, threads=threads)


def measure(folder: Path, *, threads: int = 2, batches=(1, 8), duration: float = 6.0, rounds: int = 6) -> dict:
    """Every (tool, runtime) of :data:`ENGINES` whose file exists, interleaved; the ceilings before and after."""
    import onnxruntime
    import openvino

    from benchmarks.inference_cpu import ceilings
    from dnet.apps.bench import bench_engines

    runs = [ceilings(threads)]
    keys, opened = [], []
    for tool, name, runtimes in ENGINES:
        if (folder / name).exists():
            for rt in runtimes:
                keys.append((tool, rt))
                opened.append(_open(rt, folder / name, threads))
    try:
        results = {b: bench_engines(opened, b, warmup=1.0, duration=duration, rounds=rounds) for b in batches}
    finally:
        for e in opened:
            e.close()
    runs.append(ceilings(threads))
    ceiling = {k: max(r[k] for r in runs) for k in runs[0]}
    fp32_rate = max(ceiling["torch.mm"], ceiling["onnxruntime MatMul"])
    ceiling_ratio = ceiling["onnxruntime MatMulInteger u8s8"] / fp32_rate
    rows = []
    for b, res in results.items():
        base = {rt: r.throughput for (tool, rt), r in zip(keys, res) if tool == "FP32"}
        for (tool, rt), r in zip(keys, res):
            vs = r.throughput / base["plain" if rt == "dnet" else rt]  # dnet's engine: against the plain FP32 session
            rows.append({"tool": tool, "runtime": rt, "batch": b, "median_ms": r.median_ms, "throughput": r.throughput,
                         "vs_fp32": vs, "of_ceiling_ratio": vs / ceiling_ratio if tool != "FP32" and rt != "openvino"
                         else None})
    return {"model": f"{MODEL} (random weights, BN statistics from photo crops)", "threads": threads,
            "duration_s": duration, "rounds": rounds, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__, "ceilings_gops": ceiling, "ceiling_runs": runs,
            "int8_over_fp32_ceiling": ceiling_ratio, "results": rows, "targets": targets(rows, ceiling_ratio)}


def targets(rows: list[dict], ceiling_ratio: float) -> dict:
    """The issue's three speed targets per batch size, each with what was measured and whether it was met."""
    by = {(r["tool"], r["runtime"], r["batch"]): r for r in rows}
    out = {}
    for b in sorted({r["batch"] for r in rows}):
        plain, own = by.get(("dnet cpu", "plain", b)), by.get(("dnet cpu", "dnet", b))
        ov, nncf = by.get(("dnet openvino", "openvino", b)), by.get(("NNCF (OpenVINO IR)", "openvino", b))
        if plain and own:
            m = plain["throughput"] / own["throughput"]
            out[f"plain_vs_dnet_engine_b{b}"] = {"goal": ">= 0.95", "measured": m, "met": m >= 0.95}
        if plain:
            m = plain["vs_fp32"] / ceiling_ratio
            out[f"plain_of_ceiling_ratio_b{b}"] = {"goal": ">= 0.70", "measured": m, "met": m >= 0.70}
        if ov and nncf:
            m = ov["throughput"] / nncf["throughput"]
            out[f"openvino_vs_nncf_b{b}"] = {"goal": ">= 1.00", "measured": m, "met": m >= 1.0}
    return out


def table_rows(result: dict) -> list[list]:
    return [[r["tool"], RUNTIMES[r["runtime"]], r["batch"], f"{r['median_ms']:.1f}", f"{r['throughput']:.1f}",
             f"{r['vs_fp32']:.2f}×", "–" if r["of_ceiling_ratio"] is None else f"{r['of_ceiling_ratio']:.0%}"]
            for r in result["results"]]


def print_rows(result: dict) -> None:
    from benchmarks.report import print_table

    c = result["ceilings_gops"]
    print_table(f"{MODEL}, {result['threads']} threads; int8/FP32 ceiling ratio {result['int8_over_fp32_ceiling']:.2f} "
                f"(ORT MatMulInteger u8×s8 {c['onnxruntime MatMulInteger u8s8']:.0f} GOP/s over float32 "
                f"{max(c['torch.mm'], c['onnxruntime MatMul']):.0f} GFLOP/s)",
                ["tool", "runtime", "batch", "median ms", "img/s", "vs FP32", "of ceiling ratio"], table_rows(result))
    print_table("speed targets", ["target", "goal", "measured", "met"],
                [[k, t["goal"], f"{t['measured']:.2f}", "yes" if t["met"] else "no"]
                 for k, t in result["targets"].items()])


def main() -> None:  # the build step alone: python -m benchmarks.peers.speed DIR [COUNT]
    import sys

    print(json.dumps(build(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 64), default=str)[:2000])


if __name__ == "__main__":
    main()
