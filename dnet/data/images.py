"""Image files: which files are images, how a folder of them is listed, and the one decoder every path uses.

Evaluation, calibration, ``dnet compare --images`` and training all open images through :func:`open_image`, so
they accept the same files and refuse the same ones: a header claiming more than ``MAX_PIXELS`` is refused before
anything is decoded, only regular files are opened (a FIFO would hang), and images of more than 8 bits per sample
(16-bit PNG and TIFF) are scaled to 8 bits, not clipped at 255.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from dnet.core.errors import DataError

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


def check_pixels(width: int, height: int, name: str = "image") -> None:
    """The one pixel limit: a DataError when ``width × height`` is more than ``MAX_PIXELS``."""
    if width * height > MAX_PIXELS:
        raise DataError(f"{name}: claims {width}×{height} pixels; refused (limit {MAX_PIXELS:,})")


def _to_8bit(pil: Image.Image) -> Image.Image:
    """16-bit (``I;16*``) and 32-bit integer (``I``) images scaled to 8 bits (v / 257, rounded), as image.load
    reads a 16-bit PNG; Pillow's own conversion would clip every value above 255 to white."""
    if pil.mode.startswith("I;16") or pil.mode == "I":
        a = np.asarray(pil).astype(np.int64)
        return Image.fromarray(np.clip((a + 128) // 257, 0, 255).astype(np.uint8), "L")
    return pil


def open_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """A decoded RGB PIL image; an unreadable or oversized file raises a DataError naming it.

    Grey replicates to 3 channels, RGBA drops alpha, palette expands: what Lua's ``image.load(path, 3)`` does;
    16-bit samples are scaled to 8 bits.
    """
    if isinstance(image, Image.Image):
        pil = image
        name = getattr(image, "filename", "") or "image"
    else:
        name = str(image)
        try:
            mode = os.stat(image).st_mode
        except OSError:
            mode = stat.S_IFREG  # Image.open says what is wrong
        if not stat.S_ISREG(mode):
            raise DataError(f"{name}: not a regular file; dnet decodes images from files")
        try:
            with warnings.catch_warnings():  # Pillow warns above its own limit; dnet's is lower and refuses
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(image) as f:
                    check_pixels(*f.size, name)
                    f.load()
                    pil = f
        except DataError:
            raise
        except Image.DecompressionBombError as e:  # Pillow refuses above twice its limit, before dnet can look
            claim = re.search(r"\((\d+) pixels\)", str(e))
            count = f"{int(claim.group(1)):,}" if claim else "too many"
            raise DataError(f"{name}: claims {count} pixels; refused (limit {MAX_PIXELS:,})") from None
        except FileNotFoundError:
            raise DataError(f"{name}: no such image file") from None
        except Exception as e:  # noqa: BLE001 (a corrupt file can make a decoder raise almost anything)
            raise DataError(f"{name}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if pil.mode != "RGB":
        try:
            pil = _to_8bit(pil).convert("RGB")
        except (OSError, ValueError, TypeError) as e:
            raise DataError(f"{name}: cannot convert {pil.mode} image to RGB ({e})") from None
    return pil


__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "check_pixels", "is_image", "list_images", "open_image"]
