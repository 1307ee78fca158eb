"""dnet.converters.int8.calibration: the image reader (model preprocessing), bad folders, and the cache file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import dnet.data.datasets  # noqa: F401  (registers the digits spec)
from dnet.converters.int8.calibration import CalibrationCache, CalibrationSet, read_array, read_folder
from dnet.core.errors import DataError, FileFormatError
from dnet.core.specs import get_spec
from dnet.data.base import evenly_spread
from tests.helpers.shared import shared_fixture


def test_folder_images_go_through_the_models_own_lua_exact_preprocessing(tmp_path):
    # Calibration sees exactly what evaluation feeds the model: dnet.data.transforms (Lua-exact bicubic).
    png = shared_fixture("preprocess", "chelsea.png")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "chelsea.png").write_bytes(png.read_bytes())
    x = read_folder(tmp_path, get_spec("torch7"), count=1)
    ref = np.load(shared_fixture("preprocess", "chelsea.val.npy"))
    assert x.shape == (1, *ref.shape) and np.abs(x[0] - ref).max() <= 1e-5


def test_folder_is_read_sorted_recursive_and_evenly_spread(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), i * 10 + (cls == "b") * 100, np.uint8)).save(tmp_path / cls / f"{i}.png")
    x = read_folder(tmp_path, get_spec("digits"), count=4)
    assert x.shape == (4, 3, 8, 8)
    assert list(evenly_spread(10, 4)) == [0, 3, 6, 9]  # both class folders are represented
    spec = get_spec("digits")
    raw = np.round(x[:, 0, 0, 0] * spec.std[0] + spec.mean[0]).astype(int)
    assert list(raw) == [0, 30, 110, 140]


def test_empty_and_missing_folders_are_data_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="contains no images"):
        read_folder(tmp_path, get_spec("cifar10"), 4)
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        read_folder(tmp_path / "absent", get_spec("cifar10"), 4)


def test_an_undecodable_image_is_named(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=f"calibration image {tmp_path / 'zz.png'}: cannot decode image"):
        read_folder(tmp_path, get_spec("cifar10"), 4)


def test_array_of_uint8_images_is_accepted_and_checked():
    imgs = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    x = read_array(imgs, get_spec("digits"), 5)
    assert x.shape == (5, 3, 8, 8)
    with pytest.raises(DataError, match="uint8 N×H×W×3"):
        read_array(imgs.astype(np.float32), get_spec("digits"), 5)
    with pytest.raises(DataError, match="exactly one of"):
        CalibrationSet()


def test_cache_is_json_keyed_by_tensor_name_and_round_trips(tmp_path):
    cache = CalibrationCache("ab" * 32, "entropy", 16, "photos", {"input": (-2.5, 2.75), "cat_2": (0.0, 7.125)})
    path = cache.save(tmp_path / "c.json")
    d = json.loads(path.read_text())
    assert d["format"] == "dnet.calibration" and d["model_sha256"] == "ab" * 32
    assert d["ranges"] == {"cat_2": [0.0, 7.125], "input": [-2.5, 2.75]}
    assert CalibrationCache.load(path) == cache


def test_a_corrupt_cache_is_one_clear_line(tmp_path):
    (tmp_path / "c.json").write_text('{"format": "something else"}')
    with pytest.raises(FileFormatError, match="not a dnet calibration cache"):
        CalibrationCache.load(tmp_path / "c.json")


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse"])
def test_histogram_calibration_takes_a_count_that_is_not_a_multiple_of_the_batch(tmp_path, method):
    from dnet.converters.int8.calibrator import CALIB_BATCH, calibrate
    from tests.helpers.models import tiny_onnx

    images = np.random.default_rng(0).standard_normal((64 + CALIB_BATCH + 5, 3, 32, 32), dtype=np.float32)
    ranges = calibrate(tiny_onnx(tmp_path), images, method)  # the last chunk: a batch of 16 and one of 5
    assert ranges and all(lo <= hi for lo, hi in ranges.values())


def _brute_force_mse(hist, edges, qmax=127):
    c = np.abs((edges[:-1] + edges[1:]) / 2)
    candidates = np.append(np.unique(c), np.abs(edges).max())
    errors = [np.sum(hist * np.where(c > t, (c - t) ** 2, np.where(c < t / qmax / 2, c * c, (t / qmax) ** 2 / 12)))
              for t in candidates if t > 0]
    return candidates[candidates > 0][int(np.argmin(errors))]


@pytest.mark.parametrize("dist", ["normal", "uniform", "relu-heavy-tail"])
def test_mse_threshold_is_the_brute_force_minimum(dist):
    from dnet.converters.int8.calibrator import mse_threshold

    rng = np.random.default_rng(1)
    x = {"normal": rng.standard_normal(200_000),
         "uniform": rng.uniform(-1, 1, 200_000),
         "relu-heavy-tail": np.maximum(rng.standard_t(3, 200_000), 0)}[dist]
    top = np.abs(x).max()
    hist, edges = np.histogram(x, 2048, range=(-top, top))
    t = mse_threshold(hist, edges)
    assert t == pytest.approx(_brute_force_mse(hist, edges), abs=1e-9)
    assert 0 < t <= top
    if dist == "normal":  # the known optimum for 8-bit symmetric quantization of N(0, 1): about 3.9σ
        assert 3.7 < t < 4.1
    if dist == "uniform":  # nothing to gain by clipping: within a bin or two of the largest value
        assert t > top - 4 * (edges[1] - edges[0])


def test_mse_calibration_clips_a_rare_outlier_that_minmax_keeps(tmp_path):
    from dnet.converters.int8.calibrator import calibrate
    from tests.helpers.models import tiny_onnx

    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 3, 32, 32), dtype=np.float32)
    images[0, 0, 0, 0] = 60.0  # one pixel in 196,608
    path = tiny_onnx(tmp_path)
    minmax, mse = calibrate(path, images, "minmax"), calibrate(path, images, "mse")
    assert set(mse) == set(minmax)
    (name,) = [k for k in minmax if minmax[k][1] == pytest.approx(60.0)]  # the graph input
    assert mse[name][1] < 40.0  # clipped: squared error weighs the one pixel against 196,607 roundings
    for k, (lo, hi) in mse.items():
        assert minmax[k][0] - 1e-6 <= lo <= hi <= minmax[k][1] + 1e-6  # never wider than what was seen


def test_mse_threshold_does_not_charge_exact_zeros_a_rounding_error():
    """A ReLU output is mostly exact zeros, which int8 represents exactly: adding them must not pull the threshold
    down (charging each zero step²/12, as a plain uniform-rounding model does, clips the live values harder)."""
    from dnet.converters.int8.calibrator import mse_threshold

    rng = np.random.default_rng(2)
    live = np.abs(rng.standard_normal(50_000))
    top = live.max()
    edges = np.linspace(0, top, 2049)
    with_zeros = np.histogram(np.concatenate([live, np.zeros(450_000)]), edges)[0]
    without = np.histogram(live, edges)[0]
    width = edges[1] - edges[0]
    assert abs(mse_threshold(with_zeros, edges) - mse_threshold(without, edges)) <= 2 * width
