"""dnet's INT8 against NVIDIA ModelOpt, NNCF and onnxruntime.quantization, every step in one command.

    python -m benchmarks.peers.run DIR [--quick] [--reuse] [--modelopt-python PY] [--nncf-python PY] [--steps ...]

Steps (``--steps``, default all, in this order): prepare (BC-100 FP32 ONNX and the calibration images, see
prepare.py), dnet (six INT8 files: CPU, TensorRT and OpenVINO targets, minmax and mse calibration), ort (onnxruntime
.quantization's quantize_static QDQ file), peers (ModelOpt and NNCF in their own virtual environments, called by
path; a peer whose python is absent is skipped, saying so), accuracy (accuracy.py), lint (dnet's TensorRT INT8
lint on every INT8 ONNX file), speed (DenseNet-121, see speed.py), profile (ONNX Runtime's per-op-type time of each
DenseNet-121 ONNX file in a plain session, batch 8). ``--reuse`` keeps every file that already exists
instead of making it again. Writes benchmarks/results/peers.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = ("prepare", "dnet", "ort", "peers", "accuracy", "lint", "speed", "profile")
PEERS = Path(__file__).resolve().parents[2] / ".venv-peers"  # the scratch environments, beside the project's .venv
PEER_PYTHONS = {name: str(PEERS / name / "bin" / "python") for name in ("modelopt", "nncf")}
# (target, calibration method) -> dnet's BC-100 INT8 file
DNET_FILES = {("cpu", "minmax"): "bc100.int8.onnx", ("tensorrt", "minmax"): "bc100.int8-trt.onnx",
              ("openvino", "minmax"): "bc100.int8-ov.onnx", ("cpu", "mse"): "bc100.mse.int8.onnx",
              ("tensorrt", "mse"): "bc100.mse.int8-trt.onnx", ("openvino", "mse"): "bc100.mse.int8-ov.onnx"}
ORT_QDQ = "bc100.ort-qdq.onnx"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers.run", description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="where the model files go (and are reused from, with --reuse)")
    ap.add_argument("--quick", action="store_true", help="shorter timing (1 s per engine and batch, 2 rounds), "
                    "16 calibration crops for the DenseNet-121 speed files, the mse files left out")
    ap.add_argument("--reuse", action="store_true", help="keep every file that already exists in FOLDER")
    ap.add_argument("--modelopt-python", default=PEER_PYTHONS["modelopt"], help="ModelOpt venv's python")
    ap.add_argument("--nncf-python", default=PEER_PYTHONS["nncf"], help="NNCF venv's python")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of: " + ", ".join(STEPS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--duration", type=float, default=6.0, help="timed seconds per engine and batch size")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--speed-calib", type=int, default=64, help="photo crops every tool calibrates DenseNet-121 on")
    args = ap.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        ap.error(f"unknown step {bad[0]!r}: choose from {', '.join(STEPS)}")
    args.steps = steps
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches: comma-separated integers, got {args.batches!r}")
    if args.quick:
        args.duration, args.rounds, args.speed_calib = 1.0, 2, 16
    return args


def peer_python(path: str) -> str | None:
    """``path`` when that python exists, else None (its peer is skipped)."""
    return path if Path(path).is_file() else None


def dnet_files(quick: bool) -> dict[tuple[str, str], str]:
    return {k: v for k, v in DNET_FILES.items() if not (quick and k[1] == "mse")}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd``, its output into ``log``; the seconds it took; SystemExit with the log's tail when it fails."""
    t = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} … failed ({done.returncode}):\n{log.read_text()[-2000:]}")
    return time.perf_counter() - t


def step_prepare(folder: Path, reuse: bool) -> dict:
    from benchmarks.peers import prepare

    if reuse and all((folder / f).exists() for f in ("bc100.onnx", "bc100.calib.npy", "calib")):
        return {"reused": True}
    t = time.perf_counter()
    _run([sys.executable, "-m", "benchmarks.peers.prepare", str(folder)], folder / "prepare.log")
    return {"seconds": time.perf_counter() - t, "checkpoint": prepare.CHECKPOINT.name}


def step_dnet(folder: Path, reuse: bool, quick: bool) -> dict:
    out = {}
    for (target, method), name in dnet_files(quick).items():
        if reuse and (folder / name).exists():
            out[name] = {"reused": True}
            continue
        _log(f"dnet convert --int8-target {target} --calib-method {method} -> {name}")
        cmd = [sys.executable, "-m", "dnet", "convert", str(folder / "bc100.onnx"), "--from", "onnx", "--to",
               "onnx", "--precision", "int8", "--calib", str(folder / "calib"), "--calib-count", "500",
               "--int8-check-count", "0",
               "--int8-target", target, "--calib-method", method, "--force", "-o", str(folder / name),
               "--calib-cache", str(folder / f"bc100.{method}.{target}.calib.json")]
        out[name] = {"target": target, "method": method, "seconds": _run(cmd, folder / f"{name}.log")}
    return out


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over an N×3×H×W array, one image at a time."""

    def __init__(self, name: str, data: np.ndarray) -> None:
        self.items = iter([{name: data[i:i + 1]} for i in range(len(data))])

    def get_next(self):
        return next(self.items, None)


def step_ort(folder: Path, reuse: bool) -> dict:
    """onnxruntime.quantization.quantize_static at its defaults, QDQ format, on the same calibration images."""
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, quantize_static

    out = folder / ORT_QDQ
    if reuse and out.exists():
        return {"reused": True}
    t = time.perf_counter()
    quantize_static(str(folder / "bc100.onnx"), str(out), _Reader("input", np.load(folder / "bc100.calib.npy")),
                    quant_format=QuantFormat.QDQ)
    return {"seconds": time.perf_counter() - t, "onnxruntime": onnxruntime.__version__}


def quantize_peers(fp32: Path, calib: Path, stem: Path, pythons: dict[str, str | None], reuse: bool) -> dict:
    """ModelOpt -> STEM.modelopt.onnx, NNCF -> STEM.nncf.onnx/.xml, each by its own venv's python (or skipped)."""
    out = {}
    jobs = {"modelopt": (HERE / "modelopt_quantize.py", f"{stem}.modelopt.onnx", f"{stem}.modelopt.onnx"),
            "nncf": (HERE / "nncf_quantize.py", f"{stem}.nncf", f"{stem}.nncf.xml")}
    for peer, (script, target, made) in jobs.items():
        py = pythons.get(peer)
        if py is None:
            _log(f"{peer}: no venv python, skipped (see benchmarks/peers/README.md for the install)")
            out[peer] = {"skipped": "no venv python"}
        elif reuse and Path(made).exists():
            out[peer] = {"reused": True, **_last_json(Path(f"{stem}.{peer}.log"))}
        else:
            _log(f"{peer} quantizes {fp32.name}")
            log = Path(f"{stem}.{peer}.log")
            _run([py, str(script), str(fp32), str(calib), target], log)
            out[peer] = _last_json(log)
    return out


def _last_json(log: Path) -> dict:
    """The JSON line a peer script printed last (its version and seconds), {} where there is none."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        if line.startswith('{"tool"'):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def lint_files(folder: Path, names: dict[str, str]) -> list[dict]:
    """dnet's TensorRT INT8 lint of each existing file: errors, warnings and the count per rule."""
    import onnx

    from dnet.converters.int8.lint import lint

    out = []
    for tool, name in names.items():
        if (folder / name).exists():
            r = lint(onnx.load(str(folder / name)))
            out.append({"tool": tool, "file": name, "errors": r.errors, "warnings": r.warnings,
                        "by_rule": {f.rule: {"severity": f.severity, "count": f.count} for f in r.findings if f.count}})
    return out


def lint_rows(results: list[dict]) -> list[list]:
    """One row per file: tool, errors, warnings, and the rules that fired as ``rule ×count`` by severity."""
    def fired(r: dict, severity: str) -> str:
        return ", ".join(f"{k} ×{v['count']}" for k, v in r["by_rule"].items() if v["severity"] == severity) or "–"

    return [[r["tool"], r["errors"], r["warnings"], *(fired(r, s) for s in ("error", "warning", "info"))]
            for r in results]


def heading() -> str:
    """The tables' first line: CPU model, its INT8 flags, the UTC date and the load average."""
    import os

    from dnet.core import cpu

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu.model_name()} ({cpu.int8_flags_text()}), {os.cpu_count()} CPUs; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load}")


def main(argv: list[str] | None = None) -> None:
    from benchmarks.peers import accuracy, speed
    from benchmarks.report import print_table, write_result

    args = parse_args(argv)
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    pythons = {"modelopt": peer_python(args.modelopt_python), "nncf": peer_python(args.nncf_python)}
    result: dict = {"heading": heading(), "quick": args.quick, "steps": {}}
    print(result["heading"], flush=True)
    lint_names = {"dnet cpu": DNET_FILES[("cpu", "minmax")], "dnet tensorrt": DNET_FILES[("tensorrt", "minmax")],
                  "dnet cpu mse": DNET_FILES[("cpu", "mse")], "dnet tensorrt mse": DNET_FILES[("tensorrt", "mse")],
                  "dnet openvino": DNET_FILES[("openvino", "minmax")],
                  "dnet openvino mse": DNET_FILES[("openvino", "mse")], "ModelOpt": "bc100.modelopt.onnx", "NNCF (ONNX)": "bc100.nncf.onnx",
                  "onnxruntime quantize_static QDQ": ORT_QDQ}
    for step in args.steps:
        _log(f"step {step}")
        if step == "prepare":
            result["steps"][step] = step_prepare(folder, args.reuse)
        elif step == "dnet":
            result["steps"][step] = step_dnet(folder, args.reuse, args.quick)
        elif step == "ort":
            result["steps"][step] = step_ort(folder, args.reuse)
        elif step == "peers":
            result["steps"][step] = quantize_peers(folder / "bc100.onnx", folder / "bc100.calib.npy",
                                                   folder / "bc100", pythons, args.reuse)
        elif step == "accuracy":
            result["accuracy"] = accuracy.measure(folder)
            accuracy.print_rows(result["accuracy"])
        elif step == "lint":
            result["lint"] = lint_files(folder, lint_names)
            print_table("TensorRT INT8 lint (dnet inspect) of each tool's BC-100 INT8 file",
                        ["tool", "errors", "warnings", "error rules", "warning rules", "info"],
                        lint_rows(result["lint"]), right=(1, 2))
        elif step == "speed":
            sp = folder / "speed"
            result["steps"]["speed_build"] = speed.build(sp, args.speed_calib, reuse=args.reuse)
            result["steps"]["speed_peers"] = quantize_peers(sp / speed.FP32, sp / speed.CALIB, sp / speed.MODEL,
                                                            pythons, args.reuse)
            result["speed"] = speed.measure(sp, threads=args.threads, batches=args.batches,
                                            duration=args.duration, rounds=args.rounds)
            speed.print_rows(result["speed"])
        elif step == "profile":
            from benchmarks.ort_profile import profile, rows_for

            sp = folder / "speed"
            names = [speed.FP32, speed.DNET, speed.MODELOPT, f"{speed.NNCF}.onnx"]
            result["profile"] = [profile(sp / n, batch=8, threads=args.threads, runs=3 if args.quick else 6, plain=True)
                                 for n in names if (sp / n).exists()]
            print_table("ONNX Runtime profile, plain session, batch 8 (ms per run, top op types)",
                        ["file", "op", "nodes", "ms", "share"],
                        [r for p in result["profile"] for r in rows_for(p, top=6)], right=(2, 3, 4))
        path = write_result("peers", result)  # after every step: a later failure keeps what was measured
    print(f"written {path}")


if __name__ == "__main__":
    main()
