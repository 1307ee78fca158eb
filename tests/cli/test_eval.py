"""``dnet eval`` end to end: report line, --json, --limit, --predictions, --tolerance exit 3, bad inputs, torchrun."""

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

from dnet.cli import main
from dnet.models.zoo import get as zoo_get
from tests.conftest import ROOT
from tests.evalmodels import digits_model_fixture, save_random, write_cifar_bin  # noqa: F401 (fixture)


def run(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def one_line_error(r, code):
    assert r.exit_code == code, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnet: error: "), r.output
    return lines[0][len("dnet: error: "):]


def test_digits_report_line(digits_model):
    r = run("--engine", digits_model, "--dataset", "digits", "--quiet")
    assert r.exit_code == 0, r.output
    assert re.fullmatch(r"top-1 error \d+\.\d\d % \(95% CI ±\d+\.\d\d\) · top-5 \d+\.\d % · 360 images · [\d,]+ img/s\n",
                        r.output), r.output


def test_digits_json_limit_and_predictions(tmp_path, digits_model):
    out = tmp_path / "pred.csv"
    r = run("--engine", digits_model, "--limit", 100, "--json", "--predictions", out)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["images"] == 100 and d["dataset"] == "digits" and d["preprocess"] == "digits"  # data set from the model
    assert d["top1_error"] == pytest.approx(100 * (100 - d["top1_correct"]) / 100)
    assert d["published_error"] is None and d["skipped"] == [] and "predictions" not in d
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and sum(int(r["correct"]) for r in rows) == d["top1_correct"]
    assert [int(r["index"]) for r in rows[:3]] == [0, 3, 7]  # 100 spread over 360: (i·360)//100


def _zoo_cifar(tmp_path, n=16):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", n)
    entry = zoo_get("densenet-bc-l100-k12")
    return save_random(tmp_path / "bc100.pth", 10, "cifar10", 32, "densenet-bc-l100-k12", entry.config)


def test_tolerance_exit_3_against_the_published_number(tmp_path):
    model = _zoo_cifar(tmp_path)
    r = run("--engine", model, "--data", tmp_path, "--quiet", "--tolerance", "0.5")
    assert r.exit_code == 3
    first, last = r.output.strip().splitlines()
    assert re.match(r"top-1 error \d+\.\d\d % \(paper 4\.51, Δ \+\d+\.\d\d, 95% CI ±\d+\.\d\d\) · top-5 ", first)
    assert re.fullmatch(r"dnet: error: top-1 error \d+\.\d\d % is \+\d+\.\d\d points from the published 4\.51 %, "
                        r"more than the tolerance of 0\.5", last)
    ok = run("--engine", model, "--data", tmp_path, "--quiet", "--tolerance", "100", "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["published_error"] == 4.51


def test_tolerance_without_published_number_exit_2(digits_model):
    r = run("--engine", digits_model, "--quiet", "--tolerance", "1")
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
    r = run("--engine", model, "--data", data, "--dataset", "folder", "--quiet", "--workers", 0)
    msg = one_line_error(r, 1)
    assert msg.startswith(f"{data / 'b' / 'bad.png'}: cannot decode image")
    r = run("--engine", model, "--data", data, "--dataset", "folder", "--quiet", "--workers", 0, "--skip-bad")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "· 4 images ·" in lines[0] and lines[0].endswith("· 1 skipped")
    assert lines[1].startswith(f"  skipped: {data / 'b' / 'bad.png'}: cannot decode image")


def test_bad_inputs_are_one_line(tmp_path, digits_model):
    digits = digits_model
    cifar = tmp_path / "c"
    write_cifar_bin(cifar / "cifar-100-binary" / "test.bin", 3, label_bytes=2, num_classes=100)
    assert one_line_error(run("--engine", digits, "--data", cifar, "--dataset", "cifar100", "--quiet"), 1) == (
        "the model has 10 classes but data set cifar100 has 100; evaluate it on the data set it was trained for")
    empty = tmp_path / "empty"
    empty.mkdir()
    model = save_random(tmp_path / "m.pth", 2, "torch7", 224)
    assert one_line_error(run("--engine", model, "--data", empty, "--dataset", "folder"), 1) == (
        f"{empty}: no class subfolders (expected one subfolder of images per class)")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "ILSVRC2012_val_00000001.JPEG")
    assert "no LOC_val_solution.csv beside it or above it" in one_line_error(run("--engine", model, "--data", flat), 1)
    assert one_line_error(run("--engine", tmp_path / "nope.onnx", "--dataset", "digits"), 1) == f"{tmp_path / 'nope.onnx'}: no such file"
    assert "needs --data" in one_line_error(run("--engine", model, "--dataset", "cifar10"), 2)


@pytest.mark.parametrize("nproc", [2])
def test_torchrun_two_processes_give_the_same_numbers_as_one(tmp_path, nproc, digits_model):
    model = digits_model
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["-m", "dnet", "eval", "--engine", str(model), "--json", "--quiet"]
    one = run("--engine", model, "--json", "--quiet")
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
    args = ["--engine", str(model), "--data", str(data), "--dataset", "folder", "--json", "--quiet", "--skip-bad",
            "--workers", "1", "--batch", "2"]
    one = run(*args)
    assert one.exit_code == 0, one.output
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "dnet", "eval", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert many.returncode == 0, many.stderr[-2000:]
    a, b = json.loads(one.output), json.loads(many.stdout)
    assert a["images"] == b["images"] == 4 and len(a["skipped"]) == len(b["skipped"]) == 1
    assert (a["top1_correct"], a["top5_correct"]) == (b["top1_correct"], b["top5_correct"])
