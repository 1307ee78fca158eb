"""The INT8 conversion step: an FP32 dnet ONNX file in, a calibrated, checked INT8 Q/DQ ONNX file out.

INT8: explicit QuantizeLinear/DequantizeLinear: symmetric int8, zero points 0, per-channel weights, activation
ranges from calibration images (minmax, entropy, percentile: onnxruntime.quantization's calibrator; mse: the
clipping threshold of least squared error on its histograms, ``calibrator.mse_threshold``), cached per FP32 model so
a second conversion is byte-identical and runs no calibration. The Q/DQ placement is dnet's own
(dnet.converters.int8.placement) or, with ``layout="ort"``, onnxruntime.quantization's. Every INT8 file is checked
against the FP32 file on held-out images (dnet.converters.int8.divergence) before it is kept.

The input file is never modified: quantization works on a private copy, and the input's sha256 is checked after
every step.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import onnx

from dnet import __version__
from dnet.converters.int8 import calibrator
from dnet.converters.int8.calibration import METHODS, CalibrationCache, CalibrationSet
from dnet.converters.int8.calibrator import calibrate  # a name of this module: benchmarks time quantize.calibrate
from dnet.converters.int8.divergence import INT8_CHECK_IMAGES, INT8_MIN_COSINE, INT8_MIN_TOP1, check_int8
from dnet.converters.int8.mixed import MixedPrecision
from dnet.converters.int8.options import LAYOUTS
from dnet.converters.int8.placement import TARGETS, densenet_layout, weight_bits_for
from dnet.converters.precision import guard_unmodified, meta_for
from dnet.core.artifact.onnxfile import check_graph, read_meta, read_model, write_meta
from dnet.core.atomic import atomic_path, sha256_file
from dnet.core.errors import UsageError, require_one_of
from dnet.core.progress import QUIET, Progress
from dnet.core.scratch import scratch_folder
from dnet.engines.onnxruntime import require_onnxruntime

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
    layout: str = LAYOUTS[0],
    target: str = TARGETS[0],
    weight_bits: int | None = None,
    check_images: int = INT8_CHECK_IMAGES,
    min_cosine: float = INT8_MIN_COSINE,
    min_top1: float = INT8_MIN_TOP1,
    mixed: MixedPrecision | None = None,
) -> tuple[Path, dict]:
    """Write the INT8 Q/DQ version of the FP32 ONNX ``src`` to ``out``; returns (path, calibration summary).

    ``target``: "cpu" (ONNX Runtime), "openvino" or "tensorrt": whose rules dnet's placement follows
    (dnet.converters.int8.placement), recorded in the file's metadata (``int8_target``); ``weight_bits`` None is
    the target's default. ``layout``: "densenet" (dnet's placement, the default) or "ort" (onnxruntime.quantization's
    QDQ placement, symmetric int8 activations: the reference dnet's is measured against, the same for either
    target). With ``cache_path`` naming a cache of the same model (sha256) and method,
    calibration does not run and no calibration image is read; otherwise the images are read through ``spec``
    (default: the model's own preprocessing), calibrated, and the cache is written. The file is then checked
    against ``src`` (divergence.check_int8, the file's own arithmetic) on ``check_images`` images of the
    calibration set that calibration never saw (or ``check_inputs``); below ``min_cosine`` or ``min_top1`` it
    raises AccuracyError and writes no file. The summary's "check" says what was checked, or why nothing was.
    ``mixed`` (densenet layout) leaves layers in higher precision, by hand or under an accuracy bound
    (dnet.converters.int8.mixed); the summary's "accuracy" then has the layers and the measured drop.
    ``progress`` hears each stage (reading images, calibration, quantisation, the check) and the check's numbers
    (``int8_vs_fp32``: held-out images, cosine and top-1 agreement with their bounds, each stage's cosine).
    """
    progress = progress or QUIET
    require_onnxruntime()
    require_one_of("INT8 layout", layout, LAYOUTS, "int8_layout")
    weight_bits = weight_bits_for(target, weight_bits) if layout == "densenet" else 8
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
        guard_unmodified(src, sha)
        if cache_path is not None:
            cache.save(cache_path)  # before the check: a refused file can be rebuilt with other bounds, no recalibration
    if check_inputs is None and calib is not None and spec is not None and check_images > 0:
        progress.stage(f"reading held-out images ({calib.describe()})")
        check_inputs = calib.load_held_out(spec, check_images)
    summary = {
        "method": method,
        "images": cache.images,
        "data": cache.data,
        # the CPU file stores them as uint8 with zero point 128: the same numbers (placement module doc)
        "activations": "int8 symmetric" + (" as uint8 (zero point 128)" if (layout, target) == ("densenet", "cpu")
                                           else "")
        + ("; ReLU outputs uint8 (zero point 0)" if layout == "densenet" and target != "tensorrt" else ""),
        "per_channel_weights": True,
    }
    control = " + accuracy control on the validation images" if layout == "densenet" and plan.request.val else ""
    placement = f"{target} layout" if layout == "densenet" else "onnxruntime.quantization's placement"
    progress.stage(f"quantisation ({placement}){control}")
    if layout == "densenet":
        def build(excluded: list[str]) -> onnx.ModelProto:
            q = onnx.ModelProto()
            q.CopyFrom(proto)
            summary["layout"] = densenet_layout(q, cache.ranges, target=target, weight_bits=weight_bits,
                                                exclude=excluded, fallback=plan.request.fallback).to_dict()
            return q

        q, accuracy = plan.choose(build)
        if accuracy is not None:
            summary["accuracy"] = accuracy
            progress.check("int8_accuracy", **accuracy)
        summary["tool"] = "dnet.converters.int8.placement"
    else:
        summary["layout"] = {"name": "ort", "weight_bits": 8}
        summary["tool"] = "onnxruntime.quantization QDQ"
        with scratch_folder("int8") as tmp:
            private = Path(tmp) / "fp32.onnx"
            shutil.copyfile(src, private)  # the quantizer has been seen rewriting its input: give it a copy
            quantized = Path(tmp) / "int8.onnx"
            calibrator.quantize(private, quantized, cache)
            guard_unmodified(src, sha)
            q = onnx.load_model(str(quantized))
    if cache_path is not None:
        summary["cache_sha256"] = _cache_sha(cache)
    meta_out = meta_for(proto, src, "int8", summary)
    write_meta(q, dataclasses.replace(meta_out, int8_target=target) if meta_out is not None else None)
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
