"""Native TensorRT engine: a ``.plan`` built by ``dnet.converters.tensorrt`` and its ``.plan.json`` sidecar.

Inputs and outputs are torch CUDA tensors (no pycuda); inference uses the named-tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) on a torch CUDA stream. A batch larger than the
optimization profile's maximum is split into chunks, one smaller than its minimum is padded.
``tensorrt`` and torch's CUDA are touched only when a plan is opened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dnet.artifact.sidecar import EngineSidecar, check_compatible, read_sidecar
from dnet.engines.base import Engine
from dnet.engines.gpu import cuda_device, import_tensorrt
from dnet.errors import EngineError, UsageError

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


class TensorRTEngine(Engine):
    kind = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, sidecar: EngineSidecar, trt, plan: bytes) -> None:
        import torch

        self.path = path
        self.sidecar = sidecar
        self.meta = sidecar.meta
        self.input_shape = (-1, *(int(x) for x in sidecar.profile["max"][1:]))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if sidecar.version_compatible:
            # A version-compatible plan carries TensorRT's lean runtime (host code); dnet wrote this plan itself.
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {path.name}; rebuild it from {sidecar.onnx}")
        self.context = self.engine.create_execution_context()
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
        self.min_batch, self.max_batch = sidecar.min_batch, sidecar.max_batch
        self.stream = torch.cuda.Stream()

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        import torch

        n = len(chunk)
        rows = max(n, self.min_batch)  # below the profile's minimum: pad with zeros, drop the extra rows
        with torch.cuda.stream(self.stream):
            x = torch.zeros((rows, *chunk.shape[1:]), dtype=self.input_dtype, device=DEVICE)
            x[:n].copy_(torch.from_numpy(chunk))
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise EngineError(f"{self.path.name}: TensorRT refused input shape {tuple(x.shape)}")
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                            device=DEVICE)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError(f"{self.path.name}: TensorRT failed to run the batch; its log above says why")
            out = y[:n].float().cpu()  # the copy to the host waits for the stream
        return out.numpy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        chunks = [self._run_chunk(batch[a:b]) for a, b in split_batches(len(batch), self.max_batch)]
        if not chunks:
            return np.zeros((0, self.meta.num_classes if self.meta is not None else 0), np.float32)
        return np.concatenate(chunks, axis=0)

    def close(self) -> None:
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
    _, compute_capability = cuda_device(what)
    sidecar = read_sidecar(path)
    plan = path.read_bytes()
    if hashlib.sha256(plan).hexdigest() != sidecar.plan_sha256:
        raise EngineError(
            f"{path.name} is not the plan its sidecar describes (sha256 differs); rebuild it from {sidecar.onnx}"
        )
    check_compatible(sidecar, str(trt.__version__), compute_capability)
    return TensorRTEngine(path, sidecar, trt, plan)
