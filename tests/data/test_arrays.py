"""Images in .npz/.npy files (dnet.data.arrays) and CIFAR binary folders (dnet.data.datasets.open_images): the layouts
read, the same tensors as the CIFAR binary distribution of the same images, and one exact line for each bad file."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.mixed import ValidationSet
from dnet.core.errors import DataError, UsageError
from dnet.core.specs import get_spec
from dnet.data.arrays import read_image_arrays
from dnet.data.datasets import open_dataset, open_images
from dnet.data.transforms import preprocess_array
from tests.helpers.evaldata import BAD, IMAGES, LABELS, write_cifar_bin, write_cifar_folder
from tests.helpers.shared import shared_fixture


def test_an_npz_gives_its_images_and_labels_and_ignores_other_keys(tmp_path):
    np.savez(tmp_path / "s.npz", images=IMAGES, labels=LABELS.astype(np.uint8), test_index=np.arange(6))
    found = read_image_arrays(tmp_path / "s.npz")
    assert np.array_equal(found.images, IMAGES) and found.labels.dtype == np.int64
    assert found.labels.tolist() == LABELS.tolist() and found.name == "s.npz"


def test_stored_members_and_npy_files_are_memory_mapped_compressed_ones_inflated(tmp_path):
    np.savez(tmp_path / "stored.npz", images=IMAGES)
    np.savez_compressed(tmp_path / "deflated.npz", images=IMAGES)
    np.save(tmp_path / "plain.npy", IMAGES)
    kinds = {}
    for name in ("stored.npz", "deflated.npz", "plain.npy"):
        found = read_image_arrays(tmp_path / name)
        assert np.array_equal(found.images, IMAGES) and found.labels is None
        kinds[name] = isinstance(found.images, np.memmap)
    assert kinds == {"stored.npz": True, "deflated.npz": False, "plain.npy": True}


def test_grey_channels_first_and_single_array_layouts_become_rgb(tmp_path):
    grey = IMAGES[..., 0]
    np.save(tmp_path / "grey.npy", grey)
    np.save(tmp_path / "grey1.npy", grey[..., None])
    np.savez(tmp_path / "chw.npz", images=IMAGES.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "arr0.npz", IMAGES)  # np.savez's default key
    np.savez(tmp_path / "modelopt.npz", input=IMAGES)  # one array keyed by the input name
    rgb_grey = np.repeat(grey[..., None], 3, axis=3)
    assert np.array_equal(read_image_arrays(tmp_path / "grey.npy").images, rgb_grey)
    assert np.array_equal(read_image_arrays(tmp_path / "grey1.npy").images, rgb_grey)
    for name in ("chw.npz", "arr0.npz", "modelopt.npz"):
        assert np.array_equal(read_image_arrays(tmp_path / name).images, IMAGES), name


def test_an_npz_feeds_the_same_tensors_as_the_cifar_folder_of_the_same_images(tmp_path):
    np.savez(tmp_path / "s.npz", images=IMAGES, labels=LABELS)
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-bin", IMAGES, LABELS)
    spec = get_spec("cifar10")
    a, b = open_dataset("cifar10", tmp_path / "s.npz"), open_dataset("cifar10", tmp_path / "cifar-10-batches-bin")
    assert np.array_equal(preprocess_array(a.images, a.spec), preprocess_array(b.images, b.spec))
    assert a.labels.tolist() == b.labels.tolist() == LABELS.tolist()
    calib = [CalibrationSet(folder=p, count=4).load(spec, held_out=2) for p in (tmp_path / "s.npz", tmp_path)]
    assert calib[0].shape == (4, 3, 32, 32) and np.array_equal(calib[0], calib[1])
    val = [ValidationSet(p, count=5).open(10) for p in (tmp_path / "s.npz", folder)]
    assert np.array_equal(val[0].load(spec), val[1].load(spec)) and val[0].labels.tolist() == val[1].labels.tolist()
    assert [v.basis for v in val] == ["labels from s.npz", f"labels from cifar10 {folder}/test_batch.bin"]


def test_the_real_cifar10_images_feed_the_same_tensors_from_the_npz_and_the_binary_layout(tmp_path):
    path = shared_fixture("real", "cifar10-test-first1000.npz")
    with np.load(path, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    write_cifar_folder(tmp_path / "cifar-10-batches-bin", images, labels)
    a, b = open_dataset("cifar10", path), open_dataset("cifar10", tmp_path)
    assert len(a) == 1000 and a.images.shape == (1000, 32, 32, 3)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.images, b.images)
    x, y = preprocess_array(a.images, a.spec), preprocess_array(b.images, b.spec)
    assert np.array_equal(x, y)
    # the Lua CIFAR loaders' normalisation: (pixel − mean) / std on the 0-255 scale
    assert np.allclose(x[0, :, 0, 0], (images[0, 0, 0] - np.array([125.3, 123.0, 113.9])) / [63.0, 62.1, 66.7],
                       atol=1e-5)


def test_open_images_reads_a_named_set_and_prefers_the_split_a_cifar_folder_has(tmp_path):
    write_cifar_folder(tmp_path, IMAGES[:2], LABELS[:2], "data_batch_1.bin")
    write_cifar_folder(tmp_path, IMAGES[2:], LABELS[2:], "test_batch.bin")
    assert np.array_equal(open_images(tmp_path, split="train").images, IMAGES[:2])
    assert np.array_equal(open_images(tmp_path, split="test").images, IMAGES[2:])
    (tmp_path / "test_batch.bin").unlink()
    assert np.array_equal(open_images(tmp_path, split="test").images, IMAGES[:2])  # the only records there
    digits = open_images(None, "digits", split="test")
    assert digits.images.shape == (360, 8, 8, 3) and digits.name == "digits/test"
    assert open_images(tmp_path / "nothing-here") is None  # a folder of image files: the caller lists it


# --- bad files: one line each (the CLI prints it as dnet: error: ..., tests/cli/test_image_sources.py) --------


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_array_file_is_one_line(tmp_path, case):
    name, make, message = BAD[case]
    path = tmp_path / name
    make(path)
    before = path.read_bytes()
    with pytest.raises(DataError) as e:
        read_image_arrays(path)
    if message is not None:
        assert str(e.value) == message.format(p=path)
    elif case == "not a zip":
        assert str(e.value).startswith(f"{path}: not a readable .npz (zip) file (")
    else:
        assert str(e.value) == (f"{path} ('images'): claims 1,410,065,408 bytes from "
                                f"{zipfile.ZipFile(path).getinfo('images.npy').compress_size:,} compressed ones, more "
                                "than deflate can hold (corrupt or crafted)")
    assert path.read_bytes() == before


def test_labels_of_another_data_set_and_images_of_another_size_are_refused(tmp_path):
    np.savez(tmp_path / "c100.npz", images=IMAGES, labels=LABELS * 10)
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path / "c100.npz")
    assert str(e.value) == f"{tmp_path / 'c100.npz'} ('labels'): label 90 out of range for 10 classes"
    np.savez(tmp_path / "small.npz", images=IMAGES[:, :28, :28], labels=LABELS)
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path / "small.npz")
    assert str(e.value) == f"{tmp_path / 'small.npz'}: images of 28×28 pixels; cifar10 images are 32×32"
    np.savez(tmp_path / "unlabelled.npz", images=IMAGES)
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path / "unlabelled.npz")
    assert str(e.value) == (f"{tmp_path / 'unlabelled.npz'}: no 'labels' array; the images' classes are needed (an .npz "
                            "with 'images' and 'labels')")
    with pytest.raises(UsageError, match=r"say which data set the images are of"):
        open_dataset("folder", tmp_path / "c100.npz")


def test_a_truncated_cifar_record_is_one_line(tmp_path):
    write_cifar_bin(tmp_path / "test_batch.bin", 3)
    data = (tmp_path / "test_batch.bin").read_bytes()
    (tmp_path / "test_batch.bin").write_bytes(data[:-7])
    with pytest.raises(DataError) as e:
        open_images(tmp_path, split="test")
    assert str(e.value) == (f"{tmp_path / 'test_batch.bin'}: 9,212 bytes is not a whole number of 3073-byte CIFAR "
                            "records (is this the binary version of the right data set?)")


def test_validation_images_without_labels_are_measured_as_agreement(tmp_path):
    np.save(tmp_path / "v.npy", IMAGES)
    val = ValidationSet(tmp_path / "v.npy", count=4).open(10)
    assert val.labels is None and val.basis == "top-1 agreement with FP32, no labels"
    assert val.load(get_spec("cifar10")).shape == (4, 3, 32, 32)
