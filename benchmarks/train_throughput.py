"""CPU training throughput (img/s) of DenseNet-BC-100 (k=12) at batch 64: standard, memory-efficient and
channels-last, measured side by side (interleaved rounds, so a busy machine slows all modes alike).

    PYTHONPATH=. python benchmarks/train_throughput.py [--steps 3] [--rounds 3] [--threads N]

Prints a table and writes benchmarks/results/train_throughput.json. One step = forward, backward and the
recipe's SGD update on random CIFAR-sized images (32×32), as ``dnet train`` runs it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnet.cli.table import format_table  # noqa: E402
from dnet.files import atomic_write_text  # noqa: E402
from dnet.models.densenet import DenseNet  # noqa: E402
from dnet.train.recipe import recipe  # noqa: E402
from dnet.train.trainer import make_optimizer  # noqa: E402

MODES = {"standard": dict(), "memory-efficient": dict(memory_efficient=True), "channels-last": dict(channels_last=True)}


def make_step(mode: str, batch: int):
    cfg = recipe("cifar10", **MODES[mode])
    torch.manual_seed(0)
    model = DenseNet(cfg.model_config(10), memory_efficient=cfg.memory_efficient).train()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, cfg)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {m: make_step(m, args.batch) for m in MODES}
    for s in steps.values():  # warm-up: allocator, kernels
        s()
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for m, s in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s()
            rates[m].append(args.batch * args.steps / (time.perf_counter() - t0))
    ref = statistics.median(rates["standard"])
    rows, results = [], []
    for m in MODES:
        med = statistics.median(rates[m])
        rows.append([m, f"{med:.1f}", f"{min(rates[m]):.1f}", f"{max(rates[m]):.1f}", f"{med / ref:.2f}"])
        results.append({"mode": m, "img_per_s_median": med, "img_per_s_rounds": rates[m], "ratio_vs_standard": med / ref})
    print(format_table(["mode", "img/s (median)", "min", "max", "× standard"], rows, right=(1, 2, 3, 4)))
    doc = {
        "benchmark": "train_throughput", "model": "densenet-bc-l100-k12", "input": [args.batch, 3, 32, 32],
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "processor": platform.processor(), "steps_per_round": args.steps,
        "rounds": args.rounds, "results": results,
        "note": "shared machine: absolute numbers are noisy; the ratios were measured side by side",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
