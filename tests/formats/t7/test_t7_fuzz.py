"""Fuzzing the .t7 reader and the DenseNet mapping with mutated and truncated real files.

The only acceptable outcomes are success or the project's own error (``DnetError``), and reading never
allocates much more than the file's own size. CI runs ``DNET_FUZZ_EXAMPLES`` cases (default 200, a fixed
sequence); for a long run by hand:

    DNET_FUZZ_EXAMPLES=20000 DNET_FUZZ_RANDOM=1 PYTHONPATH=$PWD python -m pytest -q tests/formats/t7/test_t7_fuzz.py
"""

from __future__ import annotations

import collections
import functools
import os
import struct
import tracemalloc

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnet.core.errors import DnetError
from dnet.formats.t7 import reader
from dnet.formats.t7.densenet import model_from_t7_object
from dnet.formats.t7.writer import LuaStyle, dumps, lua_densenet
from dnet.models.densenet import DenseNet, DenseNetConfig
from tests.helpers.shared import SHARED
from tests.helpers.t7_writer import randomized

EXAMPLES = int(os.environ.get("DNET_FUZZ_EXAMPLES", "200"))
OUTCOMES: collections.Counter = collections.Counter()  # printed with -s: how the cases ended
INTERESTING = (0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -2**31, 2**31 - 1, 2**30, 2**16, 255, 40)
INTERESTING_LONGS = (0, 1, -1, 2**31, 2**40, 2**62, 2**63 - 1, -2**63)  # sizes, strides, offsets, counts


@functools.lru_cache(maxsize=1)
def seeds() -> dict[str, bytes]:
    """Real Lua files (the torchfile set, the DenseNet inputs/outputs and two checkpoints) and small written ones."""
    out = {}
    folder = SHARED / "t7"
    if folder.is_dir():
        for p in sorted((folder / "torchfile-tests").glob("*.t7")):
            out[p.name] = p.read_bytes()
        for p in sorted(folder.glob("*.output.t7")) + [folder / "cifar10-densenet-bc-l40-k12.t7",
                                                      folder / "cifar10-densenet-bc-l40-k12-optmem4.t7"]:
            out[p.name] = p.read_bytes()
    tiny = DenseNetConfig((2, 2), 4, True, 0.5, 8, "cifar", 10)
    for kind in ("standard", "custom"):
        out[f"written-{kind}.t7"] = dumps(lua_densenet(randomized(DenseNet(tiny)), LuaStyle(layer_kind=kind)))
    return out


@pytest.fixture(autouse=True, scope="module")
def report_outcomes():
    yield
    if OUTCOMES:
        print(f"\nt7 fuzz outcomes over {sum(OUTCOMES.values())} cases: {dict(OUTCOMES)}")


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[name])
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if n == 0:
            break
        # most of a checkpoint is raw weights: aim half the mutations at the structure near the start
        pos = draw(st.integers(0, min(n, 4096) - 1) if draw(st.booleans()) else st.integers(0, n - 1))
        op = draw(st.sampled_from(("truncate", "byte", "int", "long", "delete", "duplicate")))
        if op == "truncate":
            del data[pos:]
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "int":
            data[pos : pos + 4] = struct.pack("<i", draw(st.sampled_from(INTERESTING)))
        elif op == "long":
            data[pos : pos + 8] = struct.pack("<q", draw(st.sampled_from(INTERESTING_LONGS)))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
    return name, bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not os.environ.get("DNET_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_files_succeed_or_raise_dnet_errors_only(case):
    _, data = case
    torch.set_num_threads(1)
    tracemalloc.start()
    try:
        try:
            obj = reader.loads(data)
        except DnetError as e:
            assert "\n" not in str(e)
            OUTCOMES[f"reader: {type(e).__name__}"] += 1
            return
        finally:
            peak = tracemalloc.get_traced_memory()[1]
        # the file buffer, the Python objects of its tables, nothing sized by a header
        assert peak <= 16 * len(data) + (4 << 20), (peak, len(data))
    finally:
        tracemalloc.stop()
    try:
        model_from_t7_object(obj, "fuzz.t7")
        OUTCOMES["read and imported as a DenseNet"] += 1
    except DnetError as e:
        assert "\n" not in str(e)
        OUTCOMES[f"read, mapping: {type(e).__name__}"] += 1


def test_seeds_include_the_real_files():
    if not (SHARED / "t7").is_dir():
        pytest.skip(f"shared fixture {SHARED / 't7'} is absent")
    assert len(seeds()) == 15 + 3 + 2 + 2
