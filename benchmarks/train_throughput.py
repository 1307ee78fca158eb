"""CPU training throughput (img/s) of DenseNet-BC-100 (k=12) at batch 64: standard, memory-efficient and
channels-last (and, with ``--compile``, torch.compile'd standard and channels-last), measured side by side
(interleaved rounds, so a busy machine slows all modes alike).

    python -m benchmarks.train_throughput [--steps 3] [--rounds 3] [--threads 2] [--compile] [--quick]

Prints a table and writes benchmarks/results/train_throughput.json. One step = forward, backward and the
recipe's SGD update on random CIFAR-sized images (32×32), as ``dnet train`` runs it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.report import add_quick, print_table, write_result
from dnet.apps.train.loop import make_optimizer
from dnet.apps.train.recipe import recipe
from dnet.models.densenet import DenseNet

MODES = {"standard": dict(), "memory-efficient": dict(memory_efficient=True), "channels-last": dict(channels_last=True)}
COMPILED = {"compiled": dict(), "compiled-channels-last": dict(channels_last=True)}


def make_step(mode: str, batch: int):
    cfg = recipe("cifar10", **{**MODES, **COMPILED}[mode])
    torch.manual_seed(0)
    model = DenseNet(cfg.model_config(10), memory_efficient=cfg.memory_efficient).train()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, cfg)
    forward = torch.compile(model) if mode in COMPILED else model
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also torch.compile'd modes (compiling takes minutes)")
    add_quick(ap, "one step per mode per round")
    args = ap.parse_args()
    if args.quick:
        args.steps = 1
    torch.set_num_threads(args.threads)
    modes = [*MODES, *(COMPILED if args.compile else ())]
    steps = {m: make_step(m, args.batch) for m in modes}
    compile_s = {}
    for m, s in steps.items():  # warm-up: allocator, kernels (and compilation: two steps, the second recompiles)
        t0 = time.perf_counter()
        for _ in range(2 if m in COMPILED else 1):
            s()
        compile_s[m] = time.perf_counter() - t0
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for m, s in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s()
            rates[m].append(args.batch * args.steps / (time.perf_counter() - t0))
    ref = statistics.median(rates["standard"])
    rows, results = [], []
    for m in modes:
        med = statistics.median(rates[m])
        rows.append([m, f"{med:.1f}", f"{min(rates[m]):.1f}", f"{max(rates[m]):.1f}", f"{med / ref:.2f}"])
        results.append({"mode": m, "img_per_s_median": med, "img_per_s_rounds": rates[m], "ratio_vs_standard": med / ref})
    best = max(results, key=lambda r: r["ratio_vs_standard"])
    path = write_result("train_throughput", {
        "model": "densenet-bc-l100-k12", "input": [args.batch, 3, 32, 32], "device": "cpu",
        "threads": torch.get_num_threads(), "steps_per_round": args.steps, "rounds": args.rounds,
        "warmup_s": compile_s, "results": results,
        "best": {"mode": best["mode"], "ratio_vs_standard": best["ratio_vs_standard"]},
        "note": "shared machine: absolute numbers are noisy; the ratios were measured side by side"})
    print_table(f"DenseNet-BC-100 k=12 training, batch {args.batch}, {torch.get_num_threads()} threads",
                ["mode", "img/s (median)", "min", "max", "× standard"], rows)
    print(f"written {path}")


if __name__ == "__main__":
    main()
