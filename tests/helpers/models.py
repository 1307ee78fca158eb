"""The test models: one tiny DenseNet (random weights, non-trivial BN) and its exports, random-weight checkpoints of
it, and one trained digits DenseNet-BC (fixed weights in tests/weights) with the trainer that made it."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dnet.converters.export import _export_proto as _REAL_EXPORT  # noqa: E402  (before any test patches it)
from dnet.core.artifact import ArtifactMeta
from dnet.core.specs import get_spec
from dnet.data.datasets import open_dataset
from dnet.data.transforms import preprocess_array
from dnet.formats.checkpoint import save_checkpoint
from dnet.models import DenseNetConfig, build_model
from dnet.models.densenet import DenseNet, measure_bn_statistics
from tests.helpers.shared import torch_threads

TINY = DenseNetConfig(block_config=(2, 3), growth_rate=4, init_features=8, num_classes=5)
CIFAR = get_spec("cifar10")


# TINY (blocks 2, 3; BC): conv0, two convs per layer, one transition: 1 + 2·2 + 1 + 2·3 = 12, in network order
TINY_CONVS = ["conv0",
              "denseblock1.denselayer1.conv1", "denseblock1.denselayer1.conv2",
              "denseblock1.denselayer2.conv1", "denseblock1.denselayer2.conv2",
              "transition1.conv",
              "denseblock2.denselayer1.conv1", "denseblock2.denselayer1.conv2",
              "denseblock2.denselayer2.conv1", "denseblock2.denselayer2.conv2",
              "denseblock2.denselayer3.conv1", "denseblock2.denselayer3.conv2"]


def tiny_model(seed: int = 0, config: DenseNetConfig = TINY, bn_inputs: torch.Tensor | None = None):
    """A seeded DenseNet of ``config`` (the tiny one), BN affine parameters away from 1/0 and BN statistics measured
    on ``bn_inputs`` (default: random 32×32 inputs), with CIFAR-preprocessing metadata."""
    torch.manual_seed(seed)
    model = build_model(config)
    # non-trivial BN affine parameters, so that folding and Mul/Add rewriting are really exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
    measure_bn_statistics(model, torch.randn(16, 3, 32, 32) if bn_inputs is None else bn_inputs)
    model.meta = ArtifactMeta("custom", config.num_classes, 32, CIFAR)
    model._test_seed = seed if config == TINY else None  # lets fast_export reuse the torch export
    return model


def tiny_checkpoint(folder: Path, name: str = "tiny.pth", seed: int = 0) -> Path:
    model = tiny_model(seed)
    return save_checkpoint(folder / name, model, model.meta)


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


# --- the digits model: fixed weights (tests/weights/digits-bc.pth), and the trainer that made it ------------------

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
# DenseNet-BC on digits, trained 4 epochs (``python -m tests.weights`` regenerates it).
DIGITS_BC = WEIGHTS / "digits-bc.pth"
DIGITS_BC_CONFIG = DenseNetConfig(block_config=(2, 2), growth_rate=6, init_features=12, num_classes=10)
DIGITS_EPOCHS = 4


def train_digits(config: DenseNetConfig = DIGITS_BC_CONFIG, epochs: int = DIGITS_EPOCHS, seed: int = 0) -> DenseNet:
    """Adam (lr 0.01, batch 64) on the digits training split; seeded, eval mode, with digits metadata."""
    train = open_dataset("digits", split="train")
    x = torch.from_numpy(preprocess_array(train.images, train.spec))
    y = torch.from_numpy(train.labels)
    torch.manual_seed(seed)
    model = DenseNet(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    model.meta = ArtifactMeta("custom", 10, 8, get_spec("digits"))
    return model


def save_trained_digits(path: Path, epochs: int) -> Path:
    """The digits model trained here for ``epochs``, saved to ``path``, on one thread (the count is given back: this
    may run in session fixtures the per-test thread guard does not cover). Its accuracy depends on the CPU's float
    kernels: tests compare it only with numbers measured in the same run."""
    with torch_threads(1):
        model = train_digits(epochs=epochs)
    return save_checkpoint(path, model, model.meta)


@functools.lru_cache(maxsize=1)
def digits_model():
    """The trained digits model (fixed weights, so its accuracy is the same on every CPU): decisive logits, like a
    real model.

    Returns (model, test inputs float32 N×3×8×8, test labels)."""
    from dnet.formats.checkpoint import load_checkpoint

    model = load_checkpoint(DIGITS_BC)
    model._test_seed = None
    test = open_dataset("digits", split="test")
    return model, normalise_images(test.images, test.spec), test.labels


@pytest.fixture(scope="session", name="digits_model")
def digits_model_fixture(tmp_path_factory) -> Path:
    """The trained digits model's file, copied into pytest's temporary folder (which pytest removes), so no test can
    change the committed file."""
    path = tmp_path_factory.mktemp("digits") / "digits.pth"
    shutil.copyfile(DIGITS_BC, path)
    return path


def normalise_images(images: np.ndarray, spec) -> np.ndarray:
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


def save_random(path: Path, num_classes: int, spec: str, input_size: int, model_name: str = "custom",
                config: DenseNetConfig | None = None) -> Path:
    """A random-weight checkpoint of the tiny model (or of ``config``) posing as ``model_name`` fed by ``spec``."""
    model = DenseNet(config).eval() if config is not None else \
        tiny_model(config=dataclasses.replace(TINY, num_classes=num_classes)).eval()
    torch.manual_seed(0)
    meta = ArtifactMeta(model_name, num_classes, input_size, get_spec(spec))
    return save_checkpoint(path, model, meta)


def ten_class(seed: int = 0) -> DenseNet:
    """The tiny model with 10 classes (CIFAR-10 preprocessing, named custom), seeded: weights tests can break."""
    model = tiny_model(seed, dataclasses.replace(TINY, num_classes=10))
    model.meta = ArtifactMeta("custom", 10, 32, CIFAR)
    return model


def save_model(folder: Path, name: str, model: DenseNet, meta: ArtifactMeta | None = None) -> Path:
    """``model`` saved as the dnet checkpoint ``folder/name``, with ``meta`` or its own metadata."""
    return save_checkpoint(folder / name, model, meta or model.meta)
