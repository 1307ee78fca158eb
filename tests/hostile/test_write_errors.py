"""Every writer meets a full disk, a file-size limit (EFBIG) and a name too long the same way: one line, the
previous file under that name intact, no partial file left.

The size limit is ``RLIMIT_FSIZE`` (``ulimit -f``), set in this process around one command (Python ignores
SIGXFSZ, so a write past it fails with EFBIG) and, once, in a subprocess as a user's shell would. A full disk is a
small tmpfs where the machine running them lets the tests mount one (root, outside a locked-down container); elsewhere those
cases skip, saying why.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from dnet.core.write_errors import write_error
from tests.helpers.harness import nothing_left
from tests.helpers.models import digits_model_fixture  # noqa: F401 (a fixture)
from tests.helpers.writes import OLD, fill, leftovers, old_file, size_limit

# --- the size limit (EFBIG), in this process -----------------------------------------------------------------

def test_pth_convert_past_the_size_limit_is_one_line_and_keeps_the_old_file(box, models):
    src = box.add(models["pth"])
    out = old_file(box.work / "out.pth")
    box.freeze()
    with size_limit(16384):  # tiny.pth is ~70 KB
        r = box.cli("convert", src, "--from", "pth", "--to", "pth", "-o", out)
    line = r.error_line(1)
    assert re.fullmatch(rf"file too large: writing {re.escape(str(out))} stopped at the limit of "
                        r"16,384 bytes \(ulimit -f, or the filesystem\); raise the limit or choose another output folder",
                        line), line
    assert out.read_bytes() == OLD and leftovers(box.work) == []
    box.unchanged()


def test_onnx_fp16_convert_past_the_size_limit_is_one_line(box, models):
    src = box.add(models["onnx"])
    out = old_file(box.work / "out.onnx")
    box.freeze()
    with size_limit(8192):
        r = box.cli("convert", src, "--from", "onnx", "--to", "onnx", "--precision", "fp16", "-o", out)
    assert r.error_line(1).startswith(f"file too large: writing {out} ")
    assert out.read_bytes() == OLD and leftovers(box.work) == []
    box.unchanged()


def test_eval_predictions_past_the_size_limit_is_one_line(box, digits_model):
    model = box.add(digits_model)
    out = old_file(box.work / "pred.csv")
    box.freeze()
    with size_limit(4096):  # 360 rows of predictions are ~12 KB
        r = box.cli("eval", model, "--dataset", "digits", "--predictions", out, "-q")
    assert r.error_line(1) == (f"file too large: writing {out} stopped at the limit of 4,096 bytes (ulimit -f, or the "
                               "filesystem); raise the limit or choose another output folder")
    assert out.read_bytes() == OLD and leftovers(box.work) == []
    box.unchanged()


def test_a_training_checkpoint_past_the_size_limit_is_one_line(box):
    run = box.work / "run"
    box.freeze()
    with size_limit(20000):  # config.json and metrics fit, a checkpoint (~60 KB) does not
        r = box.cli("train", "--dataset", "digits", "--depth", 10, "--growth-rate", 4, "--epochs", 1, "--batch-size", 128,
                    "--threads", 1, "-o", run, "-q")
    assert r.error_line(1).startswith(f"file too large: writing {run / 'last.pth'} stopped at the limit of 20,000 bytes")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"] or "last.pth" not in os.listdir(run)
    assert leftovers(run) == []
    nothing_left(box.tmp)


def test_a_name_longer_than_255_bytes_is_one_line_before_any_work(box, models, no_export):
    src = box.add(models["pth"])
    box.freeze()
    name = "n" * 252 + ".onnx"  # 257 bytes
    r = box.cli("convert", src, "--from", "pth", "--to", "onnx", "-o", box.work / name)
    assert r.error_line(2) == f"output name {'n' * 40}… is 257 bytes long; file names stop at 255 bytes: choose a " \
                              "shorter name"
    box.unchanged()


def test_write_error_reads_the_cause_torch_hides_behind_its_runtime_error(tmp_path):
    import errno

    try:
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    except RuntimeError as e:
        e.__context__ = OSError(errno.ENOSPC, "No space left on device")  # what torch's writer keeps
        error = write_error(tmp_path / "x.pth", e)
    assert str(error).startswith(f"no space left on device: writing {tmp_path / 'x.pth'} needs more space, ")
    assert write_error(tmp_path / "x.pth", RuntimeError("a bug")) is None  # a bug keeps its traceback


@pytest.mark.slow
def test_ulimit_f_in_a_real_subprocess_is_one_line(box, models):
    src = box.add(models["pth"])
    out = old_file(box.work / "out.pth")
    box.freeze()
    r = box.run("convert", src, "--from", "pth", "--to", "pth", "-o", out, env={"DNET_TEST_FSIZE": "16384"})
    assert r.error_line(1).startswith(f"file too large: writing {out} stopped at the limit of 16,384 bytes")
    assert out.read_bytes() == OLD and leftovers(box.work) == []
    box.unchanged()


# --- a full disk (a small tmpfs) -----------------------------------------------------------------------------

def test_pth_convert_onto_a_full_tmpfs_is_one_no_space_line(box, models, tmpfs):
    src = box.add(models["pth"])
    out = old_file(tmpfs / "x.pth")
    fill(tmpfs)
    box.freeze()
    r = box.cli("convert", src, "--from", "pth", "--to", "pth", "-o", out)
    line = r.error_line(1)
    assert re.fullmatch(rf"no space left on device: writing {re.escape(str(out))} needs [\d,]+ bytes, [\d,]+ bytes are "
                        r"free there; free some space or choose another output folder", line), line
    assert out.read_bytes() == OLD and leftovers(tmpfs) == []
    box.unchanged()


def test_a_training_checkpoint_onto_a_full_tmpfs_is_one_no_space_line(box, tmpfs):
    run = tmpfs / f"run-{uuid.uuid4().hex[:6]}"
    fill(tmpfs, leave=24576)  # room for config.json and the metrics, not for a checkpoint
    r = box.cli("train", "--dataset", "digits", "--depth", 10, "--growth-rate", 4, "--epochs", 1, "--batch-size", 128,
                "--threads", 1, "-o", run, "-q")
    line = r.error_line(1)
    assert line.startswith(f"no space left on device: writing {run / 'last.pth'} needs "), line
    assert leftovers(run) == [] and "last.pth" not in os.listdir(run)
    nothing_left(box.tmp)


def test_eval_predictions_onto_a_full_tmpfs_is_one_no_space_line(box, digits_model, tmpfs):
    model = box.add(digits_model)
    out = old_file(tmpfs / "pred.csv")
    fill(tmpfs, leave=0)
    box.freeze()
    r = box.cli("eval", model, "--dataset", "digits", "--predictions", out, "-q")
    assert r.error_line(1).startswith(f"no space left on device: writing {out} needs ")
    assert out.read_bytes() == OLD and leftovers(tmpfs) == []
    box.unchanged()
