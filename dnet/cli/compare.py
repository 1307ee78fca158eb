"""``dnet compare REF OTHER``: where two model files start to disagree, stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.cli.main import reports_errors
from dnet.compare import compare
from dnet.table import format_table


@click.command("compare")
@click.argument("ref", type=click.Path(path_type=Path))
@click.argument("other", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), help="Folder of images (default: random inputs).")
@click.option("--count", type=click.IntRange(min=1), default=8, show_default=True, help="Inputs to compare on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def compare_cmd(ref, other, images, count, as_json) -> None:
    """Run REF and OTHER on the same inputs; compare every dense block, transition and the logits."""
    rows = compare(ref, other, images=images, count=count)
    if as_json:
        click.echo(json.dumps({"ref": str(ref), "other": str(other), "inputs": str(images) if images else "random",
                               "count": count, "stages": [r.to_dict() for r in rows]}, indent=1))
        return
    table = [[r.stage, "×".join(map(str, r.shape[1:])), f"{r.rel_error:.3e}", f"{r.cosine:.6f}", f"{r.max_abs:.3e}",
              "" if r.top1_agreement is None else f"{r.top1_agreement:.1%}"] for r in rows]
    click.echo(format_table(["stage", "shape", "rel error", "cosine", "max|Δ|", "top-1 agree"], table, right=(2, 3, 4, 5)))
