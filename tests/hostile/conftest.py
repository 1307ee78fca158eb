"""Fixtures of the hostile-input matrix: a sandbox per case, and small model files made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.harness import Box
from tests.helpers.models import save_random, tiny_checkpoint, tiny_onnx
from tests.helpers.writes import mounted_tmpfs


@pytest.fixture
def box(tmp_path) -> Box:
    return Box(tmp_path)


@pytest.fixture
def no_export(monkeypatch):
    """Any export is a failure here: the request must be refused before the work starts."""
    from dnet.converters import export as onnx_export

    def refuse(*args, **kwargs):
        raise AssertionError("the export ran for a request that had to be refused first")

    monkeypatch.setattr(onnx_export, "_export_proto", refuse)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """tiny.pth (5 classes, 32×32, cifar10 preprocessing), its FP32 ONNX, and digits.pth (10 classes, 8×8)."""
    folder = tmp_path_factory.mktemp("hostile-models")
    return {"pth": tiny_checkpoint(folder), "onnx": tiny_onnx(folder),
            "digits": save_random(folder / "digits.pth", 10, "digits", 8),
            "two": save_random(folder / "two.pth", 2, "cifar10", 32)}


@pytest.fixture
def tmpfs(tmp_path) -> Path:
    """A 256 KiB tmpfs, or a skip naming why it cannot be mounted here (tests.helpers.writes fills it)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    with mounted_tmpfs(mnt) as why:
        if why is not None:
            pytest.skip(f"cannot mount a tmpfs here ({why}): the full-disk cases run where the tests may mount one; "
                        "the size-limit cases cover the writers")
        yield mnt
