"""Learning-rate schedules against values computed by hand from train.lua and the tech report."""

from __future__ import annotations

import math

import pytest

from dnet.apps.train.schedule import learning_rate
from dnet.core.errors import UsageError


@pytest.mark.parametrize(("epoch", "expected"), [
    (0, 0.1), (148, 0.1),  # Lua epochs 1..149: lr0
    (149, 0.01), (223, 0.01),  # Lua epoch 150 = 50% of 300: ÷10
    (224, 0.001), (299, 0.001),  # Lua epoch 225 = 75% of 300: ÷100
])
def test_multistep_divides_by_ten_at_50_and_75_percent_of_300_epochs(epoch, expected):
    assert learning_rate("multistep", 0.1, epoch, 300) == pytest.approx(expected, rel=1e-12)


def test_multistep_for_svhn_40_epochs():
    lrs = [learning_rate("multistep", 0.1, e, 40) for e in range(40)]
    assert lrs.count(pytest.approx(0.1)) == 19  # Lua epochs 1-19
    assert lrs.count(pytest.approx(0.01)) == 10  # 20-29
    assert lrs.count(pytest.approx(0.001)) == 11  # 30-40


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 0.001), (89, 0.001)])
def test_step30_divides_by_ten_every_30_epochs(epoch, expected):
    assert learning_rate("step30", 0.1, epoch, 90) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("epoch", "iteration", "expected"), [
    (0, 0, 0.05 * (1 + math.cos(math.pi / 8))),  # t = 1 of T = 8: the first step is already below lr0
    (0, 1, 0.05 * (1 + math.cos(math.pi / 4))),  # 0.0853553...
    (0, 3, 0.05),  # t = 4: half way
    (1, 1, 0.05 * (1 + math.cos(3 * math.pi / 4))),  # t = 6: 0.0146446...
    (1, 2, 0.05 * (1 + math.cos(7 * math.pi / 8))),
    (1, 3, 0.0),  # t = T: the last step's learning rate is 0
])
def test_cosine_is_per_iteration_counted_from_one_as_in_lua(epoch, iteration, expected):
    lr = learning_rate("cosine", 0.1, epoch, 2, iteration, 4)
    assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_first_and_last_values_over_a_90_epoch_run():
    # train.lua's learningRateCosine(epoch, iter, nBatches) for iter = 1 of epoch 1 and iter = nBatches of epoch 90
    n = 5005  # ImageNet: 1,281,167 images at batch 256
    first = learning_rate("cosine", 0.1, 0, 90, 0, n)
    last = learning_rate("cosine", 0.1, 89, 90, n - 1, n)
    assert first == 0.5 * 0.1 * (1 + math.cos(math.pi * 1 / (90 * n)))
    assert first < 0.1 and first == pytest.approx(0.1 - 1.216e-12, abs=1e-15)
    assert last == 0.5 * 0.1 * (1 + math.cos(math.pi)) == 0.0


def test_cosine_hand_values():
    assert learning_rate("cosine", 0.1, 0, 2, 1, 4) == pytest.approx(0.0853553390593, abs=1e-12)
    assert learning_rate("cosine", 0.1, 1, 2, 1, 4) == pytest.approx(0.0146446609407, abs=1e-12)


def test_unknown_schedule_is_refused():
    with pytest.raises(UsageError, match="unknown lr schedule 'linear'"):
        learning_rate("linear", 0.1, 0, 10)
