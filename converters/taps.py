"""Tensors taken from inside an ONNX file: each stage's output, and every layer's input and output.

A private copy of the graph gets the wanted tensors as extra outputs; the file the user ships is never changed.
Stage tensors (each dense block's and transition's output) are named in a dnet export's metadata
(``extra.stages``); a Q/DQ rewrite keeps them as float tensors, so the same names read the same stages in both files.
A layer is a :class:`dnet.converters.convs.ConvSite`: the tensor its node reads and the float tensor it writes.
``dnet compare`` (stages, and ``--per-layer``) and the INT8 check and its per-layer ranking
(``dnet.converters.int8.divergence``) all read them here, in runs of :data:`CHUNK` images, into :class:`LayerRow`\\s.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from dnet.converters.convs import ConvSite, aligned, block_of
from dnet.core.artifact.onnxfile import read_meta, read_model
from dnet.core.errors import UsageError, runtime_failure
from dnet.engines.onnxruntime import session

LOGITS = "logits"
# Images per ONNX Runtime run when tensors are taken: a DenseNet-121 keeps about 60 MB of layer tensors per image
# and file, and about 6 MB of stage tensors.
CHUNK = 8


def stage_names(proto: onnx.ModelProto) -> dict[str, str]:
    """Stage -> tensor name, for the stages the metadata names and the graph still computes."""
    meta = read_meta(proto)
    stages = dict((meta.extra.get("stages") or {}) if meta is not None else {})
    produced = {o for n in proto.graph.node for o in n.output}
    return {s: t for s, t in stages.items() if t in produced}


def _types(proto: onnx.ModelProto) -> dict[str, int]:
    """Element type of every inferred intermediate tensor (a tensor taken as an output must say its type)."""
    return {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(proto).graph.value_info}


def _feed(sess, batch: np.ndarray) -> tuple[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    return inp.name, batch.astype(np.float16) if inp.type == "tensor(float16)" else batch


def stage_outputs(model: str | os.PathLike | onnx.ModelProto, batch: np.ndarray, *, fused: bool = True,
                  stages: dict[str, str] | None = None, name: str = "the model") -> dict[str, np.ndarray]:
    """Per-stage outputs (network order) and the logits (float32) of an ONNX model on ``batch``.

    ``stages`` (stage -> tensor) defaults to the model's own metadata. ``name`` names the model when ONNX Runtime
    fails (a path names itself).
    """
    proto = read_model(model) if not isinstance(model, onnx.ModelProto) else model
    name = os.path.basename(model) if not isinstance(model, onnx.ModelProto) else name
    private = onnx.ModelProto()
    private.CopyFrom(proto)
    stages = stage_names(private) if stages is None else stages
    if stages:
        types = _types(private)
        for tensor in stages.values():
            private.graph.output.append(
                onnx.helper.make_tensor_value_info(tensor, types.get(tensor, onnx.TensorProto.FLOAT), None))
    sess = session(private, fused=fused)
    input_name, feed = _feed(sess, batch)
    names = [private.graph.output[0].name, *stages.values()]
    chunks = []
    for start in range(0, len(feed), CHUNK):
        try:
            chunks.append(sess.run(names, {input_name: feed[start:start + CHUNK]}))
        except Exception as e:  # noqa: BLE001 (ORT's own error types)
            raise runtime_failure(name, "ONNX Runtime", e, len(feed[start:start + CHUNK])) from None
    results = [np.concatenate([np.asarray(c[k], np.float32) for c in chunks]) for k in range(len(names))]
    return {**dict(zip(stages, results[1:], strict=True)), LOGITS: results[0]}


# --- per layer ----------------------------------------------------------------------------------------------


class Running:
    """``rel_l2``, ``cosine`` and ``max_abs`` of :mod:`dnet.core.similarity`, summed over chunks of a batch (float64)."""

    def __init__(self) -> None:
        self.ref2 = self.got2 = self.dot = self.diff2 = self.max = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        a, b = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
        d = b - a
        self.ref2, self.got2, self.dot, self.diff2 = self.ref2 + a @ a, self.got2 + b @ b, self.dot + a @ b, self.diff2 + d @ d
        self.max = max(self.max, float(np.max(np.abs(d)))) if d.size else self.max

    def rel(self) -> float:
        return float(np.sqrt(self.diff2) / max(np.sqrt(self.ref2), 1e-30))

    def cosine(self) -> float:
        return float(self.dot / max(np.sqrt(self.ref2) * np.sqrt(self.got2), 1e-30))


@dataclass(frozen=True)
class LayerRow:
    """One layer: its float output in OTHER against REF's, and the same for the input it reads."""

    depth: int  # 1-based, REF's network order
    layer: str  # "denseblock3.denselayer7.conv2"
    block: str  # "stem", "denseblock3", "transition2"
    shape: tuple[int, ...]
    rel_error: float  # of the layer's float output
    cosine: float
    max_abs: float
    input_rel_error: float  # of the tensor the layer reads (in a Q/DQ file: after its DequantizeLinear)
    ref_tensor: str  # the ONNX tensors compared
    other_tensor: str

    @property
    def added(self) -> float:
        """The relative error the layer adds to the relative error of its input (what ranks its sensitivity)."""
        return self.rel_error - self.input_rel_error

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "added": self.added}


def _dequantizers(proto: onnx.ModelProto, tensors: set[str]) -> dict[str, tuple[str, np.float32, np.int32]]:
    """For each of ``tensors`` written by a per-tensor DequantizeLinear: (its int8 input, scale, zero point)."""
    inits = {t.name: t for t in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in tensors or node.input[1] not in inits:
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        zero = onnx.numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else np.zeros(())
        if scale.size == 1 and zero.size == 1 and scale.dtype == np.float32:
            out[node.output[0]] = (node.input[0], np.float32(scale.item()), np.int32(zero.item()))
    return out


class Tapped:
    """A private copy of an ONNX model whose every site's input and output are graph outputs."""

    def __init__(self, proto: onnx.ModelProto, sites: list[ConvSite], name: str, *, fused: bool,
                 optimized_model_path: str | os.PathLike | None = None) -> None:
        self.name, self.sites = name, sites
        self.graph_inputs = {i.name for i in proto.graph.input}
        self.logits = proto.graph.output[0].name
        # A layer's input in a Q/DQ file is a DequantizeLinear's output; taking it as a graph output would make ONNX
        # Runtime duplicate that DequantizeLinear, so the int8 tensor before it is taken and dequantized here.
        self.dequantize = _dequantizers(proto, {s.input for s in sites})
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        present = {o.name for o in copy.graph.output}
        # a pool's output too: the other file may have folded that pool into the convolution (convs.aligned)
        wanted = [t for s in sites for t in (self.dequantize[s.input][0] if s.input in self.dequantize else s.input,
                                             s.output, *([s.pooled] if s.pooled else []))]
        self.taps = [t for t in dict.fromkeys(wanted) if t not in self.graph_inputs and t not in present]
        types = _types(proto)
        for t in self.taps:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None))
        self.copy = session(copy, fused=fused, optimized_model_path=optimized_model_path)
        inp = self.copy.get_inputs()[0]
        self.input_name, self.fp16 = inp.name, inp.type == "tensor(float16)"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The copy's logits, and every tapped tensor (float32)."""
        feed = {self.input_name: batch.astype(np.float16) if self.fp16 else batch}
        results = self.copy.run([self.logits, *self.taps], feed)
        raw = dict(zip(self.taps, results[1:], strict=True))
        values = {t: np.asarray(v, np.float32) for t, v in raw.items()}
        for tensor, (source, scale, zero) in self.dequantize.items():
            values[tensor] = (raw[source].astype(np.int32) - zero).astype(np.float32) * scale
        values.update({t: np.asarray(feed[self.input_name], np.float32) for t in self.graph_inputs})
        values[self.logits] = np.asarray(results[0], np.float32)  # the classifier's output is the graph's
        return values[self.logits], values


def layer_rows(a: Tapped, b: Tapped, pairs: list[tuple[str, ConvSite, ConvSite]], batch: np.ndarray
               ) -> tuple[tuple[LayerRow, ...], np.ndarray, np.ndarray]:
    """A row per (name, REF's site, OTHER's site) in ``pairs`` on ``batch``, and the logits of each (``Tapped.run``).

    A transition whose pool one file folded into its convolution is compared at the pool's output (convs.aligned)."""
    pairs = [(name, *aligned(r, o)) for name, r, o in pairs]
    outs, ins = [Running() for _ in pairs], [Running() for _ in pairs]
    shapes: list[tuple[int, ...]] = []
    logits_a, logits_b = [], []
    for start in range(0, len(batch), CHUNK):
        chunk = batch[start:start + CHUNK]
        (la, ta), (lb, tb) = a.run(chunk), b.run(chunk)
        logits_a.append(la)
        logits_b.append(lb)
        for i, (name, r, o) in enumerate(pairs):
            if ta[r.output].shape != tb[o.output].shape:
                raise UsageError(f"{name}: {a.name} gives shape {ta[r.output].shape}, {b.name} "
                                 f"{tb[o.output].shape}; not the same model")
            outs[i].add(ta[r.output], tb[o.output])
            ins[i].add(ta[r.input], tb[o.input])
            if start == 0:
                shapes.append((len(batch), *ta[r.output].shape[1:]))
    rows = tuple(LayerRow(i + 1, name, block_of(name), shapes[i], outs[i].rel(), outs[i].cosine(), outs[i].max,
                          ins[i].rel(), r.output, o.output) for i, (name, r, o) in enumerate(pairs))
    return rows, np.concatenate(logits_a), np.concatenate(logits_b)


__all__ = ["CHUNK", "LOGITS", "LayerRow", "Running", "Tapped", "layer_rows", "stage_names", "stage_outputs"]
