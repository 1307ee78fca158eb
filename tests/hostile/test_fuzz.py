"""The fuzz targets, bounded for CI: ``DNET_FUZZ_CASES`` mutated files of each format (default 300, 50 of the
OpenVINO IR, which compiles and runs every case that opens; a fixed sequence); for long runs by hand see
``tests/helpers/fuzz.py``. Every case ends in a model or one of the project's one-line errors, and adds at most
32 MB plus 8× its input size to the resident memory (an image: 32 MB plus twice its 64,000,000-pixel limit in RGB, since a small
compressed file may decode to that many pixels); an IR case also runs, and its tensors are bounded instead (each at
most 4,096× the input, which a DenseNet never needs: under 256 MB for the 32×32 seed)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from dnet.data.images import MAX_PIXELS
from tests.helpers import fuzz

# an image decodes to at most MAX_PIXELS RGB pixels (and a resized copy): 32 MB plus twice that, whatever its size
IMAGE_BOUND = (32 << 20) + 2 * 3 * MAX_PIXELS
CASES = int(os.environ.get("DNET_FUZZ_CASES", "300"))
TARGETS = ["t7", "pth", "onnx", "mat", "sidecar", "image", pytest.param("ir", marks=pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="OpenVINO is the optional extra: pip install 'dnet[openvino]'"))]


@pytest.mark.parametrize("target", TARGETS)
def test_mutated_files_open_or_raise_the_projects_errors_only(target):
    cases = CASES if target != "ir" else max(1, CASES // 6)
    report = fuzz.run(target, cases, seed=int(os.environ.get("DNET_FUZZ_SEED", "0")))
    print(report.to_dict())
    assert report.bugs == [], report.bugs[:5]
    refused = sum(n for outcome, n in report.outcomes.items() if outcome in ("FileFormatError", "DataError"))
    assert report.cases == cases and report.outcomes["opened"] > 0 and refused > 0
    if target == "ir":  # a run allocates the model's tensors: dnet caps each at 4,096× the input (engines.openvino)
        assert report.peak_bytes < 256 << 20, report.to_dict()
    elif target == "image":  # a compressed image may decode to far more than its size: the pixel limit bounds it
        assert report.peak_bytes < IMAGE_BOUND, report.to_dict()
    else:
        assert report.worst_excess <= 8, report.to_dict()


# The long run, smaller than the by-hand one (100,000 cases a reader: the commands in tests/helpers/fuzz.py), sized
# for CI's two cores: about 3 minutes in all. Different seeds from the fast run, so it tries new cases.
SLOW = {"t7": 5000, "pth": 3000, "onnx": 1500, "sidecar": 20000, "image": 20000}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(SLOW))
def test_the_long_fuzz_run_finds_no_bug_and_stays_within_its_memory_bound(target):
    report = fuzz.run(target, SLOW[target], seed=7)
    print(report.to_dict())
    assert report.bugs == [], report.bugs[:5]
    assert report.cases == SLOW[target] and report.outcomes["opened"] > 0
    if target == "image":
        assert report.peak_bytes < IMAGE_BOUND, report.to_dict()
    else:
        assert report.worst_excess <= 8, report.to_dict()


def test_the_process_peak_is_kept_across_the_per_case_resets(monkeypatch):
    """Each case resets Linux's high-water mark (and with it getrusage's), so a peak read after the run would show the
    last case only; the report keeps the largest mark seen, here the first case's, which touched 256 MB and freed it."""
    calls, warm_up = [], len(fuzz.SEEDS["mat"]())  # the run opens each seed once before its cases

    def allocating(path):
        calls.append(path)
        if len(calls) != warm_up + 1:  # the first case only
            return
        block = bytearray(256 << 20)
        block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page, so that it is resident
        del block

    monkeypatch.setitem(fuzz.OPEN, "mat", allocating)
    before = fuzz._status_kb("VmRSS") * 1024
    report = fuzz.run("mat", 3, seed=0)
    after_run = fuzz._status_kb("VmHWM") * 1024
    assert report.peak_case == 0 and report.process_peak_bytes >= before + (250 << 20), report.to_dict()
    if os.path.exists("/proc/self/clear_refs"):  # the reset took effect: the mark at the end has forgotten the case
        assert after_run < report.process_peak_bytes - (200 << 20), (after_run, report.to_dict())
