"""FP16 ONNX files from an FP32 dnet export, and the helpers every typed conversion shares (INT8: dnet.converters.int8).

TensorRT 11 builds strongly typed networks only, so the types TensorRT runs are the types in these files:

- FP16: float16 computation (ONNX Runtime's float16 converter, the maintained copy of onnxconverter-common's),
  float32 at the model boundary by default, with the ops in ``FP16_KEEP_FLOAT32`` left in float32.
- INT8: explicit QuantizeLinear/DequantizeLinear, written and checked by dnet.converters.int8.quantize.

The input file is never modified: conversion works on a private copy, and the input's sha256 is checked after every
step.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx

from dnet import __version__
from dnet.converters.graph import sort_topologically, unshare_initializers
from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.artifact.onnxfile import check_graph, input_size_of, read_meta, read_model, write_meta
from dnet.core.atomic import atomic_path, sha256_file
from dnet.core.errors import AccuracyError, InputModifiedError, UsageError
from dnet.core.progress import QUIET, Progress
from dnet.core.similarity import rel_l2
from dnet.engines.onnxruntime import require_onnxruntime, run

# Float32 islands in the FP16 graph, measured on DenseNet: a pre-activation BN computes (x - mean)·γ/σ + β,
# where rounding mean and σ to float16 cancels badly (on a small DenseNet-BC it was 0.7e-3 of the 1.1e-3
# relative logit error; kept float32 the total fell to 0.7e-3). The global average sums H×W values. Conv,
# ReLU, concat, pooling and Gemm run in float16.
FP16_KEEP_FLOAT32 = ("BatchNormalization", "ReduceMean", "GlobalAveragePool")
# The FP16 check's bound on the relative L2 error of the logits: four float16 unit roundoffs (4 · 2⁻¹¹ ≈ 2e-3).
# Trained DenseNets land at about two (a digits-trained DenseNet-BC-22: 1.02e-3; densenet121 on photos: 1.27e-3);
# float16 overflow or a wrongly cast op gives errors of order 1.
FP16_REL_L2 = 4 * 2.0**-11


def guard_unmodified(path: Path, sha: str) -> None:
    """InputModifiedError unless the file at ``path`` still has the sha256 ``sha``."""
    if sha256_file(path) != sha:
        raise InputModifiedError(f"{path} was modified during the conversion; restore it from a backup and report this")


def meta_for(
    proto: onnx.ModelProto, src: Path, precision: str, calibration: dict | None = None
) -> ArtifactMeta | None:
    """The artifact description of a file converted from ``src`` (None when ``proto`` carries none)."""
    meta = read_meta(proto)
    if meta is None:
        return None
    return dataclasses.replace(
        meta,
        precision=precision,
        calibration=calibration,
        dnet_version=__version__,
        extra={**meta.extra, "fp32_onnx": src.name, "fp32_onnx_sha256": sha256_file(src)},
    )


def _random_inputs(proto: onnx.ModelProto, size: int | None) -> np.ndarray:
    size = size or 32
    return np.random.default_rng(1).standard_normal((4, 3, size, size), dtype=np.float32)


# --- FP16 ------------------------------------------------------------------------------------------------


def to_fp16(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    keep_io_types: bool = True,
    check_inputs: np.ndarray | None = None,
    check: bool = True,
    tolerance: float = FP16_REL_L2,
    progress: Progress | None = None,
) -> Path:
    """Write the float16 version of the FP32 ONNX ``src`` to ``out`` and check it against ``src``.

    The check runs both files in ONNX Runtime on ``check_inputs`` (and random inputs): relative L2 error of
    the logits ≤ ``tolerance`` (default FP16_REL_L2 ≈ 2e-3) and identical top-1, else :class:`AccuracyError` with
    the numbers and no file; ``progress`` receives the numbers (``fp16_vs_fp32``). ``check=False`` skips it (benchmarks
    of random-weight models, whose logits amplify float16 rounding).
    """
    if not tolerance > 0:
        raise UsageError(f"the FP16 tolerance (a bound on the relative L2 error of the logits) must be positive, "
                         f"got {tolerance}", option="fp16_tolerance")
    require_onnxruntime()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = Path(src)
    sha = sha256_file(src)
    proto = read_model(src)
    private = onnx.ModelProto()
    private.CopyFrom(proto)
    unshare_initializers(private)  # the converter names its Casts after inputs; shared ones would collide
    # The exporter lists initializers in value_info too; the converter would then retype (and Cast) a float32
    # initializer of a kept-float32 node as if it were float16. Shape inference rebuilds value_info anyway.
    del private.graph.value_info[:]
    fp16 = convert_float_to_float16(
        private, keep_io_types=keep_io_types, op_block_list=list(FP16_KEEP_FLOAT32), disable_shape_infer=False
    )
    guard_unmodified(src, sha)
    sort_topologically(fp16)
    write_meta(fp16, meta_for(proto, src, "fp16"))
    check_graph(fp16, "FP16 graph")
    data = fp16.SerializeToString()
    # Real inputs when the caller has them (calibration images); random ones otherwise. A random-weight
    # network amplifies float16 rounding far more than a trained one (see benchmarks/inference_cpu.py).
    if check_inputs is not None and len(check_inputs):
        batches = [np.asarray(check_inputs, np.float32)]
    else:
        batches = [_random_inputs(proto, input_size_of(proto))]
    with atomic_path(out, size=len(data)) as tmp:
        tmp.write_bytes(data)
        for batch in batches if check else []:
            feed = batch if keep_io_types else batch.astype(np.float16)
            ref, got = run(src, batch), run(tmp, feed).astype(np.float32)
            err = rel_l2(ref, got)
            agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
            if err > tolerance or agree < 1.0:
                raise AccuracyError(
                    f"FP16 check failed on a batch of {len(batch)}: relative L2 error {err:.3g} (bound {tolerance:.3g}), "
                    f"top-1 agreement {agree:.1%} (needs 100%); give a looser bound, or skip the check",
                    option="fp16_tolerance"
                )
            (progress or QUIET).check("fp16_vs_fp32", batch=len(batch), rel_l2=err, bound=tolerance,
                                      top1_agreement=agree)
    return Path(out)
