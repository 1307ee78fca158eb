"""Training memory: DenseNet-BC-100 k=12, batch 64, 32×32, one SGD step, standard vs memory-efficient.

Each mode runs in its own process so its peak resident memory is clean. Activation memory is the peak during
a step minus the baseline after a warm-up step (model, gradients and optimizer state allocated, freed
activations returned to the system): glibc is told to serve large blocks by mmap so freed memory leaves RSS,
and Linux's peak-RSS counter is reset (``/proc/self/clear_refs``) before the measured step.

    python -m benchmarks.train_memory [--batch 64] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ["standard", "memory-efficient", "torchvision-memory-efficient"]


def child(mode: str, batch: int, steps: int) -> dict:
    import torch

    from dnet.apps.bench import peak_rss_mb, reset_peak, rss_mb

    torch.manual_seed(0)
    if mode.startswith("torchvision"):
        try:
            from torchvision.models import DenseNet as TVDenseNet
        except ImportError:
            return {"mode": mode, "skipped": "torchvision is not installed"}
        model = TVDenseNet(growth_rate=12, block_config=(16, 16, 16), num_init_features=24, bn_size=4,
                           num_classes=10, memory_efficient=True)
    else:
        import dnet

        model = dnet.create_model("densenet-bc-l100-k12", memory_efficient=mode == "memory-efficient")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # allocates gradients and momentum buffers
    baseline = rss_mb()
    if not reset_peak():
        raise SystemExit("train_memory needs Linux (/proc/self/clear_refs resets the peak resident memory)")
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = peak_rss_mb()
    return {"mode": mode, "baseline_mb": baseline, "peak_mb": peak, "activation_mb": peak - baseline,
            "step_s": sorted(times)[len(times) // 2], "steps": steps, "batch": batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", choices=MODES)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps)))
        return
    from benchmarks.report import print_table, write_result

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = []
    for mode in MODES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.train_memory", "--child", mode, "--batch",
                              str(args.batch), "--steps", str(args.steps)], env=env, check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    std = results[0]
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append([r["mode"], "–", "–", "–", "–", "–", r["skipped"]])
            continue
        rows.append([r["mode"], f"{r['baseline_mb']:.0f}", f"{r['peak_mb']:.0f}", f"{r['activation_mb']:.0f}",
                     f"{r['activation_mb'] / std['activation_mb']:.0%}", f"{r['step_s']:.3f}",
                     f"{r['step_s'] / std['step_s']:.2f}×"])
    path = write_result("train_memory", {"model": "densenet-bc-l100-k12", "batch": args.batch, "results": results})
    print_table(f"DenseNet-BC-100 k=12, batch {args.batch}, 32×32, one SGD step (median of {args.steps})",
                ["mode", "baseline MB", "peak MB", "activations MB", "vs standard", "step s", "time vs std"], rows)
    print(f"written {path}")


if __name__ == "__main__":
    main()
