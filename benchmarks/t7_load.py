"""Time to load a DenseNet-121-size Lua Torch ``.t7`` checkpoint (target: under 2 s), beside ``torch.load``.

Writes DenseNet-121 (7,978,856 parameters) as ``models/densenet.lua`` + ``checkpoint.save`` would, with the
test-only Torch7 writer: weights only (about 32 MB), weights plus last gradients (about 64 MB, like the
released checkpoints), and with memory-efficient custom layers. Times ``converters.t7.reader.load`` (parse
only) and ``dnet.load`` (parse, map, build the model, sha256), and, side by side, ``dnet.load`` of the same
weights as a dnet ``.pth`` checkpoint. Timings on a shared machine are noisy: compare the ratios.

    PYTHONPATH=$PWD python benchmarks/t7_load.py [--repeat 5]

Result: benchmarks/results/t7_load.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import dnet  # noqa: E402
from converters.t7 import reader  # noqa: E402
from dnet.checkpoint import save_checkpoint  # noqa: E402
from dnet.cli.table import format_table  # noqa: E402
from dnet.files import atomic_write_text  # noqa: E402
from tests.converters.t7_writer import LuaStyle, dumps, lua_densenet  # noqa: E402

TARGET_S = 2.0


def _times(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "t7_load.json")
    args = ap.parse_args()

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
        pth_times = _times(lambda: dnet.load(pth), args.repeat)
        for name, style in variants.items():
            path = Path(tmp) / "densenet121.t7"
            path.write_bytes(dumps(lua_densenet(model, style)))
            size = path.stat().st_size
            loaded = dnet.load(path)
            same = all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))
            parse = _times(lambda p=path: reader.load(p), args.repeat)
            full = _times(lambda p=path: dnet.load(p), args.repeat)
            r = {
                "variant": name, "bytes": size, "weights_equal": same,
                "parse_s": {"min": min(parse), "median": statistics.median(parse)},
                "dnet_load_s": {"min": min(full), "median": statistics.median(full)},
                "pth_dnet_load_s": {"min": min(pth_times), "median": statistics.median(pth_times)},
                "ratio_t7_to_pth_median": statistics.median(full) / statistics.median(pth_times),
                "under_target": statistics.median(full) < TARGET_S,
            }
            results.append(r)
            rows.append([name, f"{size / 1e6:.1f}", f"{r['parse_s']['median']:.3f}", f"{r['dnet_load_s']['median']:.3f}",
                         f"{r['dnet_load_s']['min']:.3f}", f"{r['pth_dnet_load_s']['median']:.3f}",
                         f"{r['ratio_t7_to_pth_median']:.2f}", "yes" if r["under_target"] else "NO"])
    report = {
        "benchmark": "t7_load", "target_s": TARGET_S, "repeat": args.repeat,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(format_table(["file", "MB", "parse s", "dnet.load s", "min s", ".pth load s", "t7/pth", f"< {TARGET_S:g} s"],
                       rows, right=range(1, 8)))
    print(f"medians of {args.repeat}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared: noisy); "
          f"written {args.out}")


if __name__ == "__main__":
    main()
