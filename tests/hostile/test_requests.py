"""Requests: options validated before any work, resources claimed by options, the suite's own
leftovers, and messages that misled (a calibration cache pointing at a model, models of different input sizes)."""

from __future__ import annotations

import pytest

from tests.helpers.harness import Box
from tests.helpers.models import digits_model_fixture  # noqa: F401 (fixture)


@pytest.mark.parametrize("args, code, line", [
    (["--to", "onnx", "--precision", "int8"], 2,
     "INT8 needs calibration images: give a folder of images (or a calibration cache of this model) (--calib)"),
])
def test_option_conflicts_are_refused_before_any_work(box: Box, models, no_export, args, code, line):
    src = box.add(models["pth"])
    box.freeze()
    assert box.cli("convert", src, "--from", "pth", *args, "-o", box.work / "t.out.onnx").error_line(code) == line
    box.unchanged()


def test_a_missing_calibration_folder_is_refused_before_the_export(box: Box, models, no_export):
    src = box.add(models["pth"])
    box.freeze()
    out = box.cli("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", box.work / "nowhere",
                  "-o", box.work / "t.int8.onnx")
    assert out.error_line(1) == f"calibration folder {box.work / 'nowhere'} does not exist or is not a folder"
    box.unchanged()


def test_a_calibration_cache_pointing_at_a_model_is_neither_read_nor_deleted(box: Box, models, no_export):
    src = box.add(models["pth"])
    model = box.add(models["digits"], "other.pth")
    calib = box.work / "calib"
    from tests.helpers.images import png

    png(calib / "a.png", 32, 32)
    box.freeze()
    line = box.cli("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--calib-cache", model,
                   "-o", box.work / "t.int8.onnx").error_line(1)
    assert line.startswith(f"{model}: not a dnet calibration cache (")
    assert line.endswith("dnet neither reads nor overwrites it: name another calibration cache file (--calib-cache)")
    assert "delete" not in line
    box.unchanged()


def test_comparing_models_of_different_input_sizes_is_one_line(box: Box, models):
    a, b = box.add(models["pth"]), box.add(models["digits"])
    box.freeze()
    assert box.cli("compare", a, b).error_line(2) == ("tiny.pth takes 32×32 inputs and digits.pth 8×8; compare runs "
                                                      "two versions of one model on the same inputs")
    box.unchanged()


def test_info_with_a_huge_input_size_answers_without_allocating_it(box: Box):
    # counted from the configuration (dnet.models.summary): no model is built, no 100000×100000 tensor allocated
    out = box.run("info", "densenet121", "--input-size", 100000, budget_mb=64, timeout=120)
    text = out.ok()
    assert "parameters      7,978,856" in text and "at 100000×100000" in text
    assert out.added_rss < 16 << 20, out.added_rss
    box.unchanged()


def test_the_suites_trained_model_lives_in_pytests_temporary_folder(digits_model, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    assert digits_model.is_file() and base in digits_model.parents  # removed by pytest, not left in /tmp per run
