"""Images where users have them, on the command line: ``dnet convert --calib/--val`` an .npz/.npy, a CIFAR binary
folder or ``--dataset NAME --data DIR``; ``dnet eval --data FILE.npz``; the published test set's size beside the paper's
number; and one ``dnet: error:`` line with a non-zero exit for each bad file."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from dnet.cli import main
from dnet.data.datasets import open_dataset
from tests.helpers.evaldata import BAD, IMAGES, LABELS, write_cifar_folder
from tests.helpers.images import write_images
from tests.helpers.models import digits_onnx, save_random, tiny_onnx
from tests.helpers.shared import shared_fixture


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dnet: error: ") and "Traceback" not in stderr, stderr
    return lines[0][len("dnet: error: "):]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits-trained tiny DenseNet's FP32 ONNX; its test images as an .npz and as class folders; training
    images as an .npy."""
    folder = tmp_path_factory.mktemp("sources")
    test, train = open_dataset("digits", split="test"), open_dataset("digits", split="train")
    np.savez(folder / "digits-test.npz", images=test.images, labels=test.labels)
    np.save(folder / "digits-train.npy", train.images[::3])
    for c in range(10):
        write_images(folder / "val" / f"digit{c}", test.images[test.labels == c])
    return digits_onnx(folder), folder


def drop_line(stdout: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("INT8 drop")]
    return line


def test_calib_and_val_from_array_files_measure_what_the_folders_measure(digits, tmp_path):
    fp32, d = digits
    common = ("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", d / "digits-train.npy", "-q")
    code, from_npz, err = run(*common, "-o", tmp_path / "a.int8.onnx", "--val", d / "digits-test.npz")
    assert code == 0, err
    code, from_folders, err = run(*common, "-o", tmp_path / "b.int8.onnx", "--val", d / "val")
    assert code == 0, err
    a, b = drop_line(from_npz), drop_line(from_folders)
    assert a.startswith("INT8 drop on 360 validation images (labels from digits-test.npz): ")
    assert a.split("): ")[1] == b.split("): ")[1]  # the same 360 images, the same tensors: the same accuracies
    assert b.startswith("INT8 drop on 360 validation images (labels from class subfolders): ")


def test_dataset_alone_calibrates_on_its_train_split_and_validates_on_its_test_split(digits, tmp_path):
    fp32, _ = digits
    code, stdout, err = run("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--dataset", "digits",
                            "-o", tmp_path / "d.int8.onnx", "--calib-count", 256, "-q")
    assert code == 0, err
    assert re.fullmatch(r"INT8 drop on 360 validation images \(labels from digits/test\): -?\d\.\d\d points, "
                        r"\d+\.\d\d% → \d+\.\d\d%; every layer INT8", drop_line(stdout)), stdout


def test_a_cifar_binary_folder_calibrates_and_its_labels_must_fit_the_model(tmp_path):
    fp32 = tiny_onnx(tmp_path)  # 5 classes, CIFAR preprocessing
    data = tmp_path / "data"
    write_cifar_folder(data / "cifar-10-batches-bin", IMAGES, LABELS % 5, "data_batch_1.bin")
    code, stdout, err = run("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", data,
                            "-o", tmp_path / "t.int8.onnx", "--int8-min-top1", 0, "--int8-min-cosine", 0, "--json")
    assert code == 0, err
    assert (tmp_path / "t.int8.onnx").is_file()
    write_cifar_folder(data / "cifar-10-batches-bin", IMAGES, LABELS, "test_batch.bin")
    code, _, err = run("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", data, "--val", data,
                       "-o", tmp_path / "u.int8.onnx", "-q")
    assert code != 0 and not (tmp_path / "u.int8.onnx").exists()
    assert one_error_line(err) == (f"validation images {data}: label 9 out of range for 5 classes")


def test_data_without_dataset_and_dataset_without_data_are_one_line(digits, tmp_path):
    fp32, d = digits
    base = ("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "-o", tmp_path / "x.int8.onnx")
    code, _, err = run(*base, "--data", d)
    assert code == 2 and one_error_line(err).startswith("--data names the folder of a data set: say which with "
                                                        "--dataset (cifar10|cifar100|svhn|imagenet|digits|folder)")
    code, _, err = run(*base, "--dataset", "cifar10")
    assert code == 2 and one_error_line(err) == "--dataset cifar10 needs --data DIR, the folder holding it (or --calib/--val)"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_calibration_array_is_one_error_line_and_writes_nothing(tmp_path, case):
    name, make, _ = BAD[case]
    fp32 = tiny_onnx(tmp_path)
    make(tmp_path / name)
    (tmp_path / "out").mkdir()
    code, _, err = run("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", tmp_path / name,
                       "-o", tmp_path / "out" / "t.int8.onnx")
    assert code == 1
    assert one_error_line(err).startswith(str(tmp_path / name))
    assert not list((tmp_path / "out").iterdir())


# --- dnet eval --data FILE.npz ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_zoo_model(tmp_path_factory):
    """A random-weight densenet-bc-l100-k12 (CIFAR-10), so recorded: the paper's number applies (a smaller network
    under that name would be taken as custom)."""
    from dnet.models import zoo

    return save_random(tmp_path_factory.mktemp("zoo") / "bc100.pth", 10, "cifar10", 32, "densenet-bc-l100-k12",
                       zoo.get("densenet-bc-l100-k12").config)


def test_eval_of_an_npz_says_how_much_of_the_published_test_set_it_holds(cifar_zoo_model, tmp_path):
    np.savez(tmp_path / "six.npz", images=IMAGES, labels=LABELS)
    write_cifar_folder(tmp_path / "cifar-10-batches-bin", IMAGES, LABELS)
    code, from_npz, err = run("eval", cifar_zoo_model, "--data", tmp_path / "six.npz", "-q", "--json")
    assert code == 0, err
    code, from_bin, err = run("eval", cifar_zoo_model, "--dataset", "cifar10", "--data", tmp_path, "-q",
                              "--json")
    assert code == 0, err
    drop_times = re.compile(r'"(seconds|throughput|engine_seconds|engine_throughput)": [^,]+,')
    assert drop_times.sub("", from_npz) == drop_times.sub("", from_bin)  # the same images: the same report
    code, stdout, err = run("eval", cifar_zoo_model, "--data", tmp_path / "six.npz", "-q")
    assert code == 0, err
    assert re.match(r"top-1 error \d+\.\d\d % \(published 4\.51, Δ [+-]\d+\.\d\d, 95% CI ±\d+\.\d\d\) · .* · "
                    r"6 of 10,000 images · ", stdout), stdout


def test_eval_of_the_real_cifar10_npz_counts_1000_of_10000(cifar_zoo_model):
    path = shared_fixture("real", "cifar10-test-first1000.npz")
    code, stdout, err = run("eval", cifar_zoo_model, "--data", path, "-q")
    assert code == 0, err
    assert " · 1,000 of 10,000 images · " in stdout.splitlines()[0]


def test_a_folder_eval_of_a_cifar_model_offers_the_spelling_with_the_papers_number(cifar_zoo_model, tmp_path):
    for c in range(10):
        write_images(tmp_path / f"class{c}", IMAGES[c % 6:c % 6 + 1])
    code, stdout, err = run("eval", cifar_zoo_model, "--dataset", "folder", "--data", tmp_path, "-q")
    assert code == 0, err
    lines = stdout.splitlines()
    assert "(no published number, 95% CI" in lines[0] and " · 10 images · " in lines[0]
    assert lines[-1] == ("  a folder is compared with no published number; --dataset cifar10 --data PATH compares "
                         "with the paper's (PATH: the binary distribution's folder, or an .npz of 'images' and 'labels')")


@pytest.mark.parametrize("case", ["wrong keys", "length mismatch", "pickle object array", "truncated npy"])
def test_eval_of_a_bad_npz_is_one_error_line(cifar_zoo_model, tmp_path, case):
    name, make, message = BAD[case]
    make(tmp_path / name)
    code, _, err = run("eval", cifar_zoo_model, "--data", tmp_path / name)
    assert code == 1 and one_error_line(err) == message.format(p=tmp_path / name)


def test_a_truncated_cifar_record_and_labels_out_of_range_are_one_error_line(cifar_zoo_model, tmp_path):
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-bin", IMAGES, LABELS)
    (folder / "test_batch.bin").write_bytes((folder / "test_batch.bin").read_bytes()[:-5])
    code, _, err = run("eval", cifar_zoo_model, "--data", tmp_path)
    assert code == 1 and one_error_line(err) == (f"{folder / 'test_batch.bin'}: 18,433 bytes is not a whole number of "
                                                 "3073-byte CIFAR records (is this the binary version of the right data "
                                                 "set?)")
    fp32 = tiny_onnx(tmp_path)
    code, _, err = run("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", tmp_path,
                       "-o", tmp_path / "t.int8.onnx")
    assert code == 1 and one_error_line(err).startswith(f"{folder / 'test_batch.bin'}: 18,433 bytes is not a whole")
    np.savez(tmp_path / "c100.npz", images=IMAGES, labels=LABELS * 10)
    code, _, err = run("eval", cifar_zoo_model, "--data", tmp_path / "c100.npz")
    assert code == 1 and one_error_line(err) == f"{tmp_path / 'c100.npz'} ('labels'): label 90 out of range for 10 classes"
    assert not (tmp_path / "t.int8.onnx").exists()
