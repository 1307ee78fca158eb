"""timm's own DenseNet code as the oracle for dnet's deep stem and blur pooling, kept as a few KB of numbers.

timm requires torchvision, and the only torchvision wheel for torch 2.13 is a CUDA build whose import fails on the
CPU torch (``operator torchvision::nms does not exist``), which makes ``import timm`` fail too. timm's DenseNet code
does not use torchvision (timm imports it only for its data transforms, FrozenBatchNorm2d and feature extraction),
so this script installs ``timm`` without its dependencies (``pip install --no-deps timm`` into a scratch virtual
environment beside the project's torch) and puts an empty stand-in for ``torchvision`` in place when the real one
is missing or does not import.

What it writes (``timm_reference.json``, in tests/models):
- ``tiny``: reduced-size models built by ``timm.models.densenet.DenseNet`` with the same arguments as timm's
  ``densenetblur121d`` (``stem_type="deep"``, ``aa_layer=BlurPool2d``) and ``densenet264d`` (``stem_type="deep"``),
  and one with the classic stem. For each: the sha256 of timm's ``key:shape`` list, and timm's logits on a fixed
  input with the weights set by :func:`fill` (an integer hash of each key's name, so the test recreates the same
  weights without timm).
- ``full``: for ``densenetblur121d`` and ``densenet264d`` themselves: timm's parameter count, tensor count and the
  sha256 of its ``key:shape`` list, and the largest logit difference between timm and dnet on the same weights
  and input (measured here, in the same process).

Regenerate: ``python -m tests.helpers.timm_reference`` in an environment where timm imports (the stand-in covers a
missing torchvision); where it does not, the script says so and exits 0. ``tests/models/test_timm.py`` checks dnet
against the file and, where timm imports, that the file is what timm makes now.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import math
import sys
import types
import zlib
from pathlib import Path

import torch

from dnet.models import DenseNet, DenseNetConfig

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "timm_reference.json"
BATCH = 2
# name -> (timm DenseNet keyword arguments, the dnet configuration fields of the same network, input side)
TINY = {
    "deep-blur": ({"growth_rate": 4, "block_config": (2, 2), "stem_type": "deep", "aa_layer": "blur", "num_classes": 5},
                  {"block_config": (2, 2), "growth_rate": 4, "init_features": 8, "stem": "deep", "blur_pool": True,
                   "num_classes": 5}, 33),
    "deep": ({"growth_rate": 6, "block_config": (1, 2, 1), "stem_type": "deep", "num_classes": 3},
             {"block_config": (1, 2, 1), "growth_rate": 6, "init_features": 12, "stem": "deep", "num_classes": 3}, 40),
    "classic": ({"growth_rate": 4, "block_config": (2, 1), "num_classes": 4},
                {"block_config": (2, 1), "growth_rate": 4, "init_features": 8, "stem": "imagenet", "num_classes": 4}, 32),
}
FULL = ("densenetblur121d", "densenet264d")


def _uniform(key: str, n: int) -> torch.Tensor:
    """n numbers in [-1, 1) from an integer hash of (key, index): exact on every platform (int64 arithmetic only)."""
    h = torch.arange(n, dtype=torch.int64) * 2654435761 + zlib.crc32(key.encode())
    for _ in range(2):
        h = h % (1 << 32)
        h = ((h >> 16) ^ h) * 0x45D9F3B
    h = ((h % (1 << 32)) >> 16) ^ (h % (1 << 32))
    return h.to(torch.float64) / float(1 << 31) - 1.0


def fill(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic weights from a key's name and shape, scaled as a trained network's roughly are."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    v = _uniform(key, math.prod(shape))
    if key.endswith("running_var"):
        v = 0.75 + 0.25 * v
    elif len(shape) == 1 and key.endswith(".weight"):  # BN scale
        v = 1.0 + 0.2 * v
    elif len(shape) == 1:  # BN shift, running mean, classifier bias
        v = 0.1 * v
    else:  # convolution and classifier weights: He-scaled, variance 2 / fan_in
        v = v * math.sqrt(6.0 / math.prod(shape[1:]))
    return v.to(torch.float32).reshape(shape)


def filled(keys_and_shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    return {k: fill(k, tuple(s)) for k, s in keys_and_shapes}


def reference_input(side: int) -> torch.Tensor:
    shape = (BATCH, 3, side, side)
    return (_uniform("input", math.prod(shape)) * math.sqrt(3.0)).to(torch.float32).reshape(shape)  # unit variance


def keys_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    text = "\n".join(f"{k}:{list(v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256(text.encode()).hexdigest()


class _AnyType(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return cls()


class _Anything(metaclass=_AnyType):
    """A stand-in for every torchvision name timm's modules touch at import time (classes, enums, functions)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torchvision":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (_Anything,), {})

        module.__getattr__ = attribute
        return module

    def exec_module(self, module) -> None:
        pass


def import_timm():
    """timm, with an empty torchvision put in place when the real one is missing or broken; None without timm."""
    try:
        import timm
    except ModuleNotFoundError as e:
        if e.name != "torchvision":
            return None
    except RuntimeError:  # a torchvision built for another torch fails to register its operators
        pass
    else:
        return timm
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _StandIn())
    try:
        import timm
    except ImportError:
        return None
    return timm


def make(timm) -> dict:
    """The reference numbers, computed with timm (and dnet, for the full-size differences)."""
    from timm.layers import BlurPool2d
    from timm.models.densenet import DenseNet as TimmDenseNet

    out = {"timm_version": timm.__version__, "torch_version": torch.__version__.split("+")[0],
           "made_by": "python -m tests.helpers.timm_reference", "tiny": {}, "full": {}}
    for name, (kwargs, _fields, side) in TINY.items():
        kwargs = {**kwargs, "aa_layer": BlurPool2d} if kwargs.get("aa_layer") == "blur" else kwargs
        model = TimmDenseNet(**kwargs).eval()
        sd = model.state_dict()
        model.load_state_dict(filled([(k, tuple(v.shape)) for k, v in sd.items()]))
        with torch.no_grad():
            logits = model(reference_input(side))
        out["tiny"][name] = {"tensors": len(sd), "keys_sha256": keys_sha256(sd), "input": [BATCH, 3, side, side],
                             "logits": logits.tolist()}
    zoo_fields = {"densenetblur121d": {"block_config": (6, 12, 24, 16), "growth_rate": 32, "init_features": 64,
                                       "blur_pool": True},
                  "densenet264d": {"block_config": (6, 12, 64, 48), "growth_rate": 48, "init_features": 96}}
    for name in FULL:
        model = timm.create_model(name).eval()
        sd = model.state_dict()
        weights = filled([(k, tuple(v.shape)) for k, v in sd.items()])
        model.load_state_dict(weights)
        ours = DenseNet(DenseNetConfig(stem="deep", num_classes=1000, **zoo_fields[name])).eval()
        ours.load_state_dict(weights, strict=True)
        x = reference_input(224)[:1]
        with torch.no_grad():
            delta = (model(x) - ours(x)).abs().max().item()
        out["full"][name] = {"params": sum(p.numel() for p in model.parameters()), "tensors": len(sd),
                             "keys_sha256": keys_sha256(sd), "max_abs_diff_dnet_vs_timm": delta}
    return out


def main() -> int:
    timm = import_timm()
    if timm is None:
        print("timm is not importable here; the reference numbers were not regenerated "
              "(pip install --no-deps timm into a scratch environment that has this torch)")
        return 0
    data = make(timm)
    REFERENCE.write_text(json.dumps(data, indent=1) + "\n")
    for name, facts in data["full"].items():
        print(f"{name}: {facts['params']:,} parameters, max|dnet - timm| = {facts['max_abs_diff_dnet_vs_timm']:.3g}")
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
