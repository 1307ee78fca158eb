"""``dnet eval`` end to end: report line, --json, --count, --predictions, --tolerance exit 3, bad inputs, torchrun."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dnet.cli import eval as cli_eval
from dnet.cli import main
from dnet.models.published import SOURCES
from dnet.models.zoo import get as zoo_get
from tests.helpers.evaldata import TableEngine, ranked_logits, write_cifar_bin, write_imagenet_val
from tests.helpers.models import digits_model_fixture, save_random  # noqa: F401 (digits_model_fixture is a fixture)
from tests.helpers.shared import ROOT


def run(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def one_line_error(r, code):
    assert r.exit_code == code, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnet: error: "), r.output
    return lines[0][len("dnet: error: "):]


def test_digits_report_line(digits_model):
    r = run(digits_model, "--dataset", "digits", "--quiet")
    assert r.exit_code == 0, r.output
    assert re.fullmatch(r"top-1 error \d+\.\d\d % \(95% CI ±\d+\.\d\d\) · top-5 error \d+\.\d\d % \(95% CI ±\d+\.\d\d\) · "
                        r"360 images · [\d,]+ img/s\n", r.output), r.output


def test_digits_json_limit_and_predictions(tmp_path, digits_model):
    out = tmp_path / "pred.csv"
    r = run(digits_model, "--count", 100, "--json", "--predictions", out)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["images"] == 100 and d["dataset"] == "digits" and d["preprocess"] == "digits"  # data set from the model
    assert d["top1_error"] == pytest.approx(100 * (100 - d["top1_correct"]) / 100)
    assert d["published_error"] is None and d["skipped"] == [] and "predictions" not in d
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and sum(int(r["correct"]) for r in rows) == d["top1_correct"]
    assert [int(r["index"]) for r in rows[:3]] == [0, 4, 7]  # 100 spread over 360: round(i·359/99)


def _zoo_cifar(tmp_path, n=16):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", n)
    entry = zoo_get("densenet-bc-l100-k12")
    return save_random(tmp_path / "bc100.pth", 10, "cifar10", 32, "densenet-bc-l100-k12", entry.config)


def test_tolerance_exit_3_against_the_published_number(tmp_path):
    model = _zoo_cifar(tmp_path)
    r = run(model, "--data", tmp_path, "--quiet", "--tolerance", "0.5")
    assert r.exit_code == 3
    first, top1, top5, last = r.output.strip().splitlines()
    assert re.match(r"top-1 error \d+\.\d\d % \(published 4\.51, Δ \+\d+\.\d\d, 95% CI ±\d+\.\d\d\) · "
                    r"top-5 error \d+\.\d\d % \(no published number, ", first)
    assert top1 == "  top-1 (C10+ top-1) compared with 4.51 from [CVPR17-T2] " + SOURCES["CVPR17-T2"]
    assert top5 == "  top-5 (C10+ top-5): no published number"
    assert re.fullmatch(r"dnet: error: top-1 error \d+\.\d\d % is \+\d+\.\d\d points from the published 4\.51 % "
                        r"\(C10\+ top-1, CVPR17-T2\), more than the tolerance of 0\.5", last)
    ok = run(model, "--data", tmp_path, "--quiet", "--tolerance", "100", "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["published_error"] == 4.51


def _stub_zoo_imagenet(tmp_path, monkeypatch, model="densenet121"):
    """`dnet eval` opening a stub engine that poses as zoo model ``model`` (true labels ranked 0, 2, 7, 0)."""
    levels, labels = [20, 80, 140, 200], [3, 7, 10, 999]
    data = write_imagenet_val(tmp_path / "imagenet", levels, labels)
    engine = TableEngine(model, levels, ranked_logits(labels, [0, 2, 7, 0]))
    monkeypatch.setattr(cli_eval.engines, "open", lambda path, provider=None: engine)
    return data


def test_ten_crop_prints_the_published_ten_crop_numbers_beside_the_measured_ones(tmp_path, monkeypatch):
    data = _stub_zoo_imagenet(tmp_path, monkeypatch)
    r = run("densenet121.stub", "--data", data, "--ten-crop", "--workers", 0, "--quiet")
    assert r.exit_code == 0, r.output
    first, top1, top5 = r.output.strip().splitlines()
    assert first.startswith("ten-crop top-1 error 50.00 % (published 23.61, Δ +26.39, 95% CI ±49.00) · "
                            "ten-crop top-5 error 25.00 % (published 6.66, Δ +18.34, 95% CI ±42.43) · 4 of 50,000 images · ")
    assert top1 == "  top-1 (10-crop top-1, torch7) compared with 23.61 from [CVPR17-T3] " + SOURCES["CVPR17-T3"]
    assert top5 == "  top-5 (10-crop top-5, torch7) compared with 6.66 from [CVPR17-T3] " + SOURCES["CVPR17-T3"]
    d = json.loads(run("x.stub", "--data", data, "--ten-crop", "--workers", 0, "--quiet", "--json").output)
    assert [(c["kind"], c["published"], c["source"]) for c in d["comparisons"]] == [
        ("10-crop top-1, torch7", 23.61, "CVPR17-T3"), ("10-crop top-5, torch7", 6.66, "CVPR17-T3")]
    assert d["published_error"] == 23.61 and d["delta"] == pytest.approx(26.39)


def test_single_crop_prints_the_released_models_number_and_the_papers_top5(tmp_path, monkeypatch):
    data = _stub_zoo_imagenet(tmp_path, monkeypatch)
    r = run("densenet121.stub", "--data", data, "--workers", 0, "--quiet", "--tolerance", "25")
    assert r.exit_code == 0, r.output
    first, top1, top5 = r.output.strip().splitlines()
    assert first.startswith("top-1 error 50.00 % (published 25, Δ +25.00, 95% CI ±49.00) · "
                            "top-5 error 25.00 % (published 7.71, Δ +17.29, 95% CI ±42.43) · 4 of 50,000 images · ")
    assert top1 == ("  top-1 (1-crop top-1, torch7) compared with 25 from [REPO-IN] " + SOURCES["REPO-IN"]
                    + "; also published: 25.02 [CVPR17-T3]")
    assert top5 == "  top-5 (1-crop top-5, torch7) compared with 7.71 from [CVPR17-T3] " + SOURCES["CVPR17-T3"]


def test_ten_crop_tolerance_exit_3_against_the_ten_crop_number(tmp_path, monkeypatch):
    data = _stub_zoo_imagenet(tmp_path, monkeypatch)
    r = run("densenet121.stub", "--data", data, "--ten-crop", "--workers", 0, "--quiet", "--tolerance", 26)
    assert r.exit_code == 3
    assert r.output.strip().splitlines()[-1] == (
        "dnet: error: ten-crop top-1 error 50.00 % is +26.39 points from the published 23.61 % "
        "(10-crop top-1, torch7, CVPR17-T3), more than the tolerance of 26")


def test_no_published_number_is_said_and_tolerance_is_refused(tmp_path, monkeypatch):
    data = _stub_zoo_imagenet(tmp_path, monkeypatch, model="densenet232")
    r = run("densenet232.stub", "--data", data, "--workers", 0, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[1:] == [
        "  top-1 (1-crop top-1, torch7) compared with 21.2 from [REPO-TR] " + SOURCES["REPO-TR"],
        "  top-5 (1-crop top-5, torch7): no published number"]
    r = run("densenet232.stub", "--data", data, "--workers", 0, "--quiet", "--ten-crop", "--tolerance", 1)
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        "dnet: error: a tolerance needs a published error, and there is none for model 'densenet232' on imagenet "
        "with torch7 preprocessing (10-crop top-1, torch7) (--tolerance)")


def test_tolerance_without_published_number_exit_2(digits_model):
    r = run(digits_model, "--quiet", "--tolerance", "1")
    assert r.exit_code == 2 and "there is none for model 'custom' on digits" in r.output


def _images(root, bad=False):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    if bad:
        (root / "b" / "bad.png").write_bytes(b"not a png at all")
    return root


def test_undecodable_image_one_line_then_skip_bad(tmp_path):
    model = save_random(tmp_path / "m.pth", 2, "torch7", 224)
    data = _images(tmp_path / "imgs", bad=True)
    r = run(model, "--data", data, "--dataset", "folder", "--quiet", "--workers", 0)
    msg = one_line_error(r, 1)
    assert msg.startswith(f"{data / 'b' / 'bad.png'}: cannot decode image")
    r = run(model, "--data", data, "--dataset", "folder", "--quiet", "--workers", 0, "--skip-bad")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "· 4 images ·" in lines[0] and lines[0].endswith("· 1 skipped")
    assert lines[1].startswith(f"  skipped: {data / 'b' / 'bad.png'}: cannot decode image")


def test_bad_inputs_are_one_line(tmp_path, digits_model):
    digits = digits_model
    cifar = tmp_path / "c"
    write_cifar_bin(cifar / "cifar-100-binary" / "test.bin", 3, label_bytes=2, num_classes=100)
    assert one_line_error(run(digits, "--data", cifar, "--dataset", "cifar100", "--quiet"), 1) == (
        "the model has 10 classes but data set cifar100 has 100; evaluate it on the data set it was trained for")
    empty = tmp_path / "empty"
    empty.mkdir()
    model = save_random(tmp_path / "m.pth", 2, "torch7", 224)
    assert one_line_error(run(model, "--data", empty, "--dataset", "folder"), 1) == (
        f"{empty}: no class subfolders (expected one subfolder of images per class)")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "ILSVRC2012_val_00000001.JPEG")
    assert "no LOC_val_solution.csv beside it or above it" in one_line_error(run(model, "--data", flat), 1)
    assert one_line_error(run(tmp_path / "nope.onnx", "--dataset", "digits"), 1) == f"{tmp_path / 'nope.onnx'}: no such file"
    assert "needs --data" in one_line_error(run(model, "--dataset", "cifar10"), 2)


@pytest.mark.parametrize("nproc", [2])
def test_torchrun_two_processes_give_the_same_numbers_as_one(tmp_path, nproc, digits_model):
    model = digits_model
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["-m", "dnet", "eval", str(model), "--json", "--quiet"]
    one = run(model, "--json", "--quiet")
    assert one.exit_code == 0, one.output
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert many.returncode == 0, many.stderr[-2000:]
    a, b = json.loads(one.output), json.loads(many.stdout)  # only rank 0 prints
    assert b["world_size"] == nproc and a["world_size"] == 1
    for key in ("images", "top1_correct", "top5_correct", "top1_error", "top5_error", "top1_ci95"):
        assert a[key] == b[key], key


@pytest.mark.slow
def test_torchrun_on_a_folder_with_workers_and_a_bad_file(tmp_path):
    model = save_random(tmp_path / "m.pth", 2, "torch7", 224)
    data = _images(tmp_path / "imgs", bad=True)
    args = [str(model), "--data", str(data), "--dataset", "folder", "--json", "--quiet", "--skip-bad",
            "--workers", "1", "--batch-size", "2"]
    one = run(*args)
    assert one.exit_code == 0, one.output
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "dnet", "eval", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert many.returncode == 0, many.stderr[-2000:]
    a, b = json.loads(one.output), json.loads(many.stdout)
    assert a["images"] == b["images"] == 4 and len(a["skipped"]) == len(b["skipped"]) == 1
    assert (a["top1_correct"], a["top5_correct"]) == (b["top1_correct"], b["top5_correct"])


def test_compare_to_prints_the_paired_difference_of_the_same_images(tmp_path, digits_model):
    from dnet.apps.paired import mcnemar_exact, newcombe_paired
    from tests.helpers.models import save_trained_digits

    weak, strong = save_trained_digits(tmp_path / "weak.pth", epochs=1), digits_model
    r = run(weak, "--compare-to", strong, "--json", "--quiet", "--batch-size", 50)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    alone_weak, alone_strong = (json.loads(run(m, "--json", "--quiet").output) for m in (weak, strong))
    assert d["images"] == 360 and d["engine"] == "weak.pth" and d["reference"] == "digits.pth"
    assert d["both_right"] + d["engine_only"] == alone_weak["top1_correct"]
    assert d["both_right"] + d["reference_only"] == alone_strong["top1_correct"]
    assert d["engine_error"] == pytest.approx(alone_weak["top1_error"]) and d["engine_report"]["images"] == 360
    assert d["delta"] == pytest.approx(alone_weak["top1_error"] - alone_strong["top1_error"])
    assert d["p_value"] == mcnemar_exact(d["engine_only"], d["reference_only"])
    lo, hi = newcombe_paired(d["both_right"], d["engine_only"], d["reference_only"], d["both_wrong"])
    assert d["ci95"] == pytest.approx([-100 * hi, -100 * lo])
    text = run(weak, "--compare-to", strong, "--quiet").output.splitlines()
    assert re.fullmatch(r"top-1 error \d+\.\d\d % \(weak\.pth\) vs \d+\.\d\d % \(digits\.pth\) on the same 360 images", text[0])
    assert re.fullmatch(r"Δ top-1 error [+-]\d+\.\d\d points \(95% CI [+-]\d+\.\d\d to [+-]\d+\.\d\d, Newcombe hybrid score "
                        r"\(1998, method 10\)\) · exact McNemar p = .+", text[1])
    assert text[2].startswith(f"only weak.pth right: {d['engine_only']} · only digits.pth right: {d['reference_only']} · ")
    assert text[3].startswith("classes that lost most: ") and len(text) == 4


def test_compare_to_files_that_cannot_share_the_images_is_one_line(tmp_path, digits_model):
    digits = digits_model
    wide = save_random(tmp_path / "wide.pth", 100, "digits", 8)
    assert one_line_error(run(digits, "--compare-to", wide, "--quiet"), 1) == (
        "digits.pth has 10 classes but wide.pth has 100; compare two files of the same model")
    svhn = save_random(tmp_path / "svhn.pth", 10, "svhn", 8)
    assert one_line_error(run(digits, "--compare-to", svhn, "--quiet"), 2) == (
        "digits.pth expects digits preprocessing at 8 but svhn.pth svhn at 32; the same images cannot feed both "
        "(name one preprocessing for both) (--preprocess)")
    big = save_random(tmp_path / "big.pth", 10, "digits", 16)
    assert one_line_error(run(digits, "--compare-to", big, "--quiet"), 2) == (
        "digits.pth takes 8×8 inputs but big.pth takes 16×16; the same images cannot feed both")
    assert one_line_error(run(digits, "--compare-to", tmp_path / "nope.onnx"), 1) == f"{tmp_path / 'nope.onnx'}: no such file"
