"""FP16 and INT8 ONNX files from an FP32 dnet export; every precision decision is made (and checked) here.

TensorRT 11 builds strongly typed networks only, so the types TensorRT runs are the types in these files:

- FP16: float16 computation (ONNX Runtime's float16 converter, the maintained copy of onnxconverter-common's),
  float32 at the model boundary by default, with the ops in ``FP16_KEEP_FLOAT32`` left in float32.
- INT8: explicit QuantizeLinear/DequantizeLinear (onnxruntime.quantization, QDQ format): symmetric int8,
  zero points 0, per-channel weights, activation ranges from calibration images (minmax, entropy,
  percentile), cached per FP32 model so a second conversion is byte-identical and runs no calibration.

The input file is never modified: quantization works on a private copy, and the input's sha256 is checked
after every step.

Why onnxruntime.quantization and not NVIDIA ModelOpt's ONNX PTQ: ``pip install --dry-run
"nvidia-modelopt[onnx]==0.47.0"`` would replace this environment's onnxruntime 1.31 with onnxruntime-gpu 1.24,
downgrade onnx to 1.21 and add cupy-cuda12x, polygraphy and onnx-graphsurgeon: not a clean install, so it was
not measured. onnxruntime.quantization is already a dependency and writes the same explicit Q/DQ layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx

from dnet import __version__
from dnet.artifact.meta import ArtifactMeta
from dnet.artifact.onnxfile import check_graph, input_size_of, read_meta, read_model, write_meta
from dnet.converters.calibration import METHODS, CalibrationCache, CalibrationSet
from dnet.converters.graph import sort_topologically, unshare_initializers
from dnet.engines.onnxruntime import require_onnxruntime, run
from dnet.errors import AccuracyError, InputModifiedError, UsageError
from dnet.files import atomic_path, scratch_folder, sha256_file
from dnet.progress import QUIET, Progress
from dnet.similarity import cosine, rel_l2

# Float32 islands in the FP16 graph, measured on DenseNet: a pre-activation BN computes (x - mean)·γ/σ + β,
# where rounding mean and σ to float16 cancels badly (on a small DenseNet-BC it was 0.7e-3 of the 1.1e-3
# relative logit error; kept float32 the total fell to 0.7e-3). The global average sums H×W values. Conv,
# ReLU, concat, pooling and Gemm run in float16.
FP16_KEEP_FLOAT32 = ("BatchNormalization", "ReduceMean", "GlobalAveragePool")
# The FP16 check's bound on the relative L2 error of the logits: four float16 unit roundoffs (4 · 2⁻¹¹ ≈ 2e-3).
# Trained DenseNets land at about two (a digits-trained DenseNet-BC-22: 1.02e-3; densenet121 on photos: 1.27e-3);
# float16 overflow or a wrongly cast op gives errors of order 1.
FP16_REL_L2 = 4 * 2.0**-11
CALIB_BATCH = 16
CALIB_CHUNK = 4  # batches per histogram update: bounds the memory of entropy/percentile calibration


# Ops whose tensors get Q/DQ. Not BatchNormalization: its parameters stay float (TensorRT's parser wants them
# as constants, and a pre-activation BN is cheap next to the convolutions).
INT8_OP_TYPES = ("Conv", "Gemm", "Concat", "AveragePool", "MaxPool", "Relu")
# Biases stay float32: TensorRT's parser dequantizes only INT8/FP8/INT4 (onnx-tensorrt docs/operators.md,
# DequantizeLinear), so an int32 bias DQ would not parse. Cost, measured: ONNX Runtime's CPU fusion into
# QLinearConv needs an int32 bias, so convolutions with a (folded-BN) bias run as DQ -> float Conv -> Q.
INT8_QUANTIZE_BIAS = False  # (ONNX Runtime quantizes float biases itself when it fuses: nothing is lost)
# "int8": symmetric int8 activations, zero point 0: the layout TensorRT consumes (the default, and the only one
# `--to trt` accepts). "uint8": asymmetric uint8 activations, for ONNX Runtime on x86 only: its CPU kernels
# are u8 x s8, and with int8 activations it converted and fused only 66 of densenet121's 120 convolutions into
# QLinearConv (the 3x3 convs whose output feeds several concats stayed DQ -> float Conv -> Q); with uint8 all
# 120 fuse and the concats become QLinearConcat (measured by benchmarks/inference_cpu.py --profile).
INT8_ACTIVATIONS = ("int8", "uint8")


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization prints progress and logs advice on the root logger; keep the terminal clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


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


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


class _BatchReader:
    """onnxruntime.quantization's CalibrationDataReader over an in-memory float32 array."""

    def __init__(self, name: str, images: np.ndarray, batch: int) -> None:
        self.name, self.images, self.batch, self.i = name, images, batch, 0

    def get_next(self) -> dict | None:
        if self.i >= len(self.images):
            return None
        chunk = self.images[self.i : self.i + self.batch]
        self.i += self.batch
        return {self.name: chunk}


def calibrate(fp32: Path, images: np.ndarray, method: str, *,
              progress: Progress | None = None) -> dict[str, tuple[float, float]]:
    """Activation ranges (tensor name -> (lowest, highest)) of ``fp32`` on ``images`` by ``method``."""
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry

    with scratch_folder("calib") as tmp:
        private = Path(tmp) / "model.onnx"
        shutil.copyfile(fp32, private)
        # raw ranges: the quantizer symmetrises them for int8 (zero point 0); uint8 uses them as they are
        options: dict = {}
        # No max_intermediate_outputs: onnxruntime 1.31's MinMaxCalibrater *drops* the batches it holds when
        # that limit is reached. Feeding CALIB_CHUNK batches per collect_data call bounds memory instead: each
        # call merges its ranges (minmax) or histograms (entropy, percentile) and clears what it held.
        if method == "percentile":
            options["percentile"] = 99.999
        calibrator = create_calibrator(
            private,
            list(QDQRegistry),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method_enum(method),
            extra_options=options,
        )
        name = calibrator.infer_session.get_inputs()[0].name if calibrator.infer_session else "input"
        step = CALIB_BATCH * CALIB_CHUNK
        progress = progress or QUIET
        progress.stage(f"calibration ({method}, {len(images)} images)", total=len(images), unit="img")
        for start in range(0, len(images), step):
            with _quiet():
                calibrator.collect_data(_BatchReader(name, images[start : start + step], CALIB_BATCH))
            progress.advance(len(images[start : start + step]))
        with _quiet():
            data = calibrator.compute_data()
        del calibrator
    return {
        k: (float(np.asarray(v.range_value[0]).item()), float(np.asarray(v.range_value[1]).item()))
        for k, v in data.items()
    }


def _quantize(fp32_copy: Path, out: Path, cache: CalibrationCache, activations: str = "int8") -> None:
    """onnxruntime.quantization's quantize_static, fed the cached ranges (so every run takes the same path)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    method = _method_enum(cache.method)
    ranges = TensorsData(
        method, {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in cache.ranges.items()}
    )
    ort_cache = fp32_copy.with_suffix(".ranges.json")
    save_tensors_data(ranges, ort_cache)
    with _quiet():
        quantize_static(
            str(fp32_copy),
            str(out),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_cache_path=str(ort_cache),
            op_types_to_quantize=list(INT8_OP_TYPES),
            extra_options={
                "ActivationSymmetric": activations == "int8",  # zero point 0, as TensorRT requires
                "WeightSymmetric": True,
                "QuantizeBias": INT8_QUANTIZE_BIAS,
                # The classifier's output stays float, as NNCF and Model Optimizer leave it: quantized logits take
                # a handful of distinct values (ties at the top) and clip above 127 × scale.
                "OpTypesToExcludeOutputQuantization": ["Gemm"],
            },
        )


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
    activations: str = "int8",
) -> tuple[Path, dict]:
    """Write the INT8 Q/DQ version of the FP32 ONNX ``src`` to ``out``; returns (path, calibration summary).

    With ``cache_path`` naming a cache of the same model (sha256) and method, calibration does not run and
    no image is read; otherwise the images are read through ``spec`` (default: the model's own
    preprocessing), calibrated, and the cache is written. ``progress`` hears each stage (reading images, calibration,
    quantisation, the check) and the check's numbers (``int8_vs_fp32``).
    """
    progress = progress or QUIET
    require_onnxruntime()
    if activations not in INT8_ACTIVATIONS:
        raise UsageError(f"activations must be one of {', '.join(INT8_ACTIVATIONS)}, got {activations!r}",
                         option="int8_activations")
    if method not in METHODS:
        raise UsageError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}", option="calib_method")
    src = Path(src)
    sha = sha256_file(src)
    proto = read_model(src)
    meta = read_meta(proto)
    spec = spec or (meta.preprocess if meta is not None else None)
    cache = None
    if cache_path is not None and Path(cache_path).is_file():
        cache = CalibrationCache.load(cache_path)
        if cache.model_sha256 != sha or cache.method != method:
            cache = None  # another model or method: calibrate again and overwrite
    reused = cache is not None
    images = None
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
        images = calib.load(spec)
        cache = CalibrationCache(
            sha, method, len(images), calib.describe(), calibrate(src, images, method, progress=progress)
        )
        _guard_unmodified(src, sha)
    summary = {
        "method": method,
        "images": cache.images,
        "data": cache.data,
        "activations": "int8 symmetric" if activations == "int8" else "uint8 asymmetric (ONNX Runtime CPU only)",
        "per_channel_weights": True,
        "tool": "onnxruntime.quantization QDQ",
    }
    progress.stage("quantisation (Q/DQ)")
    with scratch_folder("int8") as tmp:
        private = Path(tmp) / "fp32.onnx"
        shutil.copyfile(src, private)  # the quantizer has been seen rewriting its input: give it a copy
        quantized = Path(tmp) / "int8.onnx"
        _quantize(private, quantized, cache, activations)
        _guard_unmodified(src, sha)
        q = onnx.load_model(str(quantized))
    if cache_path is not None:
        summary["cache_sha256"] = _cache_sha(cache)
    write_meta(q, _meta_for(proto, src, "int8", summary))
    q.producer_name, q.producer_version = "dnet", __version__
    check_graph(q, "INT8 graph")
    with atomic_path(out, size=q.ByteSize()) as tmp:
        tmp.write_bytes(q.SerializeToString())
        batch = check_inputs if check_inputs is not None else (images[:8] if images is not None else None)
        if batch is not None:
            progress.stage("INT8 check")
            ref, got = run(src, batch), run(tmp, batch)
            summary["check_cosine"] = cosine(ref, got)
            progress.check("int8_vs_fp32", batch=len(batch), cosine=summary["check_cosine"])
    if cache_path is not None and not reused:
        cache.save(cache_path)
    summary["reused_cache"] = reused
    return Path(out), summary


def _cache_sha(cache: CalibrationCache) -> str:
    import hashlib

    return hashlib.sha256(cache.to_json().encode()).hexdigest()
