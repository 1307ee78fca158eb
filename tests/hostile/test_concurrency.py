"""Two ``dnet convert``s to one ``-o`` started together: each writes its own temporary file and renames it into
place, so the file left is complete and valid, and is one of the two results, never a mix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dnet.checkpoint import load_checkpoint
from tests.converters.tiny_models import tiny_checkpoint
from tests.hostile.harness import LAUNCH, ROOT, nothing_left


@pytest.mark.slow
@pytest.mark.parametrize("target", ["pth", "onnx"])
def test_two_converts_to_one_output_leave_one_complete_result(tmp_path, target):
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    sources = [tiny_checkpoint(work, f"seed{seed}.pth", seed=seed) for seed in (0, 1)]
    out = work / f"same.{target}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, "convert", str(src), "--from", "pth", "--to", target,
                               "-o", str(out), "--quiet", "--force"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for src in sources]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, err in results:  # each completes, or refuses in one line; never a traceback
        assert "Traceback" not in err, err
        assert code == 0 or (code != 0 and err.strip().startswith("dnet: error: ")), (code, err)
    assert any(code == 0 for code, _ in results)
    x = torch.randn(3, 3, 32, 32)
    if target == "pth":
        got = load_checkpoint(out)(x)
    else:
        from dnet import engines

        with engines.open(out) as e:
            got = torch.from_numpy(e(x.numpy()))
    expect = [load_checkpoint(src)(x) for src in sources]
    matches = [torch.allclose(got, e, atol=1e-4) for e in expect]
    assert matches.count(True) == 1, matches  # exactly one of the two models: complete, and not a mix
    assert sorted(p.name for p in work.iterdir() if "dnet-partial" in p.name) == []
    nothing_left(tmpdir)
