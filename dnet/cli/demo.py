"""``dnet demo``: the front door. The whole pipeline on the built-in digits data set, no download."""

from __future__ import annotations

import json

import click

from dnet.apps.demo import DemoConfig, run_demo
from dnet.cli.groups import Alias, verb
from dnet.cli.main import reports_errors
from dnet.cli.options import MAX_DEPTH, MAX_EPOCHS, count, default, json_option, quiet_option
from dnet.cli.progress import progress_for


@verb("demo", aliases=(Alias("--out", "--output"),))
@click.option("-o", "--output", "out", type=click.Path(file_okay=False), help="Output folder (default runs/demo-<time>).")
@click.option("--epochs", type=count(1, MAX_EPOCHS), default=default(DemoConfig, "epochs"), show_default=True)
@click.option("--depth", type=count(4, MAX_DEPTH), default=default(DemoConfig, "depth"), show_default=True, help="DenseNet-BC depth (6n+4).")
@json_option("the report, the files and the checks (the running log goes to stderr)")
@quiet_option()
@reports_errors
def demo_cmd(out: str | None, epochs: int, depth: int, as_json: bool, quiet: bool) -> None:
    """Train a small DenseNet-BC on digits, convert it to FP32/FP16/INT8 ONNX, evaluate each, report."""
    log = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    result = run_demo(DemoConfig(out=out, epochs=epochs, depth=depth, quiet=quiet), log=log,
                      progress=progress_for(quiet))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
