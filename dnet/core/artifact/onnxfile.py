"""ONNX files as dnet reads and writes them: one clear error for a bad file, and the ``dnet.*`` metadata.

Every graph dnet writes has one input ``input`` (float32 N×3×H×W, N dynamic) and one output ``logits``; its
``metadata_props`` carry the model's :class:`~dnet.core.artifact.meta.ArtifactMeta`. Reading a file never loads
external data (dnet writes self-contained files and refuses others). :func:`read_model` checks, once, what every
verb relies on (:func:`check_interface`): one image input N×3×H×W, one N×classes output, metadata that agrees
with them, and initializers whose dimensions agree with the data they hold, so a file that is not an image
classifier is one line here rather than an ONNX Runtime traceback later.
"""

from __future__ import annotations

import dataclasses
import math
import os

import onnx

from dnet.core.artifact.meta import CLASSIFIER, PREFIX, ArtifactMeta, check_classifier_shapes, warn_once
from dnet.core.errors import FileFormatError, UsageError
from dnet.core.outputs import check_input_file

INPUT = "input"
OUTPUT = "logits"
T = onnx.TensorProto
FLOATS = {T.FLOAT: "float32", T.FLOAT16: "float16"}
# bytes per element of raw_data, and the typed field that holds the values otherwise (ONNX's onnx.proto3)
_BITS = {T.FLOAT: 32, T.UINT8: 8, T.INT8: 8, T.UINT16: 16, T.INT16: 16, T.INT32: 32, T.INT64: 64, T.BOOL: 8,
         T.FLOAT16: 16, T.DOUBLE: 64, T.UINT32: 32, T.UINT64: 64, T.COMPLEX64: 64, T.COMPLEX128: 128, T.BFLOAT16: 16,
         T.FLOAT8E4M3FN: 8, T.FLOAT8E4M3FNUZ: 8, T.FLOAT8E5M2: 8, T.FLOAT8E5M2FNUZ: 8, T.UINT4: 4, T.INT4: 4}
_FIELD = {T.FLOAT: "float_data", T.COMPLEX64: "float_data", T.INT64: "int64_data", T.DOUBLE: "double_data",
          T.COMPLEX128: "double_data", T.UINT32: "uint64_data", T.UINT64: "uint64_data", T.STRING: "string_data"}


def read_model(path: str | os.PathLike, *, classifier: bool = True) -> onnx.ModelProto:
    """Load an ONNX file with the project's errors; external-data files are refused (dnet writes none).

    ``classifier`` (the default) also checks the interface every verb relies on (:func:`check_interface`).
    """
    path = check_input_file(path, "ONNX file")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends carry no common base worth naming
        raise FileFormatError(f"{path}: not a readable ONNX file ({type(e).__name__}: {str(e)[:120]})") from None
    if not proto.graph.node:
        raise FileFormatError(f"{path}: not a readable ONNX file (the graph has no nodes)")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise FileFormatError(f"{path}: tensor {t.name!r} is stored in an external file; dnet reads self-contained ONNX files")
    if (field := _not_text(proto)) is not None:
        raise FileFormatError(f"{path}: not a readable ONNX file (a {field} that is not UTF-8 text)")
    check_tensors(proto, str(path))
    if classifier:
        check_interface(proto, str(path))
    return proto


def _not_text(msg) -> str | None:
    """The name of the first string field holding bytes that are not UTF-8 (protobuf hands them over as bytes;
    ONNX Runtime would fail on them inside its own error handling), or None."""
    for fd, value in msg.ListFields():
        if fd.type not in (fd.TYPE_STRING, fd.TYPE_MESSAGE):
            continue
        for v in value if fd.is_repeated else (value,):
            if fd.type == fd.TYPE_STRING:
                if isinstance(v, bytes):
                    return fd.name
            elif (inner := _not_text(v)) is not None:
                return inner
    return None


def _tensor_problem(t: onnx.TensorProto) -> str | None:
    """Why the dimensions of ``t`` do not agree with the data it holds, or None."""
    if any(d < 0 for d in t.dims):
        return f"negative dimensions {list(t.dims)}"
    numel = math.prod(t.dims)
    if t.data_type == T.STRING:
        held, want = len(t.string_data), {numel}
    elif t.data_type not in _BITS:
        return f"unknown element type {t.data_type}"
    else:
        typed = len(getattr(t, _FIELD.get(t.data_type, "int32_data")))
        if t.raw_data or not typed:
            held, want = len(t.raw_data), {(numel * _BITS[t.data_type] + 7) // 8}
        elif t.data_type in (T.UINT4, T.INT4):
            held, want = typed, {numel, (numel + 1) // 2}
        else:
            held, want = typed, {numel * (2 if t.data_type in (T.COMPLEX64, T.COMPLEX128) else 1)}
    if held not in want:
        return f"dimensions {list(t.dims)} need {min(want):,} values, it holds {held:,}"
    return None


def check_tensors(proto: onnx.ModelProto, name: str) -> None:
    """Every initializer (and Constant value) holds as much data as its dimensions say: a header that claims
    gigabytes over a few bytes of data is refused before ONNX Runtime allocates it."""
    tensors = [(t, f"initializer {t.name!r}") for t in proto.graph.initializer]
    tensors += [(a.t, f"constant of node {n.name or n.op_type!r}") for n in proto.graph.node
                for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t, what in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise FileFormatError(f"{name}: {what} is stored in an external file; dnet reads self-contained ONNX files")
        problem = _tensor_problem(t)
        if problem:
            raise FileFormatError(f"{name}: {what} is corrupt: {problem}")


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    """Dimensions of a graph input or output (-1 where not a fixed number), None when no shape is recorded."""
    tt = value.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim)


def check_interface(proto: onnx.ModelProto, name: str) -> None:
    """One float image input N×3×H×W and one float N×classes output, agreeing with the dnet metadata if any."""
    initialized = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initialized]
    outputs = list(proto.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise FileFormatError(f"{name}: {CLASSIFIER}; this file has {len(inputs)} inputs "
                              f"({', '.join(v.name for v in inputs[:4])}) and {len(outputs)} outputs")
    inp, out = inputs[0], outputs[0]
    for v, role in ((inp, "input"), (out, "output")):
        if not v.type.HasField("tensor_type") or v.type.tensor_type.elem_type not in FLOATS:
            raise FileFormatError(f"{name}: {CLASSIFIER}; its {role} {v.name!r} is not a float32 or float16 tensor")
    check_classifier_shapes(name, _dims(inp), _dims(out), read_meta(proto, name), input_label=f"input {inp.name!r}",
                            output_label=f"output {out.name!r}")


def read_meta(proto: onnx.ModelProto, name: str | None = None) -> ArtifactMeta | None:
    """The dnet metadata of an ONNX model, or None for a file dnet did not write; refused in one line (starting
    with ``name``, the file's, when given) when it is malformed or a key appears twice (which copy would win?)."""
    keys = [p.key for p in proto.metadata_props]
    twice = sorted({k for k in keys if k.startswith(PREFIX) and keys.count(k) > 1})
    if twice:
        raise FileFormatError(f"{name + ': ' if name else ''}metadata key {twice[0]} appears {keys.count(twice[0])} "
                              "times; dnet writes each once, so this file was edited: refused")
    meta = ArtifactMeta.from_strings({p.key: p.value for p in proto.metadata_props}, name)
    quantized = quantized_ops(proto)
    if meta is not None and meta.precision != "int8" and quantized:
        # a file quantized by another tool (onnxruntime.quantization, ModelOpt) keeps dnet's "fp32": the graph wins
        warn_once(os.path.basename(name or ""), f"{name or 'this ONNX file'}: metadata key dnet.precision says {meta.precision} but the graph is "
                   f"quantized ({', '.join(quantized[:3])} nodes); taken as int8")
        meta = dataclasses.replace(meta, precision="int8")
    return meta


QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearConcat")


def quantized_ops(proto: onnx.ModelProto) -> list[str]:
    """The quantization operators the graph uses (sorted), empty for a float graph."""
    return sorted({n.op_type for n in proto.graph.node if n.op_type in QUANTIZED_OPS})


def classifier_features(proto: onnx.ModelProto) -> int | None:
    """Channels entering the graph's classifier: the weight of the Gemm or MatMul that makes its output (through a
    Cast, a bias Add or a DequantizeLinear), or None for a graph that ends otherwise."""
    if not proto.graph.output:
        return None
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: t for t in proto.graph.initializer}
    node = producers.get(proto.graph.output[0].name)
    for _ in range(4):
        if node is None or node.op_type in ("Gemm", "MatMul"):
            break
        if node.op_type not in ("Cast", "Identity", "Add"):
            return None
        node = next((producers[i] for i in node.input if i in producers), None)
    if node is None or node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
        return None
    weight = node.input[1]
    for _ in range(2):  # an INT8 weight is dequantized first, an FP16 one may be cast
        src = producers.get(weight)
        if src is not None and src.op_type in ("DequantizeLinear", "Cast") and src.input:
            weight = src.input[0]
    t = inits.get(weight)
    if t is None or len(t.dims) != 2:
        return None
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    return int(t.dims[1] if transposed else t.dims[0])


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


def check_asked_size(proto: onnx.ModelProto, meta: ArtifactMeta | None, name: str, asked: int | None) -> None:
    """An ``--input-size`` given for an ONNX source must be the size the file takes: converting an ONNX file keeps
    its graph's input (fixed in the graph, else what its metadata says), so another size would be ignored."""
    fixed = input_size_of(proto)
    size, why = (fixed, "fixed in its graph") if fixed else (meta.input_size if meta else None, "its metadata says")
    if asked is not None and size is not None and asked != size:
        raise UsageError(f"{name} takes {size}×{size} inputs ({why}); --input-size {asked} contradicts it: converting "
                         f"an ONNX file keeps its input size (export the model at {asked}×{asked} from its "
                         "checkpoint instead)")


__all__ = ["INPUT", "OUTPUT", "check_asked_size", "check_graph", "classifier_features", "input_dims", "input_size_of", "quantized_ops", "read_meta", "read_model",
           "warn_once", "write_meta"]
