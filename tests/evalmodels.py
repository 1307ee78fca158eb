"""Tiny model files for the eval tests: a DenseNet trained on digits for a few seconds, random-weight ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dnet.artifact import ArtifactMeta
from dnet.checkpoint import save_checkpoint
from dnet.data.datasets import open_dataset
from dnet.data.specs import get_spec
from dnet.data.transforms import preprocess_array
from dnet.models.densenet import DenseNet, DenseNetConfig

TINY = DenseNetConfig(block_config=(2, 2), growth_rate=6, bottleneck=False, compression=1.0, init_features=8,
                      stem="cifar", num_classes=10)


def tiny_model(num_classes: int = 10, seed: int = 0, stem: str = "cifar") -> DenseNet:
    torch.manual_seed(seed)
    cfg = DenseNetConfig(**{**TINY.to_dict(), "num_classes": num_classes, "stem": stem,
                            "block_config": tuple(TINY.block_config)})
    return DenseNet(cfg).eval()


def train_digits(path: Path, epochs: int = 15) -> Path:
    """A tiny DenseNet trained on the digits training split (Adam, a few seconds on a CPU)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train = open_dataset("digits", split="train")
    x = torch.from_numpy(preprocess_array(train.images, train.spec))
    y = torch.from_numpy(train.labels)
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    meta = ArtifactMeta("custom", 10, 8, get_spec("digits"))
    return save_checkpoint(path, model, meta)


def save_random(path: Path, num_classes: int, spec: str, input_size: int, model_name: str = "custom",
                config: DenseNetConfig | None = None) -> Path:
    model = DenseNet(config).eval() if config is not None else tiny_model(num_classes)
    torch.manual_seed(0)
    meta = ArtifactMeta(model_name, num_classes, input_size, get_spec(spec))
    return save_checkpoint(path, model, meta)


def write_cifar_bin(path: Path, n: int, label_bytes: int = 1, num_classes: int = 10, seed: int = 0):
    """n records in the CIFAR binary format; returns (images N×32×32×3, fine labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n, dtype=np.uint8)
    records = [np.concatenate([rng.integers(0, 20, label_bytes - 1, dtype=np.uint8), [lab],
                               img.transpose(2, 0, 1).reshape(-1)]).astype(np.uint8)
               for img, lab in zip(images, labels, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate(records).tobytes())
    return images, labels.astype(np.int64)


@pytest.fixture(scope="session", name="digits_model")
def digits_model_fixture(tmp_path_factory) -> Path:
    """The trained digits model, trained once per test session in pytest's temporary folder (which pytest
    removes), not in a folder of its own that every run would leave behind."""
    return train_digits(tmp_path_factory.mktemp("digits") / "digits.pth")
