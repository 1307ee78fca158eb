"""Time to load a DenseNet-121-size Lua Torch ``.t7`` checkpoint, beside ``torch.load``.

Writes DenseNet-121 (7,978,856 parameters) as ``models/densenet.lua`` + ``checkpoint.save`` would, with the
test-only Torch7 writer: weights only (about 32 MB), weights plus last gradients (about 64 MB, like the
released checkpoints), and with memory-efficient custom layers. Times ``dnet.formats.t7.reader.load`` (parse
only) and ``dnet.load`` (parse, map, build the model, sha256), and, side by side, ``dnet.load`` of the same
weights as a dnet ``.pth`` checkpoint. Timings on a shared machine are noisy: compare the ratios.

    python -m benchmarks.t7_load [--repeat 5]

Result: benchmarks/results/t7_load.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

import dnet
from benchmarks.report import add_quick, print_table, run_times, write_result
from dnet.formats.checkpoint import save_checkpoint
from dnet.formats.t7 import reader
from dnet.formats.t7.writer import LuaStyle, dumps, lua_densenet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    add_quick(ap, "two repeats")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 2

    torch.manual_seed(0)
    model = dnet.create_model("densenet121").eval()
    variants = {
        "densenet121 standard, weights only": LuaStyle(with_grads=False),
        "densenet121 standard, with gradients": LuaStyle(with_grads=True),
        "densenet121 custom layers, weights only": LuaStyle(layer_kind="custom", with_grads=False),
    }
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / "densenet121.pth"
        save_checkpoint(pth, model)
        pth_times = run_times(lambda: dnet.load(pth), args.repeat)
        for name, style in variants.items():
            path = Path(tmp) / "densenet121.t7"
            path.write_bytes(dumps(lua_densenet(model, style)))
            size = path.stat().st_size
            loaded = dnet.load(path)
            same = all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))
            parse = run_times(lambda p=path: reader.load(p), args.repeat)
            full = run_times(lambda p=path: dnet.load(p), args.repeat)
            r = {
                "variant": name, "bytes": size, "weights_equal": same,
                "parse_s": {"min": min(parse), "median": statistics.median(parse)},
                "dnet_load_s": {"min": min(full), "median": statistics.median(full)},
                "pth_dnet_load_s": {"min": min(pth_times), "median": statistics.median(pth_times)},
                "ratio_t7_to_pth_median": statistics.median(full) / statistics.median(pth_times),
            }
            results.append(r)
            rows.append([name, f"{size / 1e6:.1f}", f"{r['parse_s']['median']:.3f}", f"{r['dnet_load_s']['median']:.3f}",
                         f"{r['dnet_load_s']['min']:.3f}", f"{r['pth_dnet_load_s']['median']:.3f}",
                         f"{r['ratio_t7_to_pth_median']:.2f}"])
    path = write_result("t7_load", {"repeat": args.repeat, "results": results})
    print_table(f"DenseNet-121 .t7 load, medians of {args.repeat}",
                ["file", "MB", "parse s", "dnet.load s", "min s", ".pth load s", "t7/pth"], rows)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared: noisy); written {path}")


if __name__ == "__main__":
    main()
