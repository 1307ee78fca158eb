"""``dnet deploy triton``: a Triton Inference Server model repository entry for a dnet file."""

from __future__ import annotations

import json

import click

from dnet.apps.deploy.triton import DEVICES, TritonOptions, write_repository
from dnet.cli.groups import Verb
from dnet.cli.main import reports_errors
from dnet.cli.options import MAX_BATCH, MAX_QUEUE_DELAY_US, count, default, json_option, parse_batch_sizes


@click.group("deploy")
def deploy_cmd() -> None:
    """Put a dnet file where a serving system reads it."""


SECTIONS = (
    ("Entry", ("--output", "--name", "--device", "--instances", "--force")),
    ("Batching", ("--max-batch", "--preferred", "--queue-delay-us", "--batching")),
)


@deploy_cmd.command("triton", cls=Verb, sections=SECTIONS)
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "repo", required=True, type=click.Path(file_okay=False),
              help="The model repository (a folder; created when absent).")
@click.option("--name", default=None, help="The model's name in the repository (default: the file's name).")
@click.option("--max-batch", type=count(0, MAX_BATCH), default=None,
              help="Triton's max_batch_size (default: 32 for ONNX and IR files; a plan's profile max).")
@click.option("--preferred", default=None, help="Preferred batch sizes, comma-separated (default: powers of two up "
              "to the max batch, and a plan's profile optimum).")
@click.option("--queue-delay-us", type=count(0, MAX_QUEUE_DELAY_US), default=default(TritonOptions, "queue_delay_us"),
              show_default=True, help="How long the batcher waits to fill a preferred batch (microseconds).")
@click.option("--batching/--no-batching", default=default(TritonOptions, "batching"), show_default=True,
              help="Dynamic batching.")
@click.option("--device", type=click.Choice(DEVICES), default=default(TritonOptions, "device"), show_default=True,
              help="Where ONNX and IR files run (plans run on the GPU).")
@click.option("--instances", type=count(1, 1024), default=default(TritonOptions, "instances"),
              show_default=True, help="Model instances.")
@click.option("--force", is_flag=True, help="Replace an existing entry of the same name.")
@json_option("the entry")
@reports_errors
def triton_cmd(path, repo, name, max_batch, preferred, queue_delay_us, batching, device, instances, force,
               as_json) -> None:
    """Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.* for PATH (.onnx, .plan with its sidecar, .xml)."""
    options = TritonOptions(name=name, max_batch=max_batch,
                            preferred=tuple(parse_batch_sizes(preferred)) if preferred else None,
                            queue_delay_us=queue_delay_us, batching=batching, device=device, instances=instances,
                            force=force)
    entry, folder = write_repository(path, repo, options)
    if as_json:
        click.echo(json.dumps({**entry.to_dict(), "folder": str(folder)}, indent=2))
        return
    batch = (f"dynamic batching up to {entry.max_batch_size} (preferred {', '.join(map(str, entry.preferred))})"
             if entry.batching else f"max batch {entry.max_batch_size}, no dynamic batching")
    click.echo(f"wrote {folder}: {entry.platform or entry.backend}, {entry.kind}, {batch}")
    if entry.accelerator_note:
        click.echo(entry.accelerator_note)
