"""dnet.apps.eval: top-k and CI on hand-made logits, and evaluate() on real (digits) and generated data."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnet.apps.eval.loop import evaluate
from dnet.apps.eval.metrics import binomial_ci95, reduce_ten_crop, top5_labels, topk_hits
from dnet.apps.eval.report import check_tolerance
from dnet.converters.int8.mixed import ValidationSet
from dnet.core.errors import AccuracyError, DataError, UsageError
from dnet.core.specs import get_spec
from dnet.data.base import evenly_spread
from dnet.data.datasets import ArrayDataset, FileDataset, open_dataset
from dnet.data.transforms import preprocess_array
from dnet.engines.base import Engine
from dnet.models.zoo import get as zoo_get
from dnet.models.zoo import published_error
from tests.helpers.evaldata import TableEngine, ranked_logits, write_cifar_bin, write_imagenet_val
from tests.helpers.models import digits_model_fixture, save_random  # noqa: F401 (digits_model_fixture is a fixture)

LOGITS = np.array([
    [0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],  # label 1: rank 0
    [0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],  # label 5: rank 1 (only 0.9 is higher)
    [0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],  # label 2: rank 6 (lowest)
    [0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],  # label 4: rank 4 (0.9, 0.5, 0.4, 0.3 higher)
    [0.7, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1],  # label 1: tied for first -> a miss in top-1, a hit in top-5
    [0.2, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6],  # label 0: rank 6
])
LABELS = np.array([1, 5, 2, 4, 1, 0])


def test_topk_on_hand_made_logits():
    assert topk_hits(LOGITS, LABELS, 1).tolist() == [True, False, False, False, False, False]
    assert topk_hits(LOGITS, LABELS, 5).tolist() == [True, True, False, True, True, False]
    assert topk_hits(LOGITS, LABELS, 7).all()


def test_top5_labels_best_first():
    assert top5_labels(LOGITS[:1]).tolist() == [[1, 5, 6, 3, 4]]
    assert top5_labels(LOGITS[:1, :3], k=5).tolist() == [[1, 0, 2]]


def test_binomial_ci95_known_values():
    assert binomial_ci95(12_655, 50_000) == pytest.approx(0.3811, abs=1e-4)  # 25.31 % on ImageNet val: ±0.38
    assert binomial_ci95(50, 100) == pytest.approx(9.7998, abs=1e-4)  # 1.96 · sqrt(.25/100)
    assert binomial_ci95(0, 360) == 0.0 and np.isnan(binomial_ci95(0, 0))


def test_ten_crop_reduction_averages_the_crops_outputs():
    logits = np.arange(2 * 10 * 3, dtype=np.float32).reshape(20, 3)
    out = reduce_ten_crop(logits)
    assert out.shape == (2, 3) and out[0].tolist() == [13.5, 14.5, 15.5] and out[1].tolist() == [43.5, 44.5, 45.5]


def test_published_error_lookup():
    assert published_error("densenet-bc-l100-k12", "cifar10", "cifar10") == 4.51
    assert published_error("densenet-bc-l100-k12", "cifar10", "cifar10", augmented=False) == 5.92
    assert published_error("densenet-bc-l100-k12", "cifar100", "cifar100") == 22.27
    assert published_error("densenet-bc-l100-k12", "svhn", "svhn") == 1.76
    assert published_error("densenet121", "imagenet", "torch7") == 25.0  # the README's, for the released file
    assert published_error("densenet121", "imagenet", "torchvision") == 25.566
    assert published_error("densenet121", "imagenet", "torch7", ten_crop=True) == 23.61
    assert published_error("densenet121", "imagenet", "torch7", metric="top5") == 7.71
    assert published_error("densenet121", "imagenet", "torch7", ten_crop=True, metric="top5") == 6.66
    assert published_error("densenet121", "imagenet", "torchvision", metric="top5") == 8.028
    assert published_error("densenet161", "imagenet", "torch7", ten_crop=True) is None  # not in CVPR Table 3
    assert published_error("densenet-cosine264-k48", "imagenet", "torch7") == 20.4
    assert published_error("densenet121", "cifar10", "cifar10") is None  # an ImageNet model on CIFAR
    assert published_error("densenet-bc-l100-k12", "imagenet", "torch7") is None
    assert published_error("custom", "digits", "digits") is None and published_error(None, "digits", "digits") is None


def test_digits_model_counts_match_a_direct_forward_pass(digits_model):
    path = digits_model
    test = open_dataset("digits")
    report = evaluate(path, test, batch=50, progress=False)
    import dnet

    model = dnet.load(path)
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess_array(test.images, test.spec))).numpy()
    expect = int((logits.argmax(1) == test.labels).sum())
    assert report.images == 360 and report.top1_correct == expect
    assert report.top1_error == pytest.approx(100 * (360 - expect) / 360)
    assert report.top1_error < 10  # a trained model, not chance (90 %)
    assert report.top5_correct >= report.top1_correct and report.published_error is None
    assert len(report.predictions) == 360 and report.preprocess == "digits"


def test_limit_spreads_over_the_set_and_batches_do_not_change_counts(digits_model):
    path = digits_model
    test = open_dataset("digits")
    a = evaluate(path, test, batch=7, limit=90, progress=False)
    b = evaluate(path, test, batch=90, limit=90, progress=False)
    assert a.images == b.images == 90 and a.top1_correct == b.top1_correct and a.top5_correct == b.top5_correct
    # first and last included, evenly between: round(i · 359 / 89)
    assert [p[0] for p in a.predictions] == [int(np.round(i * 359 / 89)) for i in range(90)]


def test_limit_picks_the_images_a_conversions_val_count_picks_of_one_folder(tmp_path):
    levels = list(range(10, 250, 20))  # 12 uniform grey images in 2 class folders
    for i, level in enumerate(levels):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(np.full((36, 40, 3), level, np.uint8)).save(tmp_path / f"c{i % 2}" / f"{i:02d}.png")
    data = open_dataset("folder", tmp_path)
    order = [levels[int(p.stem)] for p in data.paths]
    engine = TableEngine("custom", order, np.eye(2, dtype=np.float32)[[int(p.parent.name[1]) for p in data.paths]])
    report = evaluate(engine, data, limit=5, workers=0, progress=False)
    picked = [i for i, *_ in report.predictions]
    assert picked == [0, 3, 6, 8, 11] == evenly_spread(12, 5).tolist()  # round(linspace(0, 11, 5)), half to even
    assert [data.paths[i] for i in picked] == ValidationSet(tmp_path, count=5).open(2).files
    assert report.top1_correct == 5


def test_class_count_mismatch_is_one_line(tmp_path, digits_model):
    path = digits_model
    rng = np.random.default_rng(0)
    other = ArrayDataset("cifar100", "test", rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
                         np.zeros(4, np.int64), 100, get_spec("digits"))
    with pytest.raises(DataError) as e:
        evaluate(path, other, progress=False)
    assert str(e.value) == ("the model has 10 classes but data set cifar100 has 100; "
                            "evaluate it on the data set it was trained for")


class FixedEngine(Engine):
    """An engine without metadata whose logits favour class (sum of pixels > 0)."""

    kind = "fixed"

    def __init__(self, classes=2, size=32):
        self.path = Path("fixed.onnx")
        self.meta = None
        self.input_shape = (-1, 3, size, size)
        self.classes = classes

    def run(self, batch):
        score = batch.reshape(len(batch), -1).mean(1)
        out = np.zeros((len(batch), self.classes), np.float32)
        out[:, 1] = score
        return out


def _folder(root, n_per_class=3, size=(40, 36)):
    for c, value in enumerate((30, 220)):
        for i in range(n_per_class):
            d = root / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full(size + (3,), value + i, np.uint8)).save(d / f"{i}.png")
    return root


def test_engine_without_metadata_needs_a_preprocessing(tmp_path):
    ds = open_dataset("folder", _folder(tmp_path))
    with pytest.raises(UsageError, match="fixed.onnx carries no preprocessing metadata; say how to feed it: name a preprocessing \\(torch7 or torchvision\\)$"):
        evaluate(FixedEngine(), ds, progress=False)


def _small_spec():
    # torch7 arithmetic at a small size so the test stays fast: Scale(36), CenterCrop(32)
    return dataclasses.replace(get_spec("torch7"), name="torch7", resize=36, crop=32, input_size=32)


def test_folder_eval_in_worker_processes_equals_in_process(tmp_path):
    ds = open_dataset("folder", _folder(tmp_path))
    spec = _small_spec()
    one = evaluate(FixedEngine(), ds, preprocess=spec, workers=0, batch=4, progress=False)
    two = evaluate(FixedEngine(), ds, preprocess=spec, workers=2, batch=4, progress=False)
    assert (one.images, one.top1_correct) == (two.images, two.top1_correct) == (6, 6)
    assert one.predictions == two.predictions
    ten = evaluate(FixedEngine(), ds, preprocess=spec, workers=0, ten_crop=True, progress=False)
    assert ten.images == 6 and ten.top1_correct == 6 and ten.ten_crop


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_fails_naming_it_or_is_skipped(tmp_path, workers):
    root = _folder(tmp_path)
    bad = root / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = open_dataset("folder", root)
    with pytest.raises(DataError) as e:
        evaluate(FixedEngine(), ds, preprocess=_small_spec(), workers=workers, progress=False)
    assert str(e.value).startswith(f"{bad}: cannot decode image") and "\n" not in str(e.value)
    report = evaluate(FixedEngine(), ds, preprocess=_small_spec(), workers=workers, skip_bad=True, progress=False)
    assert report.images == 6 and len(report.skipped) == 1 and report.skipped[0].startswith(str(bad))


def test_zoo_model_gets_the_published_number_and_the_tolerance_gate(tmp_path):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", 12)
    entry = zoo_get("densenet-bc-l100-k12")
    path = save_random(tmp_path / "bc100.pth", 10, "cifar10", 32, "densenet-bc-l100-k12", entry.config)
    report = evaluate(path, open_dataset("cifar10", tmp_path), progress=False)
    assert report.published_error == 4.51 and report.delta == pytest.approx(report.top1_error - 4.51)
    assert report.top1_error > 50  # random weights on random pixels
    check_tolerance(report, 100.0)  # within a (silly) tolerance: no error
    with pytest.raises(AccuracyError, match=r"is \+\d+\.\d\d points from the published 4.51 % \(C10\+ top-1, CVPR17-T2\), more than the tolerance of 1"):
        check_tolerance(report, 1.0)
    assert AccuracyError.exit_code == 3


def test_tolerance_without_a_published_number_is_a_usage_error(digits_model):
    report = evaluate(digits_model, open_dataset("digits"), limit=10, progress=False)
    with pytest.raises(UsageError, match="^a tolerance needs a published error, and there is none for model 'custom'"):
        check_tolerance(report, 1.0)


def test_empty_data_set_and_bad_arguments(tmp_path, digits_model):
    empty = FileDataset("folder", "test", [], np.zeros(0, np.int64), 2, ["a", "b"])
    with pytest.raises(DataError, match="data set folder holds no images"):
        evaluate(FixedEngine(), empty, progress=False)
    with pytest.raises(UsageError, match="^ten crops need an image data set"):
        evaluate(digits_model, open_dataset("digits"), ten_crop=True, progress=False)


def test_static_batch_engine_gets_padded_batches(tmp_path):
    ds = open_dataset("folder", _folder(tmp_path))  # 6 images
    seen = []

    class Static(FixedEngine):
        def run(self, batch):
            seen.append(len(batch))
            return super().run(batch)

    engine = Static()
    engine.input_shape = (4, 3, 32, 32)
    report = evaluate(engine, ds, preprocess=_small_spec(), workers=0, batch=100, progress=False)
    assert seen == [4, 4] and report.images == 6 and report.top1_correct == 6
    seen.clear()
    engine.input_shape = (20, 3, 32, 32)  # ten crops: 2 images a run
    report = evaluate(engine, ds, preprocess=_small_spec(), workers=0, ten_crop=True, progress=False)
    assert seen == [20, 20, 20] and report.images == 6


def test_report_line_reads_like_the_issue_example():
    from dnet.apps.eval.report import EvalReport
    from dnet.models.published import Comparison

    n, top1, top5 = 50_000, 50_000 - 12_655, 50_000 - 3_950
    comparisons = (Comparison("top1", "1-crop top-1, torch7", 25.31, 25.0, "REPO-IN", "the README", ((25.02, "CVPR17-T3"),)),
                   Comparison("top5", "1-crop top-5, torch7", 7.9, 7.71, "CVPR17-T3", "Table 3"))
    r = EvalReport("densenet121.int8.onnx", "densenet121", "imagenet", "test", "torch7", False, n, top1, top5,
                   25.31, 7.9, binomial_ci95(12_655, n), binomial_ci95(3_950, n), 50_000 / 212, 212.0, 100.0, 500.0,
                   comparisons=comparisons)
    assert r.lines() == [
        "top-1 error 25.31 % (published 25, Δ +0.31, 95% CI ±0.38) · top-5 error 7.90 % (published 7.71, Δ +0.19, "
        "95% CI ±0.24) · 50,000 images · 212 img/s",
        "  top-1 (1-crop top-1, torch7) compared with 25 from [REPO-IN] the README; also published: 25.02 [CVPR17-T3]",
        "  top-5 (1-crop top-5, torch7) compared with 7.71 from [CVPR17-T3] Table 3",
    ]
    d = r.to_dict()
    assert "predictions" not in d and d["published_error"] == 25.0 and d["delta"] == pytest.approx(0.31)
    assert d["comparisons"][0]["others"] == [{"error": 25.02, "source": "CVPR17-T3"}]
    assert d["comparisons"][1]["published"] == 7.71 and d["comparisons"][1]["delta"] == pytest.approx(0.19)
    # the whole published test set: no count beside it; part of it: "N of M images"; no published number: N alone
    assert " · 50,000 images · " in dataclasses.replace(r, test_set=50_000).line()
    assert " · 1,000 of 50,000 images · " in dataclasses.replace(r, images=1_000, test_set=50_000).line()
    alone = dataclasses.replace(r, images=1_000, test_set=50_000, comparisons=(Comparison("top1", "k", 25.31),))
    assert " · 1,000 images · " in alone.line() and d["test_set"] is None


# A zoo ImageNet model on four images of ImageNet's 1000 classes, the true label ranked 0, 2, 7 and 0:
# top-1 error 50 %, top-5 error 25 %.
STUB_LEVELS, STUB_LABELS, STUB_RANKS = [20, 80, 140, 200], [3, 7, 10, 999], [0, 2, 7, 0]


def _stub_imagenet(tmp_path, model="densenet121"):
    images = write_imagenet_val(tmp_path, STUB_LEVELS, STUB_LABELS)
    return TableEngine(model, STUB_LEVELS, ranked_logits(STUB_LABELS, STUB_RANKS)), open_dataset("imagenet", images)


def test_ten_crop_on_a_zoo_imagenet_model_is_compared_with_the_ten_crop_numbers(tmp_path):
    engine, ds = _stub_imagenet(tmp_path)
    report = evaluate(engine, ds, ten_crop=True, workers=0, progress=False)
    assert (report.images, report.top1_error, report.top5_error) == (4, 50.0, 25.0)
    top1, top5 = report.comparisons
    assert (top1.kind, top1.published, top1.source, top1.delta) == ("10-crop top-1, torch7", 23.61, "CVPR17-T3", 26.39)
    assert (top5.kind, top5.published, top5.source, top5.delta) == ("10-crop top-5, torch7", 6.66, "CVPR17-T3", 18.34)
    assert report.line().startswith("ten-crop top-1 error 50.00 % (published 23.61, Δ +26.39, 95% CI ±49.00) · "
                                    "ten-crop top-5 error 25.00 % (published 6.66, Δ +18.34, 95% CI ±42.43) · 4 of 50,000 images")


def test_single_crop_top5_is_compared_with_its_published_counterpart(tmp_path):
    engine, ds = _stub_imagenet(tmp_path)
    report = evaluate(engine, ds, workers=0, progress=False)
    top1, top5 = report.comparisons
    assert (top1.published, top1.source, top1.others) == (25.0, "REPO-IN", ((25.02, "CVPR17-T3"),))
    assert (top5.kind, top5.published, top5.source) == ("1-crop top-5, torch7", 7.71, "CVPR17-T3")


def test_a_kind_without_a_published_number_says_so(tmp_path):
    engine, ds = _stub_imagenet(tmp_path, model="densenet161")  # not in CVPR Table 3: no ten-crop, no top-5
    report = evaluate(engine, ds, ten_crop=True, workers=0, progress=False)
    assert [c.published for c in report.comparisons] == [None, None] and report.published_error is None
    assert report.lines()[1:] == ["  top-1 (10-crop top-1, torch7): no published number",
                                  "  top-5 (10-crop top-5, torch7): no published number"]
    assert "ten-crop top-5 error 25.00 % (no published number, 95% CI ±42.43)" in report.line()
    with pytest.raises(UsageError) as e:
        check_tolerance(report, 1.0)
    assert e.value.option == "tolerance"
    assert str(e.value) == ("a tolerance needs a published error, and there is none for model 'densenet161' on "
                            "imagenet with torch7 preprocessing (10-crop top-1, torch7)")


def test_tolerance_gates_the_ten_crop_error_against_the_ten_crop_number(tmp_path):
    engine, ds = _stub_imagenet(tmp_path)
    report = evaluate(engine, ds, ten_crop=True, workers=0, progress=False)
    check_tolerance(report, 26.39)
    with pytest.raises(AccuracyError) as e:
        check_tolerance(report, 26.0)
    assert str(e.value) == ("ten-crop top-1 error 50.00 % is +26.39 points from the published 23.61 % "
                            "(10-crop top-1, torch7, CVPR17-T3), more than the tolerance of 26")


def test_progress_bar_shows_running_top1_only_on_a_terminal(monkeypatch, digits_model):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    test = open_dataset("digits")
    for tty, progress, shown in [(True, True, True), (False, True, False), (True, False, False)]:
        err = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        evaluate(digits_model, test, batch=120, progress=progress)
        assert ("top-1 err" in err.getvalue()) == shown, (tty, progress)
