"""A real trained DenseNet-BC (L=100, k=12) from Andreas Veit's port, read as it is, and the paper's CIFAR-10 number
reproduced from it on 1,000 real test images (../shared/fixtures/real, see its README)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dnet
from dnet.cli.main import main
from dnet.core.artifact.onnxfile import read_meta, read_model
from dnet.core.atomic import sha256_file
from dnet.models.densenet import DenseNetConfig
from tests.helpers.ports import PORTS, port_forward
from tests.helpers.shared import shared_fixture

CHECKPOINT = "densenet-bc-l100-k12-cifar10.andreasveit.pth.tar"
IMAGES = "cifar10-test-first1000.npz"
PAPER_ERROR = 4.51  # Huang et al., CVPR 2017, Table 2: DenseNet-BC (L=100, k=12), C10+
# The README's constants: the Lua CIFAR loaders' per-channel mean and std on the 0-255 scale
MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


@pytest.fixture(scope="module")
def real():
    path = shared_fixture("real", CHECKPOINT)
    return path, sha256_file(path)


def _dnet(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_the_real_checkpoint_loads_as_densenet_bc_l100_k12_and_is_not_modified(real):
    path, digest = real
    model = dnet.load(path)
    assert model.config == DenseNetConfig((16, 16, 16), 12, True, 0.5, 24, "cifar", 10)
    assert sum(p.numel() for p in model.parameters()) == 769_162
    assert (model.meta.model, model.meta.preprocess.name) == ("densenet-bc-l100-k12", "cifar10")
    assert (model.meta.preprocess.mean, model.meta.preprocess.std) == (MEAN, STD)
    assert sha256_file(path) == digest


def test_inspect_names_what_the_real_checkpoint_holds(real):
    path, digest = real
    code, out = _dnet("inspect", path, "--json")
    assert code == 0, out
    info = json.loads(out)
    assert (info["container"], info["wrapper_keys"], info["state_dict_under"]) == \
        ("zip", ["epoch", "state_dict", "best_prec1"], "state_dict")
    assert info["extra"] == {"epoch": 300, "best_prec1": 95.32} and info["optimizer"] is None
    assert info["key_layout"] == {"name": "andreasveit", "from": "andreasveit/densenet-pytorch",
                                  "concat_order": "input-first"}
    assert info["tensors"] == 596 and info["sha256"] == digest
    dn = info["densenet"]
    assert (dn["name"], dn["parameters"], dn["zoo"], dn["preprocess"]) == \
        ("DenseNet-BC L=100 k=12", 769_162, "densenet-bc-l100-k12", "cifar10")
    code, out = _dnet("inspect", path)
    assert code == 0, out
    assert out.splitlines()[-1] == ("DenseNet-BC L=100 k=12: blocks 16-16-16, θ=0.5, 24 initial channels, cifar stem, "
                                    "10 classes; 769,162 parameters; zoo name densenet-bc-l100-k12; cifar10 "
                                    "preprocessing")
    assert "extra      epoch 300, best_prec1 95.32" in out
    assert sha256_file(path) == digest


def _write_cifar_binary(images: np.ndarray, labels: np.ndarray, root) -> None:
    """The CIFAR-10 binary distribution's layout: one label byte, then 1024 R, 1024 G, 1024 B bytes per image."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    (folder / "test_batch.bin").write_bytes(np.concatenate([labels.astype(np.uint8)[:, None], planes], 1).tobytes())


def _independent_errors(path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Andreas Veit's forward pass (tests.helpers.ports) on the checkpoint's own tensors: which images it gets wrong."""
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = torch.cat([port_forward(PORTS["andreasveit"], sd, b, (16, 16, 16)).argmax(1) for b in x.split(250)])
    return pred.numpy() != labels


def _predictions(path) -> np.ndarray:
    with open(path, newline="") as f:
        return np.array([int(r["prediction"]) for r in csv.DictReader(f)])


@pytest.mark.slow
def test_the_papers_cifar10_error_from_the_real_checkpoint(real, tmp_path):
    path, digest = real
    data = np.load(shared_fixture("real", IMAGES))
    images, labels = data["images"], data["labels"]
    _write_cifar_binary(images, labels, tmp_path / "cifar")
    fp16 = tmp_path / "densenet-bc-l100-k12.fp16.onnx"
    code, out = _dnet("convert", path, "--from", "pth", "--to", "onnx", "--precision", "fp16", "-o", fp16, "--quiet")
    assert code == 0, out
    meta = read_meta(read_model(tmp_path / "densenet-bc-l100-k12.onnx"))  # what eval feeds it, from the file alone
    assert (meta.model, meta.num_classes, meta.input_size, meta.preprocess.name) == ("densenet-bc-l100-k12", 10, 32,
                                                                                     "cifar10")
    assert (meta.preprocess.mean, meta.preprocess.std, meta.preprocess.pixel_scale) == (MEAN, STD, 255.0)
    assert (meta.source, meta.source_sha256) == (CHECKPOINT, digest)
    reports = {}
    for precision, onnx in (("fp32", tmp_path / "densenet-bc-l100-k12.onnx"), ("fp16", fp16)):
        code, out = _dnet("eval", onnx, "--dataset", "cifar10", "--data", tmp_path / "cifar", "--json",
                          "--quiet", "--predictions", tmp_path / f"{precision}.csv")
        assert code == 0, out
        reports[precision] = json.loads(out)
    fp32 = reports["fp32"]
    assert (fp32["model"], fp32["preprocess"], fp32["images"]) == ("densenet-bc-l100-k12", "cifar10", 1000)
    top1 = fp32["comparisons"][0]
    assert (top1["published"], top1["source"]) == (PAPER_ERROR, "CVPR17-T2")
    # the paper's number within the run's own 95% confidence interval
    assert abs(fp32["top1_error"] - PAPER_ERROR) <= fp32["top1_ci95"], fp32
    # dnet's count equals an independent forward pass of the same tensors, to within one image
    wrong = _independent_errors(path, images, labels)
    assert abs((1000 - fp32["top1_correct"]) - int(wrong.sum())) <= 1
    assert (_predictions(tmp_path / "fp32.csv") != labels).sum() == 1000 - fp32["top1_correct"]
    # FP16 on the same images: top-1 agreement with FP32 at least 99 %, at most 0.5 points lost
    agreement = float((_predictions(tmp_path / "fp16.csv") == _predictions(tmp_path / "fp32.csv")).mean())
    assert agreement >= 0.99
    assert reports["fp16"]["top1_error"] - fp32["top1_error"] <= 0.5
    assert sha256_file(path) == digest


def test_the_independent_forward_pass_is_the_ports(real):
    """The reference the slow test compares with: the port's forward on a few images equals dnet's logits."""
    path, _ = real
    images = np.load(shared_fixture("real", IMAGES))["images"][:8]
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = port_forward(PORTS["andreasveit"], sd, x, (16, 16, 16))
        got = dnet.load(path)(x)
    assert float(F.l1_loss(got, ref)) <= 1e-4 and torch.equal(got.argmax(1), ref.argmax(1))
