"""dnet compare: one row per dense block and transition plus the logits; --per-layer: one row per convolution."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from dnet.apps.compare import _Running, compare, compare_layers
from dnet.cli import main
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationSet
from dnet.core.atomic import sha256_file
from dnet.core.errors import UsageError
from dnet.core.similarity import cosine, max_abs, rel_l2
from tests.helpers.images import photo_tiles, write_images
from tests.helpers.models import TINY_CONVS, tiny_checkpoint, tiny_model, tiny_onnx


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    fp32 = tiny_onnx(d, "tiny.onnx")
    int8, _ = quantize.to_int8(fp32, d / "tiny.int8.onnx", calib=CalibrationSet(images=photo_tiles(), count=24),
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


# --- per layer -----------------------------------------------------------------------------------------------

BROKEN = "denseblock2.denselayer2.conv1"  # a middle layer of the tiny model's second block


def _broken(int8, out, layer=BROKEN, factor=50.0):
    """A copy of the INT8 file with one convolution's weight scale multiplied by ``factor`` (onnx graph edits)."""
    proto = onnx.load(str(int8))
    # dnet's layout names a weight's per-channel scale WEIGHT_wscale, onnxruntime.quantization's WEIGHT_scale
    (scale,) = [t for t in proto.graph.initializer
                if t.name in (f"features.{layer}.weight_wscale", f"features.{layer}.weight_scale")]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    onnx.save(proto, str(out))
    return out


def test_per_layer_ranks_the_broken_layer_first(tmp_path, files):
    _, fp32, int8, images = files
    broken = _broken(int8, tmp_path / "broken.onnx")
    report = compare_layers(fp32, broken, images=images)
    assert [r.layer for r in report.rows] == TINY_CONVS and report.pairing == "name"
    first = report.ranking()[0]
    assert first.layer == BROKEN and first.depth == 9
    # its weights are 50× too large: its output is about 50× the reference (rel error ≈ 49), its input is not
    assert 40 < first.rel_error < 60 and first.input_rel_error < 0.5 and first.added > 40
    assert all(r.added < 2 for r in report.rows if r.layer != BROKEN)
    clean = compare_layers(fp32, int8, images=images)
    assert all(r.rel_error < 0.5 for r in clean.rows) and clean.ranking()[0].added < 0.2


def test_per_layer_rows_compare_each_convs_float_output_and_its_input(files):
    _, fp32, int8, images = files
    report = compare_layers(fp32, int8, images=images, count=6)
    assert report.count == 6 and report.inputs == str(images) and not report.fused
    row = report.rows[1]
    assert row.layer == "denseblock1.denselayer1.conv1" and row.block == "denseblock1" and row.shape == (6, 16, 32, 32)
    assert row.ref_tensor == row.other_tensor == "getitem_3"  # the Conv's float output (BN norm2 folded in)
    assert 0.9 < row.cosine <= 1 and row.max_abs > 0 and row.added == row.rel_error - row.input_rel_error
    assert report.rows[5].layer == "transition1.conv" and report.rows[5].block == "transition1"
    # the INT8 file folded the transition's AveragePool into its Conv (2×2 stride 2, writing the pool's output):
    # FP32's Conv 1×1 is compared at its pool's output, the tensor both compute, half the side of the Conv's own
    graph = onnx.load(str(fp32)).graph
    (pool,) = [n for n in graph.node if n.op_type == "AveragePool"]
    trans = report.rows[5]
    assert trans.ref_tensor == trans.other_tensor == pool.output[0] and trans.shape == (6, 8, 16, 16)
    assert 0.9 < trans.cosine <= 1 and trans.max_abs > 0
    backwards = compare_layers(int8, fp32, images=images, count=6).rows[5]  # either file may be the reference
    assert (backwards.ref_tensor, backwards.shape) == (pool.output[0], (6, 8, 16, 16))
    assert backwards.rel_error == pytest.approx(trans.rel_error, rel=0.2)
    assert report.logits.stage == "logits" and report.logits.shape == (6, 5) and report.logits.top1_agreement >= 0.5
    exact = compare_layers(fp32, fp32, images=images, count=6)
    assert all(r.rel_error == 0 and r.max_abs == 0 and r.cosine == pytest.approx(1) for r in exact.rows)


def test_taking_the_outputs_leaves_the_computation_unchanged_by_default_and_says_when_fusion_splits(files):
    _, fp32, int8, _ = files
    before = sha256_file(int8)
    plain = compare_layers(fp32, int8, count=4)
    for f in plain.fusion:  # basic optimizations: Q/DQ as written; the copy runs the same nodes and the same logits
        assert not f.changed and f.ops_file == f.ops_copy and f.logits_max_abs == 0
    assert plain.fusion[1].outputs_added == 24  # 12 outputs and 12 int8 inputs (dequantized by dnet)
    assert plain.fusion[1].line() == ("tiny.int8.onnx: the 24 extra outputs leave what ONNX Runtime runs unchanged "
                                      f"({sum(plain.fusion[1].ops_file.values())} nodes, the same op counts; identical logits)")
    fused = compare_layers(fp32, int8, count=4, fused=True)
    q = fused.fusion[1]
    # the 12 tapped convolutions stop fusing; the 6 BatchNormalizations dnet's layout computes as depthwise Convs
    # are not tapped and stay QLinearConv
    assert q.changed and q.ops_file.get("QLinearConv", 0) - q.ops_copy.get("QLinearConv", 0) == 12
    assert f"QLinearConv {q.ops_file['QLinearConv']}→{q.ops_copy['QLinearConv']}" in q.line()
    assert "the layer rows are the copy's" in q.line()
    assert sha256_file(int8) == before


def test_running_sums_equal_the_whole_batch_numbers():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((10, 3, 4, 4)), rng.standard_normal((10, 3, 4, 4))
    acc = _Running()
    for i in range(0, 10, 4):
        acc.add(a[i:i + 4], b[i:i + 4])
    assert acc.rel() == pytest.approx(rel_l2(a, b), rel=1e-12) and acc.cosine() == pytest.approx(cosine(a, b), rel=1e-12)
    assert acc.max == max_abs(a, b)


def test_a_file_without_names_is_paired_by_position_and_pytorch_files_are_refused(tmp_path, files):
    _, fp32, int8, _ = files
    proto = onnx.load(str(int8))
    del proto.metadata_props[:]
    for t in proto.graph.initializer:  # no recorded names and no parameter names either
        t.name = t.name.replace("features.", "w.")
    for n in proto.graph.node:
        n.input[:] = [i.replace("features.", "w.") for i in n.input]
        n.output[:] = [o.replace("features.", "w.") for o in n.output]
    onnx.save(proto, str(tmp_path / "anonymous.onnx"))
    report = compare_layers(fp32, tmp_path / "anonymous.onnx", count=2)
    assert report.pairing == "position" and [r.layer for r in report.rows] == TINY_CONVS
    with pytest.raises(UsageError, match=r"^per-layer comparison runs ONNX files, and tiny.pth is not one"):
        compare_layers(tiny_checkpoint(tmp_path), fp32)


def test_cli_per_layer_table_json_and_plot(tmp_path, files):
    d, fp32, int8, images = files
    broken = _broken(int8, tmp_path / "broken.onnx")
    result = CliRunner().invoke(main, ["compare", str(fp32), str(broken), "--per-layer", "--count", "4"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("broken.onnx against tiny.onnx: 4 inputs (random), ONNX Runtime computing Q/DQ as written "
                        "(basic graph optimizations)")
    assert lines[1].split()[:3] == ["#", "layer", "shape"] and lines[3].split()[:2] == ["1", "conv0"]
    assert [ln.split()[1] for ln in lines[3:15]] == TINY_CONVS and lines[15].split()[0] == "logits"
    assert lines[16].startswith("logits of the files as they are: top-1 agreement ")
    assert any(ln.startswith(f"most error added: 1. {BROKEN} +") for ln in lines)
    plot = tmp_path / "broken.layers.png"
    assert lines[-1] == f"plot: {plot}" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.layers.png", "broken.onnx"]  # nothing half-written
    out = tmp_path / "plots" / "mine.png"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["compare", str(fp32), str(broken), "--per-layer", "--count", "2", "--json",
                                       "--plot", str(out)])
    doc = json.loads(result.stdout)
    assert doc["ranking"][0] == BROKEN and len(doc["layers"]) == 12 and doc["plot"] == str(out) and out.is_file()
    assert doc["layers"][8]["layer"] == BROKEN and doc["layers"][8]["added"] > 40 and doc["logits"]["stage"] == "logits"
    assert [f["changed"] for f in doc["fusion"]] == [False, False]


def test_cli_per_layer_bad_input_is_one_line_and_writes_no_plot(tmp_path, files):
    _, fp32, _, _ = files
    missing = tmp_path / "nowhere" / "p.png"
    result = CliRunner().invoke(main, ["compare", str(fp32), str(fp32), "--per-layer", "--plot", str(missing)])
    assert result.exit_code == 1 and result.output == f"dnet: error: output folder {missing.parent} does not exist\n"
    src = tiny_checkpoint(tmp_path)
    result = CliRunner().invoke(main, ["compare", str(src), str(fp32), "--per-layer"])
    assert result.exit_code == 2 and result.output.startswith("dnet: error: per-layer comparison runs ONNX files")
    assert result.output.count("\n") == 1 and not (tmp_path / "tiny.layers.png").exists()
    result = CliRunner().invoke(main, ["compare", str(fp32), str(fp32), "--fused"])
    assert result.exit_code == 2 and result.output == "dnet: error: --plot, --no-plot and --fused go with --per-layer\n"


def test_the_int8_ranking_and_compare_per_layer_measure_each_convolution_alike(files):
    from dnet.converters.int8 import placement
    from dnet.converters.int8.divergence import layer_divergence

    _, fp32, int8, images = files
    report = compare_layers(fp32, int8, images=images)
    ref = onnx.load(str(fp32))
    outputs = {n: node.output[0] for n, node in placement.layers(ref).items()}
    ranked = {r.layer: r for r in layer_divergence(ref, onnx.load(str(int8)), outputs, _batch(fp32, images))}
    assert {r.layer for r in report.rows} <= set(ranked) and len(report.rows) == 12
    for row in report.rows:
        assert ranked[row.layer].rel_error == pytest.approx(row.rel_error, rel=1e-6, abs=1e-12)
        assert ranked[row.layer].input_rel_error == pytest.approx(row.input_rel_error, rel=1e-6, abs=1e-12)


def _batch(path, images):
    from dnet.converters.int8.calibration import read_folder
    from dnet.core.artifact.onnxfile import read_meta

    return read_folder(images, read_meta(onnx.load(str(path))).preprocess, 8, what="")
