"""benchmarks/gpu_check.py on a machine without a GPU: the one-line refusal, and its measuring logic on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = "gpu_check: no CUDA GPU found (torch.cuda.is_available() is False); nothing was measured"


@pytest.fixture
def no_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")


def test_without_a_gpu_it_says_so_in_one_line_and_exits_1(tmp_path, no_cuda):
    env = {**os.environ, "DNET_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", NO_GPU + "\n")
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_make_gpu_check_stops_before_installing_anything(no_cuda):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "-s", "gpu-check", f"PY={sys.executable}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.splitlines()[0] == NO_GPU  # then make's own "Error 1" line; pip never ran


def test_the_gpu_tests_are_found_by_their_markers():
    files = [p.relative_to(ROOT).as_posix() for p in gpu_check.marked_test_files()]
    assert "tests/converters/test_tensorrt_gpu.py" in files
    assert "tests/benchmarks/test_gpu_check.py" not in files


def test_run_tests_reports_each_test_s_outcome_and_skip_reason(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(
        "import pytest\n\n"
        "pytestmark = pytest.mark." + "gpu\n\n"
        "def test_runs():\n    assert True\n\n"
        "def test_needs_a_gpu():\n    pytest.skip('no CUDA GPU found')\n\n"
        "def test_breaks():\n    assert 1 == 2\n"
    )
    out = gpu_check.run_tests(timeout=120, root=tmp_path)
    assert (out["passed"], out["failed"], out["skipped"]) == (1, 1, 1)
    assert [(c["test"].rsplit("::", 1)[1], c["outcome"], c["detail"]) for c in out["cases"]][1] == (
        "test_needs_a_gpu", "skipped", "no CUDA GPU found")


def test_inference_and_training_measurements_run_on_the_cpu():
    rows = gpu_check.inference("densenet-bc-l100-k12", variants=("fp32", "fp32-channels-last",
                                                                 "fp16-channels-last-cuda-graph"),
                               batches=(1, 2), iterations=1, warmup=0, device="cpu")
    assert [(r["variant"], r["batch"]) for r in rows] == [("fp32", 1), ("fp32", 2), ("fp32-channels-last", 1),
                                                          ("fp32-channels-last", 2)]  # CUDA graphs: CUDA only
    assert all(r["median_ms"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert [r["speedup_vs_fp32"] for r in rows[:2]] == [1.0, 1.0]
    step = gpu_check.train_step("densenet-bc-l100-k12", False, batch=2, steps=1, device="cpu")
    assert (step["mode"], step["peak_allocated_mb"], step["lua_memory_mb"], step["lua_step_s"]) == (
        "standard", None, 5452, 0.156)
    assert step["step_s"] > 0


def _measured_nothing(monkeypatch, tests: dict) -> None:
    """gpu_check.main with a GPU that is not there: the probe passes, the measurements return fixed rows."""
    monkeypatch.setattr(gpu_check, "probe", lambda: None)
    monkeypatch.setattr(gpu_check, "run_tests", lambda timeout: tests)
    monkeypatch.setattr(gpu_check, "inference", lambda iterations: [
        {"variant": "fp32", "batch": 1, "median_ms": 2.0, "images_per_s": 500.0, "speedup_vs_fp32": 1.0}])
    monkeypatch.setattr(gpu_check, "train_step", lambda name, efficient, steps: {
        "model": name, "mode": "memory-efficient" if efficient else "standard", "peak_allocated_mb": 1.0,
        "peak_reserved_mb": 2.0, "step_s": 0.1, "lua_memory_mb": None, "lua_step_s": None})


PASSED = {"passed": 3, "failed": 0, "skipped": 0, "seconds": 1.0, "cases": []}


def test_without_tensorrt_the_table_and_json_say_not_checked_and_the_status_is_distinct(tmp_path, monkeypatch,
                                                                                        capsys):
    import json

    _measured_nothing(monkeypatch, PASSED)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    monkeypatch.setenv("DNET_BENCH_RESULTS", str(tmp_path / "results"))
    assert gpu_check.main(["--quick"]) == gpu_check.EXIT_NO_TENSORRT == 3
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("import tensorrt")]
    assert "TensorRT not installed: the TensorRT path was NOT checked" in row
    data = json.loads((tmp_path / "results" / "gpu_check.json").read_text())
    assert data["tensorrt"]["installed"] is False and data["tensorrt"]["checked"] is False
    assert data["tensorrt"]["note"] == "TensorRT not installed: the TensorRT path was NOT checked"
    assert data["notes"][0] == data["tensorrt"]["note"]


def test_a_failed_test_is_status_1_and_tensorrt_present_with_passing_tests_is_0(tmp_path, monkeypatch, capsys):
    import types

    monkeypatch.setenv("DNET_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.16.1.11"))
    _measured_nothing(monkeypatch, {**PASSED, "failed": 1})
    assert gpu_check.main(["--quick"]) == 1
    _measured_nothing(monkeypatch, PASSED)
    assert gpu_check.main(["--quick"]) == 0
    assert "TensorRT 10.16.1.11: checked by the tests below" in capsys.readouterr().out
    assert (tmp_path / "gpu_check.json").is_file()
