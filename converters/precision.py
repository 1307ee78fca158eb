"""FP16 and INT8 ONNX files from an FP32 dnet export; every precision decision is made (and checked) here.

TensorRT 11 builds strongly typed networks only, so the types TensorRT runs are the types in these files:

- FP16: float16 computation (ONNX Runtime's float16 converter, the maintained copy of onnxconverter-common's),
  float32 at the model boundary by default, with the ops in ``FP16_KEEP_FLOAT32`` left in float32.
- INT8: explicit QuantizeLinear/DequantizeLinear: symmetric int8, zero points 0, per-channel weights, activation
  ranges from calibration images (minmax, entropy, percentile: onnxruntime.quantization's calibrator; mse: the
  clipping threshold of least squared error on its histograms, ``ortquant.mse_threshold``), cached per
  FP32 model so a second conversion is byte-identical and runs no calibration. The Q/DQ layout is dnet's own
  DenseNet layout (dnet.converters.qdq) or, with ``layout="ort"``, onnxruntime.quantization's. Every INT8 file is
  checked against the FP32 file on held-out images (dnet.converters.divergence) before it is kept.

The input file is never modified: quantization works on a private copy, and the input's sha256 is checked
after every step. onnxruntime.quantization (the calibrator, and the ``ort`` layout) is called in
dnet.converters.ortquant.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import onnx

from dnet import __version__
from dnet.artifact.meta import ArtifactMeta
from dnet.artifact.onnxfile import check_graph, input_size_of, read_meta, read_model, write_meta
from dnet.converters import ortquant
from dnet.converters.calibration import METHODS, CalibrationCache, CalibrationSet
from dnet.converters.divergence import INT8_CHECK_IMAGES, INT8_MIN_COSINE, INT8_MIN_TOP1, check_int8
from dnet.converters.graph import sort_topologically, unshare_initializers
from dnet.converters.mixed import MixedPrecision
from dnet.converters.ortquant import calibrate  # a name of this module: benchmarks time precision.calibrate
from dnet.converters.qdq import DEFAULT_WEIGHT_BITS, densenet_layout
from dnet.engines.onnxruntime import require_onnxruntime, run
from dnet.errors import AccuracyError, InputModifiedError, UsageError, require_one_of
from dnet.files import atomic_path, scratch_folder, sha256_file
from dnet.progress import QUIET, Progress
from dnet.similarity import rel_l2

# Float32 islands in the FP16 graph, measured on DenseNet: a pre-activation BN computes (x - mean)·γ/σ + β,
# where rounding mean and σ to float16 cancels badly (on a small DenseNet-BC it was 0.7e-3 of the 1.1e-3
# relative logit error; kept float32 the total fell to 0.7e-3). The global average sums H×W values. Conv,
# ReLU, concat, pooling and Gemm run in float16.
FP16_KEEP_FLOAT32 = ("BatchNormalization", "ReduceMean", "GlobalAveragePool")
# The FP16 check's bound on the relative L2 error of the logits: four float16 unit roundoffs (4 · 2⁻¹¹ ≈ 2e-3).
# Trained DenseNets land at about two (a digits-trained DenseNet-BC-22: 1.02e-3; densenet121 on photos: 1.27e-3);
# float16 overflow or a wrongly cast op gives errors of order 1.
FP16_REL_L2 = 4 * 2.0**-11
# Which Q/DQ layout writes the INT8 file. "densenet" (dnet.converters.qdq, the default): one scale per dense block, int8
# concatenations, every convolution (and each pre-activation BN, as a depthwise convolution) an integer convolution
# in both TensorRT and ONNX Runtime (benchmarks/inference_cpu.py). "ort": onnxruntime.quantization's QDQ placement,
# kept for comparison (benchmarks/int8_accuracy.py, README Benchmarks).
INT8_LAYOUTS = ("densenet", "ort")


def _guard_unmodified(path: Path, sha: str) -> None:
    if sha256_file(path) != sha:
        raise InputModifiedError(f"{path} was modified during the conversion; restore it from a backup and report this")


def _meta_for(
    proto: onnx.ModelProto, src: Path, precision: str, calibration: dict | None = None
) -> ArtifactMeta | None:
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
    _guard_unmodified(src, sha)
    sort_topologically(fp16)
    write_meta(fp16, _meta_for(proto, src, "fp16"))
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


# --- INT8 ------------------------------------------------------------------------------------------------


def to_int8(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    calib: CalibrationSet | None,
    method: str = "minmax",
    cache_path: str | os.PathLike | None = None,
    spec=None,
    check_inputs: np.ndarray | None = None,
    progress: Progress | None = None,
    layout: str = INT8_LAYOUTS[0],
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    check_images: int = INT8_CHECK_IMAGES,
    min_cosine: float = INT8_MIN_COSINE,
    min_top1: float = INT8_MIN_TOP1,
    mixed: MixedPrecision | None = None,
) -> tuple[Path, dict]:
    """Write the INT8 Q/DQ version of the FP32 ONNX ``src`` to ``out``; returns (path, calibration summary).

    ``layout``: "densenet" (dnet.converters.qdq, the default) or "ort" (onnxruntime.quantization's QDQ placement,
    symmetric int8 activations: the reference the densenet layout is measured against). With ``cache_path`` naming a cache of the same model (sha256) and method,
    calibration does not run and no calibration image is read; otherwise the images are read through ``spec``
    (default: the model's own preprocessing), calibrated, and the cache is written. The file is then checked
    against ``src`` (divergence.check_int8, the file's own arithmetic) on ``check_images`` images of the
    calibration set that calibration never saw (or ``check_inputs``); below ``min_cosine`` or ``min_top1`` it
    raises AccuracyError and writes no file. The summary's "check" says what was checked, or why nothing was.
    ``mixed`` (densenet layout) leaves layers in higher precision, by hand or under an accuracy bound
    (dnet.converters.mixed); the summary's "accuracy" then has the layers and the measured drop.
    ``progress`` hears each stage (reading images, calibration, quantisation, the check) and the check's numbers
    (``int8_vs_fp32``: held-out images, cosine and top-1 agreement with their bounds, each stage's cosine).
    """
    progress = progress or QUIET
    require_onnxruntime()
    require_one_of("INT8 layout", layout, INT8_LAYOUTS, "int8_layout")
    require_one_of("calibration method", method, METHODS, "calib_method")
    src = Path(src)
    sha = sha256_file(src)
    proto = read_model(src)
    meta = read_meta(proto)
    spec = spec or (meta.preprocess if meta is not None else None)
    plan = (mixed or MixedPrecision()).prepare(proto, spec, layout)  # before calibration: a bad request fails early
    cache = None
    if cache_path is not None and Path(cache_path).is_file():
        cache = CalibrationCache.load(cache_path)
        if cache.model_sha256 != sha or cache.method != method:
            cache = None  # another model or method: calibrate again and overwrite
    reused = cache is not None
    if cache is None:
        if calib is None:
            raise UsageError("INT8 needs calibration images (a folder or an array of images), or a calibration cache "
                             "of this model", option="calib")
        if spec is None:
            raise UsageError(
                "the ONNX file does not say how to preprocess calibration images; name a preprocessing",
                option="preprocess",
            )
        progress.stage(f"reading calibration images ({calib.describe()})")
        images = calib.load(spec, held_out=check_images)
        cache = CalibrationCache(
            sha, method, len(images), calib.describe(), calibrate(src, images, method, progress=progress)
        )
        _guard_unmodified(src, sha)
        if cache_path is not None:
            cache.save(cache_path)  # before the check: a refused file can be rebuilt with other bounds, no recalibration
    if check_inputs is None and calib is not None and spec is not None and check_images > 0:
        progress.stage(f"reading held-out images ({calib.describe()})")
        check_inputs = calib.load_held_out(spec, check_images)
    summary = {
        "method": method,
        "images": cache.images,
        "data": cache.data,
        "activations": "int8 symmetric",
        "per_channel_weights": True,
    }
    control = " + accuracy control on the validation images" if layout == "densenet" and plan.request.val else ""
    progress.stage(f"quantisation ({layout} Q/DQ layout){control}")
    if layout == "densenet":
        def build(excluded: list[str]) -> onnx.ModelProto:
            q = onnx.ModelProto()
            q.CopyFrom(proto)
            summary["layout"] = densenet_layout(q, cache.ranges, weight_bits=weight_bits, exclude=excluded,
                                                fallback=plan.request.fallback).to_dict()
            return q

        q, accuracy = plan.choose(build)
        if accuracy is not None:
            summary["accuracy"] = accuracy
            progress.check("int8_accuracy", **accuracy)
        summary["tool"] = "dnet.converters.qdq"
    else:
        summary["layout"] = {"name": "ort", "weight_bits": 8}
        summary["tool"] = "onnxruntime.quantization QDQ"
        with scratch_folder("int8") as tmp:
            private = Path(tmp) / "fp32.onnx"
            shutil.copyfile(src, private)  # the quantizer has been seen rewriting its input: give it a copy
            quantized = Path(tmp) / "int8.onnx"
            ortquant.quantize(private, quantized, cache)
            _guard_unmodified(src, sha)
            q = onnx.load_model(str(quantized))
    if cache_path is not None:
        summary["cache_sha256"] = _cache_sha(cache)
    write_meta(q, _meta_for(proto, src, "int8", summary))
    q.producer_name, q.producer_version = "dnet", __version__
    check_graph(q, "INT8 graph")
    with atomic_path(out, size=q.ByteSize()) as tmp:
        tmp.write_bytes(q.SerializeToString())
        if check_inputs is not None and len(check_inputs):
            progress.stage(f"INT8 check ({len(check_inputs)} held-out images)")
            check = summary["check"] = check_int8(src, tmp, np.asarray(check_inputs, np.float32),
                                                  min_cosine=min_cosine, min_top1=min_top1)
            progress.check("int8_vs_fp32", **_check_numbers(check))
        else:
            if check_inputs is not None:
                why = "no held-out images: the calibration set left none over"
            elif check_images == 0:
                why = "no check images asked for (0)"
            else:
                why = "no held-out images (no calibration folder or array given)"
            summary["check"] = {"images": 0, "skipped": why}
            progress.check("int8_vs_fp32", skipped=True, reason=why)
    summary["reused_cache"] = reused
    return Path(out), summary


def _check_numbers(check: dict) -> dict:
    """What the INT8 check reports to a progress object (and ``--json``): the numbers, in the FP16 check's terms."""
    return {"batch": check["images"], "cosine": check["cosine"], "min_cosine": check["min_cosine"],
            "top1_agreement": check["top1_agreement"], "min_top1": check["min_top1"], "stages": dict(check["stages"])}


def _cache_sha(cache: CalibrationCache) -> str:
    import hashlib

    return hashlib.sha256(cache.to_json().encode()).hexdigest()
