"""Fixtures of the hostile-input matrix: a sandbox per case, and small model files made once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.converters.tiny_models import tiny_checkpoint, tiny_onnx
from tests.evalmodels import save_random
from tests.hostile.harness import Outcome, cli, nothing_left, run_dnet, tree


class Box:
    """A case's world: ``work`` (its inputs and outputs) and ``tmp`` (its TMPDIR), and the checks of the matrix."""

    def __init__(self, root: Path) -> None:
        self.work, self.tmp = root / "work", root / "tmp"
        self.work.mkdir()
        self.tmp.mkdir()
        self.before: dict[str, str] = {}

    def add(self, src: Path, name: str | None = None) -> Path:
        dst = self.work / (name or src.name)
        shutil.copyfile(src, dst)
        return dst

    def freeze(self) -> None:
        """Remember every file now in the box: the inputs, which must come out byte-identical."""
        self.before = tree(self.work)

    def cli(self, *args) -> Outcome:
        return cli(*args, tmpdir=self.tmp)

    def run(self, *args, **kwargs) -> Outcome:
        return run_dnet(*args, cwd=self.work, tmpdir=self.tmp, **kwargs)

    def unchanged(self, *new: str) -> None:
        """Inputs byte-identical, nothing in the box but them and the ``new`` files, nothing in TMPDIR."""
        after = tree(self.work)
        for path, digest in self.before.items():
            assert after.get(path) == digest, f"input {path} changed or vanished"
        extra = sorted(Path(p).name for p in set(after) - set(self.before))
        assert extra == sorted(new), extra
        nothing_left(self.tmp)


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


def png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path
