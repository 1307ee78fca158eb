"""dnet.converters.convs and the export's ``convs`` metadata: every Conv node named by its DenseNet module."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from dnet.converters.convs import aligned, block_of, conv_sites, module_of_weight
from dnet.converters.export import _export_proto, conv_tensors
from dnet.converters.int8 import quantize
from dnet.converters.int8.calibration import CalibrationSet
from dnet.core.artifact.onnxfile import read_meta
from dnet.models import DenseNetConfig
from tests.helpers.images import photo_tiles
from tests.helpers.models import TINY_CONVS, tiny_model, tiny_onnx


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("convs"))


def _producers(proto):
    return {o: n for n in proto.graph.node for o in n.output}


def test_export_records_every_convolution_in_network_order(fp32):
    proto = onnx.load(str(fp32))
    convs = read_meta(proto).extra["convs"]
    assert list(convs) == TINY_CONVS
    producers = _producers(proto)
    assert all(producers[t].op_type == "Conv" for t in convs.values())
    assert len({*convs.values()}) == 12 == sum(n.op_type == "Conv" for n in proto.graph.node)


def test_names_from_the_weights_agree_with_the_recorded_ones(fp32):
    proto = onnx.load(str(fp32))
    recorded = read_meta(proto).extra["convs"]
    by_meta, by_weight = conv_sites(proto, recorded), conv_sites(proto)
    assert [s.name for s in by_meta] == [s.name for s in by_weight] == TINY_CONVS
    assert {s.name: s.output for s in by_weight} == recorded


@pytest.mark.parametrize("layout", ["densenet", "ort"])
def test_int8_files_name_the_float_conv_output_before_its_quantize(tmp_path, fp32, layout):
    out, _ = quantize.to_int8(fp32, tmp_path / "q.onnx", calib=CalibrationSet(images=photo_tiles(), count=12),
                               layout=layout, min_top1=0.0)  # random weights: near ties
    proto = onnx.load(str(out))
    producers = _producers(proto)
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for recorded in (read_meta(proto).extra["convs"], None):  # the inherited metadata, and none at all
        sites = conv_sites(proto, recorded)
        assert [s.name for s in sites] == TINY_CONVS
        for s in sites:
            after = [n.op_type for n in consumers[s.output]]
            if layout == "densenet" and s.name.endswith(".conv1"):  # its folded norm2's ReLU: Conv -> Relu -> Q
                assert after == ["Relu"]
                after = [n.op_type for n in consumers[consumers[s.output][0].output[0]]]
            assert producers[s.output].op_type == "Conv" and after == ["QuantizeLinear"]
            assert producers[s.input].op_type == "DequantizeLinear"
            # the CPU layout folds the transition's pool into its Conv (2×2 stride 2), the ort one keeps it
            assert s.folded == (layout == "densenet" and s.name.startswith("transition"))
    if layout == "densenet":  # its depthwise-Conv BatchNormalizations are no sites: the same 12 as the FP32 file's
        assert sum(n.op_type == "Conv" for n in proto.graph.node) > len(TINY_CONVS)


def test_imagenet_stem_conv0_carries_the_folded_norm0_and_is_still_named():
    config = DenseNetConfig(block_config=(1, 1), growth_rate=4, init_features=8, num_classes=5, stem="imagenet")
    model = tiny_model(config=config)
    proto = _export_proto(model, 64, 18)
    assert "BatchNormalization" not in [n.op_type for n in proto.graph.node][:3]  # conv0 + norm0 folded
    convs = conv_tensors(proto, model)
    assert list(convs) == ["conv0", "denseblock1.denselayer1.conv1", "denseblock1.denselayer1.conv2",
                           "transition1.conv", "denseblock2.denselayer1.conv1", "denseblock2.denselayer1.conv2"]


def test_weight_names_and_blocks():
    assert module_of_weight("features.denseblock3.denselayer7.conv2.weight_quantized") == "denseblock3.denselayer7.conv2"
    assert module_of_weight("features.transition2.conv.weight") == "transition2.conv"
    assert module_of_weight("features.denseblock1.denselayer2.conv1.weight_int8") == "denseblock1.denselayer2.conv1"
    assert module_of_weight("features.conv0.weight_DequantizeLinear_Output") == "conv0"
    assert module_of_weight("classifier.weight") is None and module_of_weight("onnx::Conv_501") is None
    assert module_of_weight("features.denseblock1.denselayer1.norm1.weight") is None
    assert [block_of(n) for n in ("conv0", "transition2.conv", "denseblock3.denselayer7.conv2", None)] == \
        ["stem", "transition2", "denseblock3", "stem"]


def _transition(folded: bool, qdq: bool) -> onnx.ModelProto:
    """A transition as an export writes it (Conv 1×1 -> [Q -> DQ] -> AveragePool 2×2) or folded (Conv 2×2 stride 2)."""
    h = onnx.helper
    w = onnx.numpy_helper.from_array(np.zeros((4, 8, 2, 2) if folded else (4, 8, 1, 1), "float32"),
                                     "features.transition1.conv.weight")
    if folded:
        nodes = [h.make_node("Conv", ["x", w.name], ["pooled"], kernel_shape=[2, 2], strides=[2, 2])]
    else:
        nodes = [h.make_node("Conv", ["x", w.name], ["c"], kernel_shape=[1, 1])]
        src = "c"
        if qdq:
            nodes += [h.make_node("QuantizeLinear", ["c", "s"], ["q"]), h.make_node("DequantizeLinear", ["q", "s"], ["d"])]
            src = "d"
        nodes.append(h.make_node("AveragePool", [src], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
    inits = [w, onnx.numpy_helper.from_array(np.float32(0.1), "s")]
    graph = h.make_graph(nodes, "t", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 4, 4])],
                         [h.make_tensor_value_info("pooled", onnx.TensorProto.FLOAT, None)], inits)
    return h.make_model(graph)


@pytest.mark.parametrize("qdq", [False, True])
def test_a_transition_folded_into_its_conv_pairs_with_the_unfolded_ones_pool_output(qdq):
    (plain,) = conv_sites(_transition(folded=False, qdq=qdq))
    (folded,) = conv_sites(_transition(folded=True, qdq=False))
    assert (plain.name, plain.output, plain.pooled, plain.folded) == ("transition1.conv", "c", "pooled", False)
    assert (folded.output, folded.pooled, folded.folded) == ("pooled", None, True)
    assert aligned(plain, folded) == (plain.__class__(0, "transition1.conv", "pooled", "x", "pooled", False), folded)
    assert aligned(folded, plain)[1].output == "pooled"  # either file may be the reference
    assert aligned(plain, plain) == (plain, plain)  # neither folded: each Conv's own output
