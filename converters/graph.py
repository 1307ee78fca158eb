"""Graph surgery on ONNX models, used where precision and benchmarks rewrite a graph (never on the user's file).

Each function edits a ``ModelProto`` in place and returns what it did.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from dnet.errors import FileFormatError


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
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
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
    used = {i for n in proto.graph.node for i in n.input}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return count


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


__all__ = ["bn_to_mul_add", "sort_topologically", "unshare_initializers"]
