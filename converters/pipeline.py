"""The conversion chain: t7 | pth | onnx -> dnet model -> FP32 ONNX -> FP16 / INT8 ONNX -> TensorRT engine.

``convert`` is what ``dnet convert``, the demo and the benchmarks call. Every step writes atomically; the
intermediate files are kept beside the output (``densenet121.onnx`` next to ``densenet121.int8.onnx`` and
``densenet121.plan``), and a failure leaves the files of the steps that succeeded, never a partial one. It prints
nothing: each long stage, and each check with its numbers, goes to the ``progress`` object it is given
(``dnet.core.progress``; the command line draws it, ``--json`` records it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnet.converters.export import DEFAULT_OPSET, export, model_meta
from dnet.converters.int8.calibration import CalibrationCache
from dnet.converters.int8.mixed import model_layers, resolve
from dnet.converters.int8.options import Int8Options
from dnet.converters.int8.placement import INT8_FILE_KEYS, weight_bits_for
from dnet.converters.int8.quantize import to_int8
from dnet.converters.precision import FP16_REL_L2, to_fp16
from dnet.converters.tensorrt import BuildOptions, build_plan
from dnet.core.artifact.onnxfile import check_asked_size, input_size_of, quantized_ops, read_meta, read_model
from dnet.core.atomic import sha256_file
from dnet.core.errors import DnetError, UsageError, require_one_of
from dnet.core.outputs import check_output_path, same_file
from dnet.core.progress import QUIET, Progress
from dnet.core.specs import get_spec
from dnet.formats.checkpoint import save_checkpoint, save_torch
from dnet.formats.layouts import CONCAT_ORDERS
from dnet.formats.loading import load
from dnet.formats.statedict import torchvision_state_dict

SOURCES = ("t7", "pth", "onnx")
TARGETS = ("pth", "torchvision", "onnx", "onnx-fp16", "onnx-int8", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
# A pth source is recognised from its bytes (torch.save's zip or pickle), whatever its suffix (.pth.tar, .ckpt, ...).
SUFFIXES = {"t7": (".t7",), "pth": None, "onnx": (".onnx",)}
CHECK_IMAGES = 8  # real images verified beside random ones when calibration images are at hand


@dataclass(frozen=True)
class ConvertOptions:
    """Every option of a conversion; each ``dnet convert`` flag maps to one field."""

    opset: int = DEFAULT_OPSET
    input_size: int | None = None
    preprocess: str | None = None  # spec name, for sources that do not say how they are fed
    key_map: Path | None = None  # pth source: JSON rules from its keys to torchvision's (dnet.formats.layouts.read_key_map)
    concat_order: str | None = None  # pth source: "new-first" for ports writing torch.cat([new, x], 1)
    bn: str = "batchnorm"  # how pre-activation BNs are exported (see dnet.converters.export.export)
    keep_io_types: bool = True  # FP16: float32 input and logits
    fp16_tolerance: float = FP16_REL_L2  # FP16 check: bound on the relative L2 error of the logits against FP32
    fp16_check: bool = True  # False: write the FP16 file without comparing it with the FP32 one
    int8: Int8Options = field(default_factory=Int8Options)  # target, calibration, weights, check, exclusions, bound
    precision: str = "fp32"  # --to trt: which typed ONNX TensorRT compiles
    build: BuildOptions = field(default_factory=BuildOptions)  # --to trt: profile, workspace, timing cache, ...
    verbose: bool = False  # --to trt: TensorRT's whole build log
    force: bool = False  # replace existing intermediate files this conversion did not write
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_one_of("precision", self.precision, PRECISIONS, "precision")
        if not isinstance(self.int8, Int8Options):
            raise UsageError(f"int8 options must be an Int8Options, got {type(self.int8).__name__}", option="int8")
        if not isinstance(self.build, BuildOptions):
            raise UsageError(f"build options must be a BuildOptions, got {type(self.build).__name__}", option="build")
        if not self.fp16_tolerance > 0:
            raise UsageError(f"the FP16 tolerance (a bound on the relative L2 error of the logits) must be positive, "
                             f"got {self.fp16_tolerance}", option="fp16_tolerance")
        if self.concat_order is not None:
            require_one_of("concatenation order", self.concat_order, CONCAT_ORDERS, "concat_order")

    @property
    def calib(self):
        """The calibration images (INT8's; the FP32 and FP16 checks read a few of them too)."""
        return self.int8.calib


def names_for(out: Path) -> dict[str, Path]:
    """The files of a chain ending in ``out``, side by side: fp32/fp16 ONNX, the INT8 file of each target (``int8``:
    the CPU layout, ``NAME.int8.onnx``; ``int8-trt``: the TensorRT layout, ``NAME.int8-trt.onnx``, the one an INT8
    engine is built from; ``int8-ov``: the OpenVINO layout, ``NAME.int8-ov.onnx``) and the calibration cache."""
    name = out.name
    for suffix in (".plan", ".engine", ".onnx", ".pth", ".pt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for tag in (".int8-trt", ".int8-ov", ".int8", ".fp16", ".fp32"):
        if name.endswith(tag):
            name = name[: -len(tag)]
            break
    d = out.parent
    return {"fp32": d / f"{name}.onnx", "fp16": d / f"{name}.fp16.onnx", "int8": d / f"{name}.int8.onnx",
            "int8-trt": d / f"{name}.int8-trt.onnx", "int8-ov": d / f"{name}.int8-ov.onnx",
            "calib_cache": d / f"{name}.calib.json"}


def _check_suffix(src: Path, src_format: str) -> None:
    allowed = SUFFIXES[src_format]
    if allowed is not None and src.suffix.lower() not in allowed:
        raise UsageError(f"a {src_format} source is a {' or '.join(allowed)} file, got {src.name}", option="src_format")


def _load(src: Path, opts: ConvertOptions):
    return load(src, key_map=opts.key_map, concat_order=opts.concat_order)


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
    check_asked_size(proto, meta := read_meta(proto), src.name, options.input_size)
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


def _int8_target(target: str, opts: ConvertOptions) -> str:
    """Whose rules the INT8 file follows: tensorrt for an engine (always), else the option's (default cpu)."""
    return opts.int8.target_for(engine=target == "trt")


def _typed_key(target: str, opts: ConvertOptions) -> str:
    """The :func:`names_for` key of the typed ONNX file: fp32, fp16, int8 (CPU layout), int8-trt or int8-ov."""
    typed = _typed_target(target, opts)
    return INT8_FILE_KEYS[_int8_target(target, opts)] if typed == "int8" else typed


def _files(out: Path, target: str, opts: ConvertOptions) -> dict[str, Path]:
    """Every file a conversion to ``target`` ending in ``out`` may write (see :func:`names_for`)."""
    files = names_for(out)
    key = _typed_key(target, opts)
    files[key] = out if target != "trt" else files[key]
    if key != "fp32" and files["fp32"] == files[key]:  # "-o model.onnx --to onnx-int8"
        files["fp32"] = out.parent / f"{out.stem}.fp32.onnx"
    if opts.int8.cache is not None:
        files["calib_cache"] = opts.int8.cache
    return files


def _written_from(path: Path, src: Path, src_format: str, int8_target: str | None = None) -> bool:
    """Whether the existing ONNX ``path`` is a file dnet wrote from ``src`` (so a new run may replace it); with
    ``int8_target``, an INT8 file of that target (never one of the other target, nor one that records none)."""
    try:
        meta = read_meta(read_model(path))
        if meta is None or (int8_target is not None and meta.int8_target != int8_target):
            return False
        if src_format == "onnx":
            own = read_meta(read_model(src))
            return own is not None and meta.source_sha256 == own.source_sha256
        return meta.source_sha256 == sha256_file(src)
    except DnetError:
        return False


def _int8_file_of_another(path: Path, src: Path, src_format: str, int8_target: str) -> str | None:
    """Why the existing ``path`` is a dnet INT8 file this conversion must not replace (None: it may)."""
    if not path.is_file():
        return None
    try:
        meta = read_meta(read_model(path))
    except DnetError:
        return None  # not an ONNX file dnet reads: the usual output policy (dnet.core.outputs)
    if meta is None or meta.precision != "int8":
        return None
    if meta.int8_target != int8_target:
        return f"an INT8 file of the {meta.int8_target or 'unrecorded'} target"
    if not _written_from(path, src, src_format, int8_target):
        return f"an INT8 file written from another source ({meta.source or 'unnamed'})"
    return None


def _check_intermediates(src: Path, src_format: str, target: str, out: Path, opts: ConvertOptions) -> None:
    """Intermediates go beside the output: never over an input, a device, or a file this conversion did not write."""
    files = _files(out, target, opts)
    typed_target, key = _typed_target(target, opts), _typed_key(target, opts)
    int8_target = _int8_target(target, opts) if typed_target == "int8" else None
    keep = [files["fp32"]] if src_format != "onnx" and (typed_target != "fp32" or target == "trt") else []
    if target == "trt" and typed_target != "fp32":
        keep.append(files[key])
    for path in keep:
        check_output_path(path, inputs=[src])
        target_of = int8_target if path == files.get(key) else None
        if path.exists() and not opts.force and not _written_from(path, src, src_format, target_of):
            raise UsageError(f"{path} exists and is not an intermediate dnet wrote from {src.name}"
                             + (f" for the {int8_target} INT8 target" if target_of else "")
                             + "; this conversion keeps an intermediate file under that name: move it, choose "
                             "another output name, or let the conversion replace it", option="force")
    if target == "onnx-int8" and not opts.force:
        why = _int8_file_of_another(out, src, src_format, int8_target)
        if why is not None:
            raise UsageError(f"{out} exists and is {why}; this conversion writes the {int8_target} INT8 file: choose "
                             "another output name, or let the conversion replace it", option="force")
    if typed_target == "int8":
        cache = files["calib_cache"]
        check_output_path(cache, inputs=[src, out])
        if cache.exists():
            CalibrationCache.load(cache)  # one line if it is not a calibration cache; never overwritten then
        elif opts.int8.calib is None:
            raise UsageError("INT8 needs calibration images: give a folder of images (or a calibration cache of "
                             "this model)", option="calib")
    if opts.build.timing_cache is not None and target == "trt":  # read, then written back after the build
        check_output_path(opts.build.timing_cache, inputs=[src, out, *keep, files["calib_cache"]])


def _check_request(src: Path, src_format: str, target: str, out: Path, opts: ConvertOptions) -> None:
    """Everything that can be refused before any work is done (no export runs for a request that must fail)."""
    require_one_of("source format", src_format, SOURCES, "src_format")
    require_one_of("target", target, TARGETS, "target")
    if not src.is_file():
        raise DnetError(f"{src}: no such file" if not src.exists() else f"{src}: is not a regular file")
    _check_suffix(src, src_format)
    if (opts.key_map is not None or opts.concat_order is not None) and src_format != "pth":
        raise UsageError("a key map and a concatenation order are for pth sources (state dicts)",
                         option="key_map" if opts.key_map is not None else "concat_order")
    if same_file(out, src) or out.resolve() == src.resolve():
        raise UsageError(f"the output {out} is the source file; dnet never overwrites its input")
    check_output_path(out, inputs=[src])
    if src_format == "onnx" and target in ("pth", "torchvision"):
        raise UsageError("an ONNX file cannot be turned back into PyTorch weights; convert from the .t7 or .pth")
    if src_format == "onnx" and target == "onnx":
        raise UsageError(f"{src.name} is already an FP32 ONNX file; choose --precision fp16 or int8, or --to trt", option="target")
    if src_format == "onnx" and target in ("onnx-fp16", "onnx-int8"):
        ops = quantized_ops(read_model(src))
        if ops:  # its weights are already integers: FP16 of a Q/DQ graph is invalid, INT8 of one is a second rounding
            raise UsageError(f"{src.name} is already quantized ({', '.join(ops[:3])} nodes); convert the FP32 model "
                             f"to {target}, or this file to trt", option="target")
    typed_target = _typed_target(target, opts)
    if opts.calib is not None and opts.calib.images is None and target not in ("pth", "torchvision"):
        opts.calib.source()  # a missing or empty folder or a bad array file, before the export
    if target not in ("pth", "torchvision"):
        _check_intermediates(src, src_format, target, out, opts)
    if typed_target == "int8":  # a cpu target for an engine, or 7-bit weights for TensorRT, are refused here
        weight_bits_for(_int8_target(target, opts), opts.int8.weight_bits)
    elif opts.int8.target is not None:
        raise UsageError("the INT8 target is for INT8 files (--precision int8, with --to onnx or trt)",
                         option="int8_target")
    if opts.int8.mixed and typed_target != "int8":
        raise UsageError("layers in higher precision and accuracy control are for INT8 files (--precision int8, with --to "
                         "onnx or trt)", option="val" if opts.int8.val is not None else "int8_exclude")
    if opts.int8.val is not None:
        opts.int8.val.open(None)  # a missing or empty folder is refused before any work; the class count once it is known


def _check_layers(model, opts: ConvertOptions) -> None:
    """Refuse, before the export, a mixed-precision request the model cannot meet (patterns, class count)."""
    if opts.int8.mixed:
        resolve(opts.int8.exclude, model_layers(model))
        if opts.int8.val is not None:
            opts.int8.val.open(model.config.num_classes)


def convert(src: str | os.PathLike, *, src_format: str, target: str, out: str | os.PathLike,
            progress: Progress | None = None, kept: list[Path] | None = None, **options) -> list[Path]:
    """Convert ``src`` (``src_format``: t7, pth, onnx) to ``target``; returns the files written, in order.

    ``options`` are :class:`ConvertOptions` fields (``int8=Int8Options(calib=CalibrationSet(...), target=...)``,
    ``precision=...`` and ``build=BuildOptions(profile=...)`` for ``trt``...). The last path is ``out``; earlier ones
    are the kept intermediates. ``kept``, a list, receives each file as it is written, so a caller knows what a
    failed or interrupted conversion kept.
    A missing output folder is created (and removed again when the request is refused before any file is written).
    ``progress`` (a :class:`dnet.core.progress.Progress`, e.g. a ``Recorder``) hears each stage and each check's numbers
    (the INT8 check's as ``int8_vs_fp32``: held-out images, cosine, top-1 agreement, bounds, each stage's cosine).
    """
    progress = progress or QUIET
    kept = [] if kept is None else kept
    made = _make_folders(Path(out).parent)
    try:
        return _convert(Path(src), src_format, target, Path(out), ConvertOptions(**options), progress, kept)
    except BaseException:
        if not kept:
            for folder in reversed(made):  # only the folders this call made, and only while they are empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    finally:
        progress.close()


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first (nothing when it exists)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        return []  # under a file: check_output_path says so in one line
    for f in reversed(missing):
        try:
            f.mkdir()
        except OSError:
            break  # permission denied: check_output_path says so in one line
    return [f for f in reversed(missing) if f.is_dir()]


def _convert(src: Path, src_format: str, target: str, out: Path, opts: ConvertOptions,
             progress: Progress, written: list[Path]) -> list[Path]:
    _check_request(src, src_format, target, out, opts)
    build = opts.build if target == "trt" else None
    if target in ("pth", "torchvision"):
        progress.stage(f"loading {src.name}")
        model = _load(src, opts)
        progress.stage(f"writing {out.name}")
        written.append(_write_torch(model, out, target))
        return written

    files = _files(out, target, opts)
    typed_target = _typed_target(target, opts)

    # 1. FP32 ONNX
    if src_format == "onnx":
        spec, _size = _onnx_facts(src, opts, target)
        fp32 = src
    else:
        progress.stage(f"loading {src.name}")
        model = _load(src, opts)
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
        cache, i8 = files["calib_cache"], opts.int8
        int8_target = _int8_target(target, opts)
        try:
            typed, _summary = to_int8(fp32, files[_typed_key(target, opts)], calib=i8.calib, method=i8.method,
                                      cache_path=cache, spec=spec, progress=progress, layout=i8.layout,
                                      target=int8_target, weight_bits=i8.weight_bits, check_images=i8.check_images,
                                      min_cosine=i8.min_cosine, min_top1=i8.min_top1,
                                      mixed=i8.mixed_precision(int8_target))
        finally:  # the cache is written before the check: a refused file keeps it (no recalibration next time)
            if cache.is_file():
                written.append(cache)
        written.append(typed)
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
