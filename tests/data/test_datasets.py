"""Every loader reads small files written here in the real distribution format; wrong layouts get one line."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dnet.converters.int8.mixed import ValidationSet
from dnet.core.errors import DataError, UsageError
from dnet.data.datasets import ArrayDataset, FileDataset, open_dataset
from tests.helpers.evaldata import write_cifar_bin

SYNSETS = ["n01440764", "n01443537", "n09999999"]


def _png(path, value=0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)


def test_imagenet_synset_folders_index_classes_in_sorted_order(tmp_path):
    val = tmp_path / "val"
    for i, s in enumerate(reversed(SYNSETS)):  # created out of order on purpose
        for j in range(i + 1):
            _png(val / s / f"ILSVRC2012_val_{i}{j}.JPEG".replace(".JPEG", ".png"))
    for root in (tmp_path, val):  # the folder holding val/, or val/ itself
        ds = open_dataset("imagenet", root)
        assert isinstance(ds, FileDataset) and ds.num_classes == 3 and ds.class_names == SYNSETS
        assert [p.parent.name for p in ds.paths] == [SYNSETS[k] for k in ds.labels]
        assert np.bincount(ds.labels).tolist() == [3, 2, 1]


def _flat_imagenet(tmp_path, rows, mapping=False):
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for image_id, _ in rows:
        _png(val / f"{image_id}.JPEG")
    lines = ["ImageId,PredictionString"] + [f"{i},{s} 10 20 30 40 {s} 1 2 3 4" for i, s in rows]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    if mapping:
        (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{s} name {k}\n" for k, s in enumerate(SYNSETS)))
    return val


def test_imagenet_flat_folder_with_loc_val_solution(tmp_path):
    rows = [("ILSVRC2012_val_00000002", SYNSETS[2]), ("ILSVRC2012_val_00000001", SYNSETS[0]),
            ("ILSVRC2012_val_00000003", SYNSETS[2])]
    val = _flat_imagenet(tmp_path, rows)
    for root in (tmp_path, val):
        ds = open_dataset("imagenet", root)
        assert [p.stem for p in ds.paths] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002", "ILSVRC2012_val_00000003"]
        assert ds.labels.tolist() == [0, 1, 1] and ds.class_names == [SYNSETS[0], SYNSETS[2]]


def test_imagenet_flat_folder_uses_the_synset_mapping_when_present(tmp_path):
    _flat_imagenet(tmp_path, [("a", SYNSETS[2]), ("b", SYNSETS[0])], mapping=True)
    ds = open_dataset("imagenet", tmp_path)
    assert ds.num_classes == 3 and ds.labels.tolist() == [2, 0]


def test_imagenet_flat_folder_without_ground_truth_is_one_line(tmp_path):
    for i in range(3):
        _png(tmp_path / f"x{i}.JPEG")
    with pytest.raises(DataError) as e:
        open_dataset("imagenet", tmp_path)
    assert str(e.value) == (f"{tmp_path}: 3 images in one folder but no LOC_val_solution.csv beside it or above it "
                            "(the ground truth), and no synset subfolders")


def test_imagenet_ground_truth_and_images_must_agree(tmp_path):
    val = _flat_imagenet(tmp_path, [("a", SYNSETS[0]), ("b", SYNSETS[1])])
    (val / "b.JPEG").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) listed in LOC_val_solution.csv are missing, e.g. b$"):
        open_dataset("imagenet", tmp_path)
    _png(val / "b.JPEG")
    _png(val / "zzz.JPEG")
    with pytest.raises(DataError, match=r"has no ground truth for 1 image\(s\), e.g. zzz.JPEG$"):
        open_dataset("imagenet", tmp_path)


def test_imagenet_wrong_layouts(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match="subfolder 'cats' is not a synset id .* use --dataset folder"):
        open_dataset("imagenet", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images and no synset subfolders"):
        open_dataset("imagenet", empty)
    with pytest.raises(DataError, match="no such folder"):
        open_dataset("imagenet", tmp_path / "nope")
    with pytest.raises(UsageError, match="needs --data"):
        open_dataset("imagenet", None)
    bad_csv = tmp_path / "csv"
    _png(bad_csv / "a.JPEG")
    (bad_csv / "LOC_val_solution.csv").write_text("id,label\na,n01440764\n")
    with pytest.raises(DataError, match="expected the header 'ImageId,PredictionString'"):
        open_dataset("imagenet", bad_csv)


def test_class_folders(tmp_path):
    _png(tmp_path / "dog" / "a.png")
    _png(tmp_path / "dog" / "deep" / "b.jpg")
    _png(tmp_path / "cat" / "c.PNG")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = open_dataset("folder", tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 1] and len(ds) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: class folder holds no images"):
        open_dataset("folder", tmp_path)
    nothing = tmp_path / "dog" / "deep"
    with pytest.raises(DataError, match="no class subfolders"):
        open_dataset("folder", nothing)


def test_cifar10_binary(tmp_path):
    images, labels = write_cifar_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", 7)
    for root in (tmp_path, tmp_path / "cifar-10-batches-bin"):
        ds = open_dataset("cifar10", root)
        assert isinstance(ds, ArrayDataset) and ds.spec.name == "cifar10" and ds.num_classes == 10
        assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)


def test_cifar10_train_reads_the_five_batches(tmp_path):
    parts = [write_cifar_bin(tmp_path / "cifar-10-batches-bin" / f"data_batch_{i}.bin", 2, seed=i) for i in range(1, 6)]
    ds = open_dataset("cifar10", tmp_path, "train")
    assert len(ds) == 10 and np.array_equal(ds.labels, np.concatenate([p[1] for p in parts]))


def test_cifar100_binary_uses_the_fine_label(tmp_path):
    images, labels = write_cifar_bin(tmp_path / "cifar-100-binary" / "test.bin", 5, label_bytes=2, num_classes=100)
    ds = open_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.spec.name == "cifar100"
    assert np.array_equal(ds.labels, labels) and np.array_equal(ds.images, images)


def test_cifar_wrong_layouts(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path)
    assert str(e.value) == (f"{tmp_path}: expected cifar-10-batches-bin/test_batch.bin (the binary CIFAR distribution; "
                            "the Python pickle version is not read) — pass the folder holding cifar-10-batches-bin/ "
                            "or use --download")
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(b"\0" * 3074)
    with pytest.raises(DataError, match="3,074 bytes is not a whole number of 3073-byte CIFAR records"):
        open_dataset("cifar10", tmp_path)
    write_cifar_bin(folder / "test_batch.bin", 3, label_bytes=2, num_classes=100, seed=3)  # CIFAR-100 records
    with pytest.raises(DataError):
        open_dataset("cifar10", tmp_path)


def _svhn_mat(path, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0] = 10  # the digit 0
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_mat(tmp_path):
    x, y = _svhn_mat(tmp_path / "test_32x32.mat")
    for root in (tmp_path, tmp_path / "test_32x32.mat"):
        ds = open_dataset("svhn", root)
        assert ds.spec.name == "svhn" and ds.num_classes == 10 and len(ds) == 6
        assert np.array_equal(ds.images[4], x[:, :, :, 4]) and ds.images.shape == (6, 32, 32, 3)
        assert ds.labels.tolist() == (y.ravel().astype(int) % 10).tolist() and ds.labels[0] == 0  # 10 = the digit 0


def test_svhn_wrong_files(tmp_path):
    with pytest.raises(DataError, match=r"expected test_32x32.mat \(SVHN cropped digits, format 2\)"):
        open_dataset("svhn", tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DataError, match="expected variables X and y .*found images"):
        open_dataset("svhn", tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"X has shape \(28, 28, 3, 2\), expected 32×32×3×N"):
        open_dataset("svhn", tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="not a readable MATLAB"):
        open_dataset("svhn", tmp_path)


def test_unknown_names():
    with pytest.raises(UsageError, match="unknown data set 'mnist'; choose from cifar10, cifar100, svhn, imagenet, digits, folder"):
        open_dataset("mnist", ".")
    with pytest.raises(UsageError, match="ImageNet cannot be downloaded"):
        open_dataset("imagenet", ".", download=True)


def test_a_conversions_validation_folder_reads_the_labels_the_folder_data_set_reads(tmp_path):
    for cls, names in {"cat": ["b.png", "a.png", "deep/c.png"], "ant": ["z.png"], "bee": ["m.png", "k.png"]}.items():
        for name in names:
            (tmp_path / cls / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / cls / name)
    data = open_dataset("folder", tmp_path)
    val = ValidationSet(tmp_path, count=None).open(3)
    assert data.class_names == ["ant", "bee", "cat"] and data.labels.tolist() == [0, 1, 1, 2, 2, 2]
    assert val.files == data.paths and val.labels.tolist() == data.labels.tolist()
    assert [p.relative_to(tmp_path).as_posix() for p in val.files] == [
        "ant/z.png", "bee/k.png", "bee/m.png", "cat/a.png", "cat/b.png", "cat/deep/c.png"]
    (tmp_path / "dog").mkdir()
    with pytest.raises(DataError) as e:
        open_dataset("folder", tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'dog'}: class folder holds no images (.jpg, ")
    with pytest.raises(DataError) as e:
        ValidationSet(tmp_path, count=None).open(4)
    assert str(e.value).startswith(f"validation class folder {tmp_path / 'dog'} contains no images (.jpg, ")
