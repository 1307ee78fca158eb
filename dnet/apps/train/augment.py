"""Training-time augmentation as the Lua loaders do it, and the normalisation every split shares.

Array data sets (CIFAR, SVHN, digits) are augmented a whole batch at a time on tensors, in the order of
``datasets/cifar10.lua``: ColorNormalize, HorizontalFlip(0.5), RandomCrop(32, 4) — so the 4-pixel zero
padding is zero *after* normalisation (the mean colour). The random choices for an epoch are drawn up front
from (seed, epoch) per sample index, so they do not depend on the batch size, the number of processes or
where a run was resumed. ImageNet follows ``datasets/imagenet.lua``: RandomSizedCrop(224) with Lua's
``image.scale`` bicubic (no antialiasing, computed as dnet's torch7 preprocessing computes it), ColorJitter
(brightness 0.4, contrast 0.4, saturation 0.4) in random order, PCA Lighting(0.1) with the fb.resnet.torch
eigenvalues and eigenvectors, ColorNormalize, HorizontalFlip(0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dnet.core.specs import PreprocessSpec
from dnet.data.transforms import center_crop, lua_load, lua_scale, lua_scale_bicubic

# fb.resnet.torch datasets/imagenet.lua: PCA of ImageNet RGB pixels on the [0, 1] scale.
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
])


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, epoch, stream) alone, so a resumed epoch draws the same numbers."""
    value = int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(value)


def normalize(images: np.ndarray | Tensor, spec: PreprocessSpec) -> Tensor:
    """uint8 N×H×W×3 RGB -> float32 N×3×H×W, scaled to [0, pixel_scale] then (x - mean) / std."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    x = x * (spec.pixel_scale / 255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class ArrayAugment:
    """Random crop with zero padding and an optional horizontal flip (CIFAR: pad 4, flip)."""

    size: int
    padding: int
    flip: bool

    def draw(self, n: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
        """Per-sample (dy, dx) crop offsets and flip flags for an epoch of ``n`` samples."""
        g = epoch_generator(seed, epoch, 1)
        flips = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        return offsets, flips

    def apply(self, x: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
        """Augment a normalised batch N×3×H×W with the drawn choices of its samples."""
        if self.flip and flips.any():  # a set that never flips (digits) ignores stray flags
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        p, s = self.padding, self.size
        if p == 0 and x.shape[-1] == s and x.shape[-2] == s:
            return x
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros: the normalised mean colour
        return torch.stack([padded[i, :, dy:dy + s, dx:dx + s] for i, (dy, dx) in enumerate(offsets.tolist())])


# Augmentation of each array data set: the Lua CIFAR recipe. SVHN trains without augmentation (paper, Sec. 4.1);
# forced on (--augment), it shifts like CIFAR but never flips, nor does digits (up to one pixel): a mirrored digit
# is another glyph or none.
ARRAY_AUGMENT = {
    "cifar10": ArrayAugment(32, 4, True),
    "cifar100": ArrayAugment(32, 4, True),
    "svhn": ArrayAugment(32, 4, False),
    "digits": ArrayAugment(8, 1, False),
}


# ---- ImageNet: one image at a time (PIL in, tensor out) ------------------------------------------------


def _lua_round(x: float) -> int:
    """``torch.round`` on a number: half away from zero (Python's ``round`` rounds half to even)."""
    return math.floor(x + 0.5)


def random_sized_crop(x: np.ndarray, size: int, g: torch.Generator) -> np.ndarray:
    """transforms.lua RandomSizedCrop on a float32 3×H×W image: 8%-100% of the area, aspect 3/4-4/3, 10 tries,
    the crop scaled to size×size with ``image.scale``'s bicubic (no antialiasing); else Scale + CenterCrop."""
    _, height, width = x.shape
    area = width * height
    for _ in range(10):
        target = float(torch.empty(1).uniform_(0.08, 1.0, generator=g)) * area
        aspect = float(torch.empty(1).uniform_(3 / 4, 4 / 3, generator=g))
        w = _lua_round(math.sqrt(target * aspect))
        h = _lua_round(math.sqrt(target / aspect))
        if float(torch.rand(1, generator=g)) < 0.5:
            w, h = h, w
        if h <= height and w <= width:
            y1 = int(torch.randint(0, height - h + 1, (1,), generator=g))
            x1 = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return lua_scale_bicubic(x[:, y1:y1 + h, x1:x1 + w], size, size)
    return center_crop(lua_scale(x, size), size)


def _grayscale(x: Tensor) -> Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).expand(3, -1, -1)


def color_jitter(x: Tensor, g: torch.Generator, brightness=0.4, contrast=0.4, saturation=0.4) -> Tensor:
    """Brightness, contrast and saturation blends in random order (transforms.lua ColorJitter); no clamp."""
    ops = []
    if brightness:
        ops.append(("brightness", brightness))
    if contrast:
        ops.append(("contrast", contrast))
    if saturation:
        ops.append(("saturation", saturation))
    for i in torch.randperm(len(ops), generator=g).tolist():
        kind, var = ops[i]
        alpha = 1.0 + float(torch.empty(1).uniform_(-var, var, generator=g))
        if kind == "brightness":
            other = torch.zeros_like(x)
        elif kind == "contrast":
            other = torch.full_like(x, float(_grayscale(x)[0].mean()))
        else:
            other = _grayscale(x)
        x = x * alpha + (1 - alpha) * other
    return x


def lighting(x: Tensor, g: torch.Generator, alphastd: float = 0.1) -> Tensor:
    """AlexNet PCA noise: add eigvec · (alpha ⊙ eigval) to every pixel, alpha ~ N(0, alphastd)."""
    if alphastd == 0:
        return x
    alpha = torch.randn(3, generator=g) * alphastd
    rgb = (PCA_EIGVEC * (alpha * PCA_EIGVAL).view(1, 3)).sum(1)
    return x + rgb.view(3, 1, 1)


def imagenet_train(img, spec: PreprocessSpec, g: torch.Generator, size: int = 224) -> Tensor:
    """One training image (PIL) -> normalised 3×size×size float tensor, the fb.resnet.torch way: loaded and
    resized as Lua Torch7 does it (``image.load`` floats, ``image.scale`` bicubic), then jitter, lighting, flip."""
    x = torch.from_numpy(random_sized_crop(lua_load(img), size, g))
    x = color_jitter(x, g)
    x = lighting(x, g)
    x = (x - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)
    if float(torch.rand(1, generator=g)) < 0.5:
        x = x.flip(2)
    return x
