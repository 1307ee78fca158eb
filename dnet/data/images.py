"""Image files: which files are images, how a folder of them is listed, and the one decoder every path uses.

Evaluation, calibration, ``dnet compare --images`` and training all open images through :func:`open_image`, so
they accept the same files and refuse the same ones (a header claiming more than ``MAX_PIXELS`` is refused before
anything is decoded).
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from dnet.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS = 64_000_000  # a header's claim above this is refused before decoding (decompression bombs)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def list_images(folder: str | os.PathLike, *, recursive: bool = True, what: str = "image folder") -> list[Path]:
    """Image files in ``folder`` (and its subfolders), sorted by path; a missing or empty folder raises."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} {folder} does not exist or is not a folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if is_image(p))
    if not files:
        raise DataError(f"{what} {folder} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def open_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """A decoded RGB PIL image; an unreadable or oversized file raises a DataError naming it.

    Grey replicates to 3 channels, RGBA drops alpha, palette expands: what Lua's ``image.load(path, 3)`` does.
    """
    if isinstance(image, Image.Image):
        pil = image
        name = getattr(image, "filename", "") or "image"
    else:
        name = str(image)
        try:
            with Image.open(image) as f:
                if f.size[0] * f.size[1] > MAX_PIXELS:
                    raise DataError(f"{name}: claims {f.size[0]}×{f.size[1]} pixels; refused (limit {MAX_PIXELS:,})")
                f.load()
                pil = f
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"{name}: no such image file") from None
        except Exception as e:  # noqa: BLE001 (a corrupt file can make a decoder raise almost anything)
            raise DataError(f"{name}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if pil.mode != "RGB":
        try:
            pil = pil.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"{name}: cannot convert {pil.mode} image to RGB ({e})") from None
    return pil


__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "is_image", "list_images", "open_image"]
