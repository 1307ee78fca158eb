"""benchmarks/peers: argument parsing, peer skipping, the lint/accuracy/speed table rows and the speed targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.peers import accuracy, run, speed


def test_defaults_run_every_step_with_the_peer_venvs():
    a = run.parse_args(["/tmp/x"])
    assert a.folder == Path("/tmp/x") and a.steps == list(run.STEPS) and a.batches == [1, 8]
    assert (a.modelopt_python, a.nncf_python) == (run.PEER_PYTHONS["modelopt"], run.PEER_PYTHONS["nncf"])
    assert (a.duration, a.rounds, a.speed_calib, a.reuse) == (6.0, 6, 64, False)


def test_quick_shortens_timing_and_drops_the_mse_files():
    a = run.parse_args(["d", "--quick", "--reuse", "--steps", "lint, speed", "--batches", "2"])
    assert (a.duration, a.rounds, a.speed_calib, a.reuse, a.steps, a.batches) == (1.0, 2, 16, True, ["lint", "speed"], [2])
    # one file per target (cpu, tensorrt, openvino); the full run adds each target's mse file
    assert set(run.dnet_files(True).values()) == {"bc100.int8.onnx", "bc100.int8-trt.onnx", "bc100.int8-ov.onnx"}
    assert len(run.dnet_files(False)) == 6 and set(run.dnet_files(False).values()) >= {"bc100.mse.int8-ov.onnx"}


@pytest.mark.parametrize("argv, message", [
    (["d", "--steps", "prepare,bench"], "unknown step 'bench': choose from prepare, dnet, ort, peers, accuracy"),
    (["d", "--batches", "1,x"], "--batches: comma-separated integers, got '1,x'"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_peer_without_its_python_is_skipped_and_said(tmp_path, capsys):
    assert run.peer_python(str(tmp_path / "nope" / "python")) is None
    assert run.peer_python(__import__("sys").executable)
    out = run.quantize_peers(tmp_path / "m.onnx", tmp_path / "c.npy", tmp_path / "m", {"modelopt": None, "nncf": None},
                             reuse=False)
    assert out == {"modelopt": {"skipped": "no venv python"}, "nncf": {"skipped": "no venv python"}}
    said = capsys.readouterr().out
    assert "modelopt: no venv python, skipped" in said and "nncf: no venv python, skipped" in said


def test_lint_rows_group_rules_by_severity():
    rows = run.lint_rows([{"tool": "x", "errors": 3, "warnings": 1, "by_rule": {
        "grouped-conv-int8": {"severity": "error", "count": 2}, "zero-point": {"severity": "error", "count": 1},
        "concat-scales": {"severity": "warning", "count": 1}}}])
    assert rows == [["x", 3, 1, "grouped-conv-int8 ×2, zero-point ×1", "concat-scales ×1", "–"]]


def test_accuracy_rows_leave_a_runtime_out_as_a_dash():
    rows = accuracy.table_rows([{"tool": "NNCF (OpenVINO IR)", "openvino": {"top1_error": 5.2, "agreement": 99.04}},
                                {"tool": "FP32", "ort": {"top1_error": 5.0, "agreement": 100.0},
                                 "openvino": {"top1_error": 5.0, "agreement": 100.0}}])
    assert rows == [["NNCF (OpenVINO IR)", "–", "5.2 % / 99.0 %"], ["FP32", "5.0 % / 100.0 %", "5.0 % / 100.0 %"]]


def _row(tool, rt, b, tput, vs, of=None):
    return {"tool": tool, "runtime": rt, "batch": b, "median_ms": 1000 * b / tput, "throughput": tput, "vs_fp32": vs,
            "of_ceiling_ratio": of}


def test_speed_targets_and_rows():
    rows = [_row("FP32", "plain", 8, 10.0, 1.0), _row("dnet cpu", "plain", 8, 19.0, 1.9, 0.76),
            _row("dnet cpu", "dnet", 8, 20.0, 2.0, 0.8), _row("dnet cpu", "openvino", 8, 28.0, 2.8),
            _row("dnet openvino", "openvino", 8, 30.0, 3.0), _row("NNCF (OpenVINO IR)", "openvino", 8, 31.0, 3.1)]
    t = speed.targets(rows, ceiling_ratio=2.5)
    assert t["plain_vs_dnet_engine_b8"]["measured"] == pytest.approx(0.95) and t["plain_vs_dnet_engine_b8"]["met"]
    assert t["plain_of_ceiling_ratio_b8"]["measured"] == pytest.approx(0.76) and t["plain_of_ceiling_ratio_b8"]["met"]
    # OpenVINO's target is dnet's OpenVINO file against NNCF's, not the CPU file run in OpenVINO (28)
    assert t["openvino_vs_nncf_b8"]["measured"] == pytest.approx(30 / 31) and not t["openvino_vs_nncf_b8"]["met"]
    table = speed.table_rows({"results": rows[:2]})
    assert table == [["FP32", "onnxruntime.InferenceSession", 8, "800.0", "10.0", "1.00×", "–"],
                     ["dnet cpu", "onnxruntime.InferenceSession", 8, "421.1", "19.0", "1.90×", "76%"]]


def test_heading_names_the_cpu_its_flags_and_the_load():
    from dnet.core import cpu

    h = run.heading()
    assert h.startswith(f"{cpu.model_name()} ({cpu.int8_flags_text()}), ") and "UTC; load average " in h


def test_a_peer_logs_last_json_line_is_its_summary(tmp_path):
    log = tmp_path / "p.log"
    log.write_text('progress 100%\n{"tool": "nncf", "seconds": 3.5}\n\nreal 4m0.2s\n')
    assert run._last_json(log) == {"tool": "nncf", "seconds": 3.5}
    log.write_text("no summary\n")
    assert run._last_json(log) == {} and run._last_json(tmp_path / "absent.log") == {}
