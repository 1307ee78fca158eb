"""Small models, real photos and exported files shared by the ONNX / precision / pipeline / compare tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from dnet.artifact import ArtifactMeta
from dnet.checkpoint import save_checkpoint
from dnet.converters.export import _export_proto as _REAL_EXPORT  # noqa: E402  (before any test patches it)
from dnet.data.specs import get_spec
from dnet.models import DenseNetConfig, build_model
from dnet.models.densenet import measure_bn_statistics
from tests import weights

TINY = DenseNetConfig(block_config=(2, 3), growth_rate=4, init_features=8, num_classes=5)
CIFAR = get_spec("cifar10")


def tiny_model(seed: int = 0, config: DenseNetConfig = TINY):
    torch.manual_seed(seed)
    model = build_model(config)
    # non-trivial BN affine parameters, so that folding and Mul/Add rewriting are really exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
    measure_bn_statistics(model, torch.randn(16, 3, 32, 32))
    model.meta = ArtifactMeta("custom", config.num_classes, 32, CIFAR)
    model._test_seed = seed if config == TINY else None  # lets fast_export reuse the torch export
    return model


def tiny_checkpoint(folder: Path, name: str = "tiny.pth", seed: int = 0) -> Path:
    model = tiny_model(seed)
    return save_checkpoint(folder / name, model, model.meta)


def photos() -> list[np.ndarray]:
    """Real RGB photos from scikit-image's data module (uint8 H×W×3); skip when it is not installed."""
    data = pytest.importorskip("skimage.data", reason="scikit-image (a dev dependency) provides the real photos")
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "motorcycle_left"):
        try:
            img = getattr(data, name)()
        except Exception:  # a photo that needs a download (pooch) is skipped, the bundled ones suffice
            continue
        out.append(img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, 2))
    return out


def photo_tiles(size: int = 32, per_photo: int = 6, offset: int = 0) -> np.ndarray:
    """Real-image inputs: a few crops of each photo, resized to size×size, as uint8 N×size×size×3."""
    from PIL import Image

    tiles = []
    for img in photos():
        h, w = img.shape[:2]
        side = min(h, w) // 2
        for k in range(per_photo):
            y = (k * 37 + offset * 13) % (h - side)
            x = (k * 53 + offset * 29) % (w - side)
            tiles.append(np.asarray(Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)))
    return np.stack(tiles).astype(np.uint8)


def locked_folder(parent: Path, monkeypatch) -> Path:
    """A folder nobody may write to (for root, whom permissions do not stop, the write check is told so)."""
    import os

    locked = parent / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    return locked


def write_images(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    return folder


@functools.lru_cache(maxsize=4)
def _exported_bytes(seed: int) -> bytes:
    from dnet.converters.export import DEFAULT_OPSET

    return _REAL_EXPORT(tiny_model(seed), 32, DEFAULT_OPSET).SerializeToString()


def fast_export(monkeypatch) -> None:
    """Make ``dnet.converters.export.export`` reuse one torch export per seed of the tiny model.

    torch's dynamo exporter takes seconds per call; the steps after it (metadata, BN rewriting, checker,
    verification against PyTorch, atomic write) are what these tests check, and they all still run.
    """
    import onnx

    from dnet.converters import export as onnx_export

    def export_proto(model, size, opset):
        seed = getattr(model, "_test_seed", None)
        if seed is None or size != 32:
            return _REAL_EXPORT(model, size, opset)
        return onnx.load_model_from_string(_exported_bytes(seed))

    monkeypatch.setattr(onnx_export, "_export_proto", export_proto)


def tiny_onnx(folder: Path, name: str = "tiny.onnx", seed: int = 0, **kwargs) -> Path:
    """An exported FP32 ONNX of the tiny model (cached torch export), with dnet metadata."""
    path = folder / name
    path.write_bytes(_tiny_file(seed, tuple(sorted(kwargs.items()))))
    return path


@functools.lru_cache(maxsize=8)
def _tiny_file(seed: int, kwargs: tuple) -> bytes:
    import tempfile

    from dnet.converters import export as onnx_export

    model = tiny_model(seed)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        fast_export(mp)
        return onnx_export.export(model, Path(tmp) / "m.onnx", **dict(kwargs)).read_bytes()


@functools.lru_cache(maxsize=1)
def digits_model():
    """The tiny DenseNet-BC trained on scikit-learn's digits (tests/weights/digits-bc.pth: fixed weights, so its
    accuracy is the same on every CPU): decisive logits, like a real model.

    Returns (model, test inputs float32 N×3×8×8, test labels)."""
    from dnet.checkpoint import load_checkpoint
    from dnet.data.datasets import open_dataset

    model = load_checkpoint(weights.DIGITS_BC)
    model._test_seed = None
    test = open_dataset("digits", split="test")
    return model, normalise_images(test.images, test.spec), test.labels


def normalise_images(images: np.ndarray, spec) -> np.ndarray:
    from dnet.data.transforms import preprocess_array

    return preprocess_array(images, spec)


def digits_onnx(folder: Path, name: str = "digits.onnx") -> Path:
    """The FP32 ONNX export of :func:`digits_model` (one torch export per test session)."""
    path = folder / name
    path.write_bytes(_digits_file())
    return path


@functools.lru_cache(maxsize=1)
def _digits_file() -> bytes:
    import tempfile

    from dnet.converters import export as onnx_export

    with tempfile.TemporaryDirectory() as tmp:
        return onnx_export.export(digits_model()[0], Path(tmp) / "m.onnx").read_bytes()


def break_weight_scales(monkeypatch, layer: str, factor: float = 50.0) -> None:
    """Make every INT8 build (dnet.converters.int8.placement) quantize ``layer``'s weights with ``factor`` × their scales.

    The weights it dequantizes are then ``factor`` × too large; a build that leaves the layer in float keeps its
    float weights and is unharmed, as when a real layer's quantization is what breaks it.
    """
    from onnx import numpy_helper

    from dnet.converters.int8 import placement as qdq

    real = qdq._Writer.weight

    def weight(self, name, qmax):
        out = real(self, name, qmax)
        if name == f"features.{layer}.weight":
            scale = self.graph.initializer[-2]
            assert scale.name == f"{name}_wscale"
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * factor, scale.name))
        return out

    monkeypatch.setattr(qdq._Writer, "weight", weight)


def coarsen_activation_grids(monkeypatch, factor: float = 16.0) -> None:
    """Make every INT8 build (dnet.converters.int8.placement) use ``factor`` × the calibrated activation scales.

    Each int8 tensor then keeps about 127/``factor`` levels, so the dense blocks' int8 feature maps, which no layer
    left in float can undo, lose accuracy on any CPU: a drop that accuracy control cannot remove, by construction.
    """
    from dnet.converters.int8 import placement as qdq

    real = qdq._absmax
    monkeypatch.setattr(qdq, "_absmax", lambda ranges, name: factor * real(ranges, name))


def fp32_top1_text(fp32: Path) -> str:
    """The FP32 file's top-1 accuracy on the 360 digits test images, as dnet prints it ("96.67%")."""
    from dnet.data.datasets import open_dataset
    from dnet.engines.onnxruntime import run

    test = open_dataset("digits", split="test")
    top1 = np.mean(run(fp32, normalise_images(test.images, test.spec)).argmax(1) == test.labels)
    return f"{100 * top1:.2f}%"
