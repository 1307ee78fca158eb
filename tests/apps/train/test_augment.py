"""Augmentation as the Lua loaders do it: shapes, ranges, and that the choices come from (seed, epoch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dnet.apps.train import augment
from dnet.apps.train.augment import ARRAY_AUGMENT, PCA_EIGVAL, PCA_EIGVEC, normalize
from dnet.core.specs import get_spec
from dnet.data.datasets import DIGITS_SPEC
from dnet.data.transforms import center_crop, lua_load, lua_scale, lua_scale_bicubic

CIFAR = get_spec("cifar10")


def _images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_normalize_is_lua_color_normalize_on_the_255_scale():
    imgs = _images(2)
    x = normalize(imgs, CIFAR)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    expected = (imgs[1, 5, 7, 2] - 113.9) / 66.7
    assert float(x[1, 2, 5, 7]) == pytest.approx(expected, abs=1e-5)


def test_cifar_crop_is_a_shift_of_the_padded_normalised_image():
    aug = ARRAY_AUGMENT["cifar10"]
    x = normalize(_images(64), CIFAR)
    offsets, flips = aug.draw(64, seed=3, epoch=1)
    y = aug.apply(x, offsets, flips)
    assert y.shape == (64, 3, 32, 32)
    assert offsets.min() >= 0 and offsets.max() <= 8  # 4-pixel padding on each side
    assert 10 < int(flips.sum()) < 54  # about half flipped
    for i in range(64):
        src = x[i].flip(2) if flips[i] else x[i]
        padded = torch.nn.functional.pad(src, (4, 4, 4, 4))
        dy, dx = offsets[i].tolist()
        assert torch.equal(y[i], padded[:, dy:dy + 32, dx:dx + 32])
    # values: the normalised pixels or the zero padding, nothing else
    lo, hi = float(x.min()), float(x.max())
    assert float(y.min()) >= min(lo, 0.0) and float(y.max()) <= max(hi, 0.0)


def test_choices_depend_only_on_seed_and_epoch():
    aug = ARRAY_AUGMENT["cifar10"]
    a, b, c = aug.draw(100, 0, 5), aug.draw(100, 0, 5), aug.draw(100, 0, 6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_digits_shift_by_at_most_one_pixel_and_never_flip():
    aug = ARRAY_AUGMENT["digits"]
    offsets, flips = aug.draw(500, 0, 0)
    assert not flips.any()
    assert set(offsets.flatten().tolist()) == {0, 1, 2}
    assert aug.apply(normalize(_images(4, 8), DIGITS_SPEC), offsets[:4], flips[:4]).shape == (4, 3, 8, 8)


def test_svhn_forced_augmentation_shifts_but_never_flips_digits():
    aug = ARRAY_AUGMENT["svhn"]
    offsets, flips = aug.draw(1000, seed=0, epoch=0)
    assert not flips.any() and (aug.size, aug.padding) == (32, 4) and set(offsets.flatten().tolist()) == set(range(9))
    x = normalize(_images(4), get_spec("svhn"))
    centred = aug.apply(x, torch.full((4, 2), 4), torch.ones(4, dtype=torch.bool))  # even when asked to flip
    assert torch.equal(centred, x)


def test_random_sized_crop_is_lua_image_scale_of_the_drawn_crop():
    x = lua_load(Image.fromarray(_images(1, 300)[0]).resize((400, 300)))
    g, replay = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for _ in range(5):
        out = augment.random_sized_crop(x, 224, g)
        # the same draws, in transforms.lua's order: area, aspect, swap, y1, x1 (every try fits a 400×300 image
        # unless the area is large: then the try is redrawn, which this replay follows too)
        while True:
            target = float(torch.empty(1).uniform_(0.08, 1.0, generator=replay)) * 400 * 300
            aspect = float(torch.empty(1).uniform_(3 / 4, 4 / 3, generator=replay))
            w, h = math.floor(math.sqrt(target * aspect) + 0.5), math.floor(math.sqrt(target / aspect) + 0.5)
            if float(torch.rand(1, generator=replay)) < 0.5:
                w, h = h, w
            if h <= 300 and w <= 400:
                break
        y1 = int(torch.randint(0, 300 - h + 1, (1,), generator=replay))
        x1 = int(torch.randint(0, 400 - w + 1, (1,), generator=replay))
        assert out.shape == (3, 224, 224) and out.dtype == np.float32
        assert np.array_equal(out, lua_scale_bicubic(x[:, y1:y1 + h, x1:x1 + w], 224, 224))  # bit for bit


def test_random_sized_crop_falls_back_to_lua_scale_and_centre_crop():
    tall = lua_load(Image.fromarray(_images(1, 500)[0]).resize((10, 500)))  # no crop fits the aspect range
    out = augment.random_sized_crop(tall, 224, torch.Generator().manual_seed(0))
    assert np.array_equal(out, center_crop(lua_scale(tall, 224), 224))


def test_crop_sides_round_half_away_from_zero_as_torch_round():
    assert [augment._lua_round(v) for v in (2.5, 3.5, 2.4999, 224.5)] == [3, 4, 2, 225]
    assert [round(v) for v in (2.5, 224.5)] == [2, 224]  # Python's round would differ


def test_lighting_adds_the_pca_colour_offset():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    x = torch.zeros(3, 4, 4)
    y = augment.lighting(x, g1, 0.1)
    alpha = torch.randn(3, generator=g2) * 0.1
    rgb = [sum(float(PCA_EIGVEC[i, j] * alpha[j] * PCA_EIGVAL[j]) for j in range(3)) for i in range(3)]
    for c in range(3):
        assert torch.allclose(y[c], torch.full((4, 4), rgb[c]), atol=1e-7)
    assert abs(rgb[0]) < 0.2175 * 0.1 * 5  # eigval·alphastd scale


def test_color_jitter_keeps_shape_and_stays_within_the_blend_range():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 16, 16)
    y = augment.color_jitter(x, g)
    assert y.shape == x.shape
    # three blends with factors in [0.6, 1.4] of a [0, 1] image stay within [-1.4², 1.4³]
    assert float(y.min()) > -2.0 and float(y.max()) < 1.4**3 + 1e-6
    assert not torch.equal(x, y)


def test_imagenet_train_shape():
    spec = get_spec("torch7")
    img = Image.fromarray(_images(1, 256)[0]).resize((320, 256))
    x = augment.imagenet_train(img, spec, torch.Generator().manual_seed(0))
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()


def test_image_file_batches_are_augmented_per_sample_and_reproducible(tmp_path):
    from dnet.apps.train.batches import Batches
    from dnet.apps.train.distributed import Distributed
    from dnet.apps.train.recipe import recipe
    from dnet.data.datasets import FileDataset
    from dnet.data.transforms import preprocess

    paths = []
    for i, (w, h) in enumerate([(300, 240), (240, 300), (260, 260)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(_images(1, 300, seed=i)[0]).resize((w, h)).save(p)
        paths.append(p)
    ds = FileDataset("imagenet", "train", paths, np.array([0, 1, 2]), 3, ["a", "b", "c"])
    cfg = recipe("imagenet", batch=2)
    train_a = [x for x, _ in Batches(ds, cfg, Distributed(), train=True, epoch=0)]
    train_b = [x for x, _ in Batches(ds, cfg, Distributed(), train=True, epoch=0)]
    assert [tuple(x.shape) for x in train_a] == [(2, 3, 224, 224), (1, 3, 224, 224)]
    assert all(torch.equal(a, b) for a, b in zip(train_a, train_b, strict=True))
    test = [(x, y) for x, y in Batches(ds, cfg, Distributed(), train=False, epoch=0)]
    assert [y.tolist() for _, y in test] == [[0, 1], [2]]
    # the test split is fed exactly what dnet eval feeds (Lua-exact torch7), so both report error on the same pixels
    for k in range(3):
        batch = test[k // 2][0]
        assert torch.equal(batch[k % 2], torch.from_numpy(preprocess(paths[k], get_spec("torch7"))))
