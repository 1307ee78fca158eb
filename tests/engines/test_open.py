import numpy as np
import pytest
import torch

from dnet import engines
from dnet.core.errors import FileFormatError, UsageError
from dnet.formats.checkpoint import save_checkpoint
from dnet.models import DenseNetConfig, build_model

TINY = DenseNetConfig(block_config=(2, 2), growth_rate=4, init_features=8, num_classes=3)


def test_torch_engine_runs_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    path = save_checkpoint(tmp_path / "tiny.pth", model)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with engines.open(path) as eng:
        assert eng.kind == "torch" and eng.input_shape == (-1, 3, 32, 32)
        y = eng(x)
    assert y.dtype == np.float32 and y.shape == (2, 3)
    np.testing.assert_allclose(y, model(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["tiny.pth.tar", "tiny.ckpt", "tiny"])
def test_a_pytorch_file_of_any_suffix_opens_in_the_torch_engine(tmp_path, name):
    model = build_model(TINY).eval()
    path = save_checkpoint(tmp_path / name, model)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with engines.open(path) as eng:
        assert eng.kind == "torch"
        np.testing.assert_allclose(eng(x), model(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_open_refuses_unknown_kind_missing_file_and_bad_provider(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(FileFormatError, match=r"unknown model file kind '\.bin'"):
        engines.open(tmp_path / "m.bin")
    with pytest.raises(FileFormatError, match="no such file"):
        engines.open(tmp_path / "absent.onnx")
    path = save_checkpoint(tmp_path / "tiny.pth", build_model(TINY))
    with pytest.raises(UsageError, match="provider 'tpu'"):
        engines.open(path, provider="tpu")


def test_engine_refuses_wrong_shape(tmp_path):
    path = save_checkpoint(tmp_path / "tiny.pth", build_model(TINY))
    with engines.open(path) as eng, pytest.raises(Exception, match="expects 32×32 inputs"):
        eng(np.zeros((1, 3, 16, 16), np.float32))
