"""Where ../shared/fixtures lives (a test reading one is skipped, with the reason, when it is absent), and torch's
thread count set for a block."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "fixtures"


def shared_fixture(*parts: str) -> Path:
    """A path under ../shared/fixtures; the test is skipped (with the reason) when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent (tests read ../shared/fixtures beside the checkout)")
    return path


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's process-wide thread count set to ``n`` inside, given back after (for session fixtures, which the
    per-test guard below does not cover)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
