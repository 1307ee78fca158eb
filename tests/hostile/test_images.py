"""Images: one decoder (``dnet.data.images.open_image``) with one pixel limit for eval, calibration,
``compare --images`` and training; 16-bit samples scaled, not clipped; preprocessing that always yields the model's
input size, so odd sizes (1×1, very wide, huge) never break a batch, with or without ``--skip-bad``."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from dnet.data.images import MAX_PIXELS, open_image
from dnet.data.transforms import preprocess
from tests.helpers.harness import Box
from tests.helpers.images import png
from tests.helpers.models import save_random


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def raw_png(path: Path, width: int, height: int, depth: int, colour: int, rows: bytes) -> Path:
    """A PNG written by hand: what Pillow cannot write (16-bit RGB) or must not be asked to (a bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
                     + _chunk(b"IEND", b""))
    return path


def test_a_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    a = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    got = np.asarray(open_image(tmp_path / "g16.png"))
    assert got.shape == (64, 64, 3) and got[32, 32].tolist() == [129] * 3  # 33280 / 257 = 129.5 → 129
    assert np.array_equal(got[..., 0], ((a.astype(np.int64) + 128) // 257).astype(np.uint8))


def test_a_16bit_rgb_png_keeps_its_colours(tmp_path):
    rgb = np.zeros((4, 4, 3), ">u2")
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 257  # 255, 128, 1 at 8 bits
    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(4))
    got = np.asarray(open_image(raw_png(tmp_path / "c16.png", 4, 4, 16, 2, rows)))
    assert got[0, 0].tolist() == [255, 128, 1]


def _folder(box: Box, odd: Path | None = None) -> Path:
    data = box.work / "data"
    for c in ("a", "b"):
        for i in range(3):
            png(data / c / f"{i}.png", 32, 32, seed=i)
    if odd is not None:
        odd.rename(data / "a" / odd.name)
    return data


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("workers", [0, 1])
def test_a_one_pixel_image_among_32x32_ones_is_evaluated_not_a_crash(box: Box, models, skip_bad, workers):
    model = box.add(models["two"])
    data = _folder(box, png(box.work / "tiny.png", 1, 1))
    box.freeze()
    args = ["eval", model, "--dataset", "folder", "--data", data, "--workers", workers, "--quiet", "--json"]
    out = box.cli(*args, *(["--skip-bad"] if skip_bad else []))
    import json

    report = json.loads(out.ok())
    assert report["images"] == 7 and report["skipped"] == []
    box.unchanged()


def bomb(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header claims side×side pixels (1.2 GB decoded) over a few hundred bytes of data."""
    return raw_png(path, side, side, 8, 2, b"\x00" * 1000)


def test_a_decompression_bomb_is_refused_by_eval_before_decoding(box: Box, models):
    model = box.add(models["two"])
    data = _folder(box, bomb(box.work / "bomb.png", 10_000))  # above dnet's limit, below Pillow's (which only warns)
    box.freeze()
    out = box.run("eval", model, "--dataset", "folder", "--data", data, "--workers", 0, budget_mb=200)
    assert out.error_line(1) == (f"{data / 'a' / 'bomb.png'}: claims 10000×10000 pixels; refused (limit "
                                 f"{MAX_PIXELS:,})")
    skipped = box.run("eval", model, "--dataset", "folder", "--data", data, "--workers", 0, "--skip-bad",
                      budget_mb=200)
    assert f"skipped: {data / 'a' / 'bomb.png'}: claims 10000×10000 pixels" in skipped.ok()
    assert skipped.added_rss < 200 << 20
    box.unchanged()


def test_a_decompression_bomb_is_refused_by_calibration_and_compare(box: Box, models):
    src = box.add(models["pth"])
    onnx = box.add(models["onnx"], "other.onnx")
    calib = _folder(box, bomb(box.work / "bomb.png"))
    box.freeze()
    out = box.cli("convert", src, "--from", "pth", "--to", "onnx", "--precision", "int8", "--calib", calib, "-o", box.work / "t.int8.onnx")
    assert out.error_line(1) == (f"calibration image {calib / 'a' / 'bomb.png'}: claims 400,000,000 pixels; refused "
                                 f"(limit {MAX_PIXELS:,})")  # above Pillow's own limit too: one message all the same
    box.unchanged()  # the export verifies on calibration images too: it stopped at the same file, before writing
    out = box.cli("compare", src, onnx, "--images", calib, "--count", 8)
    assert out.error_line(1) == (f"{calib / 'a' / 'bomb.png'}: claims 400,000,000 pixels; refused (limit "
                                 f"{MAX_PIXELS:,})")


def test_a_very_wide_image_cannot_make_the_resize_allocate_gigabytes(box: Box):
    from dnet.models.densenet import DenseNetConfig

    cfg = DenseNetConfig(block_config=(2, 2), growth_rate=4, init_features=8, stem="imagenet", num_classes=2)
    model = save_random(box.work / "wide.pth", 2, "torchvision", 224, config=cfg)
    data = box.work / "data"
    png(data / "a" / "0.png", 224, 224)
    png(data / "b" / "wide.png", 70_000, 1)  # 70k pixels: fine to decode, 256 × 17.9M after Resize(256)
    box.freeze()
    out = box.run("eval", model, "--dataset", "folder", "--data", data, "--workers", 0, "--skip-bad",
                  "--json", budget_mb=300)
    assert out.code == 0, out.stderr
    assert out.added_rss < 300 << 20
    import json

    report = json.loads(out.stdout)
    assert report["images"] == 1 and report["skipped"] == [
        f"{data / 'b' / 'wide.png'}: a 70000×1 image would be resized to 17920000×256 pixels; refused (limit {MAX_PIXELS:,})"]
    box.unchanged()


@pytest.mark.parametrize("spec", ["torch7", "torchvision", "cifar10", "digits"])
@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (31, 33)])
def test_preprocessing_always_yields_the_models_input_size(tmp_path, spec, size):
    from dnet.core.specs import get_spec

    s = get_spec(spec)
    x = preprocess(png(tmp_path / "x.png", *size), s)
    side = s.crop or s.input_size
    assert x.shape == (3, side, side) and np.isfinite(x).all()


@pytest.mark.parametrize("workers", [0, 1])
def test_training_on_a_folder_with_a_bomb_fails_in_one_line_from_any_worker(tmp_path, workers):
    from dnet.apps.train.batches import Batches
    from dnet.apps.train.distributed import Distributed
    from dnet.apps.train.recipe import TrainConfig
    from dnet.core.errors import DataError
    from dnet.data.datasets import FileDataset

    (tmp_path / "b").mkdir()
    paths = [png(tmp_path / "a" / "0.png", 40, 30), bomb(tmp_path / "b" / "bomb.png")]
    ds = FileDataset("folder", "train", paths, np.array([0, 1]), 2, ["a", "b"])
    cfg = TrainConfig(dataset="imagenet", batch=2, workers=workers)
    with pytest.raises(DataError) as e:
        list(Batches(ds, cfg, Distributed(), train=True, epoch=0))
    assert str(e.value) == f"{paths[1]}: claims 400,000,000 pixels; refused (limit {MAX_PIXELS:,})"
