"""``dnet convert``: t7 | pth | onnx to pth | torchvision | onnx | onnx-fp16 | onnx-int8 | trt."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dnet.cli import reports_errors
from dnet.cli.table import format_table


def _batch(value: str) -> tuple[int, int, int]:
    try:
        from dnet.converters.tensorrt import parse_batch_profile

        return tuple(parse_batch_profile(value))
    except ImportError:
        pass
    from dnet.errors import UsageError

    try:
        lo, opt, hi = (int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--batch must be MIN,OPT,MAX (e.g. 1,8,32), got {value!r}") from None
    if not 1 <= lo <= opt <= hi:
        raise UsageError(f"--batch needs 1 ≤ MIN ≤ OPT ≤ MAX, got {value!r}")
    return lo, opt, hi


@click.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--from", "src_format", type=click.Choice(["t7", "pth", "onnx"]), required=True, help="Source format.")
@click.option("--to", "target", type=click.Choice(["pth", "torchvision", "onnx", "onnx-fp16", "onnx-int8", "trt"]),
              required=True, help="Target format.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output file.")
@click.option("--calib", type=click.Path(path_type=Path), help="Folder of calibration images (INT8).")
@click.option("--calib-count", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--calib-cache", type=click.Path(path_type=Path), help="Calibration cache (default: NAME.calib.json beside the output).")
@click.option("--int8-activations", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True,
              help="uint8: asymmetric activations that ONNX Runtime's CPU kernels fuse fully (not for TensorRT).")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True)
@click.option("--input-size", type=click.IntRange(min=1), help="Input height/width (default: the model's).")
@click.option("--preprocess", help="Preprocessing spec name, for sources that do not record one.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="--to trt: the typed ONNX TensorRT compiles.")
@click.option("--batch", default="1,8,32", show_default=True, help="--to trt: optimization profile MIN,OPT,MAX.")
@click.option("--workspace", "workspace_mib", type=click.IntRange(min=1), help="--to trt: workspace limit in MiB.")
@click.option("--opt-level", type=click.IntRange(0, 5), help="--to trt: builder optimization level.")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="--to trt: timing cache file (loaded and saved).")
@click.option("--version-compatible", is_flag=True, help="--to trt: build a version-compatible engine.")
@click.option("--hardware-compat", type=click.Choice(["none", "ampere+", "same-cc"]), default="none", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def convert_cmd(src, src_format, target, out, calib, calib_count, calib_method, calib_cache, int8_activations, opset, input_size,
                preprocess, precision, batch, workspace_mib, opt_level, timing_cache, version_compatible,
                hardware_compat, quiet) -> None:
    """Convert a DenseNet file; intermediate files are kept beside the output."""
    from dnet.converters.calibration import CalibrationSet
    from dnet.converters.pipeline import convert

    calib_set = CalibrationSet(folder=calib, count=calib_count) if calib is not None else None
    written = convert(
        src, src_format=src_format, target=target, out=out, calib=calib_set, calib_method=calib_method,
        calib_cache=calib_cache, int8_activations=int8_activations, opset=opset, input_size=input_size, preprocess=preprocess, precision=precision,
        batch=_batch(batch), workspace_mib=workspace_mib, opt_level=opt_level, timing_cache=timing_cache,
        version_compatible=version_compatible, hardware_compat=hardware_compat,
        progress=not quiet and sys.stderr.isatty(),
    )
    rows = [[("output" if p == written[-1] else "kept"), str(p), f"{p.stat().st_size:,}"] for p in written]
    click.echo(format_table(["", "file", "bytes"], rows, right=(2,)))
    if len(written) > 1:
        click.echo(f"intermediate files are kept beside the output in {written[-1].parent}")


COMMANDS = [convert_cmd]
