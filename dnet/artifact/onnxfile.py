"""ONNX files as dnet reads and writes them: one clear error for a bad file, and the ``dnet.*`` metadata.

Every graph dnet writes has one input ``input`` (float32 N×3×H×W, N dynamic) and one output ``logits``; its
``metadata_props`` carry the model's :class:`~dnet.artifact.meta.ArtifactMeta`. Reading a file never loads
external data (dnet writes self-contained files and refuses others).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from dnet.artifact.meta import PREFIX, ArtifactMeta
from dnet.errors import FileFormatError

INPUT = "input"
OUTPUT = "logits"


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file with the project's errors; external-data files are refused (dnet writes none)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends carry no common base worth naming
        raise FileFormatError(f"{path}: not a readable ONNX file ({type(e).__name__}: {str(e)[:120]})") from None
    if not proto.graph.node:
        raise FileFormatError(f"{path}: not a readable ONNX file (the graph has no nodes)")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise FileFormatError(f"{path}: tensor {t.name!r} is stored in an external file; dnet reads self-contained ONNX files")
    return proto


def read_meta(proto: onnx.ModelProto) -> ArtifactMeta | None:
    """The dnet metadata of an ONNX model, or None for a file dnet did not write."""
    return ArtifactMeta.from_strings({p.key: p.value for p in proto.metadata_props})


def write_meta(proto: onnx.ModelProto, meta: ArtifactMeta | None) -> None:
    """Replace the ``dnet.*`` metadata_props of ``proto`` with ``meta`` (other keys are kept); None leaves them."""
    if meta is None:
        return
    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for k, v in keep + sorted(meta.to_strings().items()):
        proto.metadata_props.add(key=k, value=v)


def check_graph(proto: onnx.ModelProto, what: str) -> None:
    """The ONNX checker, with its complaint as one line of the project's errors (``what`` names the graph)."""
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as e:
        raise FileFormatError(f"ONNX checker refused the {what}: {str(e).strip().splitlines()[0]}") from None


def input_dims(proto: onnx.ModelProto, name: str | None = None) -> tuple[int, ...]:
    """The dimensions of graph input ``name`` (default: the first), -1 where one is not a fixed number; () when
    there is no such input."""
    value = next((v for v in proto.graph.input if name is None or v.name == name), None)
    if value is None:
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                 for d in value.type.tensor_type.shape.dim)


def input_size_of(proto: onnx.ModelProto) -> int | None:
    """H of the graph's first input when it is static and square, else None."""
    dims = input_dims(proto)
    if len(dims) == 4 and dims[2] > 0 and dims[2] == dims[3]:
        return int(dims[2])
    return None


__all__ = ["INPUT", "OUTPUT", "check_graph", "input_dims", "input_size_of", "read_meta", "read_model", "write_meta"]
