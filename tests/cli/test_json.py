"""``--json`` of ``dnet convert``, ``dnet train`` and ``dnet demo``: stdout is one JSON document holding what was
written and the checks with their numbers; running logs go to stderr; ``-q`` is accepted by each verb alike."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnet.apps.demo import DemoResult, Row
from dnet.cli import main
from dnet.converters.precision import FP16_REL_L2
from tests.helpers.images import photo_tiles, write_images
from tests.helpers.models import fast_export, tiny_checkpoint


def invoke(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def fast(monkeypatch):
    fast_export(monkeypatch)


def test_convert_int8_json_holds_the_files_stages_and_checks(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    calib = write_images(tmp_path / "calib", photo_tiles(size=36, per_photo=2))
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib,
                            "--calib-count", 10, "-o", tmp_path / "tiny.int8.onnx", "--json", "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["from"], doc["to"]) == ("pth", "onnx-int8")
    assert [(Path(f["file"]).name, f["role"]) for f in doc["written"]] == [
        ("tiny.onnx", "kept"), ("tiny.calib.json", "kept"), ("tiny.int8.onnx", "output")]
    assert all(f["bytes"] == Path(f["file"]).stat().st_size > 0 for f in doc["written"])
    # 12 images: 3 held out for the INT8 check (a quarter of a small set), 9 calibrate
    assert [s["stage"] for s in doc["stages"]] == [
        "loading tiny.pth", "FP32 ONNX export + check against PyTorch", f"reading calibration images ({calib})",
        "calibration (minmax, 9 images)", f"reading held-out images ({calib})", "quantisation (cpu layout)",
        "INT8 check (3 held-out images)"]
    calibration = doc["stages"][3]
    assert (calibration["total"], calibration["done"], calibration["unit"]) == (9, 9, "img")
    assert all(s["seconds"] >= 0 for s in doc["stages"])
    fp32 = [c for c in doc["checks"] if c["check"] == "fp32_vs_pytorch"]
    assert [c["batch"] for c in fp32] == [1, 7, 8]  # two random batches and eight calibration images
    assert all(0 <= c["max_abs"] <= c["bound"] for c in fp32)
    (int8,) = [c for c in doc["checks"] if c["check"] == "int8_vs_fp32"]
    assert int8["batch"] == 3 and int8["min_cosine"] <= int8["cosine"] <= 1.0 + 1e-6
    assert (int8["min_cosine"], int8["min_top1"]) == (0.99, 0.95) and 0.95 <= int8["top1_agreement"] <= 1.0
    assert list(int8["stages"]) == ["denseblock1", "transition1", "denseblock2"]
    assert all(0.9 < c <= 1.0 + 1e-6 for c in int8["stages"].values())
    # from the calibration cache alone (no --calib): nothing to check, and --json says so with the reason
    code, out, err = invoke("convert", tmp_path / "tiny.onnx", "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib-cache",
                            tmp_path / "tiny.calib.json", "-o", tmp_path / "again.int8.onnx", "--json", "-q")
    assert code == 0, err
    assert [c for c in json.loads(out)["checks"] if c["check"] == "int8_vs_fp32"] == [
        {"check": "int8_vs_fp32", "skipped": True, "reason": "no held-out images (no calibration folder or array given)"}]
    assert "INT8 file not checked: no held-out images" in err


def test_convert_fp16_json_reports_the_bound_it_was_given(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", tmp_path / "t.fp16.onnx",
                            "--fp16-tolerance", 0.01, "--json")
    assert code == 0, err
    (check,) = [c for c in json.loads(out)["checks"] if c["check"] == "fp16_vs_fp32"]
    assert check["bound"] == 0.01 and check["batch"] == 4 and 0 < check["rel_l2"] <= FP16_REL_L2
    assert check["top1_agreement"] == 1.0


def test_a_too_tight_fp16_bound_refuses_the_file_and_no_check_keeps_it(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    out_file = tmp_path / "t.fp16.onnx"
    code, _, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", out_file,
                          "--fp16-tolerance", 1e-9)
    assert code == 3 and not out_file.exists()
    assert err.startswith("dnet: error: FP16 check failed on a batch of 4: relative L2 error ")
    assert err.rstrip().endswith("(bound 1e-09), top-1 agreement 100.0% (needs 100%); give a looser bound, or skip "
                                 "the check (--fp16-tolerance)")
    code, out, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", out_file,
                            "--fp16-tolerance", 1e-9, "--no-fp16-check", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert out_file.is_file() and doc["written"][-1]["file"] == str(out_file)
    assert [c for c in doc["checks"] if c["check"] == "fp16_vs_fp32"] == [{"check": "fp16_vs_fp32", "skipped": True}]
    code, _, err = invoke("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", out_file, "--fp16-tolerance", 0)
    assert code == 2 and err.strip() == ("dnet: error: the FP16 tolerance (a bound on the relative L2 error of the "
                                         "logits) must be positive, got 0.0 (--fp16-tolerance)")


def test_train_json_holds_the_run_files_and_every_epoch(tmp_path):
    run = tmp_path / "run"
    code, out, err = invoke("train", "--dataset", "digits", "--depth", "10", "--growth-rate", "4", "--batch-size", "128",
                            "--threads", "1", "--epochs", "2", "-o", run, "--json", "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["run_dir"] == str(run) and doc["epochs"] == 2
    assert doc["written"] == {k: str(run / n) for k, n in [("config", "config.json"), ("metrics", "metrics.csv"),
                                                           ("curves", "curves.png"), ("last", "last.pth"),
                                                           ("best", "best.pth")]}
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [h["epoch"] for h in doc["history"]] == [1, 2]
    assert [round(h["test_error"], 6) for h in doc["history"]] == [round(float(r["test_error"]), 6) for r in rows]
    assert doc["final_error"] == doc["history"][-1]["test_error"]
    assert doc["best_error"] == min(h["test_error"] for h in doc["history"])
    assert "epoch   2/2" in err  # the epoch lines went to stderr


def test_demo_json_is_the_results_document_and_logs_go_to_stderr(tmp_path, monkeypatch):
    import dnet.cli.demo as demo_cli

    def fake_run_demo(cfg, log, progress):
        log("== 1/4 train")
        progress.check("fp16_vs_fp32", batch=8, rel_l2=0.001, bound=FP16_REL_L2, top1_agreement=1.0)
        row = Row("ONNX FP32", str(tmp_path / "digits.onnx"), 1.5, None, 0.2, 900.0, 1234)
        return DemoResult(Path(cfg.out), files={"ONNX FP32": tmp_path / "digits.onnx"}, rows=[row],
                          written=[tmp_path / "report.json"], checks=list(progress.checks))

    monkeypatch.setattr(demo_cli, "run_demo", fake_run_demo)
    code, out, err = invoke("demo", "-o", tmp_path, "--epochs", 1, "--json", "-q")
    assert code == 0, err
    assert err == "== 1/4 train\n"
    doc = json.loads(out)
    assert doc["out"] == str(tmp_path) and doc["files"] == {"ONNX FP32": str(tmp_path / "digits.onnx")}
    assert doc["rows"][0]["error"] == 1.5 and doc["checks"][0]["rel_l2"] == 0.001
    assert doc["written"] == [str(tmp_path / "report.json")]


def test_quiet_is_one_option_alike_on_every_verb_that_shows_progress():
    import click

    from dnet.cli.main import LazyGroup

    ctx = click.Context(main)
    quiet = {verb: next(p for p in LazyGroup.get_command(main, ctx, verb).params if p.name == "quiet")
             for verb in ("convert", "train", "demo", "eval", "bench", "pull")}
    assert {verb: tuple(p.opts) for verb, p in quiet.items()} == {v: ("-q", "--quiet") for v in quiet}
    assert {p.help for p in quiet.values()} == {"No progress display (off anyway when stderr is not a terminal)."}
