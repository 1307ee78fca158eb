"""What the GPU engines and the TensorRT build need, imported only when asked for: TensorRT, its logger, the CUDA device.

Nothing here runs at import time, so every command that needs no GPU works on a laptop; a missing TensorRT or
GPU is one ``NotInstalledError`` line that says what could not be done.

TensorRT keeps one logger per process: the first ``ILogger`` handed to a builder or runtime is the one it uses, and
a later, different one is ignored with a warning (NVIDIA/TensorRT issue 1475). Polygraphy and ONNX Runtime keep one;
so does dnet: :func:`tensorrt_logger` makes it on first use and every build and engine passes that one. It writes to
stderr (TensorRT's own ``trt.Logger`` prints to stdout, where ``--json`` output goes); :func:`logging_to` raises its
verbosity for one build (``dnet convert --verbose``).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import sys
from collections.abc import Callable, Iterator

from dnet import DISTRIBUTION
from dnet.core.artifact.sidecar import version_tuple
from dnet.core.errors import NotInstalledError

INSTALL_HINT = f"TensorRT is not installed: pip install '{DISTRIBUTION}[tensorrt]' (needs NVIDIA's package index)"
SEVERITY_NAMES = {0: "internal error", 1: "error", 2: "warning", 3: "info", 4: "verbose"}

_logger = None  # the process's one TensorRT logger, made by tensorrt_logger()


def import_tensorrt(what: str):
    """The ``tensorrt`` module, or NotInstalledError("TensorRT is not installed: ...; <what>")."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: the bindings are there but libnvinfer is not
        raise NotInstalledError(f"{INSTALL_HINT}; {what}") from None
    return trt


def cuda_device(what: str) -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of the current CUDA device, or NotInstalledError("no CUDA GPU found ...")."""
    import torch

    if not torch.cuda.is_available():
        raise NotInstalledError(f"no CUDA GPU found (torch.cuda.is_available() is False); {what}")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (int(major), int(minor))


def driver_cuda() -> str | None:
    """The CUDA version the installed NVIDIA driver supports ("12.4"), or None when libcuda does not load."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def tensorrt_cuda() -> str | None:
    """The CUDA major version the installed TensorRT wheels are built for ("13" for tensorrt-cu13-…), or None."""
    from importlib import metadata

    for dist in metadata.distributions():
        found = re.fullmatch(r"tensorrt[-_]cu(\d+)(?:[-_].*)?", (dist.metadata["Name"] or "").lower())
        if found:
            return found.group(1)
    return None


def create(trt, factory: Callable, logger, what: str):
    """``trt.Builder(logger)`` or ``trt.Runtime(logger)``; NotInstalledError naming the driver and CUDA when it fails.

    When TensorRT cannot initialise CUDA (no driver, or a driver older than the CUDA its wheels are built for), its
    Python bindings raise ``TypeError: pybind11::init(): factory function returned nullptr`` (seen with 10.16 and
    11.4), which says nothing of why.
    """
    try:
        return factory(logger)
    except TypeError as e:
        if "nullptr" not in str(e):
            raise
    driver, built_for = driver_cuda(), tensorrt_cuda()
    situation = (f"the NVIDIA driver supports CUDA {driver}" if driver else
                 "no NVIDIA driver found (libcuda.so.1 did not load)")
    if built_for:
        situation += f", TensorRT's wheels are built for CUDA {built_for} (tensorrt-cu{built_for})"
        if driver and int(driver.split(".")[0]) < int(built_for):
            situation += f": install tensorrt-cu{driver.split('.')[0]} or a driver for CUDA {built_for}"
    raise NotInstalledError(f"TensorRT {trt.__version__} could not initialise CUDA (trt.{factory.__name__} returned "
                            f"nullptr): {situation}; {what}") from None


def major_version(trt) -> int:
    return version_tuple(trt.__version__)[0]


def stderr_line(line: str) -> None:
    """The default sink of TensorRT's log and of the build's warnings."""
    print(line, file=sys.stderr, flush=True)


def tensorrt_logger(trt: object):
    """The one ``trt.ILogger`` of this process (made on first use): messages at ``min_severity`` or worse go to ``sink``."""
    global _logger
    if _logger is not None and _logger.module is trt:
        return _logger
    base = trt.ILogger

    class DnetLogger(base):
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 needs the base initialised explicitly
            self.module = trt
            self.min_severity = trt.ILogger.WARNING
            self.sink: Callable[[str], None] = stderr_line

        def log(self, severity, msg: str) -> None:
            if int(severity) <= int(self.min_severity):  # INTERNAL_ERROR is 0, VERBOSE 4
                self.sink(f"TensorRT {SEVERITY_NAMES.get(int(severity), int(severity))}: {msg}")

    _logger = DnetLogger()
    return _logger


@contextlib.contextmanager
def logging_to(trt: object, verbose: bool, sink: Callable[[str], None] | None = None) -> Iterator[object]:
    """The one logger, at VERBOSE while the block runs when ``verbose`` (its level and sink restored after)."""
    logger = tensorrt_logger(trt)
    level, previous = logger.min_severity, logger.sink
    if verbose:
        logger.min_severity = trt.ILogger.VERBOSE
    if sink is not None:
        logger.sink = sink
    try:
        yield logger
    finally:
        logger.min_severity, logger.sink = level, previous


__all__ = ["INSTALL_HINT", "create", "cuda_device", "driver_cuda", "tensorrt_cuda", "import_tensorrt", "logging_to", "major_version", "stderr_line",
           "tensorrt_logger"]
