"""The ``dnet`` command group and the one way a verb reports a user's error: one line on stderr, an exit status."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import signal
import sys
import warnings

import click

from dnet import __version__
from dnet.errors import DnetError, DnetWarning
from dnet.files import library_caches
from dnet.signals import Terminated, exit_on_sigterm, forget_signals, interrupted_by
from dnet.write_errors import write_error


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
        for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as \xe9, never a traceback
            with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
                stream.reconfigure(errors="backslashreplace")
        try:
            with warnings.catch_warnings(), library_caches():  # PyTorch's caches in dnet's swept scratch
                warnings.simplefilter("always", DnetWarning)
                warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                return fn(*args, **kwargs)
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (exit_on_sigterm): temporary files are already removed
            _interrupted(e.signum if isinstance(e, Terminated) else signal.SIGINT, getattr(e, "kept", None))
        except Exception as e:
            signum = interrupted_by()
            if signum is not None:  # a library caught the interrupt and raised another error on the way out
                _interrupted(signum, None)
            if not isinstance(e, DnetError) and isinstance(e, OSError) and e.filename:
                # a library's own write (a plot, a runtime's cache) hit the disk or the limits: one line, not a bug
                e = write_error(e.filename, e) or e
            if isinstance(e, DnetError):
                click.echo(f"dnet: error: {error_line(e)}", err=True)
                sys.exit(e.exit_code)
            raise

    return wrapper


def _show_warning(original, message, category, filename, lineno, file=None, line=None) -> None:
    """A library's DnetWarning as ``dnet: warning: ...``; any other warning as ``original`` prints it."""
    if issubclass(category, DnetWarning):
        warn(str(message))
    else:
        original(message, category, filename, lineno, file, line)


def _interrupted(signum: int, kept) -> None:
    """One line and status 128 + the signal; ``kept``: a download's partial file, kept on purpose so it resumes."""
    what = (f"the partial download {kept} is kept, and running the command again resumes it" if kept
            else "no partial file was kept")
    click.echo(f"dnet: error: interrupted by {signal.Signals(signum).name}; {what}", err=True)
    sys.exit(128 + signum)


def warn(message: str) -> None:
    click.echo(f"dnet: warning: {message}", err=True)


# verb -> ("module:command", its one-line help). A verb's module (and the libraries it needs) is imported only when
# that verb runs (click's documented lazy-loading pattern), and `dnet --help` lists the verbs from the lines here, so
# neither `dnet --help` nor `dnet models` pays for torch, ONNX Runtime or matplotlib.
VERBS = {
    "models": ("dnet.cli.models:models_cmd", "List the zoo: configurations, parameters, published errors."),
    "info": ("dnet.cli.models:info_cmd", "A zoo model's architecture: channels, parameters, multiply-adds."),
    "inspect": ("dnet.cli.inspect:inspect_cmd", "Show what a .t7, .pth, .onnx or .plan file holds."),
    "train": ("dnet.cli.train:train_cmd", "Train a DenseNet with the paper's recipe."),
    "convert": ("dnet.cli.convert:convert_cmd", "Convert a model file: PyTorch, ONNX FP32/FP16/INT8, TensorRT."),
    "eval": ("dnet.cli.eval:eval_cmd", "Top-1/top-5 error of a model file beside the paper's numbers."),
    "compare": ("dnet.cli.compare:compare_cmd", "Run two model files on the same inputs; compare every stage."),
    "demo": ("dnet.cli.demo:demo_cmd", "Train a small DenseNet-BC on digits, convert and evaluate it."),
    "bench": ("dnet.cli.bench:bench_cmd", "Latency, throughput and memory of model files and batch sizes."),
    "pull": ("dnet.cli.pull:pull_cmd", "Fetch a zoo model's published weights into dnet's cache, checked."),
    "deploy": ("dnet.cli.deploy:deploy_cmd", "Put a model file where a serving system reads it (Triton)."),
    "serve": ("dnet.cli.serve:serve_cmd", "Serve a model file on Triton Inference Server (HTTP, gRPC)."),
}


class _OneLine(click.ClickException):
    """A command-line mistake click found (a bad value, a missing option): one ``dnet: error:`` line, status 2."""

    def __init__(self, e: click.ClickException) -> None:
        super().__init__(e.format_message())
        self.exit_code = e.exit_code

    def show(self, file=None) -> None:
        click.echo(f"dnet: error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as e:  # click's own text is a usage block; dnet's errors are one line
            if isinstance(e, _OneLine) or not isinstance(e, click.UsageError):
                raise
            raise _OneLine(e) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in VERBS:
            return None
        module, attr = VERBS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, line) in VERBS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dnet")
def main() -> None:
    """DenseNet from the original Lua Torch release to ONNX, INT8 and TensorRT."""
    exit_on_sigterm()  # plain kill, timeout, docker stop: clean up as Ctrl-C does


__all__ = ["VERBS", "error_line", "main", "reports_errors", "warn"]
