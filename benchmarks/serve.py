"""Serving load: N concurrent tritonclient async-HTTP clients against `dnet serve` (dynamic batching on vs off),
throughput and p50/p90/p99 latency, beside `dnet bench` of the same file (the serving overhead).

    python -m benchmarks.serve FILE.onnx [FILE...] [--clients 32] [--requests 400] [--quick]
    python -m benchmarks.serve --densenet121 DIR [FILE...]   # also densenet121's FP32 and CPU INT8 ONNX, built in DIR

densenet121 has random weights with BN statistics measured on photo crops (benchmarks.photos.random_densenet), and
its INT8 file is calibrated on 64 other photo crops; files already in DIR are reused.

Prints a table headed by the CPU model, its flags and the load (`uptime`), and writes JSON to benchmarks/results/.
The machine may be shared: the load average is recorded with each run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

from dnet import engines
from dnet.apps.bench import bench_engines
from dnet.apps.deploy.serve import ServeOptions, server
from dnet.core import cpu

RESULTS = Path(__file__).resolve().parent / "results"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def load(port: int, name: str, x: np.ndarray, clients: int, requests: int) -> list[float]:
    import tritonclient.http.aio as aio

    client = aio.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=clients)
    latencies: list[float] = []
    todo = iter(range(requests))

    async def worker():
        for i in todo:
            inp = aio.InferInput("input", [1, *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(x[i % len(x)][None])
            t = time.perf_counter()
            await client.infer(name, [inp])
            latencies.append(time.perf_counter() - t)

    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        await client.close()
    return latencies


def run(path: Path, batching: bool, clients: int, requests: int, max_batch: int) -> dict:
    h, g, m = free_ports(3)
    options = ServeOptions(address="127.0.0.1", http_port=h, grpc_port=g, metrics_port=m, batching=batching,
                           max_batch=max_batch)
    with server(path, options) as (_, names):
        with engines.open(path) as engine:
            _, c, hh, ww = engine.input_shape
        x = np.random.default_rng(0).standard_normal((16, c, hh, ww)).astype(np.float32)
        asyncio.run(load(h, names[0], x, clients, min(requests, 2 * clients)))  # warm-up
        t = time.perf_counter()
        lat = np.asarray(asyncio.run(load(h, names[0], x, clients, requests))) * 1e3
        wall = time.perf_counter() - t
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{m}/metrics", timeout=10).read().decode()
    count = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(f'nv_inference_count{{model="{names[0]}"'))
    execs = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(f'nv_inference_exec_count{{model="{names[0]}"'))
    return {"file": path.name, "batching": batching, "clients": clients, "requests": requests,
            "img_per_s": requests / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)), "p99_ms": float(np.percentile(lat, 99)),
            "images_per_execution": count / execs if execs else None}


def densenet121(folder: Path) -> list[Path]:
    """densenet121's FP32 and CPU INT8 ONNX in ``folder`` (built when absent)."""
    from benchmarks.photos import photo_crops, random_densenet
    from dnet.converters import export as onnx_export
    from dnet.converters.int8 import quantize
    from dnet.converters.int8.calibration import CalibrationSet
    from dnet.core.specs import get_spec

    fp32, int8 = folder / "densenet121.onnx", folder / "densenet121.int8.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    if not fp32.exists():
        model = random_densenet("densenet121")
        onnx_export.export(model, fp32, meta=onnx_export.model_meta(model, preprocess=get_spec("torch7")))
    if not int8.exists():  # random weights: near-tied logits, so the check bounds the cosine only
        calib = CalibrationSet(images=photo_crops(64 + quantize.INT8_CHECK_IMAGES, seed=1), count=64,
                               name="skimage photo crops")
        quantize.to_int8(fp32, int8, calib=calib, min_top1=0.0)
    return [fp32, int8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--densenet121", type=Path, metavar="DIR", help="also densenet121 (FP32, CPU INT8), built in DIR")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="8 clients, 64 requests, a 1 s engine bench")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.requests = 8, 64
    if args.densenet121:
        args.files = [*densenet121(args.densenet121), *args.files]
    if not args.files:
        ap.error("no file: name one, or pass --densenet121 DIR")
    head = {"cpu": cpu.model_name(), "flags": sorted(cpu.flags() & {"avx2", "avx512_vnni", "avx_vnni", "avx512_bf16"}),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    rows = []
    for path in args.files:
        for batching in (True, False):
            rows.append(run(path, batching, args.clients, args.requests, args.max_batch))
        with engines.open(path) as engine:
            bench = [dataclasses.asdict(r) for b in (1, args.max_batch)
                     for r in bench_engines([engine], b, warmup=0.5, duration=1.0 if args.quick else 3.0)]
        rows[-1]["dnet_bench"] = rows[-2]["dnet_bench"] = bench
    head["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{head['cpu']} ({', '.join(head['flags'])}); load: {head['uptime']}")
    print(f"{'file':<32} {'batching':>8} {'img/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'img/exec':>8}")
    for r in rows:
        print(f"{r['file']:<32} {'on' if r['batching'] else 'off':>8} {r['img_per_s']:8.1f} {r['p50_ms']:8.2f} "
              f"{r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['images_per_execution'] or 0:8.2f}")
        if not r["batching"]:
            for b in r["dnet_bench"]:
                print(f"{'  dnet bench, batch ' + str(b['batch']):<32} {'':>8} {b.get('throughput', 0) or 0:8.1f} "
                      f"{b.get('median_ms', 0) or 0:8.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"serve-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({**head, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("TMPDIR", "/tmp")
    main()
