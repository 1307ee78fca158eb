"""A shortened ``dnet demo``: the same stages (train → convert → eval → report) with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnet.apps.demo import DemoConfig, Row, format_report, run_demo
from dnet.cli import main
from dnet.core.errors import AccuracyError


def test_short_demo_runs_every_stage_and_writes_the_report(tmp_path):
    lines = []
    result = run_demo(DemoConfig(out=str(tmp_path), epochs=3, depth=22, growth_rate=12, min_accuracy=0.0,
                                 calib_images=32, bench_seconds=0.05, quiet=True), log=lines.append)
    assert result.train.epochs_done == 3
    assert (tmp_path / "train" / "last.pth").is_file() and (tmp_path / "train" / "metrics.csv").is_file()
    assert (tmp_path / "accuracy_vs_latency.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("digits.onnx", "digits.fp16.onnx", "digits.int8.onnx", "digits.calib.json"):
        assert (tmp_path / name).is_file(), name
    doc = json.loads((tmp_path / "report.json").read_text())
    rows = doc["rows"]
    assert [r["label"] for r in rows] == ["PyTorch FP32", "ONNX FP32", "ONNX FP16", "ONNX INT8"]
    assert rows[0]["delta"] is None
    # the PyTorch row is evaluated by dnet.apps.eval and agrees with the training run's own test evaluation
    assert rows[0]["error"] == pytest.approx(result.train.final_error, abs=1e-9)
    # the FP32 ONNX file computes what the checkpoint computes: same error on the 360 test images
    assert rows[1]["delta"] == pytest.approx(0.0, abs=1e-9)
    for r in rows:
        assert r["latency_ms"] > 0 and r["throughput"] > 0 and r["size_bytes"] > 0
        assert 0.0 <= r["error"] <= 100.0
    assert any(line.strip() == str(tmp_path / "report.json") for line in lines)  # says where things went
    # the conversion's checks with their numbers, in the report and in what `dnet demo --json` prints
    assert [c["check"] for c in doc["checks"]] == ["fp32_vs_pytorch"] * 3 + ["int8_vs_fp32", "fp16_vs_fp32"]
    facts = json.loads(json.dumps(result.to_dict()))
    assert facts["checks"] == doc["checks"] and facts["rows"] == rows and facts["out"] == str(tmp_path)
    assert facts["files"]["ONNX INT8"] == str(tmp_path / "digits.int8.onnx")
    assert all(Path(p).exists() for p in facts["written"])
    (fp16,) = [c for c in facts["checks"] if c["check"] == "fp16_vs_fp32"]
    assert fp16["batch"] == 8 and fp16["rel_l2"] <= fp16["bound"] and fp16["top1_agreement"] == 1.0


def test_demo_fails_loudly_below_its_accuracy_promise(tmp_path):
    with pytest.raises(AccuracyError, match=r"FP32 test accuracy \d+\.\d\d% is below the demo's 101%"):
        run_demo(DemoConfig(out=str(tmp_path), epochs=3, depth=22, growth_rate=12, min_accuracy=101.0,
                            calib_images=32, bench_seconds=0.05, quiet=True), log=lambda s: None)
    assert (tmp_path / "report.json").is_file()  # the report is written before the verdict


def test_report_table_has_error_delta_latency_throughput_and_size():
    rows = [Row("ONNX FP32", "/x/model.fp32.onnx", 1.11, None, 0.5, 2000.0, 300 * 1024),
            Row("ONNX INT8", "/x/model.int8.onnx", 1.39, 0.28, 0.25, 4000.0, 100 * 1024)]
    assert format_report(rows).splitlines() == [
        "model      file             error %  Δ vs FP32  latency ms (b=1)  img/s     size",
        "---------  ---------------  -------  ---------  ----------------  -----  -------",
        "ONNX FP32  model.fp32.onnx     1.11          –              0.50  2,000  300 KiB",
        "ONNX INT8  model.int8.onnx     1.39      +0.28              0.25  4,000  100 KiB",
    ]


def test_demo_command_is_registered():
    r = CliRunner().invoke(main, ["demo", "--help"])
    assert r.exit_code == 0 and "digits" in r.output
