"""Where a lower-precision ONNX file departs from its FP32 file: the INT8 check, and each layer's divergence.

Both read the tensors inside the two files through :mod:`dnet.converters.taps` (the stage outputs a dnet export
names, and every layer's input and output), as ``dnet compare`` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dnet.converters.convs import ConvSite, site
from dnet.converters.graph import readers_of
from dnet.converters.taps import LOGITS, LayerRow, Tapped, layer_rows, stage_names, stage_outputs
from dnet.core.artifact.onnxfile import read_model
from dnet.core.errors import AccuracyError, UsageError
from dnet.core.similarity import cosine, top1_agreement

# The INT8 check's defaults, on held-out images, in the file's own arithmetic (Q/DQ unfused: what TensorRT
# computes). Trained DenseNets land well inside them (digits DenseNet-BC: cosine ≥ 0.999, agreement 100%); a
# wrong scale or a clipped block gives cosines below 0.9. Random-weight models have near-tied logits: their
# top-1 agreement means little (the benchmarks pass 0).
INT8_MIN_COSINE = 0.99
INT8_MIN_TOP1 = 0.95
INT8_CHECK_IMAGES = 64


@dataclass(frozen=True)
class StageAgreement:
    stage: str
    cosine: float


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
    ref = stage_outputs(fp32_proto, images, stages=stages, name=Path(fp32).name)
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


def _sites(proto: onnx.ModelProto, layers: dict[str, str], ref: list[ConvSite] | None = None) -> list[ConvSite]:
    """Per layer (name -> a tensor its node writes): the tensor its node reads and the one it writes.

    In the INT8 graph (``ref``: the FP32 graph's sites) a transition whose pool the layout folded into its
    convolution (graph.pool_into_conv) is the Conv that writes the FP32 pool's output."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    readers = readers_of(proto)
    sites = []
    for k, (name, t) in enumerate(layers.items()):
        if t not in producer and ref is not None and ref[k].pooled in producer:
            t = ref[k].pooled
        sites.append(site(k, name, producer[t], readers))
    return sites


def layer_divergence(fp32: onnx.ModelProto, int8: onnx.ModelProto, layers: dict[str, str],
                     images: np.ndarray) -> list[LayerRow]:
    """Each layer of ``int8`` against ``fp32`` on ``images``, most error added first (network order breaks ties).

    ``layers`` maps a layer's name to the float tensor its node writes, the same name in both graphs (what the Q/DQ
    rewrite keeps; dnet.converters.int8.placement.layers). Measured once, in the INT8 file's own arithmetic (unfused): each
    layer is fed its own file's input, so a layer's ``added`` error is its own weights' and output's rounding, not
    its predecessors'. The same measure as ``dnet compare --per-layer``.
    """
    a = _sites(fp32, layers)
    b = _sites(int8, layers, a)
    ref = Tapped(fp32, a, "the FP32 file", fused=False)
    got = Tapped(int8, b, "the INT8 file", fused=False)
    rows, _, _ = layer_rows(ref, got, [(s.name, s, o) for s, o in zip(a, b, strict=True)], images)
    return sorted(rows, key=lambda r: (-r.added, r.depth))
