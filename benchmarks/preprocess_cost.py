"""Per-image cost of the torch7 preprocessing (Lua's bicubic in numpy) against Pillow's resizes.

Runs on photo-sized images (ImageNet's typical 500×375 and 500×333, a 640×427, and the three Lua fixtures
when the shared test fixtures are beside the checkout), timing, per image and side by side in one process:
  - ``lua_scale`` (dnet's numpy image.scale bicubic, short side → 256) on an already loaded float32 image,
    and the same resampling of only the 224×224 centre window (what ``preprocess`` does; bit-identical);
  - Pillow's BICUBIC and BILINEAR resize to the same size (uint8, C);
  - the whole pipelines from a JPEG file: ``preprocess(path, "torch7")`` and ``preprocess(path, "torchvision")``.
Writes benchmarks/results/preprocess_cost.json and prints a table. Timings on a shared CPU are noisy:
read the ratios, taken in the same run, rather than absolute numbers.

    python -m benchmarks.preprocess_cost [--repeats 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.report import add_quick, print_table, run_times, write_result
from dnet.data.transforms import lua_load, lua_scale, lua_scale_bicubic, preprocess, scaled_size

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "preprocess"


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 90 * np.sin(xx / 13.0)[..., None] * np.cos(yy / 29.0)[..., None]
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def window(size: tuple[int, int], crop: int = 224) -> tuple[int, int, int, int]:
    """The centre-crop window of a scaled image (what ``preprocess`` resamples)."""
    w, h = size
    return -(-(w - crop) // 2), -(-(h - crop) // 2), crop, crop


def best_ms(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs, in ms (one warm-up run first): on a shared CPU the minimum is the
    least disturbed estimate of the work itself."""
    return min(run_times(fn, repeats, warmup=1)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    add_quick(ap, "three repeats")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 3

    images: dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix="dnet-bench-"))
    for h, w in [(375, 500), (333, 500), (427, 640)]:
        path = tmp / f"{w}x{h}.jpg"
        Image.fromarray(photo(h, w)).save(path, quality=90)
        images[f"{w}x{h} jpeg"] = path
    for name in ("chelsea", "coffee-portrait", "chelsea-257x301"):
        if (FIXTURES / f"{name}.png").exists():
            images[f"{name} png"] = FIXTURES / f"{name}.png"

    rows, results = [], []
    for label, path in images.items():
        loaded = lua_load(path)
        pil = Image.open(path).convert("RGB")
        w, h = pil.size
        size = scaled_size(w, h, 256) or (w, h)
        r = {
            "image": label, "width": w, "height": h, "scaled": list(size),
            "lua_bicubic_resize_ms": best_ms(lambda loaded=loaded: lua_scale(loaded, 256), args.repeats),
            "lua_bicubic_crop_window_ms": best_ms(
                lambda loaded=loaded, size=size: lua_scale_bicubic(loaded, *size, window=window(size)), args.repeats),
            "pillow_bicubic_resize_ms": best_ms(lambda pil=pil, size=size: pil.resize(size, Image.BICUBIC), args.repeats),
            "pillow_bilinear_resize_ms": best_ms(lambda pil=pil, size=size: pil.resize(size, Image.BILINEAR), args.repeats),
            "torch7_pipeline_ms": best_ms(lambda path=path: preprocess(path, "torch7"), args.repeats),
            "torchvision_pipeline_ms": best_ms(lambda path=path: preprocess(path, "torchvision"), args.repeats),
        }
        r["resize_ratio_lua_over_pillow_bicubic"] = r["lua_bicubic_resize_ms"] / r["pillow_bicubic_resize_ms"]
        r["pipeline_ratio_torch7_over_torchvision"] = r["torch7_pipeline_ms"] / r["torchvision_pipeline_ms"]
        results.append(r)
        rows.append([label, f"{w}×{h}→{size[0]}×{size[1]}", f"{r['lua_bicubic_resize_ms']:.2f}",
                     f"{r['lua_bicubic_crop_window_ms']:.2f}",
                     f"{r['pillow_bicubic_resize_ms']:.2f}", f"{r['pillow_bilinear_resize_ms']:.2f}",
                     f"{r['resize_ratio_lua_over_pillow_bicubic']:.1f}×", f"{r['torch7_pipeline_ms']:.2f}",
                     f"{r['torchvision_pipeline_ms']:.2f}"])

    path = write_result("preprocess_cost", {
        "repeats": args.repeats, "statistic": "minimum ms per image over the repeats, single thread",
        "numpy": np.__version__, "pillow": Image.__version__, "note": "shared CPU; compare ratios within this run",
        "results": results})
    print_table("preprocessing cost per image", ["image", "size", "lua resize ms", "lua 224 window ms", "PIL bicubic ms",
                                                 "PIL bilinear ms", "lua/PIL", "torch7 total ms", "torchvision total ms"],
                rows, right=(2, 3, 4, 5, 6, 7, 8))
    print(f"written {path}")


if __name__ == "__main__":
    main()
