"""The ``dnet`` command group and the one way a verb reports a user's error: one line on stderr, an exit status."""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import io
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from dnet import __version__
from dnet.core.errors import DnetError, DnetWarning
from dnet.core.scratch import library_caches
from dnet.core.signals import Terminated, exit_on_sigterm, forget_signals, interrupted_by
from dnet.core.write_errors import write_error


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


# A verb's standard output redirected to a file (``dnet eval --json > report.json``) that the disk or ``ulimit -f``
# stops: one line naming the file, never a silently cut report. Without this the write's OSError surfaced inside the
# verb's scratch folder, which took it for one of its own files ("a scratch file … reached the size limit"); and
# under PYTHONUNBUFFERED (common in containers) sys.stdout writes straight to the raw file, whose short write (the
# bytes up to the limit) TextIOWrapper takes as complete: the report ended mid-JSON with exit status 0.


def _target() -> str:
    """What the standard output is: the file it was redirected to, else its description."""
    try:
        return os.readlink("/proc/self/fd/1")
    except OSError:
        return "the standard output"


def _stopped(e: OSError) -> BaseException:
    """The one line of a write to the standard output stopped by the disk or the limits (else ``e`` itself).

    What was not written stays in the stream's buffer and would fail again when Python flushes it on exit (a
    second message); the rest of the output has nowhere to go, so the descriptor is pointed at the null device."""
    target = _target()
    error = write_error(Path(target), e) if target.startswith("/") else None
    if error is None:
        return e
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    return error


class CheckedOutput:
    """``sys.stdout`` for a verb: every write is complete, or one ``DnetError`` line saying where it stopped."""

    def __init__(self, stream) -> None:
        self._stream = stream
        buffer = getattr(stream, "buffer", None)
        self._raw = buffer if isinstance(buffer, io.FileIO) else None  # PYTHONUNBUFFERED: no BufferedWriter between

    def write(self, text: str) -> int:
        try:
            if self._raw is None:
                return self._stream.write(text)
            self._stream.flush()
            view = memoryview(text.encode(self._stream.encoding, self._stream.errors or "strict"))
            while view:  # a short write is continued, so the one that cannot go on raises
                written = self._raw.write(view)
                if not written:  # None: a non-blocking descriptor that is full; nothing is said as written
                    raise OSError(errno.EAGAIN, "the standard output takes no more bytes now")
                view = view[written:]
            return len(text)
        except OSError as e:
            raise _stopped(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise _stopped(e) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def checked_stdout() -> Iterator[None]:
    """The process's own standard output checked for the block (a test runner's captured one is left alone)."""
    if sys.stdout is not sys.__stdout__ or sys.stdout is None:
        yield
        return
    original = sys.stdout
    sys.stdout = CheckedOutput(original)
    try:
        yield
    finally:
        sys.stdout = original


def reports_errors(fn):
    """Turn the project's errors into one line on stderr and the error's exit status."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        forget_signals()
        for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as \xe9, never a traceback
            with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
                stream.reconfigure(errors="backslashreplace")
        try:
            # PyTorch's caches in dnet's swept scratch; a redirected stdout that fills is one line naming its file
            with warnings.catch_warnings(), library_caches(), checked_stdout():
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
