"""The trained test models in this folder, and how they were made; regenerate them with ``python -m tests.weights``.

The tests load these files instead of training during the test run: a float result depends on the CPU's kernels
(AVX2 and AVX-512 machines train different models from one seed), so a model trained in the run would make its
accuracy, and every count derived from it, a property of the machine. Fixed weights make them a property of the file.
Regenerating changes the models: run the suite after it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dnet.artifact import ArtifactMeta
from dnet.data.datasets import open_dataset
from dnet.data.specs import get_spec
from dnet.data.transforms import preprocess_array
from dnet.models.densenet import DenseNet, DenseNetConfig

HERE = Path(__file__).resolve().parent
# DenseNet-BC on digits, trained 4 epochs: the INT8, FP16, compare and OpenVINO tests (tests.converters.tiny_models).
DIGITS_BC = HERE / "digits-bc.pth"
DIGITS_BC_CONFIG = DenseNetConfig(block_config=(2, 2), growth_rate=6, init_features=12, num_classes=10)
# A basic DenseNet (no bottleneck, θ = 1, CIFAR stem) on digits, trained 15 epochs: the eval tests (tests.evalmodels).
DIGITS_BASIC = HERE / "digits-basic.pth"
DIGITS_BASIC_CONFIG = DenseNetConfig(block_config=(2, 2), growth_rate=6, bottleneck=False, compression=1.0,
                                     init_features=8, stem="cifar", num_classes=10)


def train_digits(config: DenseNetConfig, epochs: int, seed: int = 0) -> DenseNet:
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
