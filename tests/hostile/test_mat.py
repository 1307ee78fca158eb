"""SVHN's ``.mat`` files, as downloaded or put in ``--data`` by hand, are read by ``dnet.data.mat5``: scipy's reader
crashes the interpreter on some mutated files (scipy 1.17.1 segfaults in ``_mio5.read_var_array`` on a data element
of type 0, found by hand-fuzzing the reader main added); dnet's checks every tag against the bytes there first.
The fuzz target ``mat`` (``tests/helpers/fuzz.py``) runs mutated files through it."""

from __future__ import annotations

import os
import signal

import numpy as np
import scipy.io

from dnet.data import mat5
from tests.helpers.harness import Box


def _svhn_test_file(path, n=12):
    rng = np.random.default_rng(0)
    scipy.io.savemat(path, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                            "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})
    return path


def test_a_mat_file_whose_values_have_no_numeric_type_is_one_line_not_a_crash(box: Box, models):
    data = box.work / "svhn"
    data.mkdir()
    mat = _svhn_test_file(data / "test_32x32.mat")
    raw = bytearray(mat.read_bytes())
    # y's values: the data element after its name; type 2 (uint8) becomes 0, which scipy 1.17 segfaults on
    at = raw.rindex(b"y\x00\x00\x00") + 4
    assert raw[at] == 2
    raw[at] = 0
    mat.write_bytes(bytes(raw))
    model = box.add(models["two"], "svhn.pth")
    box.freeze()
    out = box.run("eval", model, "--dataset", "svhn", "--data", data, "--workers", 0, "--quiet")
    assert out.error_line(1) == f"{mat}: variable 'y': its values have data type 0, which is no numeric type"
    box.unchanged()


def test_a_fifo_as_a_mat_file_is_not_a_data_file_and_never_opened(box: Box, models):
    data = box.work / "svhn"
    data.mkdir()
    os.mkfifo(data / "test_32x32.mat")
    model = box.add(models["two"], "svhn.pth")
    box.freeze()
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(AssertionError("eval blocked on the FIFO")))
    signal.alarm(60)
    try:
        out = box.cli("eval", model, "--dataset", "svhn", "--data", data, "--quiet")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert out.error_line(1) == f"{data}: expected test_32x32.mat (SVHN cropped digits, format 2) or use --download"
    box.unchanged()


def test_mat5_reads_what_scipy_reads(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"X": rng.integers(0, 256, (32, 32, 3, 7), dtype=np.uint8), "y": rng.integers(1, 11, (7, 1)).astype(float),
              "i16": rng.integers(-300, 300, (3, 5)).astype(np.int16), "one": np.array([[2.5]], np.float32)}
    for compressed in (False, True):
        path = tmp_path / f"a{compressed}.mat"
        scipy.io.savemat(path, arrays, do_compression=compressed)
        got, want = mat5.read(path, list(arrays)), scipy.io.loadmat(str(path))
        for name in arrays:
            assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name
