"""dnet.artifact.sidecar: the plan's sidecar file and the policy of which TensorRT and GPU may run a plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnet.artifact.sidecar import check_compatible, read_sidecar, sidecar_path, write_sidecar
from dnet.data.specs import get_spec
from dnet.errors import EngineError, FileFormatError
from tests.engines.tensorrt_standins import sidecar

ROOT = Path(__file__).resolve().parents[2]


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


def test_same_version_and_compute_capability_is_accepted():
    assert check_compatible(sidecar(), "10.16.1.11", (8, 6)) is None


def test_other_tensorrt_version_is_refused_with_how_to_rebuild():
    with pytest.raises(EngineError) as e:
        check_compatible(sidecar(), "10.16.0.72", (8, 6))
    assert str(e.value) == (
        f"m.plan was built with TensorRT 10.16.1.11 but this is TensorRT 10.16.0.72; {REBUILD} "
        "(or build with --version-compatible)"
    )


def test_version_compatible_plan_runs_on_later_versions_only():
    vc = sidecar(version_compatible=True)
    assert check_compatible(vc, "10.16.1.11", (8, 6)) is None
    assert check_compatible(vc, "11.4.0.106", (8, 6)) is None  # NVIDIA: 10.x version-compatible plans run on 11.x
    for older_or_too_new in ("10.9.0.34", "12.0.0.1"):
        with pytest.raises(EngineError, match=rf"built version-compatible with TensorRT 10\.16\.1\.11, which "
                                              rf"TensorRT {older_or_too_new} cannot run"):
            check_compatible(vc, older_or_too_new, (8, 6))


def test_edited_compute_capability_in_the_sidecar_is_refused(tmp_path):
    write_sidecar(tmp_path / "m.plan", sidecar())
    path = sidecar_path(tmp_path / "m.plan")
    data = json.loads(path.read_text())
    data["compute_capability"] = [7, 5]
    path.write_text(json.dumps(data))
    edited = read_sidecar(tmp_path / "m.plan")
    with pytest.raises(EngineError) as e:
        check_compatible(edited, "10.16.1.11", (8, 6))
    assert str(e.value) == (
        "m.plan was built for a GPU of compute capability 7.5 (NVIDIA A10) but this GPU has compute capability 8.6; "
        f"{REBUILD} (or build with --hardware-compat ampere+)"
    )


def test_hardware_compatibility_levels():
    ampere = sidecar(hardware_compat="ampere+")
    for cc in ((8, 0), (8, 9), (9, 0), (12, 0)):
        assert check_compatible(ampere, "10.16.1.11", cc) is None
    with pytest.raises(EngineError, match=r"built for Ampere or newer GPUs .* compute capability 7\.5"):
        check_compatible(ampere, "10.16.1.11", (7, 5))
    same = sidecar(hardware_compat="same-cc")
    assert check_compatible(same, "10.16.1.11", (8, 6)) is None
    with pytest.raises(EngineError, match=r"compute capability 8\.6 \(NVIDIA A10\) but this GPU has compute capability 8\.9"):
        check_compatible(same, "10.16.1.11", (8, 9))


