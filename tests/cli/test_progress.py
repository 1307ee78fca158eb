"""Progress on a terminal: a line per stage with its seconds, a bar for stages that count; nothing when quiet."""

from __future__ import annotations

import io

from dnet.cli.progress import TerminalProgress, format_check, progress_for
from dnet.core.progress import Recorder


def test_each_stage_is_drawn_when_it_starts_and_ends_with_its_seconds():
    stream = io.StringIO()
    p = TerminalProgress(stream)
    p.stage("export + check")
    assert stream.getvalue() == "export + check …"  # shown at once, before the stage's work
    p.stage("calibration", total=3, unit="img")
    p.advance(3)
    p.close()
    out = stream.getvalue()
    assert out.startswith("export + check …\r\x1b[Kexport + check  0.0 s\n")
    assert "calibration:   0%|" in out and out.endswith("calibration  0.0 s\n")
    assert [(s.name, s.done, s.total) for s in p.stages] == [("export + check", 0, None), ("calibration", 3, 3)]


def test_quiet_or_no_terminal_records_without_drawing(capsys):
    p = progress_for(quiet=True)
    assert type(p) is Recorder
    assert type(progress_for(quiet=False)) is Recorder  # pytest's stderr is not a terminal
    p.stage("a")
    p.check("fp16_vs_fp32", rel_l2=0.00123456, bound=0.002, top1_agreement=1.0, batch=8)
    p.close()
    assert capsys.readouterr().err == ""
    assert format_check(p.checks[0]) == "fp16_vs_fp32  rel_l2 0.00123  bound 0.002  top1_agreement 1  batch 8"
    assert p.to_dict()["stages"][0]["stage"] == "a" and p.to_dict()["checks"] == p.checks


def test_a_check_line_keeps_four_decimals_near_one_and_lists_per_stage_numbers():
    check = {"check": "int8_vs_fp32", "batch": 64, "cosine": 0.99953, "min_cosine": 0.99, "top1_agreement": 1.0,
             "min_top1": 0.95, "stages": {"denseblock1": 0.99991, "transition1": 0.9987}}
    assert format_check(check) == ("int8_vs_fp32  batch 64  cosine 0.9995  min_cosine 0.9900  top1_agreement 1  "
                                   "min_top1 0.9500  stages (denseblock1 0.9999, transition1 0.9987)")
