"""BatchNormalization rewritten as what computes it: Mul/Add for export, a 1×1 depthwise convolution for the
integer kernels of the INT8 files.

Each function edits a ``ModelProto`` in place and returns how many nodes it rewrote.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from dnet.converters.graph import drop_unused_initializers


def _bn_affine(node: onnx.NodeProto, inits: dict) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel (scale, shift) an inference BatchNormalization computes: y = scale·x + shift."""
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:5])
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def bn_to_mul_add(proto: onnx.ModelProto) -> int:
    """Rewrite every inference BatchNormalization as a per-channel Mul and Add (returns how many).

    DenseNet's BNs that follow a concatenation (pre-activation) cannot fold into a convolution; exporters fold
    the others. Measured (benchmarks/inference_cpu.py --muladd, densenet121, ONNX Runtime 1.31 CPU, 2 threads): Mul/Add ran
    at 0.90-0.94× the speed of BatchNormalization, which ONNX Runtime fuses into its NCHWc convolutions; so
    "batchnorm" is the default and this rewrite an option.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    new_nodes, count = [], 0
    for node in proto.graph.node:
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not all(i in inits for i in node.input[1:5]):
            new_nodes.append(node)
            continue
        scale, shift = _bn_affine(node, inits)
        s_name, b_name = f"{node.name}_scale", f"{node.name}_shift"
        proto.graph.initializer.extend([
            numpy_helper.from_array(scale.astype(np.float32).reshape(1, -1, 1, 1), s_name),
            numpy_helper.from_array(shift.astype(np.float32).reshape(1, -1, 1, 1), b_name),
        ])
        mid = f"{node.output[0]}_scaled"
        new_nodes.append(onnx.helper.make_node("Mul", [node.input[0], s_name], [mid], name=f"{node.name}_mul"))
        new_nodes.append(onnx.helper.make_node("Add", [mid, b_name], [node.output[0]], name=f"{node.name}_add"))
        new_nodes[-1].metadata_props.extend(node.metadata_props)
        count += 1
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    drop_unused_initializers(proto)
    return count


# The weight of a BatchNormalization rewritten as a depthwise Conv ends so (dnet.converters.convs tells such a Conv,
# which is no convolution of the model, from the model's own).
BN_WEIGHT_SUFFIX = "_dw_weight"


def bn_to_depthwise_conv(proto: onnx.ModelProto) -> int:
    """Rewrite every inference BatchNormalization as the 1×1 depthwise Conv that computes it (returns how many).

    The INT8 layout quantizes it like any convolution: one weight per channel is exact in int8 (q = ±qmax and
    a per-channel scale), so a pre-activation BN runs as an integer convolution between two int8 tensors.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    count = 0
    for node in proto.graph.node:
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not all(i in inits for i in node.input[1:5]):
            continue
        scale, shift = _bn_affine(node, inits)
        w_name, b_name = f"{node.name}{BN_WEIGHT_SUFFIX}", f"{node.name}_dw_bias"
        proto.graph.initializer.extend([
            numpy_helper.from_array(scale.astype(np.float32).reshape(-1, 1, 1, 1), w_name),
            numpy_helper.from_array(shift.astype(np.float32), b_name),
        ])
        x = node.input[0]
        node.op_type = "Conv"
        del node.input[:]
        node.input.extend([x, w_name, b_name])
        del node.attribute[:]
        node.attribute.extend([onnx.helper.make_attribute("group", len(scale)),
                               onnx.helper.make_attribute("kernel_shape", [1, 1])])
        count += 1
    drop_unused_initializers(proto)
    return count


__all__ = ["BN_WEIGHT_SUFFIX", "bn_to_depthwise_conv", "bn_to_mul_add"]
