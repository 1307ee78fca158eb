"""Shared test fixtures: where ../shared/fixtures lives, and skips with a reason when it is absent; torch's thread
count given back after every test."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"


def shared_fixture(*parts: str) -> Path:
    """A path under ../shared/fixtures; the test is skipped (with the reason) when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent (tests read ../shared/fixtures beside the checkout)")
    return path


@pytest.fixture
def shared() -> Path:
    return shared_fixture()


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


@pytest.fixture(autouse=True)
def _torch_threads_given_back():
    """A test that sets torch's process-wide thread count (``dnet train --threads 1`` run in-process, an engine with
    ``threads``) gives it back: torch's float results depend on it, and a later test's trained model with them
    (``tests.converters.tiny_models.digits_model`` trained on 1 thread is another model)."""
    torch = sys.modules.get("torch")  # imported by the test modules at collection; not imported here otherwise
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
