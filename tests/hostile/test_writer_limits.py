"""The writers ``test_write_errors.py`` does not reach, each met on its own with a file-size limit (EFBIG, ``ulimit
-f``) and, where the tests may mount one, a full tmpfs: the calibration cache, the training run's JSON/CSV records
and its plot, ``compare --per-layer`` (ONNX Runtime's own write), the TensorRT plan's sidecar, layer information and timing cache (TensorRT's own
calls are stand-ins), and a report on the standard output redirected to a file. Each is one line naming the file,
the previous file under that name intact, no partial file."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from dnet.core.errors import DnetError
from tests.helpers.harness import ROOT
from tests.helpers.writes import OLD, fill, leftovers, old_file, size_limit


def _too_large(path, limit: int) -> str:
    return (f"file too large: writing {path} stopped at the limit of {limit:,} bytes (ulimit -f, or the filesystem); "
            "raise the limit or choose another output folder")


def _refused(write, path, limit: int) -> None:
    """``write()`` past ``limit`` bytes: the one line, the old file intact, no partial file beside it."""
    with size_limit(limit), pytest.raises(DnetError) as e:
        write()
    assert str(e.value) == _too_large(path, limit)
    assert path.read_bytes() == OLD and leftovers(path.parent) == []


def _cache():
    from dnet.converters.int8.calibration import CalibrationCache

    return CalibrationCache("ab" * 32, "percentile", 64, "digits", {f"t{i}": (-1.0 * i, 2.0 * i) for i in range(200)})


HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e, "train_error": 50.0 / e, "test_error": 60.0 / e,
            "lr": 0.1, "time_s": 1.0, "img_per_s": 900.0} for e in range(1, 4)]


def test_the_calibration_cache_past_the_size_limit_is_one_line_and_keeps_the_old_cache(tmp_path):
    path = old_file(tmp_path / "m.calib.json")
    _refused(lambda: _cache().save(path), path, 2048)  # 200 ranges are ~10 kB of JSON


def test_convert_whose_calibration_cache_hits_the_limit_is_one_line_and_writes_no_int8_file(box, models,
                                                                                           monkeypatch):
    import numpy as np

    from dnet.converters.int8.calibration import CalibrationCache

    src = box.add(models["onnx"])
    np.save(box.work / "calib.npy", np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    cache, out = _cache().save(box.work / "m.calib.json"), old_file(box.work / "m.int8.onnx")  # another model's
    before = cache.read_bytes()
    real = CalibrationCache.to_json
    monkeypatch.setattr(CalibrationCache, "to_json", lambda self: real(self) + " " * 400_000)  # larger than the rest
    box.freeze()
    with size_limit(300_000):
        r = box.cli("convert", src, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", box.work / "calib.npy",
                    "--calib-cache", cache, "-o", out, "--quiet")
    assert r.error_line(1) == _too_large(cache, 300_000)
    assert cache.read_bytes() == before and out.read_bytes() == OLD and leftovers(box.work) == []
    box.unchanged()


@pytest.mark.parametrize("record", ["config.json", "metrics.csv"])
def test_a_run_folders_records_past_the_size_limit_are_one_line_and_keep_the_old_ones(tmp_path, record):
    from dnet.apps.train.run_folder import write_config, write_metrics

    path = old_file(tmp_path / record)
    write = {"config.json": lambda: write_config(tmp_path, {"padding": "x" * 4096}),
             "metrics.csv": lambda: write_metrics(tmp_path, HISTORY * 40)}[record]
    _refused(write, path, 1024)


def test_the_training_plot_past_the_size_limit_is_one_line_and_keeps_the_old_plot(tmp_path):
    from dnet.apps.train.plots import plot_curves

    path = old_file(tmp_path / "curves.png")
    _refused(lambda: plot_curves(HISTORY, path, "a title"), path, 4096)  # the PNG is ~40 kB


def test_compare_per_layer_past_the_size_limit_is_one_line_for_onnx_runtimes_own_write_too(box, models):
    ref, other = box.add(models["onnx"], "a.onnx"), box.add(models["onnx"], "b.onnx")
    plot = old_file(box.work / "layers.png")
    box.freeze()
    with size_limit(8192):  # ONNX Runtime's optimized graph (~50 kB, in dnet's scratch) is the first write it stops
        r = box.cli("compare", ref, other, "--per-layer", "--count", 2, "--plot", plot)
    line = r.error_line(1)  # was ORT's "InvalidProtobuf: Protobuf serialization failed" traceback
    assert re.fullmatch(r"file too large: writing \S+/dnet-scratch-\d+/compare\S+/file\.onnx stopped at the limit of "
                        r"8,192 bytes \(ulimit -f, or the filesystem\); raise the limit or choose another output "
                        r"folder", line), line
    assert plot.read_bytes() == OLD and leftovers(box.work) == []
    box.unchanged()


def test_the_plan_sidecar_and_layer_information_past_the_size_limit_are_one_line_each(tmp_path):
    import json

    from dnet.core.artifact.layers import layers_path, write_layers
    from dnet.core.artifact.sidecar import sidecar_path, write_sidecar
    from tests.helpers.tensorrt_standins import ENGINE_INFO, sidecar

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"PLAN: not read")
    side, layers = old_file(sidecar_path(plan)), old_file(layers_path(plan))
    _refused(lambda: write_sidecar(plan, sidecar()), side, 512)  # a sidecar is ~1.3 kB
    _refused(lambda: write_layers(plan, json.dumps(ENGINE_INFO) + " " * 4096), layers, 1024)


def test_a_timing_cache_past_the_size_limit_is_a_warning_and_keeps_the_old_cache(tmp_path):
    from dnet.converters.tensorrt import _save_timing_cache

    class Config:  # TensorRT's IBuilderConfig, as far as the saving goes
        def get_timing_cache(self):
            return type("Cache", (), {"serialize": lambda self: b"t" * 8192})()

    path, said = old_file(tmp_path / "timing.cache"), []
    with size_limit(2048):
        _save_timing_cache(Config(), path, said.append, inputs=[])
    assert said == [f"the timing cache was not saved to {path} ({_too_large(path, 2048)}); the plan and its sidecar "
                    "are written"]
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []


def test_the_calibration_cache_and_the_sidecar_onto_a_full_tmpfs_are_one_no_space_line(tmpfs):
    from dnet.core.artifact.sidecar import sidecar_path, write_sidecar
    from tests.helpers.tensorrt_standins import sidecar

    cache, plan = old_file(tmpfs / "m.calib.json"), tmpfs / "m.plan"
    plan.write_bytes(b"PLAN")
    side = old_file(sidecar_path(plan))
    fill(tmpfs, leave=0)
    for write, path in ((lambda: _cache().save(cache), cache), (lambda: write_sidecar(plan, sidecar()), side)):
        with pytest.raises(DnetError) as e:
            write()
        assert re.fullmatch(rf"no space left on device: writing {re.escape(str(path))} needs [\d,]+ bytes, [\d,]+ "
                            r"bytes are free there; free some space or choose another output folder", str(e.value))
        assert path.read_bytes() == OLD and leftovers(tmpfs) == []


# --- a report on the standard output, redirected to a file ------------------------------------------------

STDOUT_LAUNCH = """
import resource, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
import dnet.cli.main
sys.argv = ["dnet"] + sys.argv[1:]
dnet.cli.main.main()
"""


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_json_report_redirected_to_a_file_that_hits_the_limit_is_one_line_not_a_cut_report(tmp_path, unbuffered):
    out = tmp_path / "zoo.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": unbuffered}
    with open(out, "wb") as stdout:  # `dnet models --json > zoo.json` under `ulimit -f 4` (4,096 bytes)
        p = subprocess.run([sys.executable, "-c", STDOUT_LAUNCH, "4096", "models", "--json"], stdout=stdout,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert p.returncode == 1 and p.stderr.splitlines() == [f"dnet: error: {_too_large(out, 4096)}"], p.stderr
    assert out.stat().st_size == 4096  # what the limit let through; the line says where it stopped


def test_a_plan_whose_sidecar_hits_the_limit_keeps_the_previous_plan_and_sidecar_whole(tmp_path, monkeypatch):
    import dnet.converters.tensorrt as ct
    from dnet.converters.tensorrt import BuildOptions, build_plan
    from tests.helpers.models import tiny_onnx
    from tests.helpers.tensorrt_standins import fake_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11"))  # TensorRT's calls, no GPU
    monkeypatch.setattr(ct, "cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    onnx_path, plan = tiny_onnx(tmp_path, "m.onnx"), tmp_path / "m.plan"
    build_plan(onnx_path, plan)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with size_limit(1024), pytest.raises(DnetError) as e:  # the plan (~100 bytes) fits, its sidecar (~1.7 kB) not
        build_plan(onnx_path, plan, BuildOptions(workspace_mib=64))  # another plan
    assert str(e.value) == _too_large(tmp_path / "m.plan.json", 1024)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # never a new plan beside the old sidecar
