"""Rewrites of an INT8 graph for the CPU runtimes' kernels: a transition's pool folded into its convolution,
chained concatenations, and int8 activations stored as uint8 (ONNX Runtime's x86 kernels fuse u8×s8; its session
applies the same rewrite at load time to files that lack it).

Each function edits a ``ModelProto`` in place and returns how many nodes it rewrote.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from dnet.converters.graph import drop_unused_initializers, ints, readers_of, sort_topologically


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
    drop_unused_initializers(proto)
    return count


__all__ = ["chain_concats", "int8_activations_as_uint8", "pool_into_conv"]
