"""Evaluation under torchrun: which share of the images this process sees, and the counts summed over processes (gloo).

With ``RANK``/``WORLD_SIZE`` set, the images are sharded by rank and the counts summed, so N processes give the numbers of one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.utils.data


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def sum_over_ranks(seen, top1, top5, seconds, engine_seconds, skipped, predictions):
    """Counts summed, times the slowest rank's, skipped files and predictions gathered (gloo)."""
    counts = torch.tensor([seen, top1, top5], dtype=torch.int64)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    times = torch.tensor([seconds, engine_seconds], dtype=torch.float64)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (skipped, predictions))
    all_skipped = [s for part in gathered for s in part[0]]
    all_predictions = [p for part in gathered for p in part[1]]
    seen, top1, top5 = (int(v) for v in counts.tolist())
    return seen, top1, top5, float(times[0]), float(times[1]), all_skipped, all_predictions
