"""``dnet demo``: the front door. The whole pipeline on the built-in digits data set, no download."""

from __future__ import annotations

import click

from dnet.cli.main import reports_errors
from dnet.demo import DemoConfig, run_demo


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default runs/demo-<time>).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--depth", type=int, default=22, show_default=True, help="DenseNet-BC depth (6n+4).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def demo_cmd(out: str | None, epochs: int, depth: int, quiet: bool) -> None:
    """Train a small DenseNet-BC on digits, convert it to FP32/FP16/INT8 ONNX, evaluate each, report."""
    run_demo(DemoConfig(out=out, epochs=epochs, depth=depth, quiet=quiet), log=click.echo)
