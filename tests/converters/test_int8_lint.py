"""The TensorRT INT8 lint (dnet.converters.int8.lint): each rule on a small graph that follows it and one that breaks
it, onnxruntime.quantization's QDQ file, dnet's DenseNet layout, and ``dnet inspect``."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from dnet.cli.main import main
from dnet.converters.int8 import placement as qdq
from dnet.converters.int8.lint import FIRST, RULES, lint
from tests.helpers.models import TINY, tiny_onnx

S = 0.1  # the activation scale of the small graphs


def build(breaks: str | None = None) -> onnx.ModelProto:
    """x(32 ch) -> Q/DQ -> Conv 1×1 -> Relu -> Q/DQ -> Concat(·, x) -> Q/DQ -> grouped Conv (group size 4) -> y.

    Clean for every rule; ``breaks`` names the one rule the graph then breaks, once (zero-point: a Q and its DQ).
    """
    c1 = 16 if breaks == "concat-offset-32" else 32  # Concat offsets 0, c1
    cat = c1 + 32
    groups = cat if breaks == "grouped-conv-int8" else cat // 4
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq_pair(x, y, scale=S, zp=np.int8(0), axis=None):
        s, z = const(f"{y}_s", np.asarray(scale, np.float32)), const(f"{y}_z", np.asarray(zp))
        kw = {} if axis is None else {"axis": axis}
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{y}_q"], name=f"{y}_Q", **kw))
        nodes.append(helper.make_node("DequantizeLinear", [f"{y}_q", s, z], [y], name=f"{y}_DQ", **kw))

    def weight(name, shape, peak=127, axis=0):
        rng = np.random.default_rng(len(inits))
        q = rng.integers(-peak, peak + 1, shape).astype(np.int8)
        q.reshape(shape[0], -1)[:, 0] = peak  # every channel reaches the peak
        const(f"{name}_q", q)
        const(f"{name}_s", np.full(shape[axis], 0.01, np.float32))
        const(f"{name}_z", np.zeros(shape[axis], np.int8))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name],
                                      name=f"{name}_DQ", axis=axis))
        return name

    zp = np.uint8(128) if breaks == "zero-point" else np.int8(0)
    qdq_pair("x", "xd", zp=zp)
    w1 = weight("w1", (c1, 32, 1, 1), peak=63 if breaks == "weights-7-bit" else 127,
                axis=1 if breaks == "weight-axis" else 0)
    nodes.append(helper.make_node("Conv", ["xd", w1], ["c1"], name="conv1"))
    if breaks == "qdq-splits-conv-activation":
        qdq_pair("c1", "c1d")
        nodes.append(helper.make_node("Relu", ["c1d"], ["r1"], name="relu1"))
    else:
        nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    qdq_pair("r1", "a", scale=2 * S if breaks == "concat-scales" else S)
    nodes.append(helper.make_node("Concat", ["a", "xd"], ["cat"], name="concat", axis=1))
    qdq_pair("cat", "catd")
    w2 = weight("w2", (cat, cat // groups, 1, 1))
    conv2 = ["catd", w2]
    if breaks == "qdq-type":  # an int32 bias behind a DequantizeLinear, as onnxruntime.quantization writes
        const("b_q", np.zeros(cat, np.int32))
        const("b_s", np.full(cat, 1e-3, np.float32))
        const("b_z", np.zeros(cat, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"], name="bias_DQ", axis=0))
        conv2.append("b")
    nodes.append(helper.make_node("Conv", conv2, ["c2"], name="conv2", group=groups))
    out = "c2"
    if breaks == "quantized-output":
        qdq_pair("c2", "c2d")
        out = "c2d"
    if breaks == "unsupported-op":
        nodes.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["dq_y", "dq_s", "dq_z"], name="dynamic"))
    if breaks == "per-channel-activation":
        nodes.append(helper.make_node("QuantizeLinear", ["r1", const("pc_s", np.full(c1, S, np.float32)),
                                                         const("pc_z", np.zeros(c1, np.int8))], ["pc"],
                                      name="per_channel_Q", axis=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 4, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, cat, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model, full_check=True)
    return model


NODES = {"grouped-conv-int8": ("conv2",), "qdq-splits-conv-activation": ("conv1",), "concat-scales": ("concat",),
         "quantized-output": ("c2d",), "zero-point": ("xd_Q", "xd_DQ"), "qdq-type": ("bias_DQ",),
         "unsupported-op": ("dynamic (DynamicQuantizeLinear)",), "per-channel-activation": ("per_channel_Q",),
         "weight-axis": ("conv1",), "weights-7-bit": ("conv1",), "concat-offset-32": ("concat",)}


def test_every_rule_has_a_graph_that_breaks_it():
    assert set(NODES) == {r.id for r in RULES}


def test_the_clean_graph_follows_every_rule():
    result = lint(build())
    assert result.quantized and result.counts() == {} and result.errors == 0
    assert [f.rule for f in result.findings] == [r.id for r in RULES]


@pytest.mark.parametrize("rule", list(NODES))
def test_a_graph_that_breaks_one_rule_is_found_by_that_rule_alone(rule):
    model = build(rule)
    before = model.SerializeToString()
    result = lint(model)
    assert result.counts() == {rule: len(NODES[rule])}
    assert result[rule].nodes == NODES[rule]
    assert model.SerializeToString() == before  # the file is only read


def test_a_finding_keeps_the_first_node_names_and_counts_all():
    model = build("unsupported-op")
    extra = [helper.make_node("DynamicQuantizeLinear", ["x"], [f"d{i}", f"s{i}", f"z{i}"], name=f"dyn{i}")
             for i in range(FIRST + 2)]
    model.graph.node.extend(extra)
    found = lint(model)["unsupported-op"]
    assert found.count == FIRST + 3 and len(found.nodes) == FIRST
    assert found.to_dict()["source"].startswith("onnx/onnx-tensorrt docs/operators.md")


def test_a_quantize_without_zero_point_is_uint8_and_refused():
    model = build()
    q = next(n for n in model.graph.node if n.name == "a_Q")
    del q.input[2]
    assert lint(model)["zero-point"].nodes == ("a_Q",)


# -- onnxruntime.quantization's QDQ format on the tiny DenseNet export


class _Reader:
    def __init__(self, count: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self.batches, None)


def _ort_quantized(tmp_path, **extra):
    quantization = pytest.importorskip("onnxruntime.quantization")
    fp32 = tiny_onnx(tmp_path)
    out = tmp_path / f"ort{len(extra)}.int8.onnx"
    quantization.quantize_static(str(fp32), str(out), _Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QUInt8 if not extra
                                 else quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8, per_channel=True, extra_options=extra)
    return out, onnx.load(str(out))


def test_onnxruntime_default_qdq_has_uint8_zero_points_int32_biases_and_per_tensor_concat_scales(tmp_path):
    _, model = _ort_quantized(tmp_path)
    result = lint(model)
    quantizes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    concats = [n for n in model.graph.node if n.op_type == "Concat"]
    # every activation QuantizeLinear and its DequantizeLinear have a uint8 zero point
    assert result["zero-point"].count == 2 * len(quantizes) > 0
    int32 = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT32}
    biases = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]
    assert result["qdq-type"].count == len(biases) > 0
    assert result["concat-scales"].count == len(concats) == sum(TINY.block_config)  # one scale per tensor
    assert result["quantized-output"].nodes == ("logits",)
    assert result["grouped-conv-int8"].count == result["weights-7-bit"].count == result["unsupported-op"].count == 0


def test_onnxruntime_symmetric_int8_without_bias_quantization_has_no_zero_point_error(tmp_path):
    path, model = _ort_quantized(tmp_path, ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False)
    result = lint(model)
    assert result["zero-point"].count == result["qdq-type"].count == 0
    # its Q/DQ sits between each bottleneck conv1 and its ReLU: one per dense layer
    assert result["qdq-splits-conv-activation"].count == sum(TINY.block_config)
    del model.metadata_props[:]  # as another tool's file: no dnet metadata
    onnx.save(model, str(path))
    shown = CliRunner().invoke(main, ["inspect", str(path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"{path.name}: an ONNX file without dnet metadata"
    assert lines[1] == (f"TensorRT INT8 rules (no TensorRT needed): {result.errors} errors, "
                        f"{sum(result.counts('warning').values())} warnings")
    (split,) = [ln for ln in lines if "qdq-splits-conv-activation" in ln]
    assert split.split()[:3] == ["warning", "qdq-splits-conv-activation", f"{sum(TINY.block_config)}:"]
    assert result["qdq-splits-conv-activation"].nodes[0] in split
    data = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)
    assert data["tensorrt_lint"] == json.loads(json.dumps(result.to_dict()))


# -- dnet's DenseNet layout (converters/qdq.py): what TensorRT's rules say of it


def _dense_counts(config) -> dict[str, int]:
    """What the DenseNet layout must break, from the configuration alone."""
    layers, blocks = sum(config.block_config), len(config.block_config)
    pre_activation_bns = layers + (blocks - 1) + 1  # each layer's norm1, each transition's norm, norm5
    per_layer = 2 if config.bottleneck else 1  # conv1 (+ conv2): each ReLU after a convolution
    convs = 1 + layers * per_layer + (blocks - 1) + pre_activation_bns  # conv0, layers, transitions, the BNs
    unaligned, channels = 0, config.init_features
    for b, n in enumerate(config.block_config):
        unaligned += sum((channels + j * config.growth_rate) % 32 != 0 for j in range(n))  # Concat(C(j), x_j+1)
        channels += n * config.growth_rate
        if b < blocks - 1:
            channels = math.floor(channels * config.compression)
    return {"grouped-conv-int8": pre_activation_bns, "qdq-splits-conv-activation": layers * per_layer + blocks - 1,
            "weights-7-bit": convs + 1, "concat-offset-32": unaligned}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return onnx.load(str(tiny_onnx(tmp_path_factory.mktemp("lint"))))


def _layout(proto, **kw):
    proto = copy.deepcopy(proto)
    names = [i.name for i in proto.graph.input] + [o for n in proto.graph.node for o in n.output]
    qdq.densenet_layout(proto, dict.fromkeys(names, (-1.0, 1.0)), **kw)  # the rules are about structure, not ranges
    return proto


def _uint8_zero_points(proto) -> int:
    """Q/DQ nodes whose zero point is a uint8 tensor (the CPU layout's activations, stored as uint8 + 128)."""
    uint8 = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.UINT8}
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in uint8
               for n in proto.graph.node)


def test_dnets_cpu_layout_breaks_the_depthwise_bn_conv_and_zero_point_rules_once_per_layer(fp32):
    expected = _dense_counts(TINY)
    assert expected["grouped-conv-int8"] == sum(n.op_type == "BatchNormalization" for n in fp32.graph.node)
    cpu = _layout(fp32, target="cpu")
    zero_points = _uint8_zero_points(cpu)
    assert zero_points > 0
    # Conv -> Relu -> Q(uint8, zero point 0): no Q/DQ pair splits a convolution from its ReLU any more (the rule
    # itself is checked on onnxruntime.quantization's and hand-made files above)
    eight_bit = {**{k: v for k, v in expected.items() if k not in ("weights-7-bit", "qdq-splits-conv-activation")},
                 "zero-point": zero_points}
    result = lint(cpu)  # the CPU file's default: 8-bit weights
    assert result.counts() == eight_bit
    assert result.errors == expected["grouped-conv-int8"] + zero_points
    assert lint(_layout(fp32, target="cpu", weight_bits=7)).counts() == {**eight_bit, "weights-7-bit": expected["weights-7-bit"]}


def test_dnets_tensorrt_layout_breaks_no_tensorrt_rule(fp32):
    result = lint(_layout(fp32, target="tensorrt"))
    assert result.errors == 0 and result.warnings == 0
    assert result.counts() == {"concat-offset-32": _dense_counts(TINY)["concat-offset-32"]}  # information only


def test_the_fp32_file_is_not_quantized(fp32):
    result = lint(fp32)
    assert not result.quantized and result.counts() == {}
