"""Everything GPU-related this repository can run, in one command on a machine with a CUDA GPU (under 8 minutes).

    make gpu-check PY=python3        # the machine's own Python (a preinstalled CUDA PyTorch); nothing is downloaded
    python -m benchmarks.gpu_check [--quick] [--no-tests]

1. the tests marked ``gpu`` or ``tensorrt`` (the TensorRT ones skip with their reason where TensorRT is absent);
2. PyTorch CUDA inference of densenet121: FP32, FP16, channels-last and CUDA graphs at batch 1, 8 and 32;
3. one training step of DenseNet-BC-100 (k=12) at batch 64 on 32×32 images, standard vs memory-efficient: peak CUDA
   memory and step time, beside the Lua numbers of PAPER.md (TITAN X: 5452 MB / 0.156 s standard, 1655 MB /
   0.175 s for optMemory 4, the most memory-efficient Lua mode);
4. the same step of the 190-layer DenseNet-BC (k=40), memory-efficient (the Lua original: 8.3 GB on a 12 GB TITAN X).

It writes gpu_check.json (in ``$DNET_BENCH_RESULTS``, default benchmarks/results/) and prints tables. Exit status: 1
when a test failed; 3 (:data:`EXIT_NO_TENSORRT`) when everything else passed but ``tensorrt`` does not import, so the
TensorRT path was not checked (the table and the JSON say so); 0 otherwise. On a
machine without a CUDA GPU it says so in one line and exits with status 1 (``--probe`` does only that check, which
``make gpu-check`` runs before installing anything). Peak memory here is ``torch.cuda.max_memory_allocated``
(tensors only); the Lua numbers are what nvidia-smi showed (CUDA context and allocator caches included), so ours
read lower for the same tensors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 8 * 60
TEST_TIMEOUT_S = 300
LUA = {  # PAPER.md, "Memory-efficient training" and the Wide-DenseNet table: TITAN X, batch 64
    "densenet-bc-l100-k12/standard": {"memory_mb": 5452, "step_s": 0.156, "what": "Lua optMemory 0"},
    "densenet-bc-l100-k12/memory-efficient": {"memory_mb": 1655, "step_s": 0.175, "what": "Lua optMemory 4"},
    "densenet-bc-l190-k40/memory-efficient": {"memory_mb": 8300, "step_s": None, "what": "Lua optMemory 4"},
}
NOT_CHECKED = "TensorRT not installed: the TensorRT path was NOT checked"
EXIT_NO_TENSORRT = 3  # distinct from 1 (a test failed, or no GPU): the GPU parts ran, the TensorRT path did not
VARIANTS = ("fp32", "fp32-channels-last", "fp16", "fp16-channels-last", "fp16-channels-last-cuda-graph")
BATCHES = (1, 8, 32)


def probe() -> str | None:
    """None when PyTorch sees a CUDA GPU, else the one line that says why not."""
    try:
        import torch
    except ImportError as e:
        return f"gpu_check: no CUDA GPU found (PyTorch does not import with {sys.executable}: {e}); nothing was measured"
    if not torch.cuda.is_available():
        return "gpu_check: no CUDA GPU found (torch.cuda.is_available() is False); nothing was measured"
    return None


def environment() -> dict:
    import importlib.metadata as md

    import torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out |= {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "gpu_memory_mb": round(props.total_memory / 2**20)}
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "onnxruntime-gpu", "onnxruntime", "onnx", "pytest"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def tensorrt_check() -> dict:
    """Whether ``tensorrt`` imports here: its version, or why not and :data:`NOT_CHECKED`."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the bindings are there but libnvinfer is not
        return {"installed": False, "version": None, "checked": False, "note": NOT_CHECKED,
                "why": f"{type(e).__name__}: {e}"[:200]}
    return {"installed": True, "version": str(trt.__version__), "checked": True, "note": None, "why": None}


# ---------------------------------------------------------------------------------------------------------------
# 1. The tests marked gpu or tensorrt.


def marked_test_files(root: Path = ROOT) -> list[Path]:
    """Test files that carry a gpu or tensorrt marker (so collection does not import the whole suite)."""
    marks = ("pytest.mark.gpu", "pytest.mark.tensorrt")
    return sorted(p for p in (root / "tests").rglob("test_*.py") if any(m in p.read_text() for m in marks))


def run_tests(timeout: float, root: Path = ROOT) -> dict:
    import importlib.util
    import subprocess
    import tempfile
    import xml.etree.ElementTree as ET

    if importlib.util.find_spec("pytest") is None:
        return {"skipped": "pytest is not installed in this Python"}
    files = marked_test_files(root)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or tensorrt",
               f"--junitxml={report}", *map(str, files)]
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"failed": 1, "error": f"the tests ran past {timeout:.0f} s and were stopped"}
        seconds = time.perf_counter() - started
        if not report.is_file():
            return {"failed": 1, "error": (proc.stdout + proc.stderr).strip().splitlines()[-1:]}
        cases = []
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome, detail = "passed", ""
            for tag in ("failure", "error", "skipped"):
                found = case.find(tag)
                if found is not None:
                    outcome, detail = {"failure": "failed", "error": "failed", "skipped": "skipped"}[tag], \
                        (found.get("message") or "").splitlines()[0][:200] if found.get("message") else ""
                    break
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "detail": detail})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    return {**counts, "seconds": round(seconds, 1), "cases": cases}


# ---------------------------------------------------------------------------------------------------------------
# 2. Inference.


def time_calls(fn, iterations: int, warmup: int, sync) -> float:
    """Median milliseconds of ``fn()`` over ``iterations`` calls after ``warmup`` calls, synchronising each call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def inference(model_name: str = "densenet121", variants=VARIANTS, batches=BATCHES, iterations: int = 30,
              warmup: int = 10, device: str = "cuda") -> list[dict]:
    """Median latency and images/s of each variant and batch size, with the speed-up over FP32 at that batch."""
    import torch

    import dnet

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = dnet.create_model(model_name).eval()
    size = base.meta.input_size
    rows = []
    for variant in variants:
        half, channels_last, graph = "fp16" in variant, "channels-last" in variant, "cuda-graph" in variant
        if graph and device != "cuda":
            continue
        dtype = torch.float16 if half else torch.float32
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = base.to(device=device, dtype=dtype, memory_format=fmt)
        for batch in batches:
            x = torch.randn(batch, 3, size, size, device=device, dtype=dtype).contiguous(memory_format=fmt)
            with torch.inference_mode():
                if graph:
                    static_out = None
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        for _ in range(3):  # warm up on a side stream before capture, as PyTorch's docs do
                            model(x)
                    torch.cuda.current_stream().wait_stream(side)
                    cuda_graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(cuda_graph):
                        static_out = model(x)
                    fn = cuda_graph.replay
                    assert static_out is not None
                else:
                    def fn(model=model, x=x):
                        return model(x)
                ms = time_calls(fn, iterations, warmup, sync)
            rows.append({"model": model_name, "variant": variant, "batch": batch, "median_ms": ms,
                         "images_per_s": batch * 1e3 / ms})
    fp32 = {r["batch"]: r["median_ms"] for r in rows if r["variant"] == "fp32"}
    for r in rows:
        r["speedup_vs_fp32"] = fp32[r["batch"]] / r["median_ms"] if r["batch"] in fp32 else None
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 3 and 4. Training steps.


def train_step(model_name: str, memory_efficient: bool, batch: int = 64, steps: int = 5,
               device: str = "cuda") -> dict:
    """Peak memory (MB) and median time (s) of one SGD step (the paper's recipe) on random 32×32 images."""
    import torch
    import torch.nn.functional as F

    import dnet

    torch.manual_seed(0)
    model = dnet.create_model(model_name, memory_efficient=memory_efficient).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, model.config.num_classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # gradients and momentum buffers allocated, cuDNN algorithms chosen
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = time_calls(step, steps, 0, sync) / 1e3
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    reserved = torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else None
    mode = "memory-efficient" if memory_efficient else "standard"
    lua = LUA.get(f"{model_name}/{mode}", {})
    return {"model": model_name, "mode": mode, "batch": batch, "steps": steps, "peak_allocated_mb": peak,
            "peak_reserved_mb": reserved, "step_s": step_s, "lua_memory_mb": lua.get("memory_mb"),
            "lua_step_s": lua.get("step_s"), "lua": lua.get("what")}


# ---------------------------------------------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", action="store_true", help="only check for a CUDA GPU (one line and status 1 without)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations and steps")
    ap.add_argument("--no-tests", action="store_true", help="skip the gpu/tensorrt tests")
    args = ap.parse_args(argv)
    why = probe()
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    if args.probe:
        return 0

    import torch

    from benchmarks.report import print_table, write_result

    started = time.perf_counter()
    result: dict = {"environment": environment(), "tensorrt": tensorrt_check(), "notes": []}
    if not result["tensorrt"]["installed"]:
        result["notes"].append(NOT_CHECKED)
    left = lambda: BUDGET_S - (time.perf_counter() - started)  # noqa: E731
    result["tests"] = {"skipped": "--no-tests"} if args.no_tests else run_tests(min(TEST_TIMEOUT_S, left() - 150))
    iterations, steps = (10, 3) if args.quick else (30, 5)
    result["inference"] = inference(iterations=iterations)
    result["training"] = []
    for name, efficient in (("densenet-bc-l100-k12", False), ("densenet-bc-l100-k12", True),
                            ("densenet-bc-l190-k40", True)):
        if left() < 30:
            result["notes"].append(f"{name} ({'memory-efficient' if efficient else 'standard'}) not measured: "
                                   "the 8-minute budget was spent")
            continue
        result["training"].append(train_step(name, efficient, steps=steps))
        torch.cuda.empty_cache()  # the step's model and activations are gone; start the next from an empty cache
    result["seconds"] = round(time.perf_counter() - started, 1)
    path = write_result("gpu_check", result)

    env = result["environment"]
    print(f"{env.get('gpu')} (compute capability {env.get('compute_capability')}, {env.get('gpu_memory_mb')} MB), "
          f"torch {env['torch']}, CUDA {env['cuda']}, TensorRT {env.get('tensorrt') or env.get('tensorrt-cu12') or env.get('tensorrt-cu13')}")
    trt = result["tensorrt"]
    print_table("TensorRT path", ["check", "result"],
                [["import tensorrt", f"TensorRT {trt['version']}: checked by the tests below" if trt["installed"]
                  else f"{NOT_CHECKED} ({trt['why']})"]], right=())
    tests = result["tests"]
    if "cases" in tests:
        print_table(f"tests marked gpu/tensorrt: {tests['passed']} passed, {tests['failed']} failed, "
                    f"{tests['skipped']} skipped in {tests['seconds']} s", ["test", "outcome", "detail"],
                    [[c["test"].rsplit(".", 1)[-1], c["outcome"], c["detail"][:80]] for c in tests["cases"]],
                    right=())
    else:
        print(f"\ntests: {tests}")
    print_table("densenet121 inference, PyTorch CUDA (median of the timed calls)",
                ["variant", "batch", "ms", "img/s", "vs fp32"],
                [[r["variant"], r["batch"], f"{r['median_ms']:.2f}", f"{r['images_per_s']:.0f}",
                  _fmt(r["speedup_vs_fp32"], ".2f") + "×"] for r in result["inference"]])
    print_table("training step, batch 64, 32×32 (peak = torch.cuda.max_memory_allocated; Lua = nvidia-smi, TITAN X)",
                ["model", "mode", "peak MB", "reserved MB", "step s", "Lua MB", "Lua step s"],
                [[r["model"], r["mode"], _fmt(r["peak_allocated_mb"], ".0f"), _fmt(r["peak_reserved_mb"], ".0f"),
                  f"{r['step_s']:.3f}", _fmt(r["lua_memory_mb"], "d"), _fmt(r["lua_step_s"], ".3f")]
                 for r in result["training"]])
    for note in result["notes"]:
        print(note)
    print(f"\nwrote {path} ({result['seconds']} s)")
    if tests.get("failed"):
        return 1
    return 0 if trt["installed"] else EXIT_NO_TENSORRT


if __name__ == "__main__":
    sys.exit(main())
