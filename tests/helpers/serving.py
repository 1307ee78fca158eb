"""A model served by ``dnet serve`` in a subprocess, its metrics, and a Triton model configuration read back (the
serve extra: tritonclient)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def metric(text: str, name: str, model: str) -> int:
    return int(sum(float(v) for v in re.findall(rf'^{name}{{model="{model}",[^}}]*}} (\S+)$', text, re.M)))


@contextlib.contextmanager
def served(path: Path, *options: str):
    """`dnet serve PATH` in a subprocess on free ports; yields (http port, metrics port, its ready line) and, once the
    block ends, stops it with SIGTERM and checks that no process of it and no temporary folder is left."""
    from benchmarks.serve import free_ports  # needs the serve extra, as every caller does

    h, g, m = free_ports(3)
    short = Path(tempfile.mkdtemp(prefix="dnet-serve-test-", dir="/tmp"))  # sockets need paths below 108 bytes
    env = {**os.environ, "TMPDIR": str(short)}
    proc = subprocess.Popen([sys.executable, "-m", "dnet", "serve", str(path), "--address", "127.0.0.1",
                             "--http-port", str(h), "--grpc-port", str(g), "--metrics-port", str(m), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("ready:") or not line:
                break
        assert lines[-1].startswith("ready:"), "".join(lines[-20:])
        yield h, m, lines[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert "interrupted by SIGTERM" in out
    left = subprocess.run(["pgrep", "-f", str(path.parent)], capture_output=True, text=True).stdout
    assert left == "", left
    assert list(short.iterdir()) == [], list(short.iterdir())  # no workspace, no scratch folder left
    short.rmdir()


def parse(folder):
    """The model configuration ``config.pbtxt`` in ``folder``, parsed by tritonclient's own message type."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb2

    return text_format.Parse((folder / "config.pbtxt").read_text(), pb2.ModelConfig())
