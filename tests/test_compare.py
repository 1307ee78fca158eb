"""dnet compare: one row per dense block and transition plus the logits, with sane values."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from dnet.cli import main
from dnet.compare import compare
from dnet.converters import precision
from dnet.converters.calibration import CalibrationSet
from dnet.files import sha256_file
from tests.converters.tiny_models import photo_tiles, tiny_checkpoint, tiny_model, tiny_onnx, write_images


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    fp32 = tiny_onnx(d, "tiny.onnx")
    int8, _ = precision.to_int8(fp32, d / "tiny.int8.onnx", calib=CalibrationSet(images=photo_tiles(), count=24),
                                min_top1=0.0)  # random weights: near-tied logits
    images = write_images(d / "images", photo_tiles(size=40, per_photo=2, offset=3))
    return d, fp32, int8, images


def test_fp32_vs_int8_has_one_row_per_stage_and_sane_values(files):
    _, fp32, int8, images = files
    before = sha256_file(int8)
    rows = compare(fp32, int8, images=images)
    stages = tiny_model().stages()
    assert [r.stage for r in rows] == [*stages, "logits"]  # denseblock1, transition1, denseblock2, logits
    assert len(rows) == 4
    for r in rows:
        assert 0.95 <= r.cosine <= 1.0 + 1e-9 and 0 < r.rel_error < 0.3 and r.max_abs > 0
    assert rows[-1].top1_agreement is not None and 0.0 <= rows[-1].top1_agreement <= 1.0
    assert all(r.top1_agreement is None for r in rows[:-1])
    assert rows[0].shape == (8, 8 + 2 * 4, 32, 32)  # --count 8 of the 14 images, block 1 channels, 32×32
    assert sha256_file(int8) == before  # the per-stage outputs come from a private copy of the graph


def test_pytorch_vs_its_own_export_agrees_at_every_stage(tmp_path, files):
    _, fp32, _, _ = files
    src = tiny_checkpoint(tmp_path)
    rows = compare(src, fp32)
    assert len(rows) == 4
    for r in rows:
        assert r.rel_error < 1e-5 and r.cosine > 1 - 1e-9
    assert rows[-1].top1_agreement == 1.0


def test_a_file_without_stage_names_is_compared_at_the_logits(tmp_path, files):
    _, fp32, int8, _ = files
    proto = onnx.load(str(int8))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    rows = compare(fp32, tmp_path / "foreign.onnx")
    assert [r.stage for r in rows] == ["logits"]


def test_cli_table_and_json(files):
    _, fp32, int8, images = files
    result = CliRunner().invoke(main, ["compare", str(fp32), str(int8), "--images", str(images)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["stage", "shape", "rel"] and len(lines) == 2 + 4
    assert [line.split()[0] for line in lines[2:]] == ["denseblock1", "transition1", "denseblock2", "logits"]
    result = CliRunner().invoke(main, ["compare", str(fp32), str(int8), "--json", "--count", "3"])
    d = json.loads(result.stdout)
    assert d["inputs"] == "random" and [s["stage"] for s in d["stages"]][-1] == "logits"
    assert d["stages"][0]["shape"][0] == 3
    assert np.isfinite([s["cosine"] for s in d["stages"]]).all()
