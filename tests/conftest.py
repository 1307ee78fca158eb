"""Shared test fixtures: where ../shared/fixtures lives, and skips with a reason when it is absent; torch's thread
count given back after every test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.shared import shared_fixture


@pytest.fixture
def shared() -> Path:
    return shared_fixture()


@pytest.fixture(autouse=True)
def _torch_threads_given_back():
    """A test that sets torch's process-wide thread count (``dnet train --threads 1`` run in-process, an engine with
    ``threads``) gives it back: torch's float results depend on it, and a later test's trained model with them
    (``tests.helpers.models.digits_model`` trained on 1 thread is another model)."""
    torch = sys.modules.get("torch")  # imported by the test modules at collection; not imported here otherwise
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
