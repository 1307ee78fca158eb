"""The ``.pth`` reader: anything that is not a readable PyTorch file is one ``FileFormatError`` line,
code is refused without torch's advice to load it unsafely, and a checkpoint's configuration is checked against
the tensors it holds before any model is built."""

from __future__ import annotations

import io
import random
import zipfile

import pytest
import torch

from dnet.core.errors import DnetError, FileFormatError, UnsafeFileError
from dnet.formats.checkpoint import FORMAT, VERSION
from dnet.formats.loading import load
from tests.helpers.fuzz import mutate_pth
from tests.helpers.harness import Box
from tests.helpers.ports import PORTS, port_state_dict


def test_a_six_byte_text_file_is_not_a_pytorch_file(box: Box):
    path = box.work / "notes.pth"
    path.write_bytes(b"hello\n")
    box.freeze()
    out = box.cli("eval", path, "--dataset", "digits")
    assert out.error_line(1) == (f"{path}: not a PyTorch file (torch.save writes a zip archive or a pickle; this one "
                                 "starts with 68 65 6c 6c)")
    box.unchanged()


def test_random_bytes_are_diagnosed_as_such_without_unsafe_advice(box: Box):
    path = box.work / "junk.pth"
    path.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(300)))
    box.freeze()
    line = box.cli("eval", path, "--dataset", "digits").error_line(1)
    assert "not a PyTorch file" in line
    assert "pickled code" not in line and "weights_only" not in line and "arbitrary code" not in line
    box.unchanged()


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_asks_for_code_is_refused_naming_what_it_asked_for(box: Box, capfd):
    path = box.work / "evil.pth"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    box.freeze()
    line = box.cli("eval", path, "--dataset", "digits").error_line(1)
    assert line == (f"{path}: refused: the file asks to run code (GLOBAL print); dnet reads only tensors, "
                    "numbers, strings, lists and dicts, and never runs code from a file")
    assert "this must never run" not in capfd.readouterr().out
    box.unchanged()


def test_mutated_checkpoints_raise_the_projects_errors_only(models):
    seed = models["pth"].read_bytes()
    rng = random.Random(17)
    outcomes: dict[str, int] = {}
    path = models["pth"].parent / "mutated.pth"
    for _ in range(60):
        path.write_bytes(mutate_pth(seed, rng))
        try:
            load(path)
            kind = "loaded"
        except DnetError as e:
            assert "\n" not in str(e)
            kind = type(e).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
    path.unlink()
    assert sum(outcomes.values()) == 60 and outcomes.get("FileFormatError", 0) > 0, outcomes


def _checkpoint(config: dict, state_dict: dict, meta=None) -> dict:
    return {"format": FORMAT, "version": VERSION, "config": config, "state_dict": state_dict, "meta": meta}


def test_a_small_checkpoint_asking_for_a_large_model_is_refused_before_it_is_built(box: Box, models):
    small = torch.load(models["pth"], weights_only=True)
    # DenseNet-BC 6-12-64-48 with k=128: about 500M parameters (2 GB), asked for by a 35 kB file
    config = {**small["config"], "block_config": [6, 12, 64, 48], "growth_rate": 128, "init_features": 256}
    path = box.work / "big.pth"
    torch.save(_checkpoint(config, small["state_dict"], small["meta"]), path)
    box.freeze()
    out = box.run("eval", path, "--dataset", "digits", budget_mb=64)
    assert out.error_line(1) == (f"{path}: the configuration has 130 dense layers but the weights hold 5; the "
                                 "checkpoint does not match its configuration")
    assert out.added_rss < 64 << 20
    box.unchanged()


def test_a_configuration_that_cannot_be_built_is_one_line(box: Box, models):
    small = torch.load(models["pth"], weights_only=True)
    path = box.work / "odd.pth"
    torch.save(_checkpoint({**small["config"], "growth_rate": 1.5}, small["state_dict"]), path)
    with pytest.raises(FileFormatError, match=r"the configuration is not one dnet can build"):
        load(path)


@pytest.mark.parametrize("make", ["expand", "overlap"])
def test_tensors_repeating_their_storage_are_refused(box: Box, models, make):
    small = torch.load(models["pth"], weights_only=True)
    sd = dict(small["state_dict"])
    w = sd["classifier.weight"]
    if make == "expand":  # one float repeated over the whole weight (stride 0)
        sd["classifier.weight"] = torch.zeros(1).expand(*w.shape)
    else:  # weight and bias are views of the same bytes
        base = torch.zeros(w.numel())
        sd["classifier.weight"], sd["classifier.bias"] = base.view(w.shape), base[: w.shape[0]]
    path = box.work / f"{make}.pth"
    torch.save(_checkpoint(small["config"], sd, small["meta"]), path)
    message = (r"tensor classifier.weight of shape \[5, \d+\] repeats the \d+ bytes of its storage; refused" if make == "expand"
               else r"the tensors overlap in their storages")
    with pytest.raises(FileFormatError, match=message):
        load(path)


def test_a_compressed_zip_record_is_refused_before_torch_reads_it(box: Box, models):
    src = zipfile.ZipFile(models["pth"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
    path = box.work / "deflated.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(FileFormatError, match=r"is compressed \(torch\.save stores records uncompressed\)$"):
        load(path)


def test_a_torchscript_archive_is_refused_as_code(box: Box):
    path = box.work / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(UnsafeFileError, match="refused: a TorchScript archive holds code"):
        load(path)


def test_a_zip_record_needing_a_newer_zip_version_is_one_line(box: Box, models):
    # Found by the fuzz target (seed 1): Python's zipfile raises NotImplementedError("zip file version 25.5") for a
    # record whose "version needed to extract" it does not support; that is a damaged file, not a crash.
    data = bytearray(models["pth"].read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central-directory record: 'version needed' 6 bytes in
    data[at + 6:at + 8] = (255).to_bytes(2, "little")
    path = box.work / "newer.pth"
    path.write_bytes(bytes(data))
    box.freeze()
    assert box.cli("eval", path, "--dataset", "digits").error_line(1) == (
        f"{path}: not a readable PyTorch file (a damaged zip archive: zip file version 25.5)")
    box.unchanged()


def test_a_compression_too_small_to_keep_a_channel_is_refused_not_divided_by(box: Box, models):
    # Found by the fuzz target (seed 1): θ = 3.16e-322 passed 0 < θ ≤ 1, its transition kept ⌊16·θ⌋ = 0 channels and
    # the initialisation divided by zero (ZeroDivisionError) while building the model.
    small = torch.load(models["pth"], weights_only=True)
    path = box.work / "thin.pth"
    torch.save(_checkpoint({**small["config"], "compression": 3.16e-322}, small["state_dict"], small["meta"]), path)
    box.freeze()
    assert box.cli("eval", path, "--dataset", "digits").error_line(1) == (
        f"{path}: the checkpoint's configuration is not one dnet can build (compression: theta 3.16e-322 leaves "
        "transition 1 no channels (⌊16·θ⌋ = 0))")
    box.unchanged()


# --- Bad checkpoints of the kinds people have (any suffix): one line, a non-zero exit, the input untouched --------

def _veit_checkpoint(path, sd=None, legacy=False):
    sd = sd if sd is not None else port_state_dict(PORTS["andreasveit"], (2, 2, 2), 4, bottleneck=True, theta=0.5,
                                                   init=8)
    torch.save({"epoch": 3, "state_dict": sd, "best_prec1": torch.tensor(50.0)}, path,
               _use_new_zipfile_serialization=not legacy)
    return sd


def _refusals(box: Box, path) -> list[str]:
    """The one line of ``convert --from pth`` and of ``inspect --check`` on ``path`` (each exits 1)."""
    box.freeze()
    lines = [box.cli("convert", path, "--from", "pth", "--to", "onnx", "-o", box.work / "out.onnx").error_line(1),
             box.cli("inspect", path, "--check").error_line(1)]
    box.unchanged()
    return lines


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pickle"])
def test_a_truncated_checkpoint_is_one_line(box: Box, legacy):
    path = box.work / "model.pth.tar"
    _veit_checkpoint(path, legacy=legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    convert, inspect = _refusals(box, path)
    assert convert.startswith(f"{path}: not a readable PyTorch file (") and inspect.startswith(convert[:60])
    if not legacy:
        assert convert.startswith(f"{path}: not a readable PyTorch file (a damaged zip archive: ")


def test_a_state_dict_of_another_architecture_is_one_line_naming_the_nearest_layout(box: Box):
    resnet = {"conv1.weight": torch.zeros(8, 3, 3, 3), "bn1.weight": torch.ones(8),
              "layer1.0.conv1.weight": torch.zeros(8, 8, 3, 3), "fc.weight": torch.zeros(10, 8),
              "fc.bias": torch.zeros(10)}
    path = box.work / "resnet.ckpt"
    torch.save({"state_dict": resnet, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, path)
    for line in _refusals(box, path):
        assert line == ("resnet.ckpt: no DenseNet key layout dnet knows (a ResNet-style state dict (conv1, "
                        "layer1..4, fc)); the nearest is andreasveit (andreasveit/densenet-pytorch: 4 of 5 keys fit, "
                        "not 'layer1.0.conv1.weight'); for another port give --key-map FILE (rules from its keys to "
                        "torchvision's) and --concat-order new-first if it concatenates new features first")


def test_an_andreasveit_checkpoint_with_one_layer_missing_is_one_line(box: Box):
    path = box.work / "veit.pth.tar"
    sd = port_state_dict(PORTS["andreasveit"], (2, 2, 2), 4, bottleneck=True, theta=0.5, init=8)
    _veit_checkpoint(path, {k: v for k, v in sd.items() if not k.startswith("block3.layer.0.")})
    for line in _refusals(box, path):
        assert line == ("veit.pth.tar: dense layers of block 3 are not numbered 1..n (layer 1 of 2 is missing: the "
                        "next one is 'block3.layer.1.bn1.weight')")


def test_a_torchscript_file_renamed_pth_tar_is_refused_as_code(box: Box, capfd):
    path = box.work / "model.pth.tar"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    for line in _refusals(box, path):
        assert line == (f"{path}: refused: a TorchScript archive holds code, which dnet never runs; save the state "
                        "dict (model.state_dict()) instead")
