"""``dnet demo``: the front door. Builds zoo models and runs them on a batch (grows into the full pipeline)."""

from __future__ import annotations

import time

import click
import torch

from dnet.cli import reports_errors
from dnet.cli.table import format_table
from dnet.models import create_model
from dnet.models.summary import count_params


@click.command("demo")
@click.option("--models", "names", default="densenet-bc-l100-k12,densenet121", show_default=True,
              help="Comma-separated zoo names to build and run.")
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True)
@reports_errors
def demo_cmd(names: str, batch: int) -> None:
    """Build zoo models and run a forward pass on a random batch: shapes, parameters, time."""
    torch.manual_seed(0)
    rows = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        model = create_model(name).eval()
        size = 224 if model.config.stem == "imagenet" else 32
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            t0 = time.perf_counter()
            y = model(x)
            dt = time.perf_counter() - t0
        rows.append([name, "×".join(map(str, x.shape)), "×".join(map(str, y.shape)), f"{count_params(model):,}", f"{dt * 1000:.0f}"])
    click.echo(format_table(["model", "input", "output", "params", "ms"], rows, right=(3, 4)))


COMMANDS = [demo_cmd]
