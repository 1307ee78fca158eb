"""``dnet pull NAME [--pretrained torch7|torchvision|timm]``: a model's published weights into dnet's cache."""

from __future__ import annotations

import json

import click

from dnet.cli.groups import Alias, verb
from dnet.cli.main import reports_errors
from dnet.cli.options import json_option, quiet_option
from dnet.cli.progress import shows_progress
from dnet.core.table import format_table
from dnet.models.hub import PREFERENCE, SOURCES, pull


@verb("pull", aliases=(Alias("--source", "--pretrained"),))
@click.argument("name")
@click.option("--pretrained", "source", type=click.Choice(SOURCES),
              help=f"Who published the weights [default: the first the model has of {', '.join(PREFERENCE)}].")
@json_option("what was fetched")
@quiet_option()
@reports_errors
def pull_cmd(name: str, source: str | None, as_json: bool, quiet: bool) -> None:
    """Fetch NAME's published weights into dnet's cache ($DNET_HOME, default ~/.cache/dnet), checked."""
    got = pull(name, source, progress=shows_progress(quiet) and not as_json)
    if as_json:
        click.echo(json.dumps(got.to_dict(), indent=2))
        return
    state = "fetched" if got.fetched else "cached"
    if got.resumed_from:
        state += f" (resumed at {got.resumed_from:,} bytes)"
    click.echo(format_table(["model", "source", "file", "bytes", "sha256", ""],
                            [[got.name, got.source, str(got.path), f"{got.size:,}", got.sha256, state]], right=(3,)))
    if got.published_sha256:
        click.echo(f"sha256 matches the publisher's {got.published_sha256}")
    else:
        click.echo(f"no checksum is published for this file: its sha256 is recorded in {got.path.name}.json, and "
                   "every later use is checked against it")


__all__ = ["pull_cmd"]
