"""Test helpers beside the Torch7 writer (``dnet.formats.t7.writer``): one-thread forward passes, randomized
weights, and cutorch class names."""

from __future__ import annotations

import pytest
import torch

from dnet.formats.t7.reader import TorchObject
from dnet.formats.t7.writer import T7Storage, T7Tensor
from tests.helpers.shared import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Import into a test module to run its tiny forward passes on one thread: two threads fighting over a
    shared 2-core machine are many times slower."""
    with torch_threads(1):
        yield


def randomized(model, seed: int = 0):
    """``model`` with non-trivial weights and BN statistics (so a swapped or dropped tensor shows), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # BN scale
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) * 1.5 + 0.5)
    return model.eval()


def cuda_names(obj: object, _seen: set[int] | None = None) -> object:
    """Rename every Float tensor and storage in a tree to its cutorch name (a model saved without :float())."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, T7Tensor | T7Storage):
        obj.typename = obj.typename.replace("torch.Float", "torch.Cuda")
        if isinstance(obj, T7Tensor) and obj.storage is not None:
            cuda_names(obj.storage, seen)
    elif isinstance(obj, TorchObject):
        cuda_names(obj.fields, seen)
    elif isinstance(obj, dict):
        for v in obj.values():
            cuda_names(v, seen)
    return obj
