"""``dnet convert`` on the command line: kept files, and one line with exit ≠ 0 for each bad input."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dnet.cli import main
from tests.helpers.images import locked_folder, photo_tiles, write_images
from tests.helpers.models import fast_export, tiny_checkpoint


@pytest.fixture
def fast(monkeypatch):
    fast_export(monkeypatch)


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dnet: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_convert_to_int8_lists_the_kept_files(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    calib = write_images(tmp_path / "calib", photo_tiles(size=36, per_photo=2))
    code, out, err = run("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--calib-count", 10,
                         "--calib-method", "percentile", "-o", tmp_path / "tiny.int8.onnx", "-q",
                         "--int8-min-top1", 0)  # random weights: near-tied logits
    assert code == 0, err
    (line,) = [ln for ln in out.splitlines() if ln.startswith("check  int8_vs_fp32  ")]
    assert line.startswith("check  int8_vs_fp32  batch 3  cosine 0.9") and "  min_cosine 0.9900  top1_agreement " in line
    assert "  min_top1 0  stages (denseblock1 0.9" in line  # the check's numbers, as --json holds them
    assert "kept    " in out and "tiny.onnx" in out and "tiny.calib.json" in out
    assert "output  " in out and "intermediate files are kept beside the output" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "tiny.calib.json", "tiny.int8.onnx", "tiny.onnx", "tiny.pth"]


def test_int8_check_bounds_and_their_defaults_are_in_help():
    code, out, _ = run("convert", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for option, default in (("--int8-min-cosine", "0.99"), ("--int8-min-top1", "0.95"), ("--int8-check-count", "64"),
                            ("--int8-layout", "densenet"), ("--int8-weight-bits", "8")):
        assert option in flat and f"[default: {default}" in flat.split(option, 1)[1][:200], option


def test_int8_below_its_bound_is_refused_with_status_3_and_no_file(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    calib = write_images(tmp_path / "calib", photo_tiles(size=36, per_photo=2))
    code, _, err = run("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "--calib-count", 10,
                       "-o", tmp_path / "tiny.int8.onnx", "--int8-min-cosine", 1.0, "-q")
    assert code == 3
    line = one_error_line(err)
    assert line.startswith("dnet: error: INT8 check failed on 3 held-out images: ") and "(bound 1.0)" in line
    assert "the divergence first appears at " in line and "no INT8 file was written" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "tiny.calib.json", "tiny.onnx", "tiny.pth"]


def test_empty_calibration_folder(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    (tmp_path / "empty").mkdir()
    code, _, err = run("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", tmp_path / "empty",
                       "-o", tmp_path / "t.int8.onnx")
    assert code == 1
    assert "calibration folder" in one_error_line(err) and "contains no images" in err
    assert not (tmp_path / "t.int8.onnx").exists()


def test_undecodable_calibration_image_is_named(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    calib = write_images(tmp_path / "calib", photo_tiles(size=36, per_photo=1))
    (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, _, err = run("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "-o", tmp_path / "t.int8.onnx")
    assert code == 1
    assert f"calibration image {calib / 'broken.jpg'}: cannot decode image" in one_error_line(err)
    assert not (tmp_path / "t.int8.onnx").exists() and not (tmp_path / "t.calib.json").exists()


def test_corrupt_onnx_source(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 garbage")
    code, _, err = run("convert", bad, "--from", "onnx", "--to", "onnx", "--precision", "fp16", "-o", tmp_path / "b.fp16.onnx")
    assert code == 1 and "bad.onnx: not a readable ONNX file" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_unwritable_output_folder(tmp_path, monkeypatch):
    src = tiny_checkpoint(tmp_path)
    locked = locked_folder(tmp_path, monkeypatch)
    try:
        code, _, err = run("convert", src, "--from", "pth", "--to", "onnx", "-o", locked / "m.onnx")
        assert code == 1 and f"cannot write to output folder {locked}: permission denied" in one_error_line(err)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_a_model_without_preprocessing_names_the_option(tmp_path, fast):
    import torch

    from dnet.formats.checkpoint import save_checkpoint
    from tests.helpers.models import tiny_model

    model = tiny_model()
    src = save_checkpoint(tmp_path / "bare.pth", model, None)
    assert torch.load(src, weights_only=True)["meta"] is None
    code, _, err = run("convert", src, "--from", "pth", "--to", "onnx", "-o", tmp_path / "bare.onnx")
    assert code == 2 and one_error_line(err) == ("dnet: error: the model does not say how its inputs are preprocessed "
                                                 "(no model.meta); name a preprocessing (--preprocess)")
    code, out, err = run("convert", src, "--from", "pth", "--to", "onnx", "--preprocess", "cifar10", "-o", tmp_path / "bare.onnx")
    assert code == 0, err


def test_trt_without_tensorrt_is_one_line_and_keeps_the_onnx(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    code, _, err = run("convert", src, "--from", "pth", "--to", "trt", "--precision", "fp32", "--profile", "1,4,8",
                       "-o", tmp_path / "tiny.plan")
    line = one_error_line(err)
    assert code != 0 and line.count("ONNX is at") == 1 and line.endswith(f"the FP32 ONNX is at {tmp_path / 'tiny.onnx'}")
    assert (tmp_path / "tiny.onnx").is_file() and not (tmp_path / "tiny.plan").exists()


def test_bad_batch_profile_is_a_usage_error(tmp_path):
    src = tiny_checkpoint(tmp_path)
    code, _, err = run("convert", src, "--from", "pth", "--to", "trt", "--profile", "8,1,32", "-o", tmp_path / "t.plan")
    assert code == 2 and one_error_line(err) == "dnet: error: profile '8,1,32' must satisfy 1 <= min <= opt <= max (--profile)"
    assert not list(tmp_path.glob("t*.onnx"))  # refused before any export


def test_batch_is_a_deprecated_alias_of_profile_that_says_so(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    code, _, err = run("convert", src, "--from", "pth", "--to", "trt", "--batch", "1,4,8", "-o", tmp_path / "tiny.plan")
    lines = err.strip().splitlines()
    assert lines[0] == "dnet: warning: --batch is deprecated; use --profile MIN,OPT,MAX"
    assert code != 0 and lines[1].startswith("dnet: error: TensorRT is not installed") and len(lines) == 2
    code, _, err = run("convert", src, "--from", "pth", "--to", "trt", "--batch", "1,4,8", "--profile", "1,4,8",
                       "-o", tmp_path / "tiny.plan")
    assert code == 2 and one_error_line(err) == "dnet: error: give --profile once (--batch is its deprecated alias)"
