"""The Torch7 reader: strides of every dimension, overlapping parameter views bounded by what the
file holds, a corrupt 2 GB file that fails at its start without being read, pipes and FIFOs, non-UTF-8 strings."""

from __future__ import annotations

import os
import struct
import subprocess
import time

import numpy as np
import pytest

from dnet.formats.t7 import reader
from dnet.formats.t7.reader import Table, TorchObject
from dnet.formats.t7.writer import LuaStyle, T7Storage, T7Tensor, dumps, lua_densenet
from dnet.models.densenet import DenseNet, DenseNetConfig
from tests.helpers.harness import Box


def test_a_size_one_dimension_with_a_huge_stride_reads_as_torch_reads_it():
    storage = T7Storage("torch.FloatStorage", np.arange(3, dtype=np.float32))
    t = T7Tensor("torch.FloatTensor", (1, 3), (2**62, 1), 1, storage)  # 2**62 floats: 2**64 bytes, past int64
    got = reader.loads(dumps(t))
    assert got.shape == (1, 3) and got.tolist() == [[0.0, 1.0, 2.0]]


def test_a_stride_past_its_storage_is_one_error_naming_the_byte():
    storage = T7Storage("torch.FloatStorage", np.arange(3, dtype=np.float32))
    data = dumps(T7Tensor("torch.FloatTensor", (2, 3), (2**60, 1), 1, storage))
    with pytest.raises(reader.FileFormatError, match=r"^corrupt or truncated Torch7 file at byte \d+: torch\.FloatTensor "
                                                     r"of size \[2, 3\], stride \[1152921504606846976, 1\]"):
        reader.loads(data)


class _Overlapping:
    """getParameters() replaced by views that all start at the first element of one storage."""

    def __init__(self, monkeypatch, size: int) -> None:
        from dnet.formats.t7 import writer

        shared = T7Storage("torch.FloatStorage", np.full(size, 0.01, np.float32))

        def add(params, a):
            strides = tuple(int(np.prod(a.shape[i + 1:])) for i in range(len(a.shape)))
            return T7Tensor("torch.FloatTensor", a.shape, strides, 1, shared), writer.empty()

        monkeypatch.setattr(writer._Params, "add", add)
        monkeypatch.setattr(writer._Params, "finish", lambda params: None)


class _Shapes:
    """A model stand-in for lua_densenet: the configuration and weights of zero bytes (broadcast), nothing allocated."""

    def __init__(self, cfg: DenseNetConfig) -> None:
        import torch

        self.config = cfg
        with torch.device("meta"):
            self.shapes = {k: tuple(v.shape) for k, v in DenseNet(cfg).state_dict().items()}

    def state_dict(self):
        class Lazy:
            def __init__(self, shape):
                self.shape = shape

            def detach(self):
                return self

            def cpu(self):
                return self

            def numpy(self):
                return np.broadcast_to(np.float32(0.5), self.shape)

        return {k: Lazy(s) for k, s in self.shapes.items()}


# One block of 120 basic layers, k=16: 16.6M parameters (66 MB as float32), the largest tensor 16×1936×3×3.
BIG = DenseNetConfig(block_config=(120,), growth_rate=16, bottleneck=False, compression=1.0, init_features=32,
                     stem="cifar", num_classes=10)


def overlapping_t7(monkeypatch, cfg: DenseNetConfig = BIG) -> bytes:
    shapes = _Shapes(cfg)
    biggest = max(int(np.prod(s)) for s in shapes.shapes.values())
    with monkeypatch.context() as mp:
        _Overlapping(mp, biggest)
        return dumps(lua_densenet(shapes, LuaStyle(prefix="nn", with_grads=False)))


def test_overlapping_parameter_views_are_refused_within_a_memory_bound(box: Box, monkeypatch):
    data = overlapping_t7(monkeypatch)
    path = box.work / "amplified.t7"
    path.write_bytes(data)
    assert len(data) < 3 << 20  # 2.5 MB that would become a 66 MB model (and as much again in copies)
    box.freeze()
    out = box.run("eval", path, "--dataset", "digits", budget_mb=48)
    line = out.error_line(1)
    assert line.startswith("amplified.t7: model.modules[2].modules[1].modules[2].modules[1].weight shares bytes of the "
                           "file with model.modules[1].weight; tensors of a model never overlap"), line
    assert out.added_rss < 48 << 20
    box.unchanged()


def test_a_corrupt_2gb_file_fails_at_its_first_bytes_without_being_read(box: Box):
    path = box.work / "huge.t7"
    with open(path, "wb") as f:  # tag 4 (a torch object), index 1, a class name said to be 2 GB long; then holes
        f.write(struct.pack("<iii", 4, 1, 2**31 - 1))
        f.truncate(2 << 30)
    box.freeze()
    start = time.monotonic()
    out = box.run("inspect", path, budget_mb=None)
    assert out.error_line(1) == "huge.t7: corrupt or truncated Torch7 file at byte 8: a name of 2147483647 bytes (at most 4096 accepted)"
    assert out.added_rss < 64 << 20, out.added_rss  # read whole, it was 2 GB
    assert time.monotonic() - start < 120
    box.unchanged()


def test_a_fifo_is_refused_at_once_not_waited_on(box: Box):
    fifo = box.work / "model.t7"
    os.mkfifo(fifo)
    box.freeze()
    out = box.run("inspect", fifo, timeout=120)  # reading it would wait for a writer forever
    assert out.error_line(1) == (f"{fifo}: is a FIFO, not a regular file; save the Torch7 file to a file first "
                                 "(dnet reads only regular files)")
    box.unchanged()


def test_a_pipe_on_stdin_is_refused_not_read_as_an_empty_file(box: Box):
    data = dumps(lua_densenet(_tiny(), LuaStyle()))
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        out = box.run("inspect", "/dev/stdin", stdin=p.stdout, timeout=120)
    finally:
        p.stdin.write(data[:1000])
        p.stdin.close()
        p.wait()
    assert "is a FIFO, not a regular file" in out.error_line(1)


def _tiny():
    import torch

    torch.manual_seed(0)
    return DenseNet(DenseNetConfig((2, 2), 4, True, 0.5, 8, "cifar", 10)).eval()


def test_non_utf8_strings_print_escaped_on_a_strict_utf8_terminal(box: Box):
    odd = TorchObject(b"nn.\xff\xfeOdd", Table({}), 1)  # a class name whose bytes are not UTF-8
    path = box.work / "odd.t7"
    path.write_bytes(dumps(TorchObject("nn.Sequential", Table({"modules": Table({1: odd})}), 1)))
    box.freeze()
    out = box.run("inspect", path, env={"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"})
    assert out.code == 0, out.stderr
    assert "nn.\\xff\\xfeOdd" in out.stdout and "Traceback" not in out.stderr
    box.unchanged()
