"""dnet.apps.paired: the paired difference of two files' top-1 error, its interval and McNemar's exact test.

The numbers are worked by hand below; the published ones are from Fagerland, Lydersen & Laake, "Statistical Analysis
of Contingency Tables" (CRC 2017), chapter 8, example "complete response before and after consolidation therapy"
(Cavo et al. 2012), as the R package contingencytables checks them: Newcombe square-and-add -0.0621 (95% CI -0.1186
to -0.0046), McNemar exact conditional P = 0.052479.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dnet.apps.paired import evaluate_paired, mcnemar_exact, newcombe_paired, paired_report, wilson
from dnet.core.artifact import ArtifactMeta
from dnet.core.errors import DataError, UsageError
from dnet.core.specs import get_spec
from dnet.data.datasets import ArrayDataset, open_dataset
from dnet.engines.base import Engine

CAVO = (59, 6, 16, 80)  # both positive, only the first, only the second, neither; n = 161


def test_wilson_bounds_worked_by_hand():
    # p = 65/161 = 0.403727, z = 1.959964: centre (p + z²/2n)/(1 + z²/n), half-width z·sqrt(p(1−p)/n + z²/4n²)/(1 + z²/n)
    assert wilson(65, 161) == pytest.approx((0.331037, 0.480904), abs=1e-6)
    assert wilson(75, 161) == pytest.approx((0.390481, 0.542789), abs=1e-6)
    assert wilson(360, 360)[0] == pytest.approx(360 / (360 + 1.959964**2), abs=1e-6)  # k = n: n/(n + z²) = 0.989442


def test_newcombe_interval_worked_by_hand_and_as_published():
    # p1 = 65/161 = 0.403727, p2 = 75/161 = 0.465839, d = p1 − p2 = −10/161 = −0.062112
    # Wilson: l1 0.331037, u1 0.480904, l2 0.390481, u2 0.542789 (above)
    # φ: A = 59·80 − 6·16 = 4624 > n/2, so (A − n/2)/sqrt(65·96·75·86) = 4543.5/6344.131 = 0.716174
    # L = d − sqrt(0.072690² − 2·0.716174·0.072690·0.076950 + 0.076950²) = −0.062112 − 0.056509 = −0.118621
    # U = d + sqrt(0.077177² − 2·0.716174·0.077177·0.075358 + 0.075358²) = −0.062112 + 0.057487 = −0.004625
    lo, hi = newcombe_paired(*CAVO)
    assert (lo, hi) == pytest.approx((-0.118621, -0.004625), abs=1e-6)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)  # the book's
    # no discordant pairs: not "0 ± 0" (what a Wald interval says) but the Wilson half-widths, ±(1 − 0.989442)
    assert newcombe_paired(360, 0, 0, 0) == pytest.approx((-0.010558, 0.010558), abs=1e-6)


def test_mcnemar_exact_p_values_worked_by_hand():
    # 6 of 22 discordant pairs: 2·Σ_{k≤6} C(22,k) / 2^22 = 2·110056/4194304
    assert mcnemar_exact(6, 16) == pytest.approx(2 * 110056 / 4194304, rel=1e-12) == pytest.approx(0.052479, abs=1e-6)
    assert mcnemar_exact(1, 6) == pytest.approx(2 * (1 + 7) / 128, rel=1e-12)  # 0.125
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


# --- a designed table: 40 images, 4 classes (label = index mod 4) ---------------------------------------------
# the reference is right on images 0-29; the engine on 0-23 and 30-31:
#   both right 24 (0-23), only the reference 6 (24-29), only the engine 2 (30-31), both wrong 8 (32-39)
REF_RIGHT = set(range(30))
ENGINE_RIGHT = set(range(24)) | {30, 31}


def _outcomes():
    labels = np.arange(40) % 4
    return labels, np.isin(np.arange(40), list(ENGINE_RIGHT)), np.isin(np.arange(40), list(REF_RIGHT))


def test_paired_report_of_the_designed_table():
    labels, engine, reference = _outcomes()
    r = paired_report("int8.onnx", "fp32.onnx", labels, engine, reference)
    assert (r.both_right, r.engine_only, r.reference_only, r.both_wrong) == (24, 2, 6, 8)
    assert r.engine_error == 35.0 and r.reference_error == 25.0 and r.delta == 10.0  # (6 − 2)/40 points
    assert r.p_value == pytest.approx(2 * (1 + 8 + 28) / 256, rel=1e-12)  # 2 of 8: 2·(C(8,0)+C(8,1)+C(8,2))/2^8
    lo, hi = newcombe_paired(24, 2, 6, 8)  # of accuracy(engine) − accuracy(reference)
    assert r.ci95 == pytest.approx((-100 * hi, -100 * lo)) and r.ci95[0] < 0 < r.ci95[1]
    # class 0 lost images 24 and 28, class 1 lost 25 and 29; classes 2 and 3 lost one and gained one (net 0)
    assert [(c.index, c.lost, c.gained, c.images) for c in r.lost_classes] == [(0, 2, 0, 10), (1, 2, 0, 10)]
    assert r.lines()[1].startswith("Δ top-1 error +10.00 points (95% CI ") and "exact McNemar p = 0.2891" in r.lines()[1]
    assert r.lines()[3] == "classes that lost most: class 0 −2 (2 lost, 0 gained, of 10), class 1 −2 (2 lost, 0 gained, of 10)"


class Lookup(Engine):
    """Predicts, for each image, a class fixed in advance; reads which image it is from its pixels (digits spec)."""

    kind = "lookup"

    def __init__(self, name, right: set[int], classes=4, size=8, batch=-1, meta=True):
        self.path = Path(name)
        self.meta = ArtifactMeta("custom", classes, size, get_spec("digits")) if meta else None
        self.input_shape = (batch, 3, size, size)
        self.right, self.classes, self.seen = right, classes, []

    def run(self, batch):
        self.seen.append(batch)
        spec = get_spec("digits")
        index = np.rint(batch[:, 0, 0, 0] * spec.std[0] + spec.mean[0]).astype(int)
        label = index % 4
        out = np.zeros((len(batch), self.classes), np.float32)
        out[np.arange(len(batch)), np.where(np.isin(index, list(self.right)), label, (label + 1) % 4)] = 1
        return out


def _dataset(n=40, classes=4):
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 8, 1).repeat(8, 2).repeat(3, 3)
    return ArrayDataset("designed", "test", images, np.arange(n) % 4, classes, get_spec("digits"))


def test_evaluate_paired_feeds_both_engines_the_same_decoded_batches():
    engine, reference = Lookup("int8.onnx", ENGINE_RIGHT), Lookup("fp32.onnx", REF_RIGHT)
    r = evaluate_paired(engine, reference, _dataset(), batch=7, progress=False)
    assert (r.both_right, r.engine_only, r.reference_only, r.both_wrong) == (24, 2, 6, 8)
    assert r.delta == 10.0 and r.engine == "int8.onnx" and r.reference == "fp32.onnx" and r.dataset == "designed"
    assert len(engine.seen) == 6 and all(a is b for a, b in zip(engine.seen, reference.seen, strict=True))
    assert r.report.top1_correct == 26 and len(r.report.predictions) == 40
    d = r.to_dict()
    assert d["engine_only"] == 2 and d["p_value"] == r.p_value and d["engine_report"]["images"] == 40
    assert [c["net"] for c in d["lost_classes"]] == [2, 2] and d["interval"].startswith("Newcombe hybrid score")


def test_a_fixed_batch_reference_gets_padded_pieces_and_the_same_outcomes():
    reference = Lookup("fp32.onnx", REF_RIGHT, batch=4)
    r = evaluate_paired(Lookup("int8.onnx", ENGINE_RIGHT), reference, _dataset(), batch=10, progress=False)
    assert (r.engine_only, r.reference_only) == (2, 6) and {len(b) for b in reference.seen} == {4}


def test_limit_and_ten_crop_pass_through(tmp_path):
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 36, 3), 30 + 190 * c + i, np.uint8)).save(tmp_path / f"c{c}" / f"{i}.png")
    ds = open_dataset("folder", tmp_path)
    spec = dataclasses.replace(get_spec("torch7"), resize=36, crop=32, input_size=32)

    class Bright(Engine):
        def __init__(self, name):
            self.path, self.meta, self.input_shape = Path(name), None, (-1, 3, 32, 32)

        def run(self, batch):
            return np.stack([np.zeros(len(batch)), batch.reshape(len(batch), -1).mean(1)], 1)

    r = evaluate_paired(Bright("a.onnx"), Bright("b.onnx"), ds, preprocess=spec, ten_crop=True, workers=0, progress=False)
    assert r.images == 6 and r.both_right == 6 and r.delta == 0 and r.p_value == 1.0 and r.report.ten_crop
    r = evaluate_paired(Bright("a.onnx"), Bright("b.onnx"), ds, preprocess=spec, limit=3, workers=0, progress=False)
    assert r.images == 3


def test_files_that_cannot_share_one_decoding_are_refused_in_one_line(monkeypatch):
    ds = _dataset()
    with pytest.raises(DataError) as e:
        evaluate_paired(Lookup("int8.onnx", set()), Lookup("fp32.onnx", set(), classes=5), ds, progress=False)
    assert str(e.value) == "int8.onnx has 4 classes but fp32.onnx has 5; compare two files of the same model"
    with pytest.raises(UsageError) as e:
        evaluate_paired(Lookup("int8.onnx", set()), Lookup("fp32.onnx", set(), size=16), ds, progress=False)
    assert str(e.value) == "int8.onnx takes 8×8 inputs but fp32.onnx takes 16×16; the same images cannot feed both"
    other = Lookup("fp32.onnx", set())
    other.meta = dataclasses.replace(other.meta, preprocess=dataclasses.replace(get_spec("digits"), name="svhn", mean=(0,) * 3))
    with pytest.raises(UsageError, match=r"^int8.onnx expects digits preprocessing at 8 but fp32.onnx svhn at 8; "):
        evaluate_paired(Lookup("int8.onnx", set()), other, ds, progress=False)
    with pytest.raises(DataError, match=r"^int8.onnx gives 4 classes but fp32.onnx 5; compare two files"):
        evaluate_paired(Lookup("int8.onnx", set()), Lookup("fp32.onnx", set(), classes=5, meta=False), ds, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="runs in one process; run it without torchrun"):
        evaluate_paired(Lookup("int8.onnx", set()), Lookup("fp32.onnx", set()), ds, progress=False)
