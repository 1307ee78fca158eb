"""Tiny model files for the eval tests: a DenseNet trained on digits for a few seconds, random-weight ones, and a
stub engine posing as a zoo ImageNet model on a tiny ImageNet-layout folder."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnet.artifact import ArtifactMeta
from dnet.checkpoint import save_checkpoint
from dnet.data.specs import get_spec
from dnet.engines.base import Engine
from dnet.models.densenet import DenseNet, DenseNetConfig
from tests import weights
from tests.conftest import torch_threads

TINY = weights.DIGITS_BASIC_CONFIG


def tiny_model(num_classes: int = 10, seed: int = 0, stem: str = "cifar") -> DenseNet:
    torch.manual_seed(seed)
    cfg = DenseNetConfig(**{**TINY.to_dict(), "num_classes": num_classes, "stem": stem,
                            "block_config": tuple(TINY.block_config)})
    return DenseNet(cfg).eval()


def train_digits(path: Path, epochs: int = 15) -> Path:
    """A tiny DenseNet trained on the digits training split for ``epochs`` (Adam; a few seconds on a CPU), on one
    thread (the count is given back: this may run in session fixtures the per-test thread guard does not cover).
    Its accuracy depends on the CPU's float kernels: tests compare it only with numbers measured in the same run."""
    with torch_threads(1):
        model = weights.train_digits(weights.DIGITS_BASIC_CONFIG, epochs)
    return save_checkpoint(path, model, model.meta)


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
    """The trained digits model (tests/weights/digits-basic.pth: fixed weights, so its accuracy is the same on every
    CPU), copied into pytest's temporary folder (which pytest removes), so no test can change the committed file."""
    path = tmp_path_factory.mktemp("digits") / "digits.pth"
    shutil.copyfile(weights.DIGITS_BASIC, path)
    return path


# --- a zoo ImageNet model without weights: a stub engine answering prepared logits per image ----------------

SMALL_TORCH7 = dataclasses.replace(get_spec("torch7"), resize=36, crop=32, input_size=32)  # torch7 arithmetic, small


def write_imagenet_val(root: Path, levels: list[int], labels: list[int], classes: int = 1000) -> Path:
    """A flat ImageNet validation folder: one uniform grey PNG per level, LOC_val_solution.csv with each image's
    synset, LOC_synset_mapping.txt naming ``classes`` synsets (so the data set has ImageNet's 1000 classes)."""
    synsets = [f"n{i:08d}" for i in range(classes)]
    images = root / "val"
    images.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for i, (level, label) in enumerate(zip(levels, labels, strict=True)):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(np.full((36, 40, 3), level, np.uint8)).save(images / f"{name}.png")
        rows.append(f"{name},{synsets[label]} 0 0 10 10")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} class {i}\n" for i, s in enumerate(synsets)))
    return images


class TableEngine(Engine):
    """A stub engine for uniform grey images: it recognises an image by its (normalised) first pixel and answers
    that image's prepared logits, for a single crop and for each of the ten crops alike."""

    kind = "table"

    def __init__(self, model: str, levels: list[int], logits: np.ndarray, spec=SMALL_TORCH7):
        self.path = Path(f"{model}.stub")
        self.meta = ArtifactMeta(model, logits.shape[1], spec.input_size, spec)
        self.input_shape = (-1, 3, spec.input_size, spec.input_size)
        self.keys = np.asarray([(level / 255.0 - spec.mean[0]) / spec.std[0] for level in levels], np.float32)
        self.logits = np.asarray(logits, np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        rows = np.abs(batch[:, 0, 0, 0][:, None] - self.keys[None, :]).argmin(axis=1)
        return self.logits[rows]


def ranked_logits(labels: list[int], ranks: list[int], classes: int = 1000) -> np.ndarray:
    """Logits per image in which the true label has the given rank (0 = best): scores fall with the class index,
    and the label is moved to position ``rank``."""
    out = np.zeros((len(labels), classes), np.float32)
    for row, (label, rank) in enumerate(zip(labels, ranks, strict=True)):
        order = [c for c in range(classes) if c != label]
        order.insert(rank, label)
        out[row, order] = np.linspace(1.0, 0.0, classes, dtype=np.float32)
    return out
