"""The module tree of a ``.t7`` file as plain rows and dicts: what ``dnet inspect`` shows.

Modules are walked through their ``modules`` lists only (``nn.DenseConnectLayerCustom``'s ``net1``/``net2``
fields are copies of its ``modules``). Each node lists its non-empty tensors (gradients and forward buffers
aside, counted in the summary) and the settings that decide what it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dnet.formats.t7.reader import Storage, Table, TorchObject

SETTINGS = ("nInputPlane", "nOutputPlane", "kW", "kH", "dW", "dH", "padW", "padH", "groups", "eps", "affine", "p",
            "v2", "dimension", "nInputDims", "ceil_mode", "count_include_pad", "nelement", "numElements", "inplace")
BUFFERS = ("output", "gradInput", "finput", "fgradInput", "save_mean", "save_std", "_input", "_gradOutput")

_DTYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "uint8": "Byte", "int8": "Char",
                "int16": "Short", "int32": "Int", "int64": "Long"}


@dataclass
class Node:
    path: str
    cls: str
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # name -> (kind, shape)
    settings: dict[str, object] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "class": self.cls,
            "tensors": {k: {"type": t, "shape": list(s)} for k, (t, s) in self.tensors.items()},
            "settings": self.settings, "children": [c.to_dict() for c in self.children],
        }


def tensor_kind(a: np.ndarray) -> str:
    return _DTYPE_NAMES.get(str(a.dtype), str(a.dtype)) + "Tensor"


def _describe(v: object) -> str:
    if isinstance(v, TorchObject):
        return v.typename
    if isinstance(v, np.ndarray):
        return tensor_kind(v)
    if isinstance(v, Storage):
        return v.typename
    if isinstance(v, dict):
        return "table"
    return type(v).__name__


_FIRST = ("weight", "bias", "running_mean", "running_var", "running_std")


def _order(name: str) -> tuple[int, str]:
    if name in _FIRST:
        return _FIRST.index(name), ""
    if name in SETTINGS:
        return len(_FIRST) + SETTINGS.index(name), ""
    return len(_FIRST) + len(SETTINGS), name


def module_tree(obj: object, path: str = "model", _seen: set[int] | None = None) -> Node:
    """The tree of ``obj`` (as the reader returns it); shared or cyclic modules are shown once."""
    seen = _seen if _seen is not None else set()
    node = Node(path, _describe(obj))
    if isinstance(obj, np.ndarray):
        node.tensors["(tensor)"] = (tensor_kind(obj), tuple(obj.shape))
        return node
    fields = obj.fields if isinstance(obj, TorchObject) else obj if isinstance(obj, dict) else None
    if not isinstance(fields, dict) or id(obj) in seen:
        return node
    seen.add(id(obj))
    for k, v in sorted(fields.items(), key=lambda kv: _order(str(kv[0]))):
        name = str(k)
        if isinstance(v, np.ndarray) and v.size and name not in BUFFERS and not name.startswith("grad"):
            node.tensors[name] = (tensor_kind(v), tuple(v.shape))
        elif name in SETTINGS and isinstance(v, bool | int | float | str):
            node.settings[name] = v
    mods = fields.get("modules")
    items = mods.as_list() if isinstance(mods, Table) else None
    for i, m in enumerate(items or [], 1):
        node.children.append(module_tree(m, f"{path}.modules[{i}]", seen))
    return node


@dataclass
class Totals:
    modules: int = 0
    parameters: int = 0  # elements of every weight and bias
    tensors: int = 0


def totals(node: Node) -> Totals:
    t = Totals()

    def walk(n: Node) -> None:
        t.modules += 1
        for name, (_, shape) in n.tensors.items():
            t.tensors += 1
            if name in ("weight", "bias"):
                t.parameters += int(np.prod(shape)) if shape else 0
        for c in n.children:
            walk(c)

    walk(node)
    return t


def rows(node: Node, depth: int = 0) -> list[tuple[str, str, str, str]]:
    """(indented name, class, tensors, settings) for each node, depth first."""
    name = "  " * depth + (node.path.rsplit(".", 1)[-1] if depth else node.path)
    tensors = ", ".join(f"{k} {'×'.join(map(str, s))}" for k, (_, s) in node.tensors.items())
    settings = " ".join(f"{k}={v}" for k, v in node.settings.items())
    out = [(name, node.cls, tensors, settings)]
    for c in node.children:
        out += rows(c, depth + 1)
    return out
