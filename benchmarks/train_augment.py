"""Per-image cost of ImageNet training augmentation with Lua's resize against Pillow's.

fb.resnet.torch's RandomSizedCrop scales the crop with ``image.scale`` bicubic (no antialiasing); dnet's
``augment.imagenet_train`` does the same in numpy (``lua_scale_bicubic``). The variant it replaced resized with
Pillow's bicubic (C, antialiased when shrinking). Both run here side by side, interleaved image by image with
the same random draws, on scikit-image's bundled photos at their own sizes (ImageNet-like, 300-640 pixels a
side), decoded from JPEG beforehand; the whole per-image augmentation is timed (crop, resize, colour jitter,
lighting, normalisation, flip). Writes benchmarks/results/train_augment.json and prints a table.

    python -m benchmarks.train_augment [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.photos import PHOTOS, _sources
from benchmarks.report import add_quick, print_table, write_result
from dnet.data.specs import get_spec
from dnet.train import augment

IMAGENET_TRAIN_IMAGES = 1_281_167


def pillow_random_sized_crop(img: Image.Image, size: int, g: torch.Generator) -> Image.Image:
    """The replaced variant: the same draws, Pillow's bicubic resize of the crop (rounding half to even)."""
    width, height = img.size
    for _ in range(10):
        target = float(torch.empty(1).uniform_(0.08, 1.0, generator=g)) * width * height
        aspect = float(torch.empty(1).uniform_(3 / 4, 4 / 3, generator=g))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if float(torch.rand(1, generator=g)) < 0.5:
            w, h = h, w
        if h <= height and w <= width:
            y1 = int(torch.randint(0, height - h + 1, (1,), generator=g))
            x1 = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return img.crop((x1, y1, x1 + w, y1 + h)).resize((size, size), Image.BICUBIC)
    short = min(width, height)
    img = img.resize((round(width / short * size), round(height / short * size)), Image.BICUBIC)
    x1, y1 = math.ceil((img.size[0] - size) / 2), math.ceil((img.size[1] - size) / 2)
    return img.crop((x1, y1, x1 + size, y1 + size))


def pillow_train(img: Image.Image, spec, g: torch.Generator) -> torch.Tensor:
    img = pillow_random_sized_crop(img.convert("RGB"), 224, g)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = augment.lighting(augment.color_jitter(x, g), g)
    x = (x - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)
    return x.flip(2) if float(torch.rand(1, generator=g)) < 0.5 else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="passes over the photos, each with fresh random crops")
    add_quick(ap, "one round")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    torch.set_num_threads(1)  # one decoding worker's view: DataLoader workers run one image at a time each
    spec = get_spec("torch7")
    photos = [Image.fromarray(a) for a in _sources()]
    variants = {"lua-exact (dnet)": augment.imagenet_train, "pillow bicubic (replaced)": pillow_train}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for i, img in enumerate(photos):
            for name, fn in variants.items():  # interleaved: both see the same machine state and the same draws
                g = augment.epoch_generator(0, r, 2 + i)
                t0 = time.perf_counter()
                fn(img, spec, g)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["pillow bicubic (replaced)"])
    rows, results = [], []
    for name, ts in times.items():
        med = statistics.median(ts)
        core_hours = med * IMAGENET_TRAIN_IMAGES / 3600
        rows.append([name, f"{med * 1000:.1f}", f"{statistics.mean(ts) * 1000:.1f}", f"{med / base:.2f}×",
                     f"{core_hours:.2f}"])
        results.append({"variant": name, "median_ms": med * 1000, "mean_ms": statistics.mean(ts) * 1000,
                        "vs_pillow": med / base, "core_hours_per_imagenet_epoch": core_hours})
    print_table(f"ImageNet training augmentation per image ({len(photos)} photos × {args.rounds} rounds, 1 thread)",
                ["variant", "median ms", "mean ms", "vs pillow", "core-h / epoch"], rows)
    sizes = [f"{p.size[0]}×{p.size[1]}" for p in photos]
    path = write_result("train_augment", {"photos": dict(zip(PHOTOS, sizes, strict=True)), "rounds": args.rounds,
                                          "results": results})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
