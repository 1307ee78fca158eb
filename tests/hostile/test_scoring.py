"""Broken models never score well: ties are misses, NaN/inf logits and NaN preprocessing are refused in one line.

Each case breaks a small CIFAR-10 DenseNet the way a corrupt or tampered file would, then runs ``dnet eval`` (and
``compare``, the paired statistics, top-5): the outcome is 100 % error or one ``dnet: error:`` line, never 0 %.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from dnet.apps.eval.metrics import topk_hits
from dnet.core.artifact import ArtifactMeta
from dnet.core.errors import ModelOutputError
from dnet.core.similarity import best_class, require_finite, top1_agreement
from dnet.core.specs import get_spec
from dnet.models.zoo import get as zoo_get
from tests.helpers.evaldata import write_cifar_bin
from tests.helpers.foreign_onnx import edit_meta
from tests.helpers.models import save_model, ten_class

CIFAR = get_spec("cifar10")
BROKEN = "the model gives NaN or infinite logits for 12 of 12 images; its weights or its preprocessing (mean, std) " \
         "are broken, so nothing is scored"


@pytest.fixture
def cifar(tmp_path):
    write_cifar_bin(tmp_path / "data" / "cifar-10-batches-bin" / "test_batch.bin", 12)
    return tmp_path / "data"


def test_ties_are_misses_and_non_finite_rows_never_hit():
    logits = np.array([[0.5, 0.5, 0.1], [0.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [0.2, 0.9, 0.1], [np.inf, 0, 0]])
    labels = np.array([0, 2, 1, 1, 0])
    assert topk_hits(logits, labels, 1).tolist() == [False, False, False, True, False]
    assert topk_hits(logits, labels, 2).tolist() == [True, False, False, True, False]  # a tie for 1st is within 2
    assert topk_hits(logits, labels, 3).tolist() == [True, True, False, True, False]  # 3 classes: always in the top 3
    assert best_class(logits).tolist() == [-1, -1, -1, 1, -1]
    assert top1_agreement(np.zeros((4, 3)), np.zeros((4, 3))) == 0.0  # two constant models agree on nothing
    with pytest.raises(ModelOutputError, match=r"^x: the model gives NaN or infinite logits for 2 of 5 images"):
        require_finite(logits, "x")


def test_a_zeroed_classifier_scores_100_percent_error_and_fails_the_tolerance(tmp_path, cifar, box):
    entry = zoo_get("densenet-bc-l100-k12")
    torch.manual_seed(0)
    from dnet.models.densenet import DenseNet

    model = DenseNet(entry.config).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    path = save_model(box.work, "zeroed.pth", model, ArtifactMeta(entry.name, 10, 32, CIFAR))
    box.freeze()
    r = box.cli("eval", path, "--dataset", "cifar10", "--data", cifar, "--json", "-q")
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["top1_correct"] == 0 and report["top1_error"] == 100.0  # every row is a 10-way tie
    assert report["top5_correct"] == 0 and report["top5_error"] == 100.0  # 9 other classes tie with the label
    r = box.cli("eval", path, "--dataset", "cifar10", "--data", cifar, "--tolerance", 5, "-q")
    assert r.code == 3 and "top-1 error 100.00 % is +95.49 points from the published 4.51 %" in r.stderr
    box.unchanged()


@pytest.mark.parametrize("case", ["nan-bias", "inf-weight", "negative-bn-variance"])
def test_non_finite_logits_are_refused_in_one_line(tmp_path, cifar, box, case):
    model = ten_class()
    with torch.no_grad():
        if case == "nan-bias":
            model.classifier.bias[3] = math.nan
        elif case == "inf-weight":
            model.features[0].weight[0, 0, 0, 0] = math.inf  # the stem convolution: every image meets it
        else:
            norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            norm.running_var[0] = -1.0  # sqrt(-1 + eps): NaN through the rest of the network
    path = save_model(box.work, f"{case}.pth", model)
    box.freeze()
    for extra in ((), ("--tolerance", 100)):
        r = box.cli("eval", path, "--dataset", "cifar10", "--data", cifar, "-q", *extra)
        assert r.error_line(1) == f"{case}.pth: {BROKEN}"
    box.unchanged()


def test_non_finite_logits_are_refused_by_compare_and_the_paired_statistics(tmp_path, cifar, box):
    good = save_model(box.work, "good.pth", ten_class())
    model = ten_class()
    with torch.no_grad():
        model.classifier.bias[0] = math.nan
    bad = save_model(box.work, "bad.pth", model)
    box.freeze()
    r = box.cli("eval", good, "--compare-to", bad, "--dataset", "cifar10", "--data", cifar, "-q")
    assert r.error_line(1) == f"bad.pth: {BROKEN}"
    r = box.cli("compare", good, bad)
    assert r.error_line(1).startswith("bad.pth: the model gives NaN or infinite logits for 8 of 8 images")
    box.unchanged()


@pytest.mark.parametrize(("mean", "std", "problem"), [
    ("NaN", "63.0", "preprocess mean [nan, 123.0, 113.9] is not within the pixel range 0..255"),
    ("125.3", "1e-30", "preprocess std [1e-30, 62.1, 66.7] is not between 0.255 and 2550"),
])
def test_nan_mean_or_tiny_std_in_a_checkpoint_is_refused(tmp_path, cifar, box, mean, std, problem):
    model = ten_class()
    spec = dataclasses.replace(CIFAR, mean=(float(mean), 123.0, 113.9), std=(float(std), 62.1, 66.7))
    path = save_model(box.work, "tampered.pth", model, ArtifactMeta("custom", 10, 32, spec))
    box.freeze()
    r = box.cli("eval", path, "--dataset", "cifar10", "--data", cifar, "-q")
    assert r.error_line(1) == f"{path}: artifact metadata is incomplete or malformed: {problem}"
    box.unchanged()


def test_nan_mean_in_onnx_metadata_is_refused_naming_the_file(tmp_path, cifar, box, models):
    path = box.add(models["onnx"], "tampered.onnx")
    spec = dict(CIFAR.to_dict(), mean=[math.nan, 0, 0])
    edit_meta(path, "dnet.preprocess", json.dumps(spec))
    box.freeze()
    for verb in (("eval", path, "--dataset", "cifar10", "--data", cifar, "-q"), ("inspect", path),
                 ("bench", path, "--batch-sizes", "1", "--duration", "0.1")):
        line = box.cli(*verb).error_line()
        assert re.match(r"(.*/)?tampered\.onnx: artifact metadata is incomplete or malformed: preprocess mean "
                        r"\[nan, 0\.0, 0\.0\] is not within the pixel range 0\.\.255$", line), line
    box.unchanged()
