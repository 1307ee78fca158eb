"""Images and records a data set may hold: CMYK, 16-bit, greyscale, grey+alpha and palette PNG/JPEG, an animated
GIF (its first frame), a text file named .jpg and a 0-byte file (one line naming it; skipped and counted with
--skip-bad), and a CIFAR record whose label is 200 (one line). Truncated CIFAR records: test_cifar_size.py; .npz
arrays with wrong keys, shapes or dtypes: tests/data/test_arrays.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dnet.data.images import open_image
from tests.helpers.harness import Box
from tests.helpers.models import save_random

RGB = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
GREY = np.asarray(RGB.convert("L"))
DECODED = {  # name -> (how it is written, what the decoder must give: H×W×3 uint8)
    "cmyk.jpg": (lambda p: RGB.convert("CMYK").save(p, quality=95), np.asarray(RGB)),  # JPEG: within its loss
    "grey.jpg": (lambda p: RGB.convert("L").save(p, quality=95), np.repeat(GREY[..., None], 3, 2)),
    "grey.png": (lambda p: RGB.convert("L").save(p), np.repeat(GREY[..., None], 3, 2)),
    "grey-alpha.png": (lambda p: RGB.convert("LA").save(p), np.repeat(GREY[..., None], 3, 2)),
    "palette.png": (lambda p: RGB.convert("P").save(p), np.asarray(RGB.convert("P").convert("RGB"))),
    "grey16.png": (lambda p: Image.fromarray(GREY.astype(np.uint16) * 257).save(p), np.repeat(GREY[..., None], 3, 2)),
    "animated.gif": (lambda p: RGB.convert("P").save(p, save_all=True, append_images=[RGB.convert("P").rotate(90)]),
                     np.asarray(RGB.convert("P").convert("RGB"))),
}
UNDECODABLE = {"text.jpg": lambda p: p.write_text("not an image\n"), "empty.png": lambda p: p.write_bytes(b"")}


def _folder(box: Box, name: str, make) -> tuple:
    data = box.work / "data"
    for c in "ab":
        (data / c).mkdir(parents=True)
        RGB.save(data / c / "0.png")
    make(data / "a" / name)
    return data, data / "a" / name


@pytest.mark.parametrize("name", sorted(DECODED))
def test_an_odd_image_mode_decodes_to_the_right_rgb_and_evaluates(box: Box, models, name):
    make, expect = DECODED[name]
    data, odd = _folder(box, name, make)
    got = np.asarray(open_image(odd))
    assert got.shape == (40, 40, 3) and got.dtype == np.uint8
    tolerance = 12 if name.endswith(".jpg") else 0  # mean absolute error of a quality-95 JPEG, in 0..255
    assert np.abs(got.astype(int) - expect.astype(int)).mean() <= tolerance
    model = box.add(models["two"])
    box.freeze()
    report = json.loads(box.cli("eval", model, "--dataset", "folder", "--data", data, "-q", "--json").ok())
    assert report["images"] == 3 and report["skipped"] == []
    box.unchanged()


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_a_file_that_is_no_image_is_one_line_or_skipped_and_counted(box: Box, models, name):
    data, odd = _folder(box, name, UNDECODABLE[name])
    model = box.add(models["two"])
    box.freeze()
    args = ["eval", model, "--dataset", "folder", "--data", data, "-q", "--json"]
    assert box.cli(*args).error_line(1) == f"{odd}: cannot decode image (cannot identify image file '{odd}')"
    report = json.loads(box.cli(*args, "--skip-bad").ok())
    assert report["images"] == 2 and len(report["skipped"]) == 1 and name in json.dumps(report["skipped"])
    box.unchanged()


def test_a_cifar_label_of_200_is_one_line(box: Box):
    folder = box.work / "data" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    records = np.zeros((3, 1 + 3 * 32 * 32), np.uint8)
    records[:, 0] = [1, 200, 3]
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    model = save_random(box.work / "ten.pth", 10, "cifar10", 32)
    box.freeze()
    r = box.cli("eval", model, "--dataset", "cifar10", "--data", box.work / "data", "-q")
    line = r.error_line()
    assert r.code != 0 and "200" in line and str(folder / "test_batch.bin") in line, line
    box.unchanged()
