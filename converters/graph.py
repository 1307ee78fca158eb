"""Graph surgery on ONNX models, used where precision and benchmarks rewrite a graph (never on the user's file).

Each function edits a ``ModelProto`` in place and returns what it did.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from dnet.core.errors import FileFormatError


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
    _drop_unused_initializers(proto)
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
    _drop_unused_initializers(proto)
    return count


def ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    """A node's integer-list attribute, or ``default`` when it has none."""
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def readers_of(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor -> the nodes that read it, in graph order."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    return readers


def pool_into_conv(proto: onnx.ModelProto) -> int:
    """Fold each ``Conv 1×1 -> AveragePool k×k stride k`` (a transition) into one ``Conv k×k stride k`` (returns how
    many).

    Averaging a 1×1 convolution's output over k×k windows is the k×k convolution whose weights are the 1×1 weights
    divided by k² at every tap (both are linear; the bias passes through), so the values are the same and the
    pooled tensor is never written at full resolution. The folded weight keeps the 1×1 weight's name (the layer's
    name, dnet.converters.convs) and the pool's output name (its calibrated range).
    """
    inits = {t.name: t for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    readers = readers_of(proto)
    drop, count = [], 0
    for pool in proto.graph.node:
        conv = producer.get(pool.input[0]) if pool.op_type == "AveragePool" else None
        if conv is None or conv.op_type != "Conv" or len(readers.get(conv.output[0], [])) != 1 or conv.input[1] not in inits:
            continue
        k = ints(pool, "kernel_shape", [])
        if (len(k) != 2 or k[0] != k[1] or ints(pool, "strides", [1, 1]) != k or any(ints(pool, "pads", [0] * 4))
                or any(a.name == "ceil_mode" and a.i for a in pool.attribute) or any(ints(conv, "pads", [0] * 4))
                or ints(conv, "kernel_shape", [1, 1]) != [1, 1] or ints(conv, "strides", [1, 1]) != [1, 1]
                or ints(conv, "dilations", [1, 1]) != [1, 1]
                or any(a.name == "group" and a.i != 1 for a in conv.attribute)):
            continue
        w = numpy_helper.to_array(inits[conv.input[1]])
        folded = np.repeat(np.repeat(w / np.float32(k[0] * k[1]), k[0], axis=2), k[1], axis=3).astype(w.dtype)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(folded, conv.input[1]))
        keep = [a for a in conv.attribute if a.name not in ("kernel_shape", "strides", "pads")]
        del conv.attribute[:]
        conv.attribute.extend([*keep, onnx.helper.make_attribute("kernel_shape", k),
                               onnx.helper.make_attribute("strides", k)])
        conv.output[0] = pool.output[0]
        drop.append(pool)
        count += 1
    for pool in drop:
        proto.graph.node.remove(pool)
    return count


def chain_concats(proto: onnx.ModelProto) -> int:
    """Concat(x0..xn) -> Concat(Concat(x0..xn-1), xn) wherever the shorter Concat exists (same axis; returns how many).

    A DenseNet export concatenates every earlier feature map afresh for each layer; chained, every feature map
    and every concatenation feeds one later Concat, and the values are the same.
    """
    concats = [n for n in proto.graph.node if n.op_type == "Concat"]
    axis = {n.output[0]: next((a.i for a in n.attribute if a.name == "axis"), None) for n in concats}
    by_inputs: dict[tuple[str, ...], onnx.NodeProto] = {}
    for n in concats:
        by_inputs.setdefault(tuple(n.input), n)
    found = [(n, by_inputs.get(tuple(n.input[:-1])) if len(n.input) > 2 else None) for n in concats]
    count = 0
    for n, prev in found:
        if prev is None or axis[prev.output[0]] != axis[n.output[0]]:
            continue
        last = n.input[-1]
        del n.input[:]
        n.input.extend([prev.output[0], last])
        count += 1
    sort_topologically(proto)
    return count


def int8_activations_as_uint8(proto: onnx.ModelProto) -> int:
    """Give every int8 activation Q/DQ pair a uint8 zero point 128 higher, computing the same (returns tensors).

    Q_uint8(x, s, z + 128) = Q_int8(x, s, z) + 128 and DQ_uint8(q + 128, s, z + 128) = DQ_int8(q, s, z), bit for
    bit. ONNX Runtime's x86 integer kernels are u8×s8 and fuse int8 activations only after its own int8 -> uint8
    pass, which converts a QuantizeLinear only where it feeds a single DequantizeLinear; every DenseNet feature map
    feeds two consumers (its layer's BN and the next concatenation), so that pass leaves them int8 and the
    convolutions unfused. This does the same conversion for every tensor whose consumers are all
    DequantizeLinear nodes; weights (a DequantizeLinear of an initializer) stay int8.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    consumers = readers_of(proto)

    def scalar_int8(name: str) -> bool:
        t = inits.get(name)
        return t is not None and t.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(t).size == 1

    shifted: dict[str, str] = {}

    def uint8_zero_point(name: str) -> str:
        if name not in shifted:
            value = int(numpy_helper.to_array(inits[name]).reshape(())) + 128
            shifted[name] = f"{name}_as_uint8"
            proto.graph.initializer.append(numpy_helper.from_array(np.array(value, np.uint8), shifted[name]))
        return shifted[name]

    count = 0
    for q in [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]:
        users = consumers.get(q.output[0], [])
        nodes = [q, *users]
        if (not users or len(q.input) < 3 or any(u.op_type != "DequantizeLinear" for u in users)
                or not all(len(n.input) >= 3 and scalar_int8(n.input[2]) for n in nodes)
                or q.output[0] in {o.name for o in proto.graph.output}):
            continue
        for n in nodes:
            n.input[2] = uint8_zero_point(n.input[2])
        count += 1
    _drop_unused_initializers(proto)
    return count


def _drop_unused_initializers(proto: onnx.ModelProto) -> None:
    used = {i for n in proto.graph.node for i in n.input}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def sort_topologically(proto: onnx.ModelProto) -> None:
    """Order the graph's nodes so every input is produced before it is used (the checker demands it).

    Graph rewriters (the float16 converter) append their Cast nodes at the end; this restores a valid order,
    keeping the original order among nodes that are already ready (a stable Kahn sort).
    """
    graph = proto.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise FileFormatError(f"the graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def unshare_initializers(proto: onnx.ModelProto) -> int:
    """Give every node its own copy of an initializer that several nodes read (returns copies made).

    The exporter deduplicates equal constants (e.g. the γ = 1 of freshly initialised BNs); graph rewriters that
    insert a Cast per (node, input) name their new tensors after the input, and collide on shared ones.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name}_{i}"
                proto.graph.initializer.append(copy)
                node.input[i] = copy.name
                copies += 1
            else:
                seen.add(name)
    return copies


__all__ = ["bn_to_depthwise_conv", "bn_to_mul_add", "chain_concats", "int8_activations_as_uint8", "ints",
           "pool_into_conv", "readers_of", "sort_topologically", "unshare_initializers"]
