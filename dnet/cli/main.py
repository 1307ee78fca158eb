"""The ``dnet`` command group and the one way a verb reports a user's error: one line on stderr, an exit status."""

from __future__ import annotations

import functools
import importlib
import signal
import sys

import click

from dnet import __version__
from dnet.errors import DnetError
from dnet.files import Terminated, exit_on_sigterm, forget_signals, interrupted_by


def flag_for(option: str | None) -> str | None:
    """The command-line flag of the current command whose parameter is called ``option`` (``--calib-method``)."""
    ctx = click.get_current_context(silent=True)
    if option is None or ctx is None:
        return None
    for param in ctx.command.params:
        if param.name == option and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return None


def error_line(e: DnetError) -> str:
    """``e``'s message; an error about one option gets the flag that sets it appended, ``(--calib-method)``."""
    message = str(e)
    flag = flag_for(e.option)
    if flag is not None and flag not in message:
        message += f" ({flag})"
    return message


def reports_errors(fn):
    """Turn the project's errors into one line on stderr and the error's exit status."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        forget_signals()
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (exit_on_sigterm): temporary files are already removed
            _interrupted(e.signum if isinstance(e, Terminated) else signal.SIGINT, getattr(e, "kept", None))
        except Exception as e:
            signum = interrupted_by()
            if signum is not None:  # a library caught the interrupt and raised another error on the way out
                _interrupted(signum, None)
            if isinstance(e, DnetError):
                click.echo(f"dnet: error: {error_line(e)}", err=True)
                sys.exit(e.exit_code)
            raise

    return wrapper


def _interrupted(signum: int, kept) -> None:
    """One line and status 128 + the signal; ``kept``: a download's partial file, kept on purpose so it resumes."""
    what = (f"the partial download {kept} is kept, and running the command again resumes it" if kept
            else "no partial file was kept")
    click.echo(f"dnet: error: interrupted by {signal.Signals(signum).name}; {what}", err=True)
    sys.exit(128 + signum)


def warn(message: str) -> None:
    click.echo(f"dnet: warning: {message}", err=True)


# verb -> "module:command"; a verb's module (and the libraries it needs) is imported only when that verb runs
# (click's documented lazy-loading pattern), so `dnet models` does not pay for ONNX Runtime or matplotlib.
VERBS = {
    "models": "dnet.cli.models:models_cmd",
    "info": "dnet.cli.models:info_cmd",
    "inspect": "dnet.cli.inspect:inspect_cmd",
    "train": "dnet.cli.train:train_cmd",
    "convert": "dnet.cli.convert:convert_cmd",
    "eval": "dnet.cli.eval:eval_cmd",
    "compare": "dnet.cli.compare:compare_cmd",
    "demo": "dnet.cli.demo:demo_cmd",
    "bench": "dnet.cli.bench:bench_cmd",
    "pull": "dnet.cli.pull:pull_cmd",
    "deploy": "dnet.cli.deploy:deploy_cmd",
    "serve": "dnet.cli.serve:serve_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in VERBS:
            return None
        module, attr = VERBS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dnet")
def main() -> None:
    """DenseNet from the original Lua Torch release to ONNX, INT8 and TensorRT."""
    exit_on_sigterm()  # plain kill, timeout, docker stop: clean up as Ctrl-C does


__all__ = ["VERBS", "error_line", "main", "reports_errors", "warn"]
