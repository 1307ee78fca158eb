"""How option values are read from the command line, shared by the verbs: defaults and choices come from the
library's option dataclasses and constants, so the CLI never restates them."""

from __future__ import annotations

import dataclasses
import inspect
import math

import click

from dnet.core.artifact.meta import MAX_CLASSES, MAX_INPUT_SIZE
from dnet.core.errors import UsageError


def default(options: type, field: str):
    """The default of ``field`` in the options dataclass ``options`` (what the library does when not told)."""
    for f in dataclasses.fields(options):
        if f.name == field:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(field)


def default_arg(function, name: str):
    """The default of ``function``'s keyword argument ``name`` (for a library call that takes loose options)."""
    value = inspect.signature(function).parameters[name].default
    if value is inspect.Parameter.empty:
        raise KeyError(name)
    return value


def provider_option(providers: tuple[str, ...], what: str = "the engine runs"):
    """``--provider``: one of ``providers``, the names the engines take (``dnet.engines.base.PROVIDERS``; each engine
    refuses, in one line, those it does not)."""
    return click.option("--provider", type=click.Choice(providers), default=None,
                        help=f"Where {what} (engine-dependent; default: the CPU).")


def quiet_option(**kwargs):
    """``-q/--quiet``, the same on every verb: no progress display (it is off anyway when stderr is not a terminal)."""
    return click.option("-q", "--quiet", is_flag=True, help="No progress display (off anyway when stderr is not a "
                        "terminal).", **kwargs)


def json_option(what: str = "the results"):
    """``--json``: stdout holds one JSON document (running logs go to stderr)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as one JSON document on stdout.")


# Upper bounds of what an option may ask for: far above any real use, low enough that no value makes dnet allocate
# all the memory or wait forever before it fails.
MAX_BATCH = 4096  # images per run of a model (a DenseNet-121 batch of 4096 at 224² is ~2.5 GB of input alone)
MAX_WORKERS = 256  # decoding or data-loading processes
MAX_THREADS = 1024
MAX_QUEUE_DELAY_US = 10_000_000  # ten seconds: a batcher that waits longer is a mistake, not a latency budget
MAX_IMAGES = 10_000_000  # images to calibrate on, check, validate or compare (ImageNet's train set is 1.28 M)
MAX_SECONDS = 86_400.0  # a day of warm-up or timing
MAX_ITERATIONS = 100_000_000
MAX_EPOCHS = 100_000
MAX_DEPTH = 1000  # layers of a custom DenseNet (the paper's deepest: 264; its CIFAR ones: 250)
MAX_WIDTH = 4096  # channels of a growth rate or a first convolution (the paper's widest: k = 48, 96 features)


class Number(click.ParamType):
    """A finite number in ``[lo, hi]`` (or ``(lo, hi]`` with ``lo_open``): NaN, infinity and values outside refused
    while the command line is read, naming the option, before any work."""

    def __init__(self, kind: type = int, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
        self.kind, self.lo, self.hi, self.lo_open = kind, lo, hi, lo_open
        self.name = "integer" if kind is int else "number"

    def _range(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" <= {self.hi:,}" if self.kind is int else f" <= {self.hi:g}"
        return f"{lo}x{hi}"

    def convert(self, value, param, ctx):
        if isinstance(value, self.kind) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = self.kind(str(value).strip())
            except (TypeError, ValueError, OverflowError):
                self.fail(f"{value} is not {'a whole number' if self.kind is int else 'a number'}", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value} is not a finite number", param, ctx)
        if ((self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo))
                or (self.hi is not None and v > self.hi)):
            self.fail(f"{value} is not in the range {self._range()}", param, ctx)
        return v

    def __repr__(self) -> str:
        return f"Number({self._range()})"


def count(lo: int = 1, hi: int = MAX_IMAGES) -> Number:
    """A whole number in ``[lo, hi]``."""
    return Number(int, lo, hi)


def amount(lo: float = 0.0, hi: float | None = None, *, lo_open: bool = False) -> Number:
    """A finite real number in ``[lo, hi]``, or ``(lo, hi]`` with ``lo_open``."""
    return Number(float, lo, hi, lo_open=lo_open)


def parse_profile(text: str) -> tuple[int, int, int]:
    """An optimization profile: ``"1,8,32"`` -> (1, 8, 32); one number N means N,N,N."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts = parts * 3
    try:
        if len(parts) != 3:
            raise ValueError
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"profile {text!r} is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)",
                         option="profile") from None
    if not 1 <= lo <= opt <= hi:
        raise UsageError(f"profile {text!r} must satisfy 1 <= min <= opt <= max", option="profile")
    return lo, opt, hi


def parse_batch_sizes(text: str) -> list[int]:
    """Batch sizes to measure: ``"1,8,32"`` -> [1, 8, 32]."""
    try:
        batches = [int(x) for x in text.split(",")]  # an empty place ("1,,2") is a typo, not a batch to skip
    except ValueError:
        raise UsageError(f"batch sizes: expected comma-separated integers like 1,8,32, got {text!r}",
                         option="batches") from None
    if not batches or any(b < 1 for b in batches):
        raise UsageError(f"batch sizes: every batch size must be a positive integer, got {text!r}", option="batches")
    if max(batches) > MAX_BATCH:
        raise UsageError(f"batch sizes: at most {MAX_BATCH:,} images a batch, got {text!r}", option="batches")
    return batches


__all__ = ["MAX_BATCH", "MAX_CLASSES", "MAX_DEPTH", "MAX_EPOCHS", "MAX_IMAGES", "MAX_INPUT_SIZE", "MAX_WIDTH", "MAX_ITERATIONS", "MAX_QUEUE_DELAY_US", "MAX_SECONDS", "MAX_THREADS", "MAX_WORKERS", "Number",
           "amount", "count", "default", "default_arg", "json_option", "parse_batch_sizes", "parse_profile", "provider_option", "quiet_option"]
