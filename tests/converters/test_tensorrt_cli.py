"""``dnet inspect NAME.plan`` and ``dnet bench --per-layer / --cuda-graph`` on the CPU, through the stand-in tensorrt.

The plan is built by ``build_plan`` with the stand-in (tests/helpers/tensorrt_standins.py), whose inspector returns
layer information in TensorRT's JSON format and whose execution context reports layer times to a profiler.
"""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
from click.testing import CliRunner

import dnet.converters.tensorrt as ct
import dnet.engines.tensorrt as et
from dnet.cli.main import main
from dnet.converters.tensorrt import BuildOptions, build_plan
from dnet.core.artifact.layers import layers_path
from tests.helpers.tensorrt_standins import ENGINE_LAYERS, engine_info_onnx, fake_cuda_graphs, fake_tensorrt, stub_onnx


def dnet(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def plan(tmp_path, monkeypatch):
    """m.plan built from m.int8.onnx by the stand-in, openable on the CPU; its profile is the stand-in engine's."""
    import torch

    trt = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for module in (ct, et):
        monkeypatch.setattr(module, "cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    monkeypatch.setattr(et, "DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0, synchronize=lambda: None))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: __import__("contextlib").nullcontext())
    path = build_plan(engine_info_onnx(tmp_path / "m.int8.onnx"), tmp_path / "m.plan", BuildOptions(profile=(2, 3, 4)))
    return types.SimpleNamespace(path=path, trt=trt)


INSPECT_TABLES = """\
precision  engine layers  ONNX nodes
---------  -------------  ----------
fp32                   4           4
int8                   4           6
total                  8          10
reformat layers: 1 (int8->fp32 1); Q/DQ layers not fused into a neighbour: 1
ONNX op             fp32  int8
------------------  ----  ----
BatchNormalization     0     1
Concat                 1     0
Conv                   0     2
DequantizeLinear       0     1
Gemm                   1     0
QuantizeLinear         1     1
ReduceMean             1     0
Relu                   0     1
"""


def test_inspect_plan_summarises_layers_and_onnx_nodes_per_precision(plan):
    result = dnet("inspect", plan.path)
    assert result.exit_code == 0, result.output
    first, rest = result.output.split("\n", 1)
    assert re.fullmatch(r"m\.plan: custom \(INT8\), TensorRT 10\.16\.1\.11, NVIDIA A10 \(compute capability 8\.6\), "
                        r"batch 2,3,4 of 3×4×4, built from m\.int8\.onnx in [0-9.e-]+ s", first)
    assert rest == INSPECT_TABLES


def test_inspect_plan_json_carries_the_sidecar_and_the_summary(plan):
    data = json.loads(dnet("inspect", plan.path, "--json").output)
    assert data["sidecar"]["tensorrt_version"] == "10.16.1.11" and data["note"] is None
    summary = data["layers"]
    assert (summary["layers"], summary["reformats"], summary["qdq_layers"]) == (8, 1, 1)
    assert summary["layers_by_precision"] == {"fp32": 4, "int8": 4}
    assert summary["onnx_nodes_by_op"]["Conv"] == {"int8": 2} and summary["onnx_nodes_by_op"]["Concat"] == {"fp32": 1}


def test_inspect_plan_without_its_onnx_or_layers_says_what_is_missing(plan):
    plan = plan.path
    plan.with_name("m.int8.onnx").unlink()
    result = dnet("inspect", plan)
    assert result.output.endswith("m.int8.onnx is not beside the plan: ONNX op types not counted\n")
    assert "BatchNormalization" not in result.output and "total                  8          10" in result.output
    layers_path(plan).unlink()
    result = dnet("inspect", plan)
    assert result.exit_code == 0
    assert result.output.split("\n")[1:] == [
        "no layer information: m.plan.layers.json is missing (rebuild the plan with dnet convert --to trt to store it)",
        ""]


def test_inspect_refuses_a_corrupt_layers_file_and_t7_options_for_a_plan(plan):
    plan = plan.path
    layers_path(plan).write_text('{"Layers": 7}')
    result = dnet("inspect", plan)
    assert (result.exit_code, result.output) == (
        1, "dnet: error: m.plan.layers.json: not TensorRT engine information (no \"Layers\" list)\n")
    result = dnet("inspect", plan, "--check")
    assert (result.exit_code, result.output) == (2, "dnet: error: --check and --long-size are for .t7 files\n")


def test_bench_per_layer_reports_tensorrt_s_layer_times_with_their_precisions(plan):
    result = dnet("bench", plan.path, "--batch-sizes", "2", "--warmup", "0", "--duration", "0.01", "--per-layer",
                  "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["batch"] for r in data["results"]] == [2]
    rows = data["per_layer"]
    assert [(r["layer"], r["ms"]) for r in rows] == [(name, 0.5 * (i + 1)) for i, name in enumerate(ENGINE_LAYERS)]
    assert [r["precision"] for r in rows] == ["fp32", "int8", "int8", "int8", "int8", "fp32", "fp32", "fp32"]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_bench_per_layer_table_follows_the_latency_table(plan):
    result = dnet("bench", plan.path, "--batch-sizes", "2", "--warmup", "0", "--duration", "0.01", "--per-layer")
    assert result.exit_code == 0, result.output
    tail = result.output.split("\n\n", 1)[1].splitlines()
    assert tail[0] == ("m.plan, batch 2: per-layer times (TensorRT profiler, mean of 10 runs; profiled layers run one "
                       "by one, so they add up to more than the latency)")
    assert tail[3].split() == ["node_Conv_179_input_QuantizeLinear", "fp32", "0.500", "2.8%"]  # 0.5 of 18 ms


def test_bench_cuda_graph_replays_the_plan(plan, monkeypatch):
    with fake_cuda_graphs(monkeypatch, plan.trt) as graphs:
        result = dnet("bench", plan.path, "--batch-sizes", "2,3", "--warmup", "0", "--duration", "0.01",
                      "--cuda-graph", "--json")
    assert result.exit_code == 0, result.output
    assert [r["batch"] for r in json.loads(result.output)] == [2, 3]
    assert len(graphs) == 2  # one capture per batch size
    assert all(len(g.ops) == 1 for g in graphs)


def test_cuda_graph_and_per_layer_refuse_engines_that_are_not_plans(plan, tmp_path):
    onnx_file = stub_onnx(tmp_path / "other.onnx")
    for flag, what in (("--cuda-graph", "CUDA graphs"), ("--per-layer", "per-layer times")):
        result = dnet("bench", plan.path, onnx_file, "--batch-sizes", "2", flag)
        assert (result.exit_code, result.output) == (
            2, f"dnet: error: {what} are for TensorRT .plan engines, not other.onnx (onnxruntime) ({flag})\n")
