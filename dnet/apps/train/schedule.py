"""Learning-rate schedules, as functions of (epoch, iteration) so a resumed run needs no scheduler object.

``multistep`` is ``train.lua``'s CIFAR rule (÷10 once epoch ≥ 50% and again once ≥ 75% of the epochs, the
epoch counted from 1 as in Lua), ``step30`` its ImageNet rule (÷10 every 30 epochs), ``cosine`` the
tech-report models' per-iteration ``learningRateCosine``: 0.5·lr0·(1 + cos(π·t/T)) with T = epochs × iterations
per epoch and t = (epoch − 1)·iterations + iter counted from 1 as in Lua, so the first step is already below lr0
and the last step's learning rate is 0.
"""

from __future__ import annotations

import math

from dnet.core.errors import UsageError


def learning_rate(schedule: str, lr0: float, epoch: int, epochs: int, iteration: int = 0,
                  iterations_per_epoch: int = 1) -> float:
    """The learning rate for 0-based ``epoch`` and 0-based ``iteration`` within it."""
    if schedule == "multistep":
        e = epoch + 1  # train.lua counts epochs from 1
        decay = 2 if e >= 0.75 * epochs else 1 if e >= 0.5 * epochs else 0
        return lr0 * 0.1**decay
    if schedule == "step30":
        return lr0 * 0.1 ** (epoch // 30)
    if schedule == "cosine":
        t = epoch * iterations_per_epoch + iteration + 1  # train.lua: T_cur = (epoch-1)·nBatches + iter, iter from 1
        total = epochs * iterations_per_epoch
        return 0.5 * lr0 * (1.0 + math.cos(math.pi * t / total))
    raise UsageError(f"unknown lr schedule {schedule!r}; choose from multistep, step30, cosine")
