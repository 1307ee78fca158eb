"""torch7 preprocessing against real Lua Torch7 outputs, and properties on images Lua was not run on."""

import numpy as np
import pytest
from PIL import Image

from dnet.core.errors import DataError, UsageError
from dnet.data.transforms import (
    _cubic_axis,
    center_crop,
    color_normalize,
    lua_load,
    lua_scale,
    lua_scale_bicubic,
    preprocess,
    preprocess_array,
    scaled_size,
    ten_crop,
)
from tests.helpers.shared import shared_fixture

NAMES = ["chelsea", "coffee-portrait", "chelsea-257x301"]
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def fixture(name, kind):
    return shared_fixture("preprocess", f"{name}.{kind}")


@pytest.mark.parametrize("name", NAMES)
def test_load_is_bit_exact_with_lua(name):
    ours = lua_load(fixture(name, "png"))
    lua = np.load(fixture(name, "loaded.npy"))
    assert ours.dtype == np.float32 and ours.shape == lua.shape
    assert np.array_equal(ours, lua)  # byte × float32(1/255), not byte / 255


@pytest.mark.parametrize("name", NAMES)
def test_scale_256_matches_lua_image_scale(name):
    lua = np.load(fixture(name, "scaled.npy"))
    ours = lua_scale(np.load(fixture(name, "loaded.npy")), 256)
    assert ours.shape == lua.shape
    assert np.abs(ours - lua).max() <= 1e-6  # measured: 0 (bit for bit)


@pytest.mark.parametrize("name", NAMES)
def test_val_pipeline_matches_lua(name):
    lua = np.load(fixture(name, "val.npy"))
    ours = preprocess(fixture(name, "png"), "torch7")
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    assert np.abs(ours - lua).max() <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_ten_crop_matches_lua(name):
    lua = np.load(fixture(name, "tencrop.npy"))
    ours = preprocess(fixture(name, "png"), "torch7", ten_crop=True)
    assert ours.shape == (10, 3, 224, 224) and ours.dtype == np.float32
    assert np.abs(ours - lua).max() <= 1e-5


def test_preprocess_takes_a_pil_image_too():
    path = fixture("chelsea", "png")
    with Image.open(path) as im:
        assert np.array_equal(preprocess(im.convert("RGB")), preprocess(path))


def test_long_side_is_truncated_not_rounded():
    assert scaled_size(451, 300, 256) == (384, 256)  # 384.85
    assert scaled_size(301, 257, 256) == (299, 256)  # 299.83
    assert scaled_size(400, 600, 256) == (256, 384)
    assert scaled_size(640, 427, 256) == (383, 256)  # 383.70
    assert scaled_size(300, 300, 256) == (256, 256)
    assert scaled_size(320, 256, 256) is None and scaled_size(256, 256, 256) is None


def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    # smooth-ish content plus noise so interpolation has something to do
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx / 17.0)[..., None] * np.cos(yy / 23.0)[..., None]
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w", [(300, 300), (427, 640), (640, 427), (256, 320), (900, 260)])
def test_other_shapes_give_224_crops_and_keep_the_short_side(tmp_path, h, w):
    path = tmp_path / f"{h}x{w}.png"
    Image.fromarray(_photo(h, w)).save(path)
    loaded = lua_load(path)
    scaled = lua_scale(loaded, 256)
    sw, sh = scaled_size(w, h, 256) or (w, h)
    assert scaled.shape == (3, sh, sw) and min(sh, sw) == 256
    out = preprocess(path, "torch7")
    assert out.shape == (3, 224, 224)
    x, y = -(-(sw - 224) // 2), -(-(sh - 224) // 2)  # ceil
    assert np.array_equal(out, color_normalize(scaled, MEAN.ravel(), STD.ravel())[:, y:y + 224, x:x + 224])


def test_short_side_already_256_is_untouched(tmp_path):
    pixels = _photo(256, 320)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    loaded = lua_load(path)
    assert lua_scale(loaded, 256) is loaded  # t.Scale returns its input
    out = preprocess(path)
    expect = ((pixels.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255) + (-MEAN)) / STD)[:, 16:240, 48:272]
    assert np.array_equal(out, expect)


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    grey = _photo(300, 420)[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "rgb.png")
    g = preprocess(tmp_path / "g.png")
    assert np.array_equal(g, preprocess(tmp_path / "rgb.png"))
    # channels differ only by the per-channel normalisation
    assert np.allclose(g[0] * STD[0] + MEAN[0], g[2] * STD[2] + MEAN[2], atol=1e-6)


def test_bicubic_keeps_constants_and_linear_ramps():
    const = np.full((1, 37, 53), 0.3, np.float32)
    assert np.allclose(lua_scale_bicubic(const, 80, 61), 0.3, atol=1e-6)
    ramp = np.tile(np.arange(53, dtype=np.float32) / 52, (1, 5, 1))
    up = _cubic_axis(ramp, 101, axis=2)
    # Catmull-Rom with linear extrapolation reproduces a linear function at align-corners positions
    assert np.allclose(up[0, 0], np.arange(101) / 100, atol=2e-6)


def test_bicubic_overshoot_is_not_clamped():
    step = np.zeros((1, 1, 10), np.float32)
    step[..., 5:] = 1.0
    up = _cubic_axis(step, 40, axis=2)
    assert up.min() < -0.01 and up.max() > 1.01


def test_unchanged_axis_is_an_exact_copy():
    x = np.random.default_rng(0).random((3, 7, 9), dtype=np.float32)
    assert np.array_equal(_cubic_axis(x, 9, axis=2), x)
    assert np.array_equal(lua_scale_bicubic(x, 9, 7), x)


def test_ten_crop_order_and_odd_offsets():
    x = np.random.default_rng(1).random((3, 256, 299), dtype=np.float32)  # W − 224 = 75, odd
    crops = ten_crop(x, 224)
    assert np.array_equal(crops[0], center_crop(x, 224)) and np.array_equal(crops[0], x[:, 16:240, 38:262])
    assert np.array_equal(crops[1], x[:, :224, :224]) and np.array_equal(crops[4], x[:, 32:, 75:])
    flipped = x[:, :, ::-1]
    assert np.array_equal(crops[5], flipped[:, 16:240, 38:262])
    # the flipped centre is the mirror of the crop at floor(75/2) = 37, not of crop 0 at 38
    assert np.array_equal(crops[5], x[:, 16:240, 37:261][:, :, ::-1])
    assert not np.array_equal(crops[5], crops[0][:, :, ::-1])


def test_torchvision_is_close_to_torch7_but_not_equal():
    path = fixture("chelsea", "png")
    tv, t7 = preprocess(path, "torchvision"), preprocess(path, "torch7")
    assert tv.shape == (3, 224, 224)
    diff = np.abs(tv - t7)
    assert 0 < diff.mean() < 0.1 and diff.max() > 1e-3


def test_torchvision_without_resize_is_normalise_and_round_crop(tmp_path):
    pixels = _photo(256, 301)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = preprocess(tmp_path / "a.png", "torchvision")
    left = int(round((301 - 224) / 2.0))  # torchvision rounds (38.5 -> 38), Lua takes ceil (39)
    expect = (pixels.transpose(2, 0, 1).astype(np.float32) / 255 - MEAN) / STD
    assert np.allclose(out, expect[:, 16:240, left:left + 224], atol=1e-6)


def test_preprocess_array_normalises_on_the_0_255_scale():
    images = np.zeros((2, 4, 5, 3), np.uint8)
    images[1] = 255
    out = preprocess_array(images, "cifar10")
    assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32
    assert np.allclose(out[0, :, 0, 0], [-125.3 / 63.0, -123.0 / 62.1, -113.9 / 66.7], atol=1e-6)
    assert np.allclose(out[1, :, 0, 0], [(255 - 125.3) / 63.0, (255 - 123.0) / 62.1, (255 - 113.9) / 66.7], atol=1e-6)
    assert np.allclose(preprocess_array(images, "svhn")[1], 1.0)


def test_undecodable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot decode image"):
        preprocess(bad)
    with pytest.raises(DataError, match=r"missing\.png: no such image file"):
        preprocess(tmp_path / "missing.png")


def test_image_smaller_than_the_crop_and_ten_crop_without_torch7(tmp_path):
    Image.fromarray(_photo(8, 8)).save(tmp_path / "s.png")
    with pytest.raises(UsageError, match="ten-crop is only defined for the torch7"):
        preprocess(tmp_path / "s.png", "torchvision", ten_crop=True)
    assert preprocess(tmp_path / "s.png", "digits").shape == (3, 8, 8)


@pytest.mark.parametrize("seed", range(6))
def test_resampling_a_window_equals_cropping_the_full_result(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 70, 2)
    th, tw = rng.integers(2, 90, 2)
    x = rng.random((3, h, w), dtype=np.float32)
    full = lua_scale_bicubic(x, int(tw), int(th))
    cw, ch = rng.integers(1, tw + 1), rng.integers(1, th + 1)
    left, top = rng.integers(0, tw - cw + 1), rng.integers(0, th - ch + 1)
    part = lua_scale_bicubic(x, int(tw), int(th), window=(int(left), int(top), int(cw), int(ch)))
    assert np.array_equal(part, full[:, top:top + ch, left:left + cw])
