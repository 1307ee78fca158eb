"""Shared test fixtures: where ../shared/fixtures lives, and skips with a reason when it is absent."""

from __future__ import annotations

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
