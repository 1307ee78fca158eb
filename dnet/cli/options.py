"""How option values are read from the command line, shared by the verbs: defaults and choices come from the
library's option dataclasses and constants, so the CLI never restates them."""

from __future__ import annotations

import dataclasses

import click

from dnet.errors import UsageError


def default(options: type, field: str):
    """The default of ``field`` in the options dataclass ``options`` (what the library does when not told)."""
    for f in dataclasses.fields(options):
        if f.name == field:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(field)


def quiet_option(**kwargs):
    """``-q/--quiet``, the same on every verb: no progress display (it is off anyway when stderr is not a terminal)."""
    return click.option("-q", "--quiet", is_flag=True, help="No progress display (off anyway when stderr is not a "
                        "terminal).", **kwargs)


def json_option(what: str = "the results"):
    """``--json``: stdout holds one JSON document (running logs go to stderr)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as one JSON document on stdout.")


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
        batches = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"batch sizes: expected comma-separated integers like 1,8,32, got {text!r}",
                         option="batches") from None
    if not batches or any(b < 1 for b in batches):
        raise UsageError(f"batch sizes: every batch size must be a positive integer, got {text!r}", option="batches")
    return batches


__all__ = ["default", "json_option", "parse_batch_sizes", "parse_profile", "quiet_option"]
