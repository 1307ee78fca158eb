"""What the GPU engines and the TensorRT build need, imported only when asked for: TensorRT and the CUDA device.

Nothing here runs at import time, so every command that needs no GPU works on a laptop; a missing TensorRT or
GPU is one ``NotInstalledError`` line that says what could not be done.
"""

from __future__ import annotations

from dnet import DISTRIBUTION
from dnet.artifact.sidecar import version_tuple
from dnet.errors import NotInstalledError

INSTALL_HINT = f"TensorRT is not installed: pip install '{DISTRIBUTION}[tensorrt]' (needs NVIDIA's package index)"


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


def major_version(trt) -> int:
    return version_tuple(trt.__version__)[0]

