"""onnxruntime.quantization, where dnet uses it: the calibrator behind every INT8 file's activation ranges, and
quantize_static for the ``ort`` Q/DQ layout (``layout="ort"``; the default densenet layout is dnet.converters.int8.placement).

Both are fed a private copy of the FP32 file and print nothing.

Why onnxruntime.quantization and not NVIDIA ModelOpt's ONNX PTQ: ``pip install --dry-run
"nvidia-modelopt[onnx]==0.47.0"`` would replace this environment's onnxruntime 1.31 with onnxruntime-gpu 1.24,
downgrade onnx to 1.21 and add cupy-cuda12x, polygraphy and onnx-graphsurgeon: not a clean install, so it was
not measured. onnxruntime.quantization is already a dependency and writes the same explicit Q/DQ layout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path

import numpy as np

from dnet.converters.int8.calibration import CalibrationCache
from dnet.core.progress import QUIET, Progress
from dnet.core.scratch import scratch_folder

CALIB_BATCH = 16
CALIB_CHUNK = 4  # batches per histogram update: bounds the memory of entropy/percentile calibration
# The ort layout: ops whose tensors get Q/DQ. Not BatchNormalization: its parameters stay float (TensorRT's parser wants them
# as constants, and a pre-activation BN is cheap next to the convolutions).
INT8_OP_TYPES = ("Conv", "Gemm", "Concat", "AveragePool", "MaxPool", "Relu")
# Biases stay float32: TensorRT's parser dequantizes only INT8/FP8/INT4 (onnx-tensorrt docs/operators.md,
# DequantizeLinear), so an int32 bias DQ would not parse. Cost, measured: ONNX Runtime's CPU fusion into
# QLinearConv needs an int32 bias, so convolutions with a (folded-BN) bias run as DQ -> float Conv -> Q.
INT8_QUANTIZE_BIAS = False  # (ONNX Runtime quantizes float biases itself when it fuses: nothing is lost)


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


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "mse": CalibrationMethod.Percentile,  # the same histograms; dnet picks the threshold (mse_threshold)
    }[method]


def mse_threshold(hist: np.ndarray, edges: np.ndarray, qmax: int = 127) -> float:
    """The symmetric clipping threshold T that minimises the expected squared error of quantizing a tensor whose
    values fall in ``hist`` over the bins ``edges`` (each bin's values taken at its centre) to ``qmax`` steps each
    side of zero: values beyond T cost (|x| - T)², values that round to zero (|x| < step/2, step = T/qmax) cost x²
    (ReLU outputs are mostly exact zeros, which cost nothing), the others the rounding error step²/12. The
    candidates are the bins' |centres| and the largest |value|; T is never above the largest."""
    centres = np.abs((edges[:-1] + edges[1:]) / 2).astype(np.float64)
    c, where = np.unique(centres, return_inverse=True)  # a bin and its mirror share one |centre|
    h = np.bincount(where, weights=np.asarray(hist, np.float64), minlength=len(c))
    top = float(max(abs(edges[0]), abs(edges[-1])))
    if h.sum() <= 0 or top <= 0:
        return top
    # prefix sums of h, h·c, h·c² over the first k bins (k = 0..n)
    p0, p1, p2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (h, h * c, h * c * c))
    # candidate k < n clips the bins after k; the last candidate (top) clips nothing
    t = np.append(c, top)
    kept = np.minimum(np.arange(1, len(c) + 2), len(c))  # bins at or below each candidate
    tail0, tail1, tail2 = p0[-1] - p0[kept], p1[-1] - p1[kept], p2[-1] - p2[kept]
    # below step/2 a value rounds to zero: its error is x², not step²/12
    small = np.searchsorted(c, t / (2 * qmax), side="left")  # bins [0, small) round to zero
    rounded = p0[kept] - p0[small]
    err = tail2 - 2 * t * tail1 + t * t * tail0 + p2[small] + rounded * (t / qmax) ** 2 / 12
    err[t <= 0] = np.inf
    return float(t[int(np.argmin(err))])


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

    with scratch_folder("calib") as tmp:
        private = Path(tmp) / "model.onnx"
        shutil.copyfile(fp32, private)
        # raw ranges: the quantizer symmetrises them for int8 (zero point 0); uint8 uses them as they are
        options: dict = {}
        # No max_intermediate_outputs: onnxruntime 1.31's MinMaxCalibrater *drops* the batches it holds when
        # that limit is reached. Feeding CALIB_CHUNK batches per collect_data call bounds memory instead: each
        # call merges its ranges (minmax) or histograms (entropy, percentile, mse) and clears what it held.
        if method == "percentile":
            options["percentile"] = 99.999
        calibrator = create_calibrator(
            private,
            list(INT8_OP_TYPES),  # the tensors either layout quantizes; all of QDQRegistry's took 13% longer
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method_enum(method),
            extra_options=options,
        )
        name = calibrator.infer_session.get_inputs()[0].name if calibrator.infer_session else "input"
        step = CALIB_BATCH * CALIB_CHUNK
        progress = progress or QUIET
        progress.stage(f"calibration ({method}, {len(images)} images)", total=len(images), unit="img")
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            whole = len(chunk) - len(chunk) % CALIB_BATCH
            # histogram calibrators stack one call's batches (one size): a short last batch gets its own call
            for part in (chunk[:whole], chunk[whole:]):
                if len(part):
                    with _quiet():
                        calibrator.collect_data(_BatchReader(name, part, CALIB_BATCH))
            progress.advance(len(chunk))
        with _quiet():
            if method == "mse":
                histograms = calibrator.collector.histogram_dict if calibrator.collector else {}
                ranges = {}
                for k, (hist, edges, lo, hi, *_) in histograms.items():
                    t = mse_threshold(hist, edges)
                    ranges[k] = (max(float(lo), -t), min(float(hi), t))
            else:
                data = calibrator.compute_data()
                ranges = {k: (float(np.asarray(v.range_value[0]).item()), float(np.asarray(v.range_value[1]).item()))
                          for k, v in data.items()}
        del calibrator
    return ranges


def quantize(fp32_copy: Path, out: Path, cache: CalibrationCache) -> None:
    """onnxruntime.quantization's quantize_static, fed the cached ranges (so every run takes the same path)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    # the cached ranges are final: MinMax takes them as they are (mse's thresholds are already in them)
    method = _method_enum("minmax" if cache.method == "mse" else cache.method)
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
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_cache_path=str(ort_cache),
            op_types_to_quantize=list(INT8_OP_TYPES),
            extra_options={
                "ActivationSymmetric": True,  # zero point 0, as TensorRT requires
                "WeightSymmetric": True,
                "QuantizeBias": INT8_QUANTIZE_BIAS,
                # The classifier's output stays float, as NNCF and Model Optimizer leave it: quantized logits take
                # a handful of distinct values (ties at the top) and clip above 127 × scale.
                "OpTypesToExcludeOutputQuantization": ["Gemm"],
            },
        )


__all__ = ["CALIB_BATCH", "CALIB_CHUNK", "INT8_OP_TYPES", "INT8_QUANTIZE_BIAS", "calibrate", "mse_threshold", "quantize"]
