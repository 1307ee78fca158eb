"""Where a lower-precision ONNX file departs from its FP32 file: per-stage outputs and the INT8 check.

Stage tensors (each dense block's and transition's output) are named in a dnet export's metadata
(``extra.stages``); a Q/DQ rewrite keeps them as float tensors, so the same names read the same stages in both
files. ``dnet compare`` and the check every INT8 conversion runs (:func:`check_int8`) read them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dnet.artifact.onnxfile import read_meta, read_model
from dnet.engines.onnxruntime import session
from dnet.errors import AccuracyError, UsageError
from dnet.similarity import cosine, top1_agreement

LOGITS = "logits"
# The INT8 check's defaults, on held-out images, in the file's own arithmetic (Q/DQ unfused: what TensorRT
# computes). Trained DenseNets land well inside them (digits DenseNet-BC: cosine ≥ 0.999, agreement 100%); a
# wrong scale or a clipped block gives cosines below 0.9. Random-weight models have near-tied logits: their
# top-1 agreement means little (the benchmarks pass 0).
INT8_MIN_COSINE = 0.99
INT8_MIN_TOP1 = 0.95
INT8_CHECK_IMAGES = 64
CHUNK = 16  # images per run: bounds the memory of a large model's stage outputs


@dataclass(frozen=True)
class StageAgreement:
    stage: str
    cosine: float


def stage_names(proto: onnx.ModelProto) -> dict[str, str]:
    """Stage -> tensor name, for the stages the metadata names and the graph still computes."""
    meta = read_meta(proto)
    stages = dict((meta.extra.get("stages") or {}) if meta is not None else {})
    produced = {o for n in proto.graph.node for o in n.output}
    return {s: t for s, t in stages.items() if t in produced}


def stage_outputs(model: str | os.PathLike | onnx.ModelProto, batch: np.ndarray, *, fused: bool = True,
                  stages: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Per-stage outputs (network order) and the logits of an ONNX model on ``batch``, from one run.

    ``stages`` (stage -> tensor) defaults to the model's own metadata; a private copy of the graph gets them as
    outputs, so the file is never changed.
    """
    proto = read_model(model) if not isinstance(model, onnx.ModelProto) else model
    private = onnx.ModelProto()
    private.CopyFrom(proto)
    stages = stage_names(private) if stages is None else stages
    if stages:
        inferred = onnx.shape_inference.infer_shapes(private)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
        for tensor in stages.values():
            private.graph.output.append(
                onnx.helper.make_tensor_value_info(tensor, types.get(tensor, onnx.TensorProto.FLOAT), None))
    sess = session(private, fused=fused)
    inp = sess.get_inputs()[0]
    feed = batch.astype(np.float16) if inp.type == "tensor(float16)" else batch
    names = [private.graph.output[0].name, *stages.values()]
    chunks = [sess.run(names, {inp.name: feed[i:i + CHUNK]}) for i in range(0, len(feed), CHUNK)]
    results = [np.concatenate([np.asarray(c[k], np.float32) for c in chunks]) for k in range(len(names))]
    return {**dict(zip(stages, results[1:], strict=True)), LOGITS: results[0]}


def first_divergence(rows: list[StageAgreement], bound: float) -> StageAgreement | None:
    """The first stage whose cosine falls below ``bound``; else the stage that lost the most (None: no stages)."""
    below = [r for r in rows if r.cosine < bound]
    if below:
        return below[0]
    drops = [(rows[i - 1].cosine - r.cosine if i else 1.0 - r.cosine, r) for i, r in enumerate(rows)]
    return max(drops, key=lambda d: d[0])[1] if drops else None


def check_int8(fp32: str | os.PathLike, int8: str | os.PathLike, images: np.ndarray, *,
               min_cosine: float = INT8_MIN_COSINE, min_top1: float = INT8_MIN_TOP1) -> dict:
    """Compare ``int8`` with ``fp32`` on ``images`` in the INT8 file's own arithmetic; AccuracyError below a bound.

    Returns the logits' cosine and top-1 agreement and each stage's cosine. The refusal names the first dense
    block or transition whose output falls below the cosine bound (or, when only the logits do, the stage that
    lost the most), with every stage's cosine.
    """
    if not 0.0 <= min_cosine <= 1.0:
        raise UsageError(f"the INT8 cosine bound must be within [0, 1], got {min_cosine}", option="int8_min_cosine")
    if not 0.0 <= min_top1 <= 1.0:
        raise UsageError(f"the INT8 top-1 agreement bound must be within [0, 1], got {min_top1}",
                         option="int8_min_top1")
    fp32_proto = read_model(fp32)
    stages = stage_names(fp32_proto)
    ref = stage_outputs(fp32_proto, images, stages=stages)
    got = stage_outputs(Path(int8), images, fused=False, stages={s: t for s, t in stages.items()})
    rows = [StageAgreement(s, cosine(ref[s], got[s])) for s in stages if s in got]
    result = {"images": len(images), "arithmetic": "the file's Q/DQ (unfused, as TensorRT computes it)",
              "cosine": cosine(ref[LOGITS], got[LOGITS]), "top1_agreement": top1_agreement(ref[LOGITS], got[LOGITS]),
              "stages": {r.stage: r.cosine for r in rows}, "min_cosine": min_cosine, "min_top1": min_top1}
    if result["cosine"] < min_cosine or result["top1_agreement"] < min_top1:
        first = first_divergence(rows, min_cosine)
        where = (f"; the divergence first appears at {first.stage} (cosine {first.cosine:.4f}; "
                 + ", ".join(f"{r.stage} {r.cosine:.4f}" for r in rows) + ")") if first is not None else ""
        raise AccuracyError(
            f"INT8 check failed on {len(images)} held-out images: top-1 agreement with FP32 {result['top1_agreement']:.1%} "
            f"(bound {min_top1:.0%}), cosine {result['cosine']:.4f} (bound {min_cosine}){where}; no INT8 file was "
            "written (calibrate on more or other images or with another calibration method, or lower the bounds)")
    return result


# --- per layer ----------------------------------------------------------------------------------------------

LAYER_CHUNK = 8  # images per run when every layer's input and output are taken (a DenseNet-121: ~60 MB an image)


@dataclass(frozen=True)
class LayerDivergence:
    """One layer of an INT8 file against the FP32 file: relative L2 error of its float output and of its input."""

    layer: str
    rel_error: float
    input_rel_error: float

    @property
    def added(self) -> float:
        """The relative error the layer adds to that of the input it was fed (what ranks its sensitivity)."""
        return self.rel_error - self.input_rel_error

    def to_dict(self) -> dict:
        return {"layer": self.layer, "rel_error": self.rel_error, "input_rel_error": self.input_rel_error,
                "added": self.added}


def _taps(proto: onnx.ModelProto, layers: list[str], outputs: dict[str, str]) -> tuple[onnx.ModelProto, list[str]]:
    """A private copy of ``proto`` whose outputs add, per layer, the tensor its node reads and the one it writes."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    private = onnx.ModelProto()
    private.CopyFrom(proto)
    graph_inputs = {i.name for i in proto.graph.input}
    names = []
    for layer in layers:
        node = producer[outputs[layer]]
        names += [node.input[0], node.output[0]]
    for t in dict.fromkeys(names):
        if t not in graph_inputs and t not in {o.name for o in private.graph.output}:
            private.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return private, names


def layer_divergence(fp32: onnx.ModelProto, int8: onnx.ModelProto, layers: dict[str, str],
                     images: np.ndarray) -> list[LayerDivergence]:
    """Each layer of ``int8`` against ``fp32`` on ``images``, most error added first (network order breaks ties).

    ``layers`` maps a layer's name to the float tensor its node writes, the same name in both graphs (what the Q/DQ
    rewrite keeps; dnet.converters.int8.placement.layers). Measured once, in the INT8 file's own arithmetic (unfused): each
    layer is fed its own file's input, so a layer's ``added`` error is its own weights' and output's rounding, not
    its predecessors'. The same measure as ``dnet compare --per-layer``.
    """
    names = list(layers)
    (ref_proto, ref_t), (got_proto, got_t) = _taps(fp32, names, layers), _taps(int8, names, layers)
    ref_sess, got_sess = session(ref_proto, fused=False), session(got_proto, fused=False)
    sums = np.zeros((len(names), 2, 2))  # layer, (input, output), (|ref|², |Δ|²)
    for start in range(0, len(images), LAYER_CHUNK):
        feed = images[start:start + LAYER_CHUNK]
        values = []
        for sess, taps in ((ref_sess, ref_t), (got_sess, got_t)):
            inp = sess.get_inputs()[0].name
            wanted = [t for t in dict.fromkeys(taps) if t != inp]
            got = dict(zip(wanted, sess.run(wanted, {inp: feed}), strict=True))
            got[inp] = feed
            values.append([np.asarray(got[t], np.float64) for t in taps])
        for k in range(len(names)):
            for side in (0, 1):
                a, b = values[0][2 * k + side], values[1][2 * k + side]
                sums[k, side] += (np.sum(a * a), np.sum((b - a) ** 2))
    rel = np.sqrt(sums[..., 1]) / np.maximum(np.sqrt(sums[..., 0]), 1e-30)
    rows = [LayerDivergence(n, float(rel[k, 1]), float(rel[k, 0])) for k, n in enumerate(names)]
    order = sorted(range(len(rows)), key=lambda k: (-rows[k].added, k))
    return [rows[k] for k in order]
