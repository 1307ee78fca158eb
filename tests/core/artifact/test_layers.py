"""dnet.core.artifact.layers: TensorRT's engine information (IEngineInspector JSON) read, summarised and stored."""

from __future__ import annotations

import json

import pytest

from dnet.core.artifact.layers import (
    layers_path,
    onnx_nodes,
    parse_layers,
    read_layers,
    summarise,
    tensor_precision,
    write_layers,
)
from dnet.core.errors import FileFormatError
from tests.helpers.tensorrt_standins import ENGINE_INFO


@pytest.mark.parametrize("fmt, precision", [
    ("Row major linear FP32", "fp32"),
    ("Row major Int8 format", "int8"),
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
    ("Four wide channel vectorized row major Int8 format", "int8"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Two wide channel vectorized row major FP16 format", "fp16"),
    ("Row major linear UInt8 format", "uint8"),
    ("Row major linear BFloat16 format", "bf16"),
    ("Float", "fp32"),  # Myelin layers name the type alone
    ("Half", "fp16"),
    ("Row major linear Int32", "int32"),
    ("Unknown format", "unknown"),
])
def test_tensor_precision_reads_tensorrt_s_format_strings(fmt, precision):
    assert tensor_precision(fmt) == precision


def test_onnx_nodes_come_from_metadata_else_from_the_fused_name():
    assert onnx_nodes({"Name": "x", "Metadata": "[ONNX Layer: /a/Conv]\x1f[ONNX Layer: /a/Relu | f (MyFunc)]"}) == (
        "/a/Conv", "/a/Relu")
    assert onnx_nodes({"Name": "conv1.weight + QuantizeLinear_7 + Conv_9"}) == (
        "conv1.weight", "QuantizeLinear_7", "Conv_9")
    assert onnx_nodes({"Name": "Reformatting CopyNode for Input Tensor 0 to Conv_5"}) == ()


def test_layers_built_with_layer_names_only_are_names_without_precision():
    layers = parse_layers({"Layers": ["Conv_0 + Relu_1", "Reformatting CopyNode for Output Tensor 0 to Gemm"]})
    assert [(layer.onnx_nodes, layer.precision, layer.reformat) for layer in layers] == [
        (("Conv_0", "Relu_1"), "unknown", False), ((), "unknown", True)]


def test_summary_of_the_standin_engine():
    s = summarise(parse_layers(ENGINE_INFO))
    assert (s["layers"], s["reformats"], s["qdq_layers"], s["onnx_nodes"]) == (8, 1, 1, 10)
    assert s["layers_by_precision"] == {"fp32": 4, "int8": 4}
    assert s["onnx_nodes_by_precision"] == {"fp32": 4, "int8": 6}
    assert s["reformats_by_conversion"] == {"int8->fp32": 1}
    assert s["onnx_nodes_by_op"] == {}  # no ONNX file given: op types not counted


def test_write_layers_is_atomic_and_refuses_what_is_not_engine_information(tmp_path):
    plan = tmp_path / "m.plan"
    assert write_layers(plan, json.dumps(ENGINE_INFO)) == layers_path(plan) == tmp_path / "m.plan.layers.json"
    assert [layer.name for layer in read_layers(plan)] == [layer["Name"] for layer in ENGINE_INFO["Layers"]]
    for bad, message in (("{not json", "TensorRT's engine information is not JSON"),
                         ('{"Bindings": []}', 'not TensorRT engine information \\(no "Layers" list\\)')):
        with pytest.raises(FileFormatError, match=message):
            write_layers(tmp_path / "n.plan", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan.layers.json"]


def test_read_layers_absent_corrupt_and_huge(tmp_path, monkeypatch):
    plan = tmp_path / "m.plan"
    assert read_layers(plan) is None
    layers_path(plan).write_text("[1, 2")
    with pytest.raises(FileFormatError, match=r"^m\.plan\.layers\.json: not valid JSON"):
        read_layers(plan)
    layers_path(plan).write_text('{"Layers": [3]}')
    with pytest.raises(FileFormatError, match=r"^m\.plan\.layers\.json: engine information: a layer is a int, not an object$"):
        read_layers(plan)
    monkeypatch.setattr("dnet.core.artifact.layers.MAX_BYTES", 4)
    with pytest.raises(FileFormatError, match=r"^m\.plan\.layers\.json: 15 bytes is too large"):
        read_layers(plan)


def _split_keys(info: dict) -> list:
    """ENGINE_INFO as a list of layers whose tensors carry separate "Format" and "Datatype" keys."""
    words = {"int8": "Int8", "fp32": "Float", "fp16": "Half"}
    layers = json.loads(json.dumps(info["Layers"]))
    for layer in layers:
        for t in layer.get("Inputs", []) + layer.get("Outputs", []):
            precision = tensor_precision(t.pop("Format/Datatype"))
            t.update(Format="Row major linear", Datatype=words[precision])
    return layers


def test_list_rooted_json_with_separate_format_and_datatype_keys_reads_the_same():
    converted = _split_keys(ENGINE_INFO)
    assert all("Format/Datatype" not in json.dumps(layer) for layer in converted)
    expected = summarise(parse_layers(ENGINE_INFO))
    assert summarise(parse_layers(converted)) == expected
    assert summarise(parse_layers([{"Layers": converted, "Bindings": []}])) == expected
    # the Datatype decides even when the Format names none; a format TensorRT names alone still counts
    (layer,) = parse_layers([{"Name": "c", "Inputs": [{"Format": "Channel major format", "Datatype": "Int8"}],
                              "Outputs": [{"Format": "Row major linear FP16 format"}]}])
    assert (layer.precision, layer.output_precision) == ("int8", "fp16")
