"""Real-content test images for the benchmarks: crops of the photos bundled with scikit-image (a dev dependency).

A random-weight DenseNet fed N(0, 1) noise or flat images says little about INT8 ranges or FP16 rounding; crops
of real photographs (an astronaut, a cat, coffee, a rocket, tissue, the Hubble deep field, a retina, coins,
a camera man, bricks, grass, gravel, the moon) have natural-image statistics. Crops are seeded, so every run
sees the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "coins", "camera", "brick", "grass", "gravel", "moon")
DESCRIPTION = "random crops of scikit-image's bundled photos (" + ", ".join(PHOTOS) + ")"


def rgb(img: np.ndarray) -> np.ndarray:
    """A photo as uint8 H×W×3 (grey replicated, alpha dropped)."""
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    return np.ascontiguousarray(img.astype(np.uint8))


def _sources(names=PHOTOS) -> list[np.ndarray]:
    from skimage import data

    return [rgb(getattr(data, name)()) for name in names]


def photo_crops(n: int, size: int = 256, seed: int = 0, names=PHOTOS) -> np.ndarray:
    """``n`` uint8 size×size×3 crops of the photos ``names`` (default: all), N×H×W×3 (:func:`crops_of`)."""
    return crops_of(_sources(names), n, size, seed)


def crops_of(sources: list[np.ndarray], n: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` uint8 size×size×3 crops of ``sources`` (random photo, position and crop scale, sometimes mirrored)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        src = sources[rng.integers(len(sources))]
        h, w = src.shape[:2]
        side = int(rng.uniform(0.35, 1.0) * min(h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(src[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BILINEAR)
        crop = np.asarray(crop)
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def write_folder(images: np.ndarray, folder: Path) -> list[Path]:
    """Write uint8 N×H×W×3 ``images`` as JPEG files (quality 95) into ``folder``; returns their paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"photo{i:04d}.jpg"
        Image.fromarray(img).save(p, quality=95)
        paths.append(p)
    return paths


def random_densenet(name: str = "densenet121", seed: int = 0, stat_images: int = 8) -> torch.nn.Module:
    """A seeded random-weight zoo model with BN statistics measured on ``stat_images`` photo crops.

    With identity BN statistics a random densenet121's activations grow to ~1e8 by the last block, beyond
    float16's range; a trained model's statistics keep them normalised, and so do these.
    """
    from dnet.core.specs import get_spec
    from dnet.data.transforms import preprocess_array
    from dnet.models import build_model
    from dnet.models.densenet import measure_bn_statistics

    torch.manual_seed(seed)
    model = build_model(name).eval()
    x = preprocess_array(photo_crops(stat_images, seed=seed + 1000)[:, 16:240, 16:240], get_spec("torch7"))
    measure_bn_statistics(model, torch.from_numpy(x))
    return model
