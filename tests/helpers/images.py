"""Images the tests read and write: real photos (scikit-image's bundled ones), tiles of them, PNG files, and a folder
nobody may write to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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


def png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path
