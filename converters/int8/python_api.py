"""``dnet.quantize``: one Python call from a model and calibration images to a checked INT8 ONNX file, as
``nncf.quantize(...)`` and ModelOpt's ``modelopt.onnx.quantization.quantize(...)`` are called.

It runs what ``dnet convert --to onnx-int8`` runs (dnet.converters.pipeline), so the files, names, checks and
refusals are the command's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet.converters.export import export
from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.lint import LintResult, lint
from dnet.converters.int8.options import Int8Options
from dnet.converters.int8.placement import INT8_FILE_KEYS
from dnet.converters.pipeline import convert, names_for
from dnet.core.artifact.onnxfile import read_meta, read_model
from dnet.core.artifact.pthfile import looks_like_pth
from dnet.core.errors import UsageError
from dnet.core.progress import Recorder

FORMATS = {".onnx": "onnx", ".pth": "pth", ".pt": "pth", ".t7": "t7"}


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` wrote and measured."""

    path: Path  # the INT8 ONNX file
    target: str  # cpu, openvino or tensorrt: whose rules its Q/DQ placement follows
    written: tuple[Path, ...]  # every file written, in order (the FP32 ONNX and calibration cache kept beside it)
    check: dict  # the check against FP32 on held-out images (``batch``, cosine, top-1 agreement, bounds, stages), or
    # ``skipped`` with the reason
    accuracy: dict | None  # accuracy control: the layers left in float and the measured drop (None: not asked for)
    summary: dict  # everything the file's metadata records about its quantisation (method, images, layout...)
    checks: tuple[dict, ...]  # every check of the conversion with its numbers (FP32 export, INT8 vs FP32)
    lint: LintResult  # what TensorRT's INT8 rules say of the file (dnet.converters.int8.lint; `dnet inspect` shows it)


def quantize(model, calibration, *, target: str = "cpu", out: str | os.PathLike | None = None,
             options: Int8Options | None = None, progress: Recorder | None = None, **convert_options) -> QuantizeResult:
    """Quantise ``model`` to an INT8 ONNX file for ``target`` ("cpu": ONNX Runtime; "openvino"; "tensorrt").

    ``model``: a path (FP32 ONNX, ``.pth``/``.pt`` checkpoint, Lua ``.t7``) or a dnet DenseNet (exported to
    ``out``'s FP32 name first). ``calibration``: a :class:`CalibrationSet`, a folder of images, or a uint8
    N×H×W×3 array. ``out`` defaults to ``NAME.int8.onnx`` (cpu), ``NAME.int8-ov.onnx`` or ``NAME.int8-trt.onnx`` beside a model
    file. ``options`` holds the other INT8 choices (its target and calibration are these arguments');
    ``convert_options`` are other :class:`dnet.converters.pipeline.ConvertOptions` fields (``preprocess=``...).
    """
    if isinstance(calibration, CalibrationSet):
        calib = calibration
    elif isinstance(calibration, np.ndarray):
        calib = CalibrationSet(images=calibration)
    elif isinstance(calibration, str | os.PathLike):
        calib = CalibrationSet(folder=Path(calibration))
    else:
        raise UsageError(f"calibration must be a CalibrationSet, an image folder or a uint8 N×H×W×3 array, got "
                         f"{type(calibration).__name__}", option="calib")
    int8 = dataclasses.replace(options or Int8Options(), target=target, calib=calib)
    recorder = progress if progress is not None else Recorder()
    if isinstance(model, str | os.PathLike):
        src = Path(model)
        src_format = FORMATS.get(src.suffix.lower())
        if src_format is None and src.is_file() and looks_like_pth(src):  # .pth.tar, .ckpt, .bin: by its bytes
            src_format = "pth"
        if src_format is None:
            raise UsageError(f"{src.name}: dnet.quantize reads {', '.join(FORMATS)} files and PyTorch files of any "
                             "suffix", option="model")
    elif hasattr(model, "config") and hasattr(model, "meta"):
        if out is None:
            raise UsageError("quantizing a model object needs an output file name (out=...)", option="out")
        src, src_format = names_for(Path(out))["fp32"], "onnx"
        export(model, src, meta=model.meta)
    else:
        raise UsageError(f"model must be a file path or a dnet DenseNet, got {type(model).__name__}", option="model")
    if out is None:
        out = names_for(src)[INT8_FILE_KEYS[target]]  # target checked by Int8Options
    written = convert(src, src_format=src_format, target="onnx-int8", out=out, int8=int8, progress=recorder,
                      **convert_options)
    proto = read_model(written[-1])
    meta = read_meta(proto)
    summary = dict(meta.calibration or {}) if meta is not None else {}
    check = next((c for c in recorder.checks if c["check"] == "int8_vs_fp32"), {})
    return QuantizeResult(path=written[-1], target=target, written=tuple(written), check=check,
                          accuracy=summary.get("accuracy"), summary=summary, checks=tuple(recorder.checks),
                          lint=lint(proto))


__all__ = ["QuantizeResult", "quantize"]
