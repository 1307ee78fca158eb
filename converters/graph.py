"""Generic surgery on ONNX graphs: a valid node order, one initializer per reader, and the small readers the
rewrites share (integer attributes, the readers of each tensor). Never applied to the user's file.

Each function edits a ``ModelProto`` in place and returns what it did.
"""

from __future__ import annotations

import onnx

from dnet.core.errors import FileFormatError


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


def drop_unused_initializers(proto: onnx.ModelProto) -> None:
    """Remove the initializers no node reads (after a rewrite replaced their readers)."""
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


__all__ = ["drop_unused_initializers", "ints", "readers_of", "sort_topologically", "unshare_initializers"]
