"""The fuzz targets, bounded for CI: ``DNET_FUZZ_CASES`` mutated files of each format (default 300, a fixed
sequence); for long runs by hand see ``tests/hostile/fuzz.py``. Every case ends in a model or one of the project's
one-line errors, and adds at most 32 MB plus 8× its input size to the resident memory."""

from __future__ import annotations

import os

import pytest

from tests.hostile import fuzz

CASES = int(os.environ.get("DNET_FUZZ_CASES", "300"))


@pytest.mark.parametrize("target", ["t7", "pth", "onnx"])
def test_mutated_files_open_or_raise_the_projects_errors_only(target):
    report = fuzz.run(target, CASES, seed=int(os.environ.get("DNET_FUZZ_SEED", "0")))
    print(report.to_dict())
    assert report.bugs == [], report.bugs[:5]
    assert report.cases == CASES and report.outcomes["opened"] > 0 and report.outcomes["FileFormatError"] > 0
    assert report.worst_excess <= 8, report.to_dict()
