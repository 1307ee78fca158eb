"""The ``dnet`` command line: thin click commands over library functions (one module a verb)."""

from __future__ import annotations

import functools
import sys

import click

from dnet import __version__
from dnet.errors import DnetError


def reports_errors(fn):
    """Turn the project's errors into one line on stderr and the error's exit status."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DnetError as e:
            click.echo(f"dnet: error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dnet")
def main() -> None:
    """DenseNet from the original Lua Torch release to ONNX, INT8 and TensorRT."""


def _register() -> None:
    from dnet.cli import bench, compare, convert, demo, eval, inspect, models, train  # noqa: A004 (verb modules)

    for module in (models, inspect, train, convert, eval, compare, demo, bench):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
