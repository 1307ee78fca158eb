"""``dnet convert``: t7 | pth | onnx (or a zoo name's published weights) to pth | torchvision | onnx | trt, the ONNX
file and the engine in fp32 | fp16 | int8 (``--precision``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.cli.groups import GENERAL, Alias, Choice, deprecated, verb
from dnet.cli.main import error_line, reports_errors, warn
from dnet.cli.options import (
    MAX_IMAGES,
    MAX_INPUT_SIZE,
    amount,
    count,
    default,
    json_option,
    parse_profile,
    quiet_option,
)
from dnet.cli.progress import format_check, progress_for
from dnet.converters.export import MAX_OPSET, MIN_OPSET
from dnet.converters.int8.calibration import METHODS, CalibrationSet
from dnet.converters.int8.mixed import ValidationSet
from dnet.converters.int8.options import LAYOUTS, Int8Options
from dnet.converters.int8.placement import CPU_WEIGHT_BITS, FALLBACKS, WEIGHT_BITS
from dnet.converters.int8.placement import TARGETS as INT8_TARGETS
from dnet.converters.pipeline import PRECISIONS, SOURCES, TARGETS, ConvertOptions, convert
from dnet.converters.tensorrt import BuildOptions
from dnet.core.artifact.sidecar import HARDWARE_COMPAT
from dnet.core.errors import DnetError, UsageError
from dnet.core.outputs import check_output_path
from dnet.core.specs import SPECS
from dnet.core.table import format_table
from dnet.data.datasets import DATASETS
from dnet.formats.layouts import CONCAT_ORDERS
from dnet.models.hub import SOURCES as PUBLISHERS
from dnet.models.hub import pretrained_file


def accuracy_line(acc: dict) -> str:
    """The measured drop and the layers in higher precision, on one line (convert and inspect print it)."""
    bound = f" (bound {acc['max_drop']:g})" if acc.get("max_drop") is not None else ""
    kept = (f"{len(acc['excluded'])} layer{'s' * (len(acc['excluded']) != 1)} in {acc['fallback'].upper()}: "
            + ", ".join(acc["excluded"])) if acc["excluded"] else "every layer INT8"
    return (f"INT8 drop on {acc['images']} validation images ({acc['basis']}): {acc['drop']:.2f} points{bound}, "
            f"{acc['fp32_top1']:.2f}% → {acc['int8_top1']:.2f}%; {kept}")

PROFILE = ",".join(map(str, default(BuildOptions, "profile")))


# the library's targets that name a precision (onnx-fp16, onnx-int8): written --to onnx --precision P
TYPED = {t: t.removeprefix("onnx-") for t in TARGETS if t.startswith("onnx-")}
FORMATS = tuple(t for t in TARGETS if t not in TYPED)


def _target(to: str, precision: str) -> str:
    """The library's target for ``--to`` and ``--precision`` (``onnx`` + ``int8``: ``onnx-int8``); a deprecated
    ``--to onnx-int8`` says so and must agree with ``--precision`` when that is given."""
    ctx = click.get_current_context(silent=True)
    given = ctx is not None and ctx.get_parameter_source("precision") is not click.core.ParameterSource.DEFAULT
    if to in TYPED:
        deprecated(f"--to {to}", advice=f"use --to onnx --precision {TYPED[to]}")
        if given and precision != TYPED[to]:
            raise UsageError(f"--precision {precision} contradicts --to {to}, which writes {TYPED[to]} (use --to onnx "
                             f"--precision {precision})", option="precision")
        return to
    if to == "onnx" and precision != "fp32":
        return f"onnx-{precision}"
    if to not in ("onnx", "trt") and precision != "fp32":
        raise UsageError(f"--precision {precision} is for --to onnx and --to trt; --to {to} writes FP32 weights (leave "
                         "--precision out)", option="precision")
    return to


SECTIONS = (
    ("Source and output", ("--from", "--pretrained", "--to", "--precision", "--output", "--key-map",
                           "--concat-order", "--force")),
    ("Calibration (INT8)", ("--calib", "--dataset", "--data", "--calib-count", "--calib-method", "--calib-cache")),
    ("INT8", ("--int8-target", "--int8-layout", "--int8-weight-bits", "--int8-check-count", "--int8-min-cosine",
              "--int8-min-top1", "--int8-exclude", "--int8-fallback")),
    ("Accuracy control (INT8)", ("--val", "--val-count", "--max-drop")),
    ("FP16 check", ("--fp16-check", "--fp16-tolerance")),
    ("Export", ("--opset", "--input-size", "--preprocess")),
    ("TensorRT build (--to trt)", ("--profile", "--workspace", "--opt-level", "--timing-cache", "--version-compatible",
                                   "--hardware-compat", "--verbose")),
    (GENERAL, ("--json", "--quiet")),
)
ALIASES = (Alias("--batch", "--profile", "use --profile MIN,OPT,MAX"), Alias("--int8-check-images", "--int8-check-count"))


@verb("convert", sections=SECTIONS, aliases=ALIASES)
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--from", "src_format", type=click.Choice(SOURCES), help="Source format (none with --pretrained).")
@click.option("--pretrained", type=click.Choice(PUBLISHERS),
              help="SRC is a zoo name: convert its published weights (fetched into dnet's cache, see dnet pull).")
@click.option("--to", "target", type=Choice(FORMATS, deprecated=TYPED), required=True,
              help="Target format: an ONNX file, a TensorRT engine (both of --precision), or PyTorch weights.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output file.")
@click.option("--calib", type=click.Path(path_type=Path), metavar="PATH",
              help="Calibration images (INT8): a folder of images, an .npz/.npy of uint8 images, or a CIFAR binary "
              "folder; with --dataset, the folder holding that data set.")
@click.option("--calib-count", type=count(1, MAX_IMAGES), default=default(CalibrationSet, "count"), show_default=True,
              help="Calibration images used, evenly spread over the set.")
@click.option("--calib-method", type=click.Choice(METHODS), default=default(Int8Options, "method"), show_default=True)
@click.option("--calib-cache", type=click.Path(path_type=Path), help="Calibration cache (default: NAME.calib.json beside the output).")
@click.option("--int8-target", type=click.Choice(INT8_TARGETS), default=None,
              help="Whose rules the INT8 file follows: cpu (ONNX Runtime; NAME.int8.onnx), openvino "
              "(NAME.int8-ov.onnx) or tensorrt (NAME.int8-trt.onnx, for trtexec or Triton) [default: tensorrt for "
              "--to trt, else cpu].")
@click.option("--int8-layout", type=click.Choice(LAYOUTS), default=default(Int8Options, "layout"),
              show_default=True, help="densenet: dnet's placement for the target; ort: onnxruntime.quantization's "
              "placement (the reference, slower).")
@click.option("--int8-weight-bits", type=click.Choice([str(b) for b in WEIGHT_BITS]), default=None,
              help="densenet layout, cpu or openvino target: 7 for x86 CPUs without VNNI (their u8×s8 kernels "
              f"saturate on 8-bit weights) [default: {CPU_WEIGHT_BITS}; the tensorrt target always uses 8].")
@click.option("--int8-check-count", "int8_check_images", type=count(0, MAX_IMAGES), default=default(Int8Options, "check_images"),
              show_default=True, help="Held-out images of the --calib set the INT8 file is checked on (0: no check).")
@click.option("--int8-min-cosine", type=amount(0, 1), default=default(Int8Options, "min_cosine"),
              show_default=True, help="INT8 check: least cosine of its logits with FP32's.")
@click.option("--int8-min-top1", type=amount(0, 1), default=default(Int8Options, "min_top1"),
              show_default=True, help="INT8 check: least top-1 agreement with FP32.")
@click.option("--int8-exclude", multiple=True, metavar="PATTERN",
              help="Leave the layers this pattern names (denseblock3.denselayer7.conv2, 'transition*', classifier) in "
              "higher precision; repeatable.")
@click.option("--int8-fallback", type=click.Choice(FALLBACKS), default=None,
              help="Precision of the layers left out of INT8 [default: fp16 for --to trt, else fp32].")
@click.option("--val", type=click.Path(path_type=Path), metavar="PATH",
              help="Validation images: the INT8 drop is measured on them. A folder (one subfolder per class, or images "
              "alone), an .npz with 'images' and 'labels', or a CIFAR binary folder; with --dataset, its folder.")
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
              help="What --calib and --val hold, read as dnet eval reads it: calibration takes its train split, "
              "validation its test split.")
@click.option("--data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="With --dataset: the folder holding it, for --calib (and --val, INT8) when they are not given.")
@click.option("--val-count", type=count(1, MAX_IMAGES), default=default(ValidationSet, "count"), show_default=True,
              help="Validation images used, evenly spread over the folder.")
@click.option("--max-drop", type=amount(0, 100), metavar="PTS",
              help="Accuracy control: leave the most sensitive layers in higher precision until INT8 loses at most "
              "PTS points of top-1 accuracy on --val.")
@click.option("--fp16-tolerance", type=amount(0, 1), default=default(ConvertOptions, "fp16_tolerance"), show_default="4·2⁻¹¹",
              help="FP16 check: bound on the relative L2 error of the logits against the FP32 file.")
@click.option("--fp16-check/--no-fp16-check", default=default(ConvertOptions, "fp16_check"), show_default=True,
              help="Compare the FP16 file with the FP32 one (relative L2 and top-1) before keeping it.")
@click.option("--opset", type=count(MIN_OPSET, MAX_OPSET), default=default(ConvertOptions, "opset"), show_default=True)
@click.option("--input-size", type=count(1, MAX_INPUT_SIZE), help="Input height/width (default: the model's).")
@click.option("--preprocess", type=click.Choice(list(SPECS)), help="Preprocessing, for sources that do not record one.")
@click.option("--key-map", type=click.Path(dir_okay=False, path_type=Path),
              help="--from pth: JSON list of [pattern, replacement] rules renaming a port's keys to torchvision's.")
@click.option("--concat-order", type=click.Choice(CONCAT_ORDERS),
              help="--from pth: new-first for ports that concatenate new features before the input.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=default(ConvertOptions, "precision"), show_default=True,
              help="--to onnx: the ONNX file's; --to trt: the typed ONNX TensorRT compiles.")
@click.option("--profile", default=None, help=f"--to trt: optimization profile MIN,OPT,MAX batch sizes [default: {PROFILE}].")
@click.option("--workspace", "workspace_mib", type=count(1, 1 << 20), help="--to trt: workspace limit in MiB.")
@click.option("--opt-level", type=click.IntRange(0, 5), help="--to trt: builder optimization level.")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="--to trt: timing cache file (loaded and saved).")
@click.option("--version-compatible", is_flag=True, help="--to trt: build a version-compatible engine.")
@click.option("--hardware-compat", type=click.Choice(HARDWARE_COMPAT), default=default(BuildOptions, "hardware_compat"),
              show_default=True)
@click.option("--force", is_flag=True, help="Replace existing intermediate files that this conversion did not write.")
@click.option("-v", "--verbose", is_flag=True, help="--to trt: print TensorRT's whole build log (on stderr).")
@json_option("what was written and the checks with their numbers")
@quiet_option()
@reports_errors
def convert_cmd(src, src_format, pretrained, target, out, calib, calib_count, calib_method, calib_cache,
                int8_target, int8_layout, int8_weight_bits, int8_check_images, int8_min_cosine, int8_min_top1,
                int8_exclude, int8_fallback, val, dataset, data, val_count, max_drop, fp16_tolerance, fp16_check, opset,
                input_size, preprocess, key_map, concat_order, precision, profile, workspace_mib,
                opt_level, timing_cache, version_compatible, hardware_compat, force, verbose, as_json, quiet) -> None:
    """Convert a DenseNet file; intermediate files are kept beside the output."""
    target = _target(target, precision)
    progress, weights = progress_for(quiet), {}
    if pretrained is not None:
        if src_format is not None:
            raise UsageError("with --pretrained SRC is a zoo name, not a file: leave out --from")
        if out.parent.is_dir():  # a missing output folder is created by the conversion
            check_output_path(out)  # before a download, not after it
        progress.stage(f"{src}: {pretrained} weights")  # the download draws its own bar on a terminal
        try:
            path, src_format, published = pretrained_file(str(src), pretrained, progress=progress.live)
        finally:
            progress.close()
        weights = {"pretrained": {"model": str(src), "source": published.source, "url": published.url,
                                  "file": str(path)}}
        src, preprocess = path, preprocess or published.preprocess
    elif src_format is None:
        raise UsageError("name the source format with --from t7|pth|onnx, or give a zoo name with --pretrained")
    if data is not None and dataset is None:
        raise UsageError("--data names the folder of a data set: say which with --dataset "
                         f"({'|'.join(DATASETS)}); for a folder of images or an array file use --calib/--val")
    use_calib, use_val = calib is not None, val is not None
    if dataset is not None:  # as dnet eval reads it: --data DIR (digits: built in) stands for --calib and --val
        if data is not None or dataset == "digits":
            int8 = target == "onnx-int8" or (target == "trt" and precision == "int8")
            calib, use_calib = (calib, True) if use_calib else (data, True)
            val, use_val = (val, True) if use_val else (data, int8)
        if not (use_calib or use_val):
            raise UsageError(f"--dataset {dataset} needs --data DIR, the folder holding it (or --calib/--val)")
    calib_set = CalibrationSet(folder=calib, count=calib_count, dataset=dataset) if use_calib else None
    val_set = ValidationSet(val, val_count, dataset) if use_val else None
    int8 = Int8Options(
        target=int8_target, layout=int8_layout, calib=calib_set, method=calib_method, cache=calib_cache,
        weight_bits=int(int8_weight_bits) if int8_weight_bits is not None else None, check_images=int8_check_images,
        min_cosine=int8_min_cosine, min_top1=int8_min_top1, exclude=tuple(int8_exclude), fallback=int8_fallback,
        val=val_set, max_drop=max_drop)
    written: list[Path] = []
    try:
        convert(
            src, src_format=src_format, target=target, out=out, int8=int8, fp16_tolerance=fp16_tolerance,
            fp16_check=fp16_check, opset=opset, input_size=input_size, preprocess=preprocess, key_map=key_map,
            concat_order=concat_order, precision=precision,
            build=BuildOptions(profile=parse_profile(profile or PROFILE), workspace_mib=workspace_mib,
                               opt_level=opt_level, timing_cache=timing_cache, version_compatible=version_compatible,
                               hardware_compat=hardware_compat), force=force, verbose=verbose,
            progress=progress, kept=written,
        )
    except (DnetError, KeyboardInterrupt) as e:
        if as_json:  # the document still says what was kept, and why the rest was not written
            error = error_line(e) if isinstance(e, DnetError) else "interrupted"
            click.echo(json.dumps(_document(src, src_format, target, weights, written, progress, out=None)
                                  | {"error": error}, indent=2))
        raise
    for check in progress.checks:
        if check["check"] == "int8_vs_fp32" and check.get("skipped"):
            warn(f"INT8 file not checked: {check['reason']}")
    doc = _document(src, src_format, target, weights, written, progress, out=written[-1])
    files = doc["written"]
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(format_table(["", "file", "bytes"], [[f["role"], f["file"], f"{f['bytes']:,}"] for f in files], right=(2,)))
    if len(written) > 1:
        click.echo(f"intermediate files are kept beside the output in {written[-1].parent}")
    for check in progress.checks:
        click.echo(accuracy_line(check) if check["check"] == "int8_accuracy" else f"check  {format_check(check)}")


def _document(src, src_format, target, weights, written, progress, *, out) -> dict:
    """The ``--json`` document: the files written (``out`` is the output; None when the conversion stopped early)."""
    files = [{"file": str(p), "role": "output" if p == out else "kept", "bytes": p.stat().st_size}
             for p in written if p.is_file()]
    return {"source": str(src), "from": src_format, "to": target, **weights, "written": files, **progress.to_dict()}
