"""The conversion chain: t7 | pth | onnx -> dnet model -> FP32 ONNX -> FP16 / INT8 ONNX -> TensorRT engine.

``convert`` is what ``dnet convert``, the demo and the benchmarks call. Every step writes atomically; the
intermediate files are kept beside the output (``densenet121.onnx`` next to ``densenet121.int8.onnx`` and
``densenet121.plan``), and a failure leaves the files of the steps that succeeded, never a partial one. It prints
nothing: each long stage, and each check with its numbers, goes to the ``progress`` object it is given
(``dnet.progress``; the command line draws it, ``--json`` records it).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnet.artifact.onnxfile import input_size_of, read_meta, read_model
from dnet.artifact.sidecar import HARDWARE_COMPAT
from dnet.checkpoint import save_checkpoint, save_torch
from dnet.converters.export import DEFAULT_OPSET, export, model_meta
from dnet.converters.int8.calibration import METHODS, CalibrationCache, CalibrationSet
from dnet.converters.int8.divergence import INT8_CHECK_IMAGES, INT8_MIN_COSINE, INT8_MIN_TOP1
from dnet.converters.int8.mixed import MixedPrecision, ValidationSet, model_layers, resolve
from dnet.converters.int8.placement import DEFAULT_WEIGHT_BITS, WEIGHT_BITS
from dnet.converters.int8.quantize import INT8_LAYOUTS, to_int8
from dnet.converters.precision import FP16_REL_L2, to_fp16
from dnet.converters.tensorrt import PROFILE, BuildOptions, build_plan
from dnet.data.images import list_images
from dnet.data.specs import get_spec
from dnet.errors import DnetError, UsageError, require_one_of
from dnet.files import check_output_path, same_file, sha256_file
from dnet.loading import load
from dnet.progress import QUIET, Progress
from dnet.statedict import torchvision_state_dict

SOURCES = ("t7", "pth", "onnx")
TARGETS = ("pth", "torchvision", "onnx", "onnx-fp16", "onnx-int8", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
SUFFIXES = {"t7": (".t7",), "pth": (".pth", ".pt"), "onnx": (".onnx",)}
CHECK_IMAGES = 8  # real images verified beside random ones when calibration images are at hand


@dataclass(frozen=True)
class ConvertOptions:
    """Every option of a conversion; each ``dnet convert`` flag maps to one field."""

    opset: int = DEFAULT_OPSET
    input_size: int | None = None
    preprocess: str | None = None  # spec name, for sources that do not say how they are fed
    bn: str = "batchnorm"  # how pre-activation BNs are exported (see dnet.converters.export.export)
    calib: CalibrationSet | None = None
    calib_method: str = "minmax"
    calib_cache: Path | None = None  # default: <stem>.calib.json beside the output
    keep_io_types: bool = True  # FP16: float32 input and logits
    fp16_tolerance: float = FP16_REL_L2  # FP16 check: bound on the relative L2 error of the logits against FP32
    fp16_check: bool = True  # False: write the FP16 file without comparing it with the FP32 one
    int8_layout: str = INT8_LAYOUTS[0]  # "densenet" (converters.qdq) or "ort" (onnxruntime.quantization)
    int8_weight_bits: int = DEFAULT_WEIGHT_BITS  # densenet layout: 7 keeps ONNX Runtime's x86 kernels exact
    int8_check_images: int = INT8_CHECK_IMAGES  # held-out images the INT8 file is checked on (0: no check)
    int8_min_cosine: float = INT8_MIN_COSINE
    int8_min_top1: float = INT8_MIN_TOP1
    int8_exclude: tuple[str, ...] = ()  # layer name patterns left in higher precision (converters.mixed)
    int8_fallback: str | None = None  # their precision: fp32 or fp16; None: fp16 for TensorRT, fp32 for ONNX
    val: ValidationSet | None = None  # images the INT8 drop in top-1 accuracy is measured on
    max_drop: float | None = None  # points: leave the most sensitive layers in float until the drop is within it
    precision: str = "fp32"  # --to trt: which typed ONNX TensorRT compiles
    profile: tuple[int, int, int] = PROFILE
    workspace_mib: int | None = None
    opt_level: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compat: str = HARDWARE_COMPAT[0]
    verbose: bool = False  # --to trt: TensorRT's whole build log
    force: bool = False  # replace existing intermediate files this conversion did not write
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for option, what, allowed in (("calib_method", "calibration method", METHODS),
                                      ("int8_layout", "INT8 layout", INT8_LAYOUTS),
                                      ("int8_weight_bits", "INT8 weight bits", WEIGHT_BITS),
                                      ("precision", "precision", PRECISIONS)):
            require_one_of(what, getattr(self, option), allowed, option)
        if self.int8_check_images < 0:
            raise UsageError(f"INT8 check images must be 0 or more, got {self.int8_check_images}",
                             option="int8_check_images")
        for name in ("int8_min_cosine", "int8_min_top1"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name.replace('_', ' ')} must be within [0, 1], got {getattr(self, name)}", option=name)
        if not self.fp16_tolerance > 0:
            raise UsageError(f"the FP16 tolerance (a bound on the relative L2 error of the logits) must be positive, "
                             f"got {self.fp16_tolerance}", option="fp16_tolerance")
        self.mixed_precision("onnx-int8")  # refuses what no model could meet
        if self.int8_layout != "densenet" and self.mixed:
            raise UsageError("layers in higher precision and accuracy control need the densenet INT8 layout",
                             option="int8_layout")

    @property
    def mixed(self) -> bool:
        """Whether the INT8 file's precision is chosen per layer (by hand or by accuracy control)."""
        return bool(self.int8_exclude) or self.val is not None or self.max_drop is not None

    def mixed_precision(self, target: str) -> MixedPrecision | None:
        """What to_int8 is asked for; excluded layers default to FP16 for TensorRT, FP32 for an ONNX file."""
        if not self.mixed:
            return None
        fallback = self.int8_fallback or ("fp16" if target == "trt" else "fp32")
        return MixedPrecision(self.int8_exclude, fallback, self.val, self.max_drop)


def names_for(out: Path) -> dict[str, Path]:
    """The files of a chain ending in ``out``: fp32/fp16/int8 ONNX and the calibration cache, side by side."""
    name = out.name
    for suffix in (".plan", ".engine", ".onnx", ".pth", ".pt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for tag in (".int8", ".fp16", ".fp32"):
        if name.endswith(tag):
            name = name[: -len(tag)]
            break
    d = out.parent
    files = {"fp32": d / f"{name}.onnx", "fp16": d / f"{name}.fp16.onnx", "int8": d / f"{name}.int8.onnx",
             "calib_cache": d / f"{name}.calib.json"}
    return files


def _load_model(src: Path, src_format: str):
    if src.suffix.lower() not in SUFFIXES[src_format]:
        raise UsageError(f"a {src_format} source is a {' or '.join(SUFFIXES[src_format])} file, got {src.name}",
                         option="src_format")
    return load(src)


def _spec(options: ConvertOptions, fallback=None):
    return get_spec(options.preprocess) if options.preprocess else fallback


def _real_inputs(options: ConvertOptions, spec) -> np.ndarray | None:
    """A few calibration images through the model's preprocessing, to verify each step on real inputs."""
    if options.calib is None or spec is None:
        return None
    return dataclasses.replace(options.calib, count=min(CHECK_IMAGES, options.calib.count)).load(spec)


def _onnx_facts(src: Path, options: ConvertOptions, target: str):
    """Read an ONNX source; a file without dnet metadata must have its missing facts supplied by options."""
    proto = read_model(src)
    meta = read_meta(proto)
    if meta is not None:
        return meta.preprocess if not options.preprocess else _spec(options), meta.input_size
    size = options.input_size or input_size_of(proto)
    if _typed_target(target, options) == "int8" and options.preprocess is None and options.calib is not None:
        raise UsageError(f"{src.name} is not a dnet export (no dnet metadata): it does not say how calibration "
                         "images are preprocessed; name a preprocessing", option="preprocess")
    if size is None:
        raise UsageError(f"{src.name} is not a dnet export (no dnet metadata) and its input has no fixed size; "
                         "give the input size", option="input_size")
    return _spec(options), size


def _typed_target(target: str, options: ConvertOptions) -> str:
    """The precision of the ONNX file a target needs: fp32, fp16 or int8 (for trt, the precision option)."""
    return {"onnx": "fp32", "onnx-fp16": "fp16", "onnx-int8": "int8"}.get(target, options.precision)


def _files(out: Path, target: str, opts: ConvertOptions) -> dict[str, Path]:
    """Every file a conversion to ``target`` ending in ``out`` may write (see :func:`names_for`)."""
    files = names_for(out)
    typed_target = _typed_target(target, opts)
    files[typed_target] = out if target != "trt" else files[typed_target]
    if typed_target != "fp32" and files["fp32"] == files[typed_target]:  # "-o model.onnx --to onnx-int8"
        files["fp32"] = out.parent / f"{out.stem}.fp32.onnx"
    if opts.calib_cache is not None:
        files["calib_cache"] = opts.calib_cache
    return files


def _written_from(path: Path, src: Path, src_format: str) -> bool:
    """Whether the existing ONNX ``path`` is an intermediate dnet wrote from ``src`` (so a new run may replace it)."""
    try:
        meta = read_meta(read_model(path))
        if src_format == "onnx":
            own = read_meta(read_model(src))
            return meta is not None and own is not None and meta.source_sha256 == own.source_sha256
        return meta is not None and meta.source_sha256 == sha256_file(src)
    except DnetError:
        return False


def _check_intermediates(src: Path, src_format: str, target: str, out: Path, opts: ConvertOptions) -> None:
    """Intermediates go beside the output: never over an input, a device, or a file this conversion did not write."""
    files = _files(out, target, opts)
    typed_target = _typed_target(target, opts)
    keep = [files["fp32"]] if src_format != "onnx" and (typed_target != "fp32" or target == "trt") else []
    if target == "trt" and typed_target != "fp32":
        keep.append(files[typed_target])
    for path in keep:
        check_output_path(path, inputs=[src])
        if path.exists() and not opts.force and not _written_from(path, src, src_format):
            raise UsageError(f"{path} exists and is not an intermediate dnet wrote from {src.name}; this conversion "
                             "keeps an intermediate file under that name: move it, choose another output name, or let "
                             "the conversion replace it", option="force")
    if typed_target == "int8":
        cache = files["calib_cache"]
        check_output_path(cache, inputs=[src, out])
        if cache.exists():
            CalibrationCache.load(cache)  # one line if it is not a calibration cache; never overwritten then
        elif opts.calib is None:
            raise UsageError("INT8 needs calibration images: give a folder of images (or a calibration cache of "
                             "this model)", option="calib")
    if opts.timing_cache is not None and target == "trt":  # read, then written back after the build
        check_output_path(opts.timing_cache, inputs=[src, out, *keep, files["calib_cache"]])


def _check_request(src: Path, src_format: str, target: str, out: Path, opts: ConvertOptions) -> None:
    """Everything that can be refused before any work is done (no export runs for a request that must fail)."""
    require_one_of("source format", src_format, SOURCES, "src_format")
    require_one_of("target", target, TARGETS, "target")
    if not src.is_file():
        raise DnetError(f"{src}: no such file" if not src.exists() else f"{src}: is not a regular file")
    if src.suffix.lower() not in SUFFIXES[src_format]:
        raise UsageError(f"a {src_format} source is a {' or '.join(SUFFIXES[src_format])} file, got {src.name}",
                         option="src_format")
    if same_file(out, src) or out.resolve() == src.resolve():
        raise UsageError(f"the output {out} is the source file; dnet never overwrites its input")
    check_output_path(out, inputs=[src])
    if src_format == "onnx" and target in ("pth", "torchvision"):
        raise UsageError("an ONNX file cannot be turned back into PyTorch weights; convert from the .t7 or .pth")
    if src_format == "onnx" and target == "onnx":
        raise UsageError(f"{src.name} is already an FP32 ONNX file; choose onnx-fp16, onnx-int8 or trt", option="target")
    typed_target = _typed_target(target, opts)
    if opts.calib is not None and opts.calib.folder is not None and target not in ("pth", "torchvision"):
        list_images(opts.calib.folder, what="calibration folder")  # a missing or empty folder, before the export
    if target not in ("pth", "torchvision"):
        _check_intermediates(src, src_format, target, out, opts)
    if opts.mixed and typed_target != "int8":
        raise UsageError("layers in higher precision and accuracy control are for INT8 files (--to onnx-int8, or trt "
                         "with int8 precision)", option="val" if opts.val is not None else "int8_exclude")
    if opts.val is not None:
        opts.val.open(None)  # a missing or empty folder is refused before any work; the class count once it is known


def _check_layers(model, opts: ConvertOptions) -> None:
    """Refuse, before the export, a mixed-precision request the model cannot meet (patterns, class count)."""
    if opts.mixed:
        resolve(opts.int8_exclude, model_layers(model))
        if opts.val is not None:
            opts.val.open(model.config.num_classes)


def convert(src: str | os.PathLike, *, src_format: str, target: str, out: str | os.PathLike,
            progress: Progress | None = None, **options) -> list[Path]:
    """Convert ``src`` (``src_format``: t7, pth, onnx) to ``target``; returns the files written, in order.

    ``options`` are :class:`ConvertOptions` fields (``calib=CalibrationSet(...)``, ``calib_method=...``,
    ``precision=...`` for ``trt``...). The last path is ``out``; earlier ones are the kept intermediates.
    ``progress`` (a :class:`dnet.progress.Progress`, e.g. a ``Recorder``) hears each stage and each check's numbers
    (the INT8 check's as ``int8_vs_fp32``: held-out images, cosine, top-1 agreement, bounds, each stage's cosine).
    """
    progress = progress or QUIET
    try:
        return _convert(Path(src), src_format, target, Path(out), ConvertOptions(**options), progress)
    finally:
        progress.close()


def _convert(src: Path, src_format: str, target: str, out: Path, opts: ConvertOptions,
             progress: Progress) -> list[Path]:
    _check_request(src, src_format, target, out, opts)
    build = BuildOptions(profile=opts.profile, workspace_mib=opts.workspace_mib, opt_level=opts.opt_level,
                         timing_cache=opts.timing_cache, version_compatible=opts.version_compatible,
                         hardware_compat=opts.hardware_compat) if target == "trt" else None
    if target in ("pth", "torchvision"):
        progress.stage(f"loading {src.name}")
        model = load(src)
        progress.stage(f"writing {out.name}")
        return [_write_torch(model, out, target)]

    files = _files(out, target, opts)
    typed_target = _typed_target(target, opts)
    written: list[Path] = []

    # 1. FP32 ONNX
    if src_format == "onnx":
        spec, _size = _onnx_facts(src, opts, target)
        fp32 = src
    else:
        progress.stage(f"loading {src.name}")
        model = load(src)
        if typed_target == "int8":
            _check_layers(model, opts)
        meta = model_meta(model, input_size=opts.input_size, source=src.name, source_sha256=sha256_file(src),
                          preprocess=_spec(opts))
        spec = meta.preprocess
        fp32 = files["fp32"]
        if fp32 == src:
            raise UsageError(f"the FP32 ONNX {fp32} would overwrite the source; choose another output name")
        check_inputs = _real_inputs(opts, spec)
        progress.stage("FP32 ONNX export + check against PyTorch")
        export(model, fp32, meta=meta, opset=opts.opset, input_size=opts.input_size, bn=opts.bn,
               check_inputs=check_inputs, progress=progress)
        written.append(fp32)
    if typed_target == "fp32" and target != "trt":
        return written

    # 2. typed ONNX
    typed = fp32
    if typed_target == "fp16":
        check_inputs = _real_inputs(opts, spec) if opts.fp16_check else None
        progress.stage("FP16 ONNX + check against FP32" if opts.fp16_check else "FP16 ONNX (check skipped)")
        typed = to_fp16(fp32, files["fp16"], keep_io_types=opts.keep_io_types, check_inputs=check_inputs,
                        check=opts.fp16_check, tolerance=opts.fp16_tolerance, progress=progress)
        if not opts.fp16_check:
            progress.check("fp16_vs_fp32", skipped=True)
        written.append(typed)
    elif typed_target == "int8":
        cache = files["calib_cache"]
        typed, _summary = to_int8(fp32, files["int8"], calib=opts.calib, method=opts.calib_method, cache_path=cache,
                                  spec=spec, progress=progress,
                                  layout=opts.int8_layout, weight_bits=opts.int8_weight_bits,
                                  check_images=opts.int8_check_images, min_cosine=opts.int8_min_cosine,
                                  min_top1=opts.int8_min_top1,
                                  mixed=opts.mixed_precision(target))
        written += [cache, typed]
    if target != "trt":
        return written

    # 3. TensorRT engine: a missing TensorRT or GPU raises NotInstalledError whose line says where the typed ONNX is.
    progress.stage("TensorRT build")
    written.append(Path(build_plan(typed, out, build, verbose=opts.verbose, progress=progress.live)))
    return written


def _write_torch(model, out: Path, target: str) -> Path:
    if target == "pth":
        return save_checkpoint(out, model, model.meta)
    return save_torch(out, torchvision_state_dict(model))
