"""Preprocessing: turning an image file (or a batch of uint8 arrays) into what a model expects.

``torch7`` is fb.resnet.torch's ImageNet val pipeline as Lua Torch7 computes it, reproduced operation for
operation (fixtures in ``shared/fixtures/preprocess`` hold the Lua outputs):

- load: ``byte × float32(1/255)`` (``image.load(path, 3, 'float')``), grey replicated to 3 channels;
- ``t.Scale(256)``: shorter side to 256, longer side ``(long)(long / short · 256)`` (truncated), with
  ``image.scale``'s bicubic: separable (rows along the width first, then columns), align-corners positions
  computed in float32, Catmull-Rom weights, borders linearly extrapolated, no clamping;
- ``t.ColorNormalize``: ``(x + float32(−mean)) / float32(std)``;
- ``t.CenterCrop(224)`` with offsets ``ceil((W − 224)/2)``; ``t.TenCrop(224)``: centre, four corners, then
  the same five of the horizontally flipped image.

``torchvision`` is torchvision's ``Resize(256)`` on a PIL image (Pillow's antialiased bilinear),
``CenterCrop(224)`` (offsets rounded), ``ToTensor``, ``Normalize``. Array specs (CIFAR, SVHN, digits) only
normalise.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from dnet.core.errors import DataError, UsageError
from dnet.core.specs import PreprocessSpec, get_spec
from dnet.data.images import MAX_PIXELS, open_image

F32 = np.float32
_INV255 = F32(1.0 / 255.0)  # Lua multiplies by the float32 constant, it does not divide by 255


def lua_load(image: str | os.PathLike | Image.Image) -> np.ndarray:
    """``image.load(path, 3, 'float')``: float32 3×H×W, ``byte × float32(1/255)``."""
    pixels = np.asarray(open_image(image), dtype=np.uint8)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(F32) * _INV255


def _cubic_rows(src: np.ndarray, n_dst: int, keep: tuple[int, int] | None = None) -> np.ndarray:
    """One 1-D pass of ``image.scale`` bicubic (Lua ``scaleCubic_rowcol``) along axis 1 of a C×N×M array.

    ``keep = (start, stop)`` computes only those output rows (each output depends only on its own source
    neighbours, so a crop of the result is bit-identical). Vectorised over whole rows, a cache-sized block
    of rows at a time.
    """
    n_src = src.shape[1]
    start, stop = keep if keep is not None else (0, n_dst)
    if n_dst == n_src:  # Lua copies a pass whose length does not change
        return src[:, start:stop].copy()
    if n_src == 1 or n_dst == 1:  # one sample: Lua's formula divides by zero; every output is that sample
        return np.repeat(src[:, :1], min(stop, n_dst) - start, axis=1).astype(F32)
    scale = F32(n_src - 1) / F32(n_dst - 1)  # (float)(src_len - 1) / (dst_len - 1): float32 division
    di = np.arange(start, min(stop, n_dst - 1), dtype=F32)
    si_f = di * scale  # float32 product
    si_i = np.minimum(si_f.astype(np.int64), n_src - 2)  # (int) truncation; guard against rounding up
    t = (si_f - si_i.astype(F32)).astype(F32)
    i0, i3 = np.maximum(si_i - 1, 0), np.minimum(si_i + 2, n_src - 1)
    first, last = si_i == 0, si_i + 2 >= n_src
    out = np.empty((src.shape[0], stop - start) + src.shape[2:], dtype=F32)
    # Blocks of rows small enough to stay in cache: with whole images the temporaries are megabytes each and
    # the time goes to page faults, not arithmetic (measured 5-10x slower).
    step = max(1, _BLOCK // max(1, int(np.prod(src.shape[2:]))))
    for c in range(src.shape[0]):
        plane = src[c]
        for lo in range(0, len(si_i), step):
            hi = min(lo + step, len(si_i))
            out[c, lo:hi] = _cubic_block(plane, si_i[lo:hi], i0[lo:hi], i3[lo:hi], t[lo:hi], first[lo:hi], last[lo:hi])
    if stop == n_dst:
        out[:, -1] = src[:, -1]  # the last sample is a copy of the last source sample
    return out


_BLOCK = 16384  # elements per temporary in _cubic_rows (64 KiB of float32)


def _cubic_block(plane: np.ndarray, si_i, i0, i3, t, first, last) -> np.ndarray:
    """Catmull-Rom on rows ``si_i`` of one channel, in Lua's float32 order; the last step in double."""
    p0, p1, p2, p3 = plane[i0], plane[si_i], plane[si_i + 1], plane[i3]
    if first.any():  # missing left/top neighbour: linear extrapolation 2·p1 − p2
        p0[first] = F32(2) * p1[first] - p2[first]
    if last.any():  # missing right/bottom neighbour: 2·p2 − p1
        p3[last] = F32(2) * p2[last] - p1[last]
    t = t.reshape((-1,) + (1,) * (plane.ndim - 1))
    # a1 = p2 − p0, a2 = 2p0 − 5p1 + 4p2 − p3, a3 = 3(p1 − p2) + p3 − p0 and a1 + t·(a2 + t·a3), all in
    # float32 (temp_t) and in C's left-to-right order, so the roundings are Lua's
    a3 = F32(3) * (p1 - p2)
    a3 += p3
    a3 -= p0
    a2 = F32(2) * p0
    a2 -= F32(5) * p1
    a2 += F32(4) * p2
    a2 -= p3
    inner = a3
    inner *= t
    inner += a2
    inner *= t
    inner += p2 - p0  # a1
    # ``a0 + 0.5 * x * (...)``: the literal 0.5 is a C double, so the last multiply-add is done in double
    value = inner.astype(np.float64)
    value *= 0.5 * t.astype(np.float64)
    value += p1
    return value


def _cubic_axis(src: np.ndarray, n_dst: int, axis: int, keep: tuple[int, int] | None = None) -> np.ndarray:
    """The pass along ``axis`` (1: height, 2: width) of a C×H×W array."""
    if axis == 1:
        return _cubic_rows(src, n_dst, keep)
    columns = np.ascontiguousarray(src.transpose(0, 2, 1))
    return np.ascontiguousarray(_cubic_rows(columns, n_dst, keep).transpose(0, 2, 1))


def lua_scale_bicubic(image: np.ndarray, width: int, height: int, *,
                      window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``image.scale(img, width, height, 'bicubic')`` on a float32 C×H×W array: width pass, then height.

    ``window = (x, y, w, h)`` returns only that part of the result (bit-identical to cropping it after).
    """
    image = np.asarray(image, dtype=F32)
    if window is None:
        return _cubic_axis(_cubic_axis(image, width, axis=2), height, axis=1)
    x, y, w, h = window
    return _cubic_axis(_cubic_axis(image, width, axis=2, keep=(x, x + w)), height, axis=1, keep=(y, y + h))


def scaled_size(width: int, height: int, size: int) -> tuple[int, int] | None:
    """fb.resnet.torch ``t.Scale(size)``'s output (width, height); None when the image is left untouched."""
    if (width <= height and width == size) or (height <= width and height == size):
        return None
    if width < height:
        return size, int(height / width * size)  # Lua passes a double; image.scale truncates it to long
    return int(width / height * size), size


def lua_scale(image: np.ndarray, size: int = 256) -> np.ndarray:
    """``t.Scale(size)``: shorter side to ``size`` with Lua's bicubic (untouched when already that size)."""
    _, h, w = image.shape
    target = scaled_size(w, h, size)
    if target is None:
        return image
    return lua_scale_bicubic(image, *target)


def color_normalize(image: np.ndarray, mean, std) -> np.ndarray:
    """``t.ColorNormalize``: per channel ``(x + float32(−mean)) / float32(std)`` in float32."""
    neg_mean = -np.asarray(mean, dtype=F32).reshape(-1, 1, 1)
    std = np.asarray(std, dtype=F32).reshape(-1, 1, 1)
    return ((image.astype(F32, copy=False) + neg_mean) / std).astype(F32, copy=False)


def _check_resize(w: int, h: int, sw: int, sh: int) -> None:
    """The one pixel limit also holds after resizing: a 1-pixel-high strip would otherwise become gigapixels."""
    if sw * sh > MAX_PIXELS:
        raise DataError(f"a {w}×{h} image would be resized to {sw}×{sh} pixels; refused (limit {MAX_PIXELS:,})")


def _check_crop(image: np.ndarray, size: int) -> None:
    _, h, w = image.shape
    if h < size or w < size:
        raise DataError(f"image of {w}×{h} is smaller than the {size}×{size} crop")


def center_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    """``t.CenterCrop``: offsets ``ceil((W − size)/2)``, ``ceil((H − size)/2)`` (Lua rounds up)."""
    _check_crop(image, size)
    _, h, w = image.shape
    x, y = math.ceil((w - size) / 2), math.ceil((h - size) / 2)
    return np.ascontiguousarray(image[:, y:y + size, x:x + size])


def ten_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    """``t.TenCrop``: centre, top-left, top-right, bottom-left, bottom-right, then the same of the flipped image."""
    _check_crop(image, size)

    def five(img: np.ndarray) -> list[np.ndarray]:
        _, h, w = img.shape
        return [
            center_crop(img, size),
            img[:, :size, :size],
            img[:, :size, w - size:],
            img[:, h - size:, :size],
            img[:, h - size:, w - size:],
        ]

    flipped = image[:, :, ::-1]
    return np.ascontiguousarray(np.stack(five(image) + five(flipped)))


def _torchvision(pil: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """torchvision ``Resize(r)`` + ``CenterCrop(c)`` + ``ToTensor`` + ``Normalize`` on a PIL image."""
    w, h = pil.size
    r = spec.resize
    if r is not None and min(w, h) != r:
        size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)  # torchvision truncates the long side
        _check_resize(w, h, *size)
        pil = pil.resize(size, Image.BILINEAR)  # Pillow's bilinear filter is antialiased when downscaling
    if spec.crop is not None:
        w, h = pil.size
        c = spec.crop
        if w < c or h < c:
            raise DataError(f"image of {w}×{h} is smaller than the {c}×{c} crop")
        top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        pil = pil.crop((left, top, left + c, top + c))
    x = np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1).astype(F32) / F32(255)
    mean = np.asarray(spec.mean, dtype=F32).reshape(-1, 1, 1) * F32(spec.pixel_scale)
    std = np.asarray(spec.std, dtype=F32).reshape(-1, 1, 1) * F32(spec.pixel_scale)
    return np.ascontiguousarray((x - mean) / std, dtype=F32)


def _torch7(image, spec: PreprocessSpec, ten: bool) -> np.ndarray:
    x = lua_load(image)
    if ten:
        _, h, w = x.shape
        if spec.resize is not None and (target := scaled_size(w, h, spec.resize)) is not None:
            _check_resize(w, h, *target)
        if spec.resize is not None:
            x = lua_scale(x, spec.resize)
        return ten_crop(color_normalize(x, spec.mean, spec.std), spec.crop or min(x.shape[1:]))
    # Centre crop only: resample just the 224×224 window and normalise it. Every output pixel is computed
    # from its own source neighbours, so this is bit-identical to Scale → ColorNormalize → CenterCrop.
    _, h, w = x.shape
    target = scaled_size(w, h, spec.resize) if spec.resize is not None else None
    sw, sh = target if target is not None else (w, h)
    _check_resize(w, h, sw, sh)
    crop = spec.crop or min(sw, sh)
    if sw < crop or sh < crop:
        raise DataError(f"image of {sw}×{sh} is smaller than the {crop}×{crop} crop")
    left, top = math.ceil((sw - crop) / 2), math.ceil((sh - crop) / 2)
    if target is None:
        x = x[:, top:top + crop, left:left + crop]
    else:
        x = lua_scale_bicubic(x, sw, sh, window=(left, top, crop, crop))
    return np.ascontiguousarray(color_normalize(x, spec.mean, spec.std))


def preprocess(image: str | os.PathLike | Image.Image, spec: str | PreprocessSpec = "torch7", *,
               ten_crop: bool = False) -> np.ndarray:
    """An image file or PIL image as the model input: float32 3×S×S, or 10×3×S×S with ``ten_crop``.

    ``torch7`` reproduces Lua Torch7 (fb.resnet.torch) exactly; ``torchvision`` uses Pillow's resize;
    normalise-only specs (CIFAR, SVHN, digits) resize an image of another size to the model's (bilinear), so the
    result is always the model's input size.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    try:
        return _preprocess(image, spec, ten_crop)
    except DataError as e:  # name the file, once
        name = str(image) if isinstance(image, str | os.PathLike) else ""
        if name and not str(e).startswith(name):
            raise DataError(f"{name}: {e}") from None
        raise


def _preprocess(image, spec: PreprocessSpec, ten_crop: bool) -> np.ndarray:
    if spec.interpolation == "lua-bicubic":
        return _torch7(image, spec, ten_crop)
    if ten_crop:
        raise UsageError(f"ten-crop is only defined for the torch7 preprocessing, not {spec.name!r}")
    if spec.interpolation == "bilinear":
        return _torchvision(open_image(image), spec)
    if spec.interpolation == "none":
        pil = open_image(image)
        if pil.size != (spec.input_size, spec.input_size):
            # normalise-only specs (CIFAR, SVHN, digits) take images at the model's size: fit any other to it
            pil = pil.resize((spec.input_size, spec.input_size), Image.Resampling.BILINEAR)
        return preprocess_array(np.asarray(pil, dtype=np.uint8)[None], spec)[0]
    raise UsageError(f"preprocessing {spec.name!r} has unknown interpolation {spec.interpolation!r}")


def preprocess_array(images: np.ndarray, spec: str | PreprocessSpec) -> np.ndarray:
    """uint8 N×H×W×3 images (CIFAR, SVHN, digits) as float32 N×3×H×W: ``(x · scale/255 − mean) / std``.

    Specs that resize (torch7, torchvision) go image by image through :func:`preprocess`.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise UsageError(f"expected uint8 N×H×W×3 images, got {images.dtype} {images.shape}")
    if spec.interpolation != "none":
        return np.stack([preprocess(Image.fromarray(im), spec) for im in images]) if len(images) else \
            np.zeros((0, 3, spec.input_size, spec.input_size), F32)
    x = images.transpose(0, 3, 1, 2).astype(F32)
    if spec.pixel_scale != 255.0:
        x = x * F32(spec.pixel_scale / 255.0)
    mean = np.asarray(spec.mean, dtype=F32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, dtype=F32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=F32)


__all__ = [
    "center_crop", "color_normalize", "lua_load", "lua_scale",
    "lua_scale_bicubic", "preprocess", "preprocess_array", "scaled_size", "ten_crop",
]
