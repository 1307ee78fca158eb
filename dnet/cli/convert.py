"""``dnet convert``: t7 | pth | onnx (or a zoo name's published weights) to pth | torchvision | onnx | onnx-fp16 |
onnx-int8 | trt."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.artifact.sidecar import HARDWARE_COMPAT
from dnet.cli.main import reports_errors, warn
from dnet.cli.options import default, json_option, parse_profile, quiet_option
from dnet.cli.progress import format_check, progress_for
from dnet.converters.calibration import METHODS, CalibrationSet
from dnet.converters.export import MIN_OPSET
from dnet.converters.pipeline import PRECISIONS, SOURCES, TARGETS, ConvertOptions, convert
from dnet.converters.precision import INT8_ACTIVATIONS
from dnet.errors import UsageError
from dnet.files import check_output_path
from dnet.hub import SOURCES as PUBLISHERS
from dnet.hub import pretrained_file
from dnet.table import format_table

PROFILE = ",".join(map(str, default(ConvertOptions, "profile")))


@click.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--from", "src_format", type=click.Choice(SOURCES), help="Source format (none with --pretrained).")
@click.option("--pretrained", type=click.Choice(PUBLISHERS),
              help="SRC is a zoo name: convert its published weights (fetched into dnet's cache, see dnet pull).")
@click.option("--to", "target", type=click.Choice(TARGETS), required=True, help="Target format.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output file.")
@click.option("--calib", type=click.Path(path_type=Path), help="Folder of calibration images (INT8).")
@click.option("--calib-count", type=click.IntRange(min=1), default=default(CalibrationSet, "count"), show_default=True)
@click.option("--calib-method", type=click.Choice(METHODS), default=default(ConvertOptions, "calib_method"),
              show_default=True)
@click.option("--calib-cache", type=click.Path(path_type=Path), help="Calibration cache (default: NAME.calib.json beside the output).")
@click.option("--int8-activations", type=click.Choice(INT8_ACTIVATIONS), default=default(ConvertOptions, "int8_activations"),
              show_default=True, help="uint8: asymmetric activations that ONNX Runtime's CPU kernels fuse fully (not for TensorRT).")
@click.option("--fp16-tolerance", type=float, default=default(ConvertOptions, "fp16_tolerance"), show_default="4·2⁻¹¹",
              help="FP16 check: bound on the relative L2 error of the logits against the FP32 file.")
@click.option("--fp16-check/--no-fp16-check", default=default(ConvertOptions, "fp16_check"), show_default=True,
              help="Compare the FP16 file with the FP32 one (relative L2 and top-1) before keeping it.")
@click.option("--opset", type=click.IntRange(min=MIN_OPSET), default=default(ConvertOptions, "opset"), show_default=True)
@click.option("--input-size", type=click.IntRange(min=1), help="Input height/width (default: the model's).")
@click.option("--preprocess", help="Preprocessing spec name, for sources that do not record one.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=default(ConvertOptions, "precision"), show_default=True,
              help="--to trt: the typed ONNX TensorRT compiles.")
@click.option("--profile", default=None, help=f"--to trt: optimization profile MIN,OPT,MAX batch sizes [default: {PROFILE}].")
@click.option("--batch", "batch_alias", default=None, hidden=True, help="Deprecated alias of --profile.")
@click.option("--workspace", "workspace_mib", type=click.IntRange(min=1), help="--to trt: workspace limit in MiB.")
@click.option("--opt-level", type=click.IntRange(0, 5), help="--to trt: builder optimization level.")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="--to trt: timing cache file (loaded and saved).")
@click.option("--version-compatible", is_flag=True, help="--to trt: build a version-compatible engine.")
@click.option("--hardware-compat", type=click.Choice(HARDWARE_COMPAT), default=default(ConvertOptions, "hardware_compat"),
              show_default=True)
@click.option("--force", is_flag=True, help="Replace existing intermediate files that this conversion did not write.")
@click.option("-v", "--verbose", is_flag=True, help="--to trt: print TensorRT's whole build log (on stderr).")
@json_option("what was written and the checks with their numbers")
@quiet_option()
@reports_errors
def convert_cmd(src, src_format, pretrained, target, out, calib, calib_count, calib_method, calib_cache, int8_activations,
                fp16_tolerance, fp16_check, opset, input_size, preprocess, precision, profile, batch_alias, workspace_mib,
                opt_level, timing_cache, version_compatible, hardware_compat, force, verbose, as_json, quiet) -> None:
    """Convert a DenseNet file; intermediate files are kept beside the output."""
    if batch_alias is not None:
        if profile is not None:
            raise UsageError("give the optimization profile once: --profile (--batch is its deprecated alias)")
        warn("--batch is deprecated for convert and will be removed in the next release; use --profile MIN,OPT,MAX")
        profile = batch_alias
    progress, weights = progress_for(quiet), {}
    if pretrained is not None:
        if src_format is not None:
            raise UsageError("with --pretrained SRC is a zoo name, not a file: leave out --from")
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
    calib_set = CalibrationSet(folder=calib, count=calib_count) if calib is not None else None
    written = convert(
        src, src_format=src_format, target=target, out=out, calib=calib_set, calib_method=calib_method,
        calib_cache=calib_cache, int8_activations=int8_activations, fp16_tolerance=fp16_tolerance,
        fp16_check=fp16_check, opset=opset, input_size=input_size, preprocess=preprocess, precision=precision,
        profile=parse_profile(profile or PROFILE), workspace_mib=workspace_mib, opt_level=opt_level,
        timing_cache=timing_cache, version_compatible=version_compatible, hardware_compat=hardware_compat,
        force=force, verbose=verbose, progress=progress,
    )
    files = [{"file": str(p), "role": "output" if p == written[-1] else "kept", "bytes": p.stat().st_size}
             for p in written]
    if as_json:
        click.echo(json.dumps({"source": str(src), "from": src_format, "to": target, **weights, "written": files,
                               **progress.to_dict()}, indent=2))
        return
    click.echo(format_table(["", "file", "bytes"], [[f["role"], f["file"], f"{f['bytes']:,}"] for f in files], right=(2,)))
    if len(written) > 1:
        click.echo(f"intermediate files are kept beside the output in {written[-1].parent}")
    for check in progress.checks:
        click.echo(f"check  {format_check(check)}")
