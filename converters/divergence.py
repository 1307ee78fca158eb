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
            "written (calibrate on more or other images, try the percentile calibration method, or lower the bounds)")
    return result
