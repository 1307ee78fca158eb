"""Native TensorRT engine: a ``.plan`` built by ``dnet.converters.tensorrt`` and its ``.plan.json`` sidecar.

Inputs and outputs are torch CUDA tensors (no pycuda); inference uses the named-tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) on a torch CUDA stream. A batch larger than the
optimization profile's maximum is split into chunks, one smaller than its minimum is padded. The profile's limits
come from the plan itself (``get_tensor_profile_shape``), checked against the sidecar, whose text the plan's sha256
does not cover. ``use_cuda_graph`` replays each fixed shape from a CUDA graph (trtexec's ``--useCudaGraph``);
``layer_times`` reports per-layer times through TensorRT's ``IProfiler``.
``tensorrt`` and torch's CUDA are touched only when a plan is opened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnet.core.artifact.sidecar import EngineSidecar, check_compatible, read_sidecar
from dnet.core.errors import EngineError, UsageError
from dnet.engines.base import Engine
from dnet.engines.tensorrt_runtime import create, cuda_device, import_tensorrt, tensorrt_logger

if TYPE_CHECKING:  # annotations only: tensorrt is imported when a plan is opened
    import tensorrt

PROVIDERS = (None, "cuda", "tensorrt")
DEVICE = "cuda"  # where I/O tensors live; the tests drive the engine's logic on "cpu" through a stand-in tensorrt


def split_batches(n: int, max_batch: int) -> list[tuple[int, int]]:
    """(start, stop) ranges covering ``range(n)`` in order, each at most ``max_batch`` long."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [(start, min(start + max_batch, n)) for start in range(0, n, max_batch)]


def _torch_dtype(trt, data_type, name: str):
    import torch

    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if data_type not in dtypes:
        raise EngineError(f"tensor {name!r} has type {data_type}; dnet feeds float32 or float16 tensors only")
    return dtypes[data_type]


def _layer_profiler(trt):
    """A ``trt.IProfiler`` that adds up each layer's milliseconds, in the order the layers report."""
    base = trt.IProfiler

    class LayerTimes(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.totals: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.totals[layer_name] = self.totals.get(layer_name, 0.0) + float(ms)

    return LayerTimes()


class TensorRTEngine(Engine):
    kind = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, sidecar: EngineSidecar, trt, plan: bytes) -> None:
        import torch

        self.path = path
        self.sidecar = sidecar
        self.meta = sidecar.meta
        self.trt = trt
        self.runtime: tensorrt.Runtime = create(trt, trt.Runtime, tensorrt_logger(trt), f"cannot run {path.name}")
        if sidecar.version_compatible:
            # A version-compatible plan carries TensorRT's lean runtime (host code); dnet wrote this plan itself.
            self.runtime.engine_host_code_allowed = True
        self.engine: tensorrt.ICudaEngine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {path.name}; rebuild it from {sidecar.onnx}")
        self.context: tensorrt.IExecutionContext = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [sidecar.input_name] or len(outputs) != 1:
            raise EngineError(
                f"{path.name}: expected one input {sidecar.input_name!r} and one output, "
                f"found inputs {inputs} and outputs {outputs}"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name), self.input_name)
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name), self.output_name)
        lo, hi = self._profile_limits()
        self.min_batch, self.max_batch = lo[0], hi[0]
        self.input_shape = (-1, *hi[1:])
        self.stream = torch.cuda.Stream()
        self.cuda_graph = False
        self._graph = None  # (rows, x, y, torch.cuda.CUDAGraph) while CUDA graphs are on

    def _profile_limits(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(min, max) input shape of the plan's one optimization profile, after checking it against the sidecar."""
        count = self.engine.num_optimization_profiles
        if count != 1:
            raise EngineError(f"{self.path.name} has {count} optimization profiles; dnet builds and runs plans with "
                              f"exactly one; rebuild it from {self.sidecar.onnx}")
        lo, opt, hi = (tuple(int(d) for d in dims) for dims in self.engine.get_tensor_profile_shape(self.input_name, 0))
        recorded = tuple(tuple(int(d) for d in self.sidecar.profile[k]) for k in ("min", "opt", "max"))
        if (lo, opt, hi) != recorded:
            def show(shapes):
                return ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in zip(("min", "opt", "max"), shapes))

            raise EngineError(f"{self.path.name}: the plan's optimization profile ({show((lo, opt, hi))}) is not the "
                              f"one its sidecar records ({show(recorded)}); rebuild it from {self.sidecar.onnx}")
        return lo, hi

    def _bind(self, rows: int):
        """Input and output tensors for ``rows`` rows, with the context's shape and tensor addresses set to them."""
        import torch

        x = torch.zeros((rows, *self.input_shape[1:]), dtype=self.input_dtype, device=DEVICE)
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise EngineError(f"{self.path.name}: TensorRT refused input shape {tuple(x.shape)}")
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype, device=DEVICE)
        for name, tensor in ((self.input_name, x), (self.output_name, y)):
            if not self.context.set_tensor_address(name, tensor.data_ptr()):
                raise EngineError(f"{self.path.name}: TensorRT refused the address of tensor {name!r} "
                                  "(misaligned or not device memory); its log above says why")
        return x, y

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError(f"{self.path.name}: TensorRT failed to run the batch; its log above says why")

    def _captured(self, rows: int):
        """(x, y, graph) replaying the engine on ``rows`` rows; captured again when the row count changes."""
        import torch

        if self._graph is not None and self._graph[0] == rows:
            return self._graph[1:]
        self._graph = None
        x, y = self._bind(rows)
        self._enqueue()  # as trtexec does: one run before capture, so initialisation is not captured
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                captured = self.context.execute_async_v3(self.stream.cuda_stream)
        except RuntimeError:
            captured = False
        if not captured:
            raise EngineError(f"{self.path.name}: this plan has operations a CUDA graph cannot capture; run it "
                              "without CUDA graphs")
        self._graph = (rows, x, y, graph)
        return x, y, graph

    def _run_chunk(self, chunk: np.ndarray, rows: int) -> np.ndarray:
        import torch

        n = len(chunk)  # rows >= n: below the profile's minimum (or a graph's fixed size), pad and drop the rest
        with torch.cuda.stream(self.stream):
            if self.cuda_graph:
                x, y, graph = self._captured(rows)
                x[n:].zero_()
                x[:n].copy_(torch.from_numpy(chunk))
                graph.replay()
            else:
                x, y = self._bind(rows)
                x[:n].copy_(torch.from_numpy(chunk))
                self._enqueue()
            out = y[:n].float().cpu()  # the copy to the host waits for the stream
        return out.numpy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        ranges = split_batches(len(batch), self.max_batch)
        if not ranges:
            return np.zeros((0, self.meta.num_classes if self.meta is not None else 0), np.float32)
        fixed = max(ranges[0][1] - ranges[0][0], self.min_batch)  # CUDA graphs: every chunk in one captured shape
        chunks = [self._run_chunk(batch[a:b], fixed if self.cuda_graph else max(b - a, self.min_batch))
                  for a, b in ranges]
        return np.concatenate(chunks, axis=0)

    def use_cuda_graph(self, enabled: bool = True) -> None:
        """Replay each fixed input shape from a CUDA graph captured on first use (trtexec's ``--useCudaGraph``)."""
        self.cuda_graph = enabled
        self._graph = None

    def layer_times(self, batch: np.ndarray, runs: int = 10) -> list[tuple[str, float]]:
        """Mean milliseconds per call of each engine layer over ``runs`` calls on ``batch`` (``IProfiler``).

        While a profiler is attached TensorRT runs each enqueue synchronously and times every layer, so these
        times add up to more than a call's latency; they say where the time goes, not how fast a call is.
        """
        if self.cuda_graph:
            raise UsageError("per-layer times need the plan run without CUDA graphs (TensorRT cannot profile a "
                             "graph replay)")
        if runs < 1:
            raise UsageError(f"runs must be at least 1, got {runs}")
        profiler = _layer_profiler(self.trt)
        self.context.profiler = profiler
        try:
            for _ in range(runs):
                self(batch)
        finally:
            self.context.profiler = None
        return [(name, total / runs) for name, total in profiler.totals.items()]

    def close(self) -> None:
        self._graph = None
        for name in ("context", "engine", "runtime"):
            if hasattr(self, name):
                delattr(self, name)


def open_file(path: Path, *, provider: str | None = None, threads: int | None = None) -> TensorRTEngine:
    """Open a dnet ``.plan``; refuses, with how to rebuild, a plan built for another TensorRT version or GPU.

    ``threads`` is accepted for the common engines.open signature; a GPU engine has no CPU thread pool.
    """
    path = Path(path)
    if provider not in PROVIDERS:
        raise UsageError(f"provider {provider!r} is not one of the tensorrt engine's: cuda (the default)")
    what = f"cannot run {path.name}"
    trt = import_tensorrt(what)
    gpu_name, compute_capability = cuda_device(what)
    sidecar = read_sidecar(path)
    plan = path.read_bytes()
    if hashlib.sha256(plan).hexdigest() != sidecar.plan_sha256:
        raise EngineError(
            f"{path.name} is not the plan its sidecar describes (sha256 differs); rebuild it from {sidecar.onnx}"
        )
    check_compatible(sidecar, str(trt.__version__), compute_capability, gpu_name)
    return TensorRTEngine(path, sidecar, trt, plan)
