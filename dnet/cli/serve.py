"""``dnet serve``: a Triton Inference Server for one model file, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import click

from dnet.apps.deploy.serve import ServeOptions, serve_forever
from dnet.cli.groups import verb
from dnet.cli.main import reports_errors
from dnet.cli.options import MAX_BATCH, MAX_QUEUE_DELAY_US, MAX_THREADS, count, default, provider_option
from dnet.engines.base import PROVIDERS


def _option(name: str, flag: str, help: str, **kwargs):
    return click.option(flag, name, default=default(ServeOptions, name), show_default=True, help=help, **kwargs)


SECTIONS = (
    ("Model", ("--name", "--provider", "--threads")),
    ("Batching", ("--max-batch", "--queue-delay-us", "--batching")),
    ("Network", ("--address", "--http-port", "--grpc-port", "--metrics-port")),
)


@verb("serve", sections=SECTIONS)
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="The model's name (default: the file's name).")
@_option("max_batch", "--max-batch", "The dynamic batcher's largest batch.", type=count(1, MAX_BATCH))
@_option("queue_delay_us", "--queue-delay-us", "How long the batcher waits to fill a batch (microseconds).",
         type=count(0, MAX_QUEUE_DELAY_US))
@click.option("--batching/--no-batching", default=default(ServeOptions, "batching"), show_default=True,
              help="Dynamic batching (off: every request runs alone).")
@_option("address", "--address", "The address the server listens on.")
@_option("http_port", "--http-port", "HTTP port.", type=count(1, 65535))
@_option("grpc_port", "--grpc-port", "gRPC port.", type=count(1, 65535))
@_option("metrics_port", "--metrics-port", "Prometheus metrics port.", type=count(1, 65535))
@provider_option(PROVIDERS)
@click.option("--threads", type=count(1, MAX_THREADS), default=None, help="CPU threads (default: the runtime's).")
@reports_errors
def serve_cmd(path, name, max_batch, queue_delay_us, batching, address, http_port, grpc_port, metrics_port, provider,
              threads) -> None:
    """Serve PATH on Triton: NAME takes float N×3×H×W, NAME_image uint8 N×H×W×3, NAME_encoded JPEG/PNG bytes."""
    options = ServeOptions(name=name, max_batch=max_batch, queue_delay_us=queue_delay_us, batching=batching,
                           address=address, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                           provider=provider, threads=threads)

    def ready(names: list[str]) -> None:
        click.echo(f"ready: {', '.join(names)} on http://{address}:{http_port}, grpc {address}:{grpc_port}, "
                   f"metrics http://{address}:{metrics_port}/metrics (Ctrl-C stops)", err=False)

    serve_forever(path, options, ready)
