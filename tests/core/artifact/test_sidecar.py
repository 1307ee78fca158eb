"""dnet.core.artifact.sidecar: the plan's sidecar file and the policy of which TensorRT and GPU may run a plan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dnet.core.artifact.sidecar import (
    check_compatible,
    read_sidecar,
    runs_version_compatible,
    sidecar_path,
    write_sidecar,
)
from dnet.core.errors import EngineError, FileFormatError
from dnet.core.specs import get_spec
from tests.helpers.tensorrt_standins import sidecar

ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------------------------------------
# Sidecar.


def test_sidecar_round_trips_through_its_json_file(tmp_path):
    original = sidecar(version_compatible=True, hardware_compat="same-cc")
    path = write_sidecar(tmp_path / "m.plan", original)
    assert path == tmp_path / "m.plan.json" == sidecar_path(tmp_path / "m.plan")
    data = json.loads(path.read_text())
    assert data["format"] == "dnet.tensorrt-plan" and data["format_version"] == 1
    assert data["compute_capability"] == [8, 6] and data["meta"]["calibration"]["images"] == 64
    back = read_sidecar(tmp_path / "m.plan")
    assert back == original
    assert (back.min_batch, back.max_batch) == (1, 32)
    assert back.meta.preprocess == get_spec("cifar10")
    assert [p.name for p in tmp_path.iterdir()] == ["m.plan.json"]  # no temporary file left


def test_read_sidecar_refuses_missing_corrupt_and_foreign_files(tmp_path):
    plan = tmp_path / "m.plan"
    with pytest.raises(FileFormatError) as e:
        read_sidecar(plan)
    assert str(e.value) == (
        "m.plan.json is missing: a dnet plan needs the sidecar written beside it by dnet convert --to trt; "
        "rebuild m.plan from its ONNX file"
    )
    sidecar_path(plan).write_text('{"format": "dnet.tensorrt-plan", "format_version": 1,')
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json: sidecar is not valid JSON"):
        read_sidecar(plan)
    sidecar_path(plan).write_text('{"engine": "something else"}')
    with pytest.raises(FileFormatError, match=r'^m\.plan\.json: not a dnet TensorRT sidecar'):
        read_sidecar(plan)
    data = sidecar().to_dict()
    del data["tensorrt_version"]
    sidecar_path(plan).write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json: sidecar is incomplete or malformed \(TypeError"):
        read_sidecar(plan)
    data = sidecar().to_dict() | {"compute_capability": "eight"}
    sidecar_path(plan).write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match=r"^m\.plan\.json: sidecar is incomplete or malformed"):
        read_sidecar(plan)


# ---------------------------------------------------------------------------------------------------------------
# Compatibility.

REBUILD = "rebuild it here: dnet convert m.onnx --from onnx --to trt -o m.plan"
A10 = "NVIDIA A10"  # the GPU the stand-in sidecar was built on (compute capability 8.6)


def test_same_version_and_gpu_is_accepted():
    assert check_compatible(sidecar(), "10.16.1.11", (8, 6), A10) is None


def test_other_tensorrt_version_is_refused_with_how_to_rebuild():
    with pytest.raises(EngineError) as e:
        check_compatible(sidecar(), "10.16.0.72", (8, 6), A10)
    assert str(e.value) == (
        f"m.plan was built with TensorRT 10.16.1.11 but this is TensorRT 10.16.0.72; {REBUILD} "
        "(or build with --version-compatible)"
    )


@pytest.mark.parametrize("built, running, runs", [
    ("10.16.1.11", "10.16.1.11", True),
    ("10.9.0.34", "10.16.1.11", True),  # later releases of the same major
    ("10.16.1.11", "11.4.0.106", True),  # NVIDIA: 10.x version-compatible plans run on 11.x
    ("8.6.1.6", "10.9.0.34", True),  # and 8.6 on 10.x
    ("10.16.1.11", "10.9.0.34", False),  # never on an older release
    ("11.4.0.106", "12.0.0.1", False),  # not N -> N+1 for every N: 11 -> 12 is not in the support matrix
    ("8.6.1.6", "9.3.0.1", False),
    ("10.16.1.11", "12.1.0.1", False),
    ("11.4.0.106", "11.10.0.1", True),  # compared as numbers, not text
])
def test_version_compatible_window_follows_nvidia_s_support_matrix(built, running, runs):
    assert runs_version_compatible(built, running) is runs
    vc = sidecar(version_compatible=True, tensorrt_version=built)
    if runs:
        assert check_compatible(vc, running, (8, 6), A10) is None
    else:
        with pytest.raises(EngineError, match=rf"built version-compatible with TensorRT {re.escape(built)}, which "
                                              rf"TensorRT {re.escape(running)} cannot run \(needs "):
            check_compatible(vc, running, (8, 6), A10)


def test_the_refusal_names_the_versions_that_can_run_it():
    with pytest.raises(EngineError) as e:
        check_compatible(sidecar(version_compatible=True), "10.9.0.34", (8, 6), A10)
    assert str(e.value) == ("m.plan was built version-compatible with TensorRT 10.16.1.11, which TensorRT 10.9.0.34 "
                            f"cannot run (needs 10.x or 11.x at least as new); {REBUILD}")


def test_edited_compute_capability_in_the_sidecar_is_refused(tmp_path):
    write_sidecar(tmp_path / "m.plan", sidecar())
    path = sidecar_path(tmp_path / "m.plan")
    data = json.loads(path.read_text())
    data["compute_capability"] = [7, 5]
    path.write_text(json.dumps(data))
    edited = read_sidecar(tmp_path / "m.plan")
    with pytest.raises(EngineError) as e:
        check_compatible(edited, "10.16.1.11", (8, 6), A10)
    assert str(e.value) == (
        "m.plan was built for a GPU of compute capability 7.5 (NVIDIA A10) but this GPU has compute capability 8.6; "
        f"{REBUILD} (or build with --hardware-compat ampere+)"
    )


def test_hardware_compatibility_levels():
    ampere = sidecar(hardware_compat="ampere+")
    for cc, name in (((8, 0), "NVIDIA A100"), ((8, 9), "NVIDIA L4"), ((9, 0), "NVIDIA H100"), ((12, 0), "RTX 5090")):
        assert check_compatible(ampere, "10.16.1.11", cc, name) is None
    with pytest.raises(EngineError, match=r"built for Ampere or newer GPUs .* compute capability 7\.5"):
        check_compatible(ampere, "10.16.1.11", (7, 5), "Tesla T4")
    same = sidecar(hardware_compat="same-cc")
    assert check_compatible(same, "10.16.1.11", (8, 6), "NVIDIA A40") is None  # another model, same 8.6
    with pytest.raises(EngineError, match=r"compute capability 8\.6 \(NVIDIA A10\) but this GPU has compute capability 8\.9"):
        check_compatible(same, "10.16.1.11", (8, 9), "NVIDIA L4")


def test_without_a_compatibility_level_a_plan_is_specific_to_the_gpu_model():
    """NVIDIA: without a hardware compatibility level an engine is specific to the GPU model that built it."""
    with pytest.raises(EngineError) as e:
        check_compatible(sidecar(), "10.16.1.11", (8, 6), "NVIDIA A40")
    assert str(e.value) == (
        "m.plan was built for the NVIDIA A10 and, without a hardware compatibility level, runs only on that GPU model, "
        f"not on this NVIDIA A40; {REBUILD} (or build with --hardware-compat same-cc to run on any GPU of compute "
        "capability 8.6)"
    )
