"""Data-pipeline overhead of ``dnet eval``: end-to-end eval throughput against the same engine's raw throughput.

Generates a folder of real-size JPEGs (ImageNet-like 500×375 and 375×500, smooth content plus noise,
quality 90), a DenseNet-121 with random weights, and measures, side by side:
  - decode:   ``preprocess(path, "torch7")`` alone, images/s in one process;
  - raw:      the engine on already-preprocessed batches (no decoding), images/s;
  - eval:     ``dnet.apps.eval.loop.evaluate`` on the folder (decoding in worker processes), images/s;
  - overhead: 1 − eval/raw.
Engines: the PyTorch engine on a dnet checkpoint, and ONNX Runtime on dnet's ONNX export of the same model.
Writes benchmarks/results/eval_throughput.json and prints a table. A shared CPU makes absolute numbers noisy.

    python -m benchmarks.eval_throughput [--images 256] [--batch 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.report import add_quick, print_table, write_result


def make_folder(folder: Path, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (375, 500) if i % 3 else (500, 375)
        yy, xx = np.mgrid[0:h, 0:w]
        base = 127 + 90 * np.sin(xx / rng.uniform(5, 30))[..., None] * np.cos(yy / rng.uniform(5, 30))[..., None]
        pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        d = folder / f"c{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(d / f"{i:05d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--engines", default="onnxruntime,torch")
    add_quick(ap, "64 images")
    args = ap.parse_args()
    if args.quick:
        args.images = 64

    import torch

    import dnet
    from dnet import engines
    from dnet.apps.eval.loop import evaluate
    from dnet.core.artifact import ArtifactMeta
    from dnet.core.specs import get_spec
    from dnet.data.datasets import open_dataset
    from dnet.data.transforms import preprocess
    from dnet.formats.checkpoint import save_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="dnet-evalbench-"))
    make_folder(tmp / "images", args.images)
    ds = open_dataset("folder", tmp / "images")
    torch.manual_seed(0)
    model = dnet.create_model("densenet121", num_classes=10).eval()
    meta = ArtifactMeta("custom", 10, 224, get_spec("torch7"))

    t0 = time.perf_counter()
    decoded = [preprocess(p, "torch7") for p in ds.paths[: min(64, len(ds))]]
    decode_ips = len(decoded) / (time.perf_counter() - t0)
    batch = np.stack((decoded * (args.batch // len(decoded) + 1))[: args.batch])

    rows, results = [], []
    for kind in args.engines.split(","):
        if kind == "torch":
            engine = engines.open(save_checkpoint(tmp / "d121.pth", model, meta))
            name = "dnet.engines.torch"
        else:
            from dnet.converters.export import export

            engine, name = engines.open(export(model, tmp / "d121.onnx", meta=meta)), "dnet.engines.onnxruntime"
        engine(batch)  # warm-up
        runs = max(1, args.images // args.batch)
        t0 = time.perf_counter()
        for _ in range(runs):
            engine(batch)
        raw_ips = runs * args.batch / (time.perf_counter() - t0)
        report = evaluate(engine, ds, batch=args.batch, workers=args.workers, progress=False)
        r = {"engine": name, "kind": kind, "images": report.images, "batch": args.batch, "workers": args.workers,
             "raw_img_s": raw_ips, "eval_img_s": report.throughput, "eval_engine_only_img_s": report.engine_throughput,
             "overhead": 1 - report.throughput / raw_ips}
        results.append(r)
        rows.append([kind, report.images, f"{raw_ips:.1f}", f"{report.throughput:.1f}", f"{r['overhead'] * 100:.0f} %"])
        engine.close()

    path = write_result("eval_throughput", {
        "model": "densenet121 (random weights)", "preprocess": "torch7", "decode_img_s_one_process": decode_ips,
        "note": "shared CPU: the engine and the decoding workers compete for the same cores", "results": results})
    print(f"decoding (torch7 preprocess) in one process: {decode_ips:.1f} img/s; cores: {os.cpu_count()}")
    print_table("dnet eval overhead", ["engine", "images", "raw img/s", "eval img/s", "overhead"], rows)
    print(f"written {path}")


if __name__ == "__main__":
    main()
