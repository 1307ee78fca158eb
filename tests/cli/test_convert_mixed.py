"""``dnet convert --to onnx-int8`` with layers in higher precision: --max-drop/--val, --int8-exclude, what is printed and
recorded (and shown by ``dnet inspect``), and one line with exit ≠ 0 and no INT8 file for each bad input."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from dnet.cli import main
from dnet.data.datasets import open_dataset
from tests.helpers.images import write_images
from tests.helpers.int8 import BROKEN, break_weight_scales, coarsen_activation_grids, fp32_top1_text
from tests.helpers.models import digits_onnx, fast_export, tiny_checkpoint


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits-trained tiny DenseNet as FP32 ONNX, its test images by class (val), training images (calib)."""
    folder = tmp_path_factory.mktemp("cli-mixed")
    fp32 = digits_onnx(folder)
    test, train = open_dataset("digits", split="test"), open_dataset("digits", split="train")
    for c in range(10):
        write_images(folder / "val" / f"digit{c}", test.images[test.labels == c])
    return fp32, folder / "val", write_images(folder / "calib", train.images[::3])


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dnet: error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def convert(src, out, *args):
    return run("convert", src, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", src.parent / "calib", "-o", out,
               "-q", *args)


def test_max_drop_puts_the_broken_layer_back_in_fp32_prints_and_records_it(digits, tmp_path, monkeypatch):
    break_weight_scales(monkeypatch, BROKEN)
    fp32, val, _ = digits
    out = tmp_path / "d.int8.onnx"
    code, stdout, err = convert(fp32, out, "--val", val, "--max-drop", 1)
    assert code == 0, err
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("INT8 drop")]
    assert re.fullmatch(r"INT8 drop on 360 validation images \(labels from class subfolders\): 0\.\d\d points \(bound "
                        rf"1\), {re.escape(fp32_top1_text(fp32))} → 9\d\.\d\d%; 1 layer in FP32: {BROKEN}", line), line
    code, shown, err = run("inspect", out)
    assert code == 0, err
    assert shown.splitlines()[0].startswith("d.int8.onnx: custom, INT8, 10 classes, 8×8 input, digits preprocessing")
    assert line in shown.splitlines()
    code, shown, _ = run("inspect", out, "--json")
    acc = json.loads(shown)["meta"]["calibration"]["accuracy"]
    assert acc["excluded"] == [BROKEN] and acc["search"]["ranking"][0]["layer"] == BROKEN


def test_int8_exclude_by_pattern_with_fp16(digits, tmp_path):
    fp32, val, _ = digits
    code, stdout, err = convert(fp32, tmp_path / "d.int8.onnx", "--int8-exclude", "transition*", "--int8-exclude",
                                "classifier", "--int8-fallback", "fp16", "--val", val, "--val-count", 90)
    assert code == 0, err
    assert re.search(r"^INT8 drop on 90 validation images \(labels from class subfolders\): -?\d+\.\d\d points, "
                     r"\d+\.\d\d% → \d+\.\d\d%; 2 layers in FP16: transition1\.conv, classifier$", stdout, re.M), stdout


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    fast_export(monkeypatch)
    return tiny_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """A calibration folder outside each test's own folder (an INT8 request without one is refused first)."""
    return write_images(tmp_path_factory.mktemp("calib"), open_dataset("digits", split="train").images[:4])


def test_a_pattern_that_names_no_layer_is_refused_before_the_export(tmp_path, tiny, calib):
    code, _, err = run("convert", tiny, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--int8-exclude", "denseblock9.*",
                       "-o", tmp_path / "t.int8.onnx")
    assert code == 2 and one_error_line(err) == (
        "dnet: error: the exclude pattern 'denseblock9.*' names no layer of this model (its 13 layers: conv0, "
        "denseblock1.denselayer1.conv1, denseblock1.denselayer1.conv2, … classifier) (--int8-exclude)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pth"]


def test_a_class_count_unlike_the_models_is_refused_before_the_export(tmp_path, tiny, calib):
    for c in range(3):
        write_images(tmp_path / "val" / f"c{c}", open_dataset("digits", split="test").images[:2])
    code, _, err = run("convert", tiny, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--val", tmp_path / "val",
                       "--max-drop", 1, "-o", tmp_path / "t.int8.onnx")
    assert code == 1 and one_error_line(err) == (
        f"dnet: error: the model has 5 classes but the validation folder {tmp_path / 'val'} has 3 class subfolders; "
        "give one subfolder per class (sorted names are the class indices), or images without subfolders (then the "
        "drop is measured as agreement with FP32)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pth", "val"]


def test_a_missing_val_folder_and_a_bound_without_val(tmp_path, tiny, calib):
    code, _, err = run("convert", tiny, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--val", tmp_path / "nope",
                       "-o", tmp_path / "t.int8.onnx")
    assert code == 1 and one_error_line(err) == (
        f"dnet: error: validation folder {tmp_path / 'nope'} does not exist or is not a folder")
    code, _, err = run("convert", tiny, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--max-drop", 1,
                       "-o", tmp_path / "t.int8.onnx")
    assert code == 2 and one_error_line(err) == (
        "dnet: error: an accuracy bound needs validation images to measure the drop on: give their folder (--val)")
    code, _, err = run("convert", tiny, "--from", "pth", "--to", "onnx", "--precision", "fp16", "--int8-exclude", "conv0",
                       "-o", tmp_path / "t.fp16.onnx")
    assert code == 2 and one_error_line(err) == (
        "dnet: error: layers in higher precision and accuracy control are for INT8 files (--precision int8, with --to "
        "onnx or trt) (--int8-exclude)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pth"]


def test_an_undecodable_val_image_is_named_and_no_int8_file_is_left(digits, tmp_path):
    fp32, _, _ = digits
    val = write_images(tmp_path / "val" / "digit0", open_dataset("digits", split="test").images[:3]).parent
    for c in range(1, 10):
        write_images(val / f"digit{c}", open_dataset("digits", split="test").images[:1])
    (val / "digit3" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "d.int8.onnx"
    code, _, err = convert(fp32, out, "--val", val, "--max-drop", 1)
    assert code == 1
    assert one_error_line(err).startswith(f"dnet: error: validation image {val / 'digit3' / 'broken.png'}: cannot "
                                          "decode image")
    assert not out.exists()


def test_a_bound_not_met_with_every_layer_in_fp32_exits_3_and_leaves_no_int8_file(digits, tmp_path, monkeypatch):
    coarsen_activation_grids(monkeypatch)
    fp32, val, _ = digits
    out = tmp_path / "d.int8.onnx"
    code, _, err = convert(fp32, out, "--val", val, "--max-drop", 0)
    assert code == 3
    assert re.fullmatch(r"dnet: error: the accuracy bound cannot be met: INT8 drops \d+\.\d\d points on 360 validation "
                        rf"images \({re.escape(fp32_top1_text(fp32))} → \d+\.\d\d%\), and still \d+\.\d\d with all 11 layers in float \(what "
                        r"remains is the dense blocks' int8 feature maps\), above the bound of 0; no INT8 file was "
                        r"written \(allow a larger drop, or calibrate on more or other images\) \(--max-drop\)",
                        one_error_line(err))
    assert not out.exists()
