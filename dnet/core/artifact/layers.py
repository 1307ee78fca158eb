"""The layer information of a TensorRT plan (``NAME.plan.layers.json``) and its summary.

A plan built by dnet is built with ``ProfilingVerbosity.DETAILED``, and the build stores what TensorRT's
``IEngineInspector`` says about it (``get_engine_information(LayerInformationFormat.JSON)``, the file trtexec writes
with ``--exportLayerInfo``) beside the plan, unchanged: ``{"Layers": [...], "Bindings": [...]}`` (or a list of layers),
one dict per engine layer with ``Name``, ``LayerType``, ``Inputs``/``Outputs`` (each with ``Format/Datatype`` such as
``"Thirty-two wide channel vectorized row major Int8 format"``, or separate ``Format`` and ``Datatype`` keys), ``TacticName``/``TacticValue``, and in TensorRT 10+
``Metadata``: the ONNX nodes the layer computes, ``"[ONNX Layer: NAME]"`` joined by ``\\x1f``. Fused layers without
metadata name their ONNX nodes joined by ``" + "``.

:func:`summarise` counts layers per precision, ONNX nodes per precision (and per op type when the ONNX file is at
hand) and the reformat layers TensorRT inserted (the number that shows whether INT8 concatenations stayed in int8).
A layer's precision is that of its first input (as NVIDIA's trt-engine-explorer counts it), else of its first output.
Plain Python: it runs on any machine.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from dnet.core.atomic import atomic_write_text
from dnet.core.errors import FileFormatError

MAX_BYTES = 256 << 20  # DETAILED information of a DenseNet-264 is a few MB; refuse to parse a huge file as one
ONNX_PREFIX = "[ONNX Layer: "
METADATA_SEPARATOR = "\x1f"
# Words of TensorRT's "Format/Datatype" strings -> precision. Longer words first: "UInt8" before "Int8",
# "BFloat16" before "Float".
_PRECISIONS = (("bfloat16", "bf16"), ("uint8", "uint8"), ("int8", "int8"), ("fp8", "fp8"), ("fp16", "fp16"),
               ("half", "fp16"), ("fp32", "fp32"), ("float", "fp32"), ("int32", "int32"), ("int64", "int64"),
               ("bool", "bool"), ("fp4", "fp4"), ("int4", "int4"))


def layers_path(plan_path: str | Path) -> Path:
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".layers.json")


def tensor_precision(fmt: str) -> str:
    """``"Row major linear FP32"`` -> ``"fp32"``, ``"Channel major FP16 format where channel % 8 == 0"`` -> ``"fp16"``."""
    words = str(fmt).lower().replace(".", " ").split()
    for key, precision in _PRECISIONS:
        if key in words:
            return precision
    return "unknown"


@dataclass(frozen=True)
class Layer:
    name: str
    layer_type: str
    precision: str  # of the first input (else the first output)
    output_precision: str
    onnx_nodes: tuple[str, ...]
    reformat: bool  # a copy TensorRT inserted between two formats or precisions
    qdq: bool  # a quantize/dequantize TensorRT could not fuse into a neighbour
    tactic: str


def onnx_nodes(layer: dict) -> tuple[str, ...]:
    """The ONNX nodes a layer computes: from its metadata (TensorRT 10+), else from its fused name."""
    metadata = str(layer.get("Metadata") or "")
    if ONNX_PREFIX in metadata:
        nodes = []
        for token in metadata.split(METADATA_SEPARATOR):
            token = token.strip()
            if token.startswith(ONNX_PREFIX) and token.endswith("]"):
                nodes.append(token[len(ONNX_PREFIX):-1].split(" | ")[0])
        return tuple(nodes)
    name = str(layer.get("Name", ""))
    if name.startswith("Reformatting CopyNode"):
        return ()
    return tuple(part.strip() for part in name.split(" + ") if part.strip())


def _first_precision(tensors) -> str | None:
    for t in tensors if isinstance(tensors, list) else []:
        if not isinstance(t, dict):
            continue
        keys = {str(k).lower().replace(" ", ""): v for k, v in t.items()}
        # one "Format/Datatype" string, or separate "Format" and "Datatype" ("DataType") keys; the type decides
        for key in ("datatype", "format/datatype", "format"):
            if key in keys and (precision := tensor_precision(keys[key])) != "unknown":
                return precision
        if any(k in keys for k in ("datatype", "format/datatype", "format")):
            return "unknown"
    return None


def _layer_list(info) -> list:
    """The layers of the inspector's JSON: ``{"Layers": [...]}``, or a list of layers (list-rooted JSON)."""
    if isinstance(info, list) and len(info) == 1 and isinstance(info[0], dict) and "Layers" in info[0]:
        info = info[0]
    if isinstance(info, list):
        return info
    if isinstance(info, dict) and isinstance(info.get("Layers"), list):
        return info["Layers"]
    raise FileFormatError('not TensorRT engine information (no "Layers" list)')


def parse_layers(info: dict | list) -> list[Layer]:
    """The engine's layers from the inspector's JSON (a dict with "Layers", or a list of layers); a
    FileFormatError when it is not one."""
    out = []
    for raw in _layer_list(info):
        if isinstance(raw, str):  # built with ProfilingVerbosity.LAYER_NAMES_ONLY: names and nothing else
            raw = {"Name": raw}
        if not isinstance(raw, dict):
            raise FileFormatError(f"engine information: a layer is a {type(raw).__name__}, not an object")
        name = str(raw.get("Name", ""))
        inputs, outputs = raw.get("Inputs"), raw.get("Outputs")
        out_precision = _first_precision(outputs) or "unknown"
        origin = str(raw.get("Origin", "")).upper()
        reformat = origin == "REFORMAT" or name.startswith("Reformatting CopyNode")
        qdq = not reformat and (origin == "QDQ" or (str(raw.get("LayerType")) == "Reformat" and (
            "QuantizeLinear" in name or "DequantizeLinear" in name)))
        out.append(Layer(name=name, layer_type=str(raw.get("LayerType", "unknown")),
                         precision=_first_precision(inputs) or out_precision, output_precision=out_precision,
                         onnx_nodes=onnx_nodes(raw), reformat=reformat, qdq=qdq,
                         tactic=str(raw.get("TacticName") or raw.get("TacticValue") or "")))
    return out


def summarise(layers: list[Layer], onnx_ops: dict[str, str] | None = None) -> dict:
    """Counts for ``dnet inspect``: layers per precision and type, ONNX nodes per precision (and op type), reformats.

    ``onnx_ops`` maps the ONNX file's node names to op types; without it the op types are not counted.
    """
    by_precision = Counter(layer.precision for layer in layers)
    nodes: dict[str, str] = {}  # ONNX node -> the precision of the first layer that computes it
    for layer in layers:
        for node in layer.onnx_nodes:
            nodes.setdefault(node, layer.precision)
    by_op: dict[str, Counter] = defaultdict(Counter)
    if onnx_ops is not None:
        for node, precision in nodes.items():
            by_op[onnx_ops.get(node, "?")][precision] += 1
    reformats = [layer for layer in layers if layer.reformat]
    return {
        "layers": len(layers),
        "layers_by_precision": dict(sorted(by_precision.items())),
        "layer_types": dict(sorted(Counter(layer.layer_type for layer in layers).items())),
        "reformats": len(reformats),
        "reformats_by_conversion": dict(sorted(Counter(f"{r.precision}->{r.output_precision}" for r in reformats).items())),
        "qdq_layers": sum(layer.qdq for layer in layers),
        "onnx_nodes": len(nodes),
        "onnx_nodes_by_precision": dict(sorted(Counter(nodes.values()).items())),
        "onnx_nodes_by_op": {op: dict(sorted(c.items())) for op, c in sorted(by_op.items())},
    }


def precisions_by_layer(layers: list[Layer]) -> dict[str, str]:
    return {layer.name: layer.precision for layer in layers}


def write_layers(plan_path: str | Path, info_json: str) -> Path:
    """Write the inspector's JSON beside the plan, atomically; a FileFormatError (and no file) when it is not JSON."""
    try:
        info = json.loads(info_json)
    except json.JSONDecodeError as e:
        raise FileFormatError(f"TensorRT's engine information is not JSON ({e})") from None
    parse_layers(info)
    path = layers_path(plan_path)
    atomic_write_text(path, json.dumps(info, indent=1) + "\n")
    return path


def read_layers(plan_path: str | Path) -> list[Layer] | None:
    """The layers of ``NAME.plan.layers.json``; None when the file is absent, FileFormatError when it is corrupt."""
    path = layers_path(plan_path)
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_BYTES:
        raise FileFormatError(f"{path.name}: {path.stat().st_size} bytes is too large for engine layer information")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{path.name}: not valid JSON ({e})") from None
    try:
        return parse_layers(info)
    except FileFormatError as e:
        raise FileFormatError(f"{path.name}: {e}") from None


__all__ = ["Layer", "layers_path", "onnx_nodes", "parse_layers", "precisions_by_layer", "read_layers", "summarise",
           "tensor_precision", "write_layers"]
