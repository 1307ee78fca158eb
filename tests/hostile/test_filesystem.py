"""Where outputs go: a read-only folder, a missing folder, ``-o`` a symlink to the input, 255- and 256-byte names,
names that are not UTF-8 (printed under strict UTF-8 output), and an output on another filesystem than the
temporary folder (/dev/shm: the temporary file is made beside the output, so the rename never crosses devices)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from dnet.formats.checkpoint import load_checkpoint
from tests.helpers.harness import LAUNCH, ROOT, Box


def _convert(box: Box, out, src=None):
    return box.cli("convert", src or box.work / "tiny.pth", "--from", "pth", "--to", "pth", "-o", out, "--quiet")


def _same_model(a, b) -> bool:
    x = torch.randn(2, 3, 32, 32)
    return torch.allclose(load_checkpoint(a)(x), load_checkpoint(b)(x), atol=1e-6)


@pytest.fixture
def readonly(tmp_path):
    """A read-only tmpfs (root writes into a folder without write permission, so only a mount makes one)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only mount needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_output_folder_is_one_line(box: Box, models, readonly):
    box.add(models["pth"])
    box.freeze()
    assert _convert(box, readonly / "x.pth").error_line(1) == f"cannot write to output folder {readonly}: permission " \
                                                               "denied"
    assert os.listdir(readonly) == []
    box.unchanged()


def test_a_missing_output_folder_is_created(box: Box, models):
    src = box.add(models["pth"])
    box.freeze()
    out = box.work / "new" / "deeper" / "x.pth"
    assert _convert(box, out).code == 0
    assert _same_model(src, out)
    box.unchanged("new", "deeper", "x.pth")


def test_an_output_that_is_a_symlink_to_the_input_is_refused(box: Box, models):
    src = box.add(models["pth"])
    link = box.work / "link.pth"
    link.symlink_to(src)
    box.freeze()
    line = _convert(box, link).error_line(2)
    assert line == f"the output {link} is the source file; dnet never overwrites its input"
    box.unchanged()


def test_a_255_byte_name_is_written_and_a_256_byte_one_refused(box: Box, models):
    src = box.add(models["pth"])
    box.freeze()
    longest = "a" * 251 + ".pth"
    assert _convert(box, box.work / longest).code == 0 and _same_model(src, box.work / longest)
    line = _convert(box, box.work / ("a" * 252 + ".pth")).error_line(2)
    assert line == f"output name {'a' * 40}… is 256 bytes long; file names stop at 255 bytes: choose a shorter name"
    box.unchanged(longest)


def test_names_that_are_not_utf8_are_read_written_and_printed_under_strict_utf8(box: Box, models):
    src = box.add(models["pth"], os.fsdecode(b"caf\xe9.pth"))
    box.freeze()
    out = box.work / os.fsdecode(b"out\xff.pth")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(box.tmp), "PYTHONIOENCODING": "utf-8:strict"}
    for args in (["inspect", src], ["convert", src, "--from", "pth", "--to", "pth", "-o", out]):
        p = subprocess.run([sys.executable, "-c", LAUNCH, *map(os.fsencode, map(str, args))], cwd=box.work, env=env,
                           capture_output=True, timeout=300)
        assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
        shown = b"caf\\xe9.pth" if args[0] == "inspect" else b"out\\udcff.pth"  # the byte, or its surrogate, escaped
        assert shown in p.stdout, p.stdout
    assert _same_model(src, out)
    box.unchanged(out.name)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm here")
def test_an_output_on_another_filesystem_than_the_temporary_folder_is_renamed_into_place(box: Box, models):
    src = box.add(models["pth"])
    box.freeze()
    assert os.stat("/dev/shm").st_dev != os.stat(box.tmp).st_dev or pytest.skip("/dev/shm is the same filesystem")
    folder = os.path.join("/dev/shm", f"dnet-hostile-{os.getpid()}")
    try:
        for target in ("pth", "onnx"):
            out = os.path.join(folder, f"x.{target}")
            r = box.cli("convert", src, "--from", "pth", "--to", target, "-o", out, "--quiet")
            assert r.code == 0, r.stderr
        assert sorted(os.listdir(folder)) == ["x.onnx", "x.pth"]  # no partial file beside them
        assert _same_model(src, os.path.join(folder, "x.pth"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    box.unchanged()
