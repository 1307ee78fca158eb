"""The demo's report (report.json, report.txt and the accuracy-latency plot) written past a file-size limit, onto
a full tmpfs, and interrupted: one line naming the file, the previous report intact, no partial file."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from dnet.apps.demo import REPORT_JSON, REPORT_PNG, DemoResult, Row, format_report, plot_accuracy_latency, write_report
from dnet.apps.train.trainer import TrainResult
from dnet.core.errors import DnetError
from tests.helpers.writes import OLD, fill, leftovers, old_file, size_limit

ROWS = [Row("PyTorch FP32", "train/last.pth", 3.5, None, 1.2, 900.0, 400_000),
        Row("ONNX FP32", "digits.onnx", 3.5, 0.0, 0.8, 1500.0, 390_000),
        Row("ONNX INT8", "digits.int8.onnx", 3.9, 0.4, 0.5, 2500.0, 120_000)]
CHECKS = [{"check": "fp32_vs_pytorch", "rel_l2": 1e-7, "bound": 1e-5, "note": "x" * 64} for _ in range(40)]


def _result(out) -> DemoResult:
    train = TrainResult(run_dir=out / "train", epochs_done=3, best_error=3.4, final_error=3.5, history=[], model=None,
                        meta=None)
    return DemoResult(out, train=train, rows=list(ROWS), checks=list(CHECKS))


def _too_large(path, limit: int) -> str:
    return (f"file too large: writing {path} stopped at the limit of {limit:,} bytes (ulimit -f, or the filesystem); "
            "raise the limit or choose another output folder")


def _old_report(folder):
    return [old_file(folder / name) for name in ("report.txt", REPORT_JSON, REPORT_PNG)]


def test_the_report_is_what_the_demo_describes(tmp_path):
    """The control: the same writer, unhindered, writes the three files whole."""
    txt, doc, png = write_report(_result(tmp_path), format_report(ROWS))
    assert json.loads(doc.read_text())["rows"][2]["delta"] == 0.4 and len(json.loads(doc.read_text())["checks"]) == 40
    assert txt.read_text().startswith(format_report(ROWS).splitlines()[0]) and png.read_bytes()[:4] == b"\x89PNG"
    assert leftovers(tmp_path) == []


def test_report_json_past_the_size_limit_is_one_line_and_keeps_the_old_report(tmp_path):
    txt, doc, png = _old_report(tmp_path)
    table = format_report(ROWS)
    limit = len(table) + 64  # report.txt fits, report.json (~6 kB of checks) does not
    with size_limit(limit), pytest.raises(DnetError) as e:
        write_report(_result(tmp_path), table)
    assert str(e.value) == _too_large(doc, limit)
    assert doc.read_bytes() == OLD and png.read_bytes() == OLD and leftovers(tmp_path) == []
    assert txt.read_text() == table + "\n"  # written before, whole


def test_the_demo_plot_past_the_size_limit_is_one_line_and_keeps_the_old_plot(tmp_path):
    path = old_file(tmp_path / REPORT_PNG)
    with size_limit(4096), pytest.raises(DnetError) as e:  # the PNG is ~30 kB
        plot_accuracy_latency(ROWS, path)
    assert str(e.value) == _too_large(path, 4096)
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []


@pytest.mark.parametrize("name", [REPORT_JSON, REPORT_PNG])
def test_the_demo_report_onto_a_full_tmpfs_is_one_no_space_line_and_keeps_the_old_file(tmpfs, name):
    _old_report(tmpfs)
    result = _result(tmpfs)
    # report.txt (< 1 kB) fits in what is left; then the JSON with 60 kB of checks, or a small JSON and the plot
    result.checks = CHECKS * 10 if name == REPORT_JSON else []
    fill(tmpfs, leave=12 << 10)
    with pytest.raises(DnetError) as e:
        write_report(result, format_report(ROWS))
    assert str(e.value).startswith(f"no space left on device: writing {tmpfs / name} "), str(e.value)
    assert (tmpfs / name).read_bytes() == OLD and leftovers(tmpfs) == []


@pytest.mark.parametrize("name", [REPORT_JSON, REPORT_PNG])
def test_an_interrupted_report_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch, name):
    """Ctrl-C half-way through the write (after half its bytes reached the temporary file): the old file stays."""
    from matplotlib.figure import Figure

    import dnet.core.atomic

    _old_report(tmp_path)
    if name == REPORT_JSON:
        real = dnet.core.atomic.atomic_path

        @contextlib.contextmanager
        def interrupted_write(path, **kwargs):  # half the bytes arrive, then the interrupt, before the rename
            with real(path, **kwargs) as tmp:
                yield tmp
                if Path(path).name == REPORT_JSON:
                    tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
                    raise KeyboardInterrupt

        monkeypatch.setattr(dnet.core.atomic, "atomic_path", interrupted_write)
    else:
        def interrupted_savefig(self, fname, **kwargs):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n half a plot")
            raise KeyboardInterrupt

        monkeypatch.setattr(Figure, "savefig", interrupted_savefig)
    with pytest.raises(KeyboardInterrupt):
        write_report(_result(tmp_path), format_report(ROWS))
    assert (tmp_path / name).read_bytes() == OLD and leftovers(tmp_path) == []
