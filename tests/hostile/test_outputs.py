"""Outputs: what an output may be, a full disk, and the mode of new files.

One output-path policy for every verb (``dnet.core.outputs.check_output_path``): never an input of the same command, never
an existing node that is not a regular file, never an intermediate the command did not write (unless ``--force``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from dnet.core.atomic import atomic_write_text
from tests.helpers.harness import Box, unshare_works


def test_eval_predictions_naming_the_model_file_is_refused_and_the_model_kept(box: Box, models):
    model = box.add(models["digits"])
    box.freeze()
    out = box.cli("eval", model, "--dataset", "digits", "--count", 5, "--quiet", "--predictions", model)
    assert out.error_line(2) == (f"output {model} is also an input of this command ({model}); dnet never overwrites "
                                 "its inputs: choose another output name")
    box.unchanged()


def _fifo(box: Box, name: str = "node"):
    path = box.work / name
    os.mkfifo(path)
    return path


def test_predictions_to_a_fifo_or_a_symlink_to_one_is_refused_and_the_node_kept(box: Box, models):
    model = box.add(models["digits"])
    fifo = _fifo(box)
    link = box.work / "link.csv"
    link.symlink_to(fifo)
    box.freeze()
    for target in (fifo, link):
        out = box.cli("eval", model, "--dataset", "digits", "--count", 5, "--quiet", "--predictions", target)
        assert out.error_line(2).startswith(f"output {target} is a FIFO; dnet writes only regular files")
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.path.islink(link)
    box.unchanged()


def test_convert_output_on_a_character_device_is_refused_before_any_work(box: Box, models):
    src = box.add(models["pth"])
    dev = box.work / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is; made here, never the system's
    except (PermissionError, OSError):
        pytest.skip("creating a character device needs root (CAP_MKNOD); the FIFO case covers the policy")
    box.freeze()
    out = box.cli("convert", src, "--from", "pth", "--to", "onnx", "-o", dev)
    assert out.error_line(2).startswith(f"output {dev} is a character device; dnet writes only regular files")
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    box.unchanged()


def test_an_unrelated_file_where_the_fp32_intermediate_goes_is_refused_then_replaced_with_force(box: Box, models):
    src = box.add(models["pth"])
    notes = box.work / "tiny.onnx"
    notes.write_text("my notes, not a model\n")
    box.freeze()
    out = box.cli("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", box.work / "tiny.fp16.onnx")
    assert out.error_line(2) == (f"{notes} exists and is not an intermediate dnet wrote from tiny.pth; this "
                                 "conversion keeps an intermediate file under that name: move it, choose another "
                                 "output name, or let the conversion replace it (--force)")
    box.unchanged()
    box.cli("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", box.work / "tiny.fp16.onnx", "--force").ok()
    assert notes.read_bytes()[:4] != b"my n"
    # a second run replaces the intermediate it wrote itself, without --force
    box.cli("convert", src, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", box.work / "tiny.fp16.onnx").ok()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_new_files_get_the_mode_the_umask_allows(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == mode


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_checkpoint_written_by_convert_respects_the_umask(box: Box, models):
    src = box.add(models["pth"])
    out = box.work / "copy.pth"
    old = os.umask(0o022)
    try:
        box.cli("convert", src, "--from", "pth", "--to", "pth", "-o", out).ok()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644


# A full disk: a 64 KiB tmpfs in a private mount namespace (unprivileged user namespaces), skipped where that is
# not possible. The tiny model's ONNX and checkpoint are ~35 KB each; the disk is filled first.
FULL = r"""
set -e
mount -t tmpfs -o size=64k tmpfs "$1"
dd if=/dev/zero of="$1/filler" bs=1k count=40 2>/dev/null
shift
exec "$@"
"""


@pytest.mark.skipif(not unshare_works(), reason="needs unprivileged user and mount namespaces (unshare) for a tiny tmpfs")
@pytest.mark.parametrize("target, suffix", [("onnx", ".onnx"), ("pth", ".pth")])
def test_a_full_disk_is_one_line_naming_the_file_and_the_bytes_needed(box: Box, models, target, suffix):
    from tests.helpers.harness import LAUNCH, ROOT

    src = box.add(models["pth"])
    disk = box.work / "disk"
    disk.mkdir()
    out = disk / f"m{suffix}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(box.tmp)}
    p = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", FULL, "sh", str(disk),
                        sys.executable, "-c", LAUNCH, "convert", str(src), "--from", "pth", "--to", target, "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"dnet: error: no space left on device: writing {out} needs ")
    assert " bytes, " in lines[0] and "bytes are free there; free some space or choose another output folder" in lines[0]
    assert list(disk.iterdir()) == []  # the tmpfs is gone with its namespace; nothing was written to the real folder


# --- the writers main added: per-layer plots, --compare-to predictions, TensorRT timing caches, --json -------------

@pytest.fixture
def no_comparison(monkeypatch):
    """Any per-layer comparison is a failure here: the request must be refused before the work starts."""
    import dnet.cli.compare as cli_compare

    def refuse(*args, **kwargs):
        raise AssertionError("the comparison ran for a request that had to be refused first")

    monkeypatch.setattr(cli_compare, "compare_layers", refuse)


@pytest.mark.parametrize("which", ["ref", "other"])
def test_compare_per_layer_plot_naming_a_model_file_is_refused_before_the_comparison(box: Box, models, no_comparison,
                                                                                     which):
    ref, other = box.add(models["onnx"], "ref.onnx"), box.add(models["onnx"], "other.onnx")
    target = {"ref": ref, "other": other}[which]
    box.freeze()
    out = box.cli("compare", ref, other, "--per-layer", "--plot", target)
    assert out.error_line(2) == (f"output {target} is also an input of this command ({target}); dnet never overwrites "
                                 "its inputs: choose another output name")
    box.unchanged()


def test_compare_per_layer_default_plot_on_a_fifo_is_refused_and_the_fifo_kept(box: Box, models, no_comparison):
    ref, other = box.add(models["onnx"], "ref.onnx"), box.add(models["onnx"], "other.onnx")
    fifo = _fifo(box, "other.layers.png")  # where the plot goes by default
    box.freeze()
    out = box.cli("compare", ref, other, "--per-layer", "--json")
    assert out.error_line(2).startswith(f"output {fifo} is a FIFO; dnet writes only regular files")
    assert out.stdout == "" and stat.S_ISFIFO(os.stat(fifo).st_mode)
    box.unchanged()


def test_compare_per_layer_leaves_only_its_plot(box: Box, models):
    ref, other = box.add(models["onnx"], "ref.onnx"), box.add(models["onnx"], "other.onnx")
    box.freeze()
    old = os.umask(0o027)
    try:
        report = box.cli("compare", ref, other, "--per-layer", "--count", 2, "--json").ok()
    finally:
        os.umask(old)
    plot = box.work / "other.layers.png"
    assert f'"plot": "{plot}"' in report and stat.S_IMODE(os.stat(plot).st_mode) == 0o640
    box.unchanged("other.layers.png")  # ONNX Runtime's optimized graphs went to a scratch folder, removed


def test_eval_compare_to_predictions_naming_the_reference_is_refused_before_the_evaluation(box: Box, models):
    model, reference = box.add(models["digits"]), box.add(models["digits"], "reference.pth")
    box.freeze()
    out = box.cli("eval", model, "--compare-to", reference, "--dataset", "digits", "--count", 5, "--quiet",
                  "--predictions", reference)
    assert out.error_line(2) == (f"output {reference} is also an input of this command ({reference}); dnet never "
                                 "overwrites its inputs: choose another output name")
    box.unchanged()


@pytest.mark.parametrize("where", ["source", "intermediate", "fifo"])
def test_a_timing_cache_over_the_source_an_intermediate_or_a_fifo_is_refused_before_the_export(box: Box, models,
                                                                                               no_export, where):
    src = box.add(models["pth"])
    cache = {"source": src, "intermediate": box.work / "t.onnx", "fifo": box.work / "node"}[where]
    if where == "fifo":
        _fifo(box)
    box.freeze()
    out = box.cli("convert", src, "--from", "pth", "--to", "trt", "-o", box.work / "t.plan", "--timing-cache", cache,
                  "--json")
    line = out.error_line(2)
    doc = json.loads(out.stdout)  # --json: stdout holds one JSON document, also on a refusal: nothing kept, and why
    assert (doc["written"], doc["error"]) == ([], line)
    if where == "source":
        assert line == (f"output {src} is also an input of this command ({src}); dnet never overwrites its inputs: "
                        "choose another output name")
    elif where == "intermediate":  # the FP32 ONNX this conversion keeps beside the plan
        assert line == f"output {cache} is also another file of this command ({cache}); give each its own name"
    else:
        assert line.startswith(f"output {cache} is a FIFO; dnet writes only regular files")
    box.unchanged()
