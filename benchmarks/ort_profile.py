"""What ONNX Runtime actually executes for an ONNX file on the CPU: the optimised graph's op counts and the
per-op-type time from its profiler (``SessionOptions.enable_profiling``).

    python -m benchmarks.ort_profile FILE.onnx [FILE2.onnx ...] [--batch 8] [--threads 2] [--runs 10]

Writes benchmarks/results/ort_profile.json and prints, per file, the time share of each op type.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx

from benchmarks.report import print_table, write_result
from dnet.engines.onnxruntime import session


def profile(path: str | Path, *, batch: int = 8, threads: int = 2, runs: int = 10, size: int = 224,
            plain: bool = False) -> dict:
    """Op counts of ORT's optimised graph and per-op-type kernel time (ms per run) for ``path`` at ``batch``;
    ``plain``: in a plain ``onnxruntime.InferenceSession`` (no dnet load-time rewrite) instead of dnet's session."""

    with tempfile.TemporaryDirectory(prefix="dnet-prof-") as tmp:
        if plain:
            sess = _plain_session(path, threads, Path(tmp))
        else:
            sess = session(path, threads=threads, profile_prefix=Path(tmp) / "prof",
                           optimized_model_path=Path(tmp) / "optimised.onnx")
        inp = sess.get_inputs()[0]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(dtype)
        sess.run(None, {inp.name: x})  # the first run allocates; its events are dropped below
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        trace = json.loads(Path(sess.end_profiling()).read_text())
        graph = onnx.load(str(Path(tmp) / "optimised.onnx"), load_external_data=False).graph
        ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.node)
    per_op: dict[str, float] = defaultdict(float)
    runs_seen = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs_seen[0]["ts"] + runs_seen[0]["dur"] if runs_seen else 0
    total = 0.0
    for e in trace:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < first_end:
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_op[op] += e["dur"] / 1e3 / runs
        total += e["dur"] / 1e3 / runs
    run_ms = [e["dur"] / 1e3 for e in runs_seen[1:]]
    return {"file": Path(path).name, "batch": batch, "threads": threads, "runs": runs,
            "run_ms_median": float(np.median(run_ms)) if run_ms else None, "kernel_ms": total,
            "per_op_ms": dict(sorted(per_op.items(), key=lambda kv: -kv[1])), "executed_ops": dict(ops.most_common())}


def _plain_session(path: str | Path, threads: int, tmp: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling, opts.profile_file_prefix = True, str(tmp / "prof")
    opts.optimized_model_filepath = str(tmp / "optimised.onnx")
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def rows_for(p: dict, top: int = 8) -> list[list]:
    rows = []
    for op, ms in list(p["per_op_ms"].items())[:top]:
        nodes = sum(n for k, n in p["executed_ops"].items() if k.split(".")[-1] == op)  # any domain (e.g. nchwc)
        rows.append([p["file"], op, nodes,
                     f"{ms:.1f}", f"{ms / p['kernel_ms']:.0%}"])
    return rows


def main() -> None:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    profiles = [profile(f, batch=args.batch, threads=args.threads, runs=args.runs) for f in args.files]
    rows = [r for p in profiles for r in rows_for(p)]
    print_table(f"ONNX Runtime profile, batch {args.batch}, {args.threads} threads (ms per run)",
                ["file", "op", "nodes", "ms", "share"], rows, right=(2, 3, 4))
    print(f"written {write_result('ort_profile', {'profiles': profiles})}")


if __name__ == "__main__":
    main()
