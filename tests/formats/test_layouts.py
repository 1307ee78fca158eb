"""Third-party DenseNet ports read as they are: each port's key layout and concatenation order, wrappers, any
suffix, key maps for other layouts, and the refusals of what no DenseNet dnet can express."""

from __future__ import annotations

import json

import pytest
import torch

import dnet
from dnet.core.errors import FileFormatError, UsageError
from dnet.models.densenet import DenseNetConfig
from tests.helpers.ports import PORTS, port_forward, port_state_dict

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
# (port, blocks, k, bottleneck, θ): both layer kinds, with and without bottleneck and compression
CASES = {
    "andreasveit-bc": ("andreasveit", (2, 3, 2), 6, True, 0.5),
    "andreasveit-basic": ("andreasveit", (3, 2, 2), 5, False, 1.0),
    "andreasveit-b": ("andreasveit", (2, 2, 2), 4, True, 1.0),
    "andreasveit-c": ("andreasveit", (2, 2, 3), 4, False, 0.5),
    "bamos-bc": ("bamos", (2, 2, 2), 6, True, 0.5),
    "bamos-basic": ("bamos", (2, 3, 2), 4, False, 1.0),
    "kuangliu-bc": ("kuangliu", (2, 3, 2, 2), 6, True, 0.5),
    "kuangliu-basic": ("kuangliu", (3, 2, 2), 4, False, 0.5),
}


def _case(name: str, seed: int = 0):
    port, blocks, k, bottleneck, theta = CASES[name]
    sd = port_state_dict(PORTS[port], blocks, k, bottleneck=bottleneck, theta=theta, init=2 * k, seed=seed)
    cfg = DenseNetConfig(blocks, k, bottleneck, theta, 2 * k, "cifar", 10)
    return PORTS[port], blocks, sd, cfg


def _dnet_output(model, port) -> torch.Tensor:
    with torch.no_grad():
        y = model(X)
    return torch.log_softmax(y, 1) if port.log_softmax else y


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_ports_state_dict_computes_what_the_port_computes(tmp_path, name):
    port, blocks, sd, cfg = _case(name)
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"epoch": 300, "state_dict": sd, "best_prec1": torch.tensor(95.32)}, path)
    model = dnet.load(path)
    assert model.config == cfg
    assert model.meta.extra["key_layout"] == port.name
    with torch.no_grad():
        ref = port_forward(port, sd, X, blocks)
    assert float((_dnet_output(model, port) - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_kuangliu_read_in_the_input_first_order_computes_something_else(tmp_path):
    port, blocks, sd, _ = _case("kuangliu-bc")
    path = tmp_path / "kuangliu.pth"
    torch.save(sd, path)
    wrong = dnet.load(path, concat_order="input-first")  # what a reader ignoring the order would load: no error
    with torch.no_grad():
        ref = port_forward(port, sd, X, blocks)
        assert float((wrong(X) - ref).abs().max()) > 0.1 * float(ref.abs().max())
        # and the port's forward with the other order is what that model computes: the permutation is the difference
        assert float((wrong(X) - port_forward(port, sd, X, blocks, new_first=False)).abs().max()) <= 1e-4


@pytest.mark.parametrize("suffix", [".pth.tar", ".pkl", ".ckpt", ".bin", ""])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pickle"])
def test_any_suffix_is_read_from_its_bytes_zip_or_legacy_pickle(tmp_path, suffix, legacy):
    port, blocks, sd, cfg = _case("andreasveit-bc")
    path = tmp_path / f"model{suffix}"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path, _use_new_zipfile_serialization=not legacy)
    assert path.read_bytes()[:2] == (b"\x80\x02" if legacy else b"PK")
    model = dnet.load(path)
    assert model.config == cfg
    with torch.no_grad():
        assert float((model(X) - port_forward(port, sd, X, blocks)).abs().max()) <= 1e-4


def test_a_key_map_and_new_first_order_read_an_unlisted_port(tmp_path):
    port, blocks, sd, cfg = _case("kuangliu-bc", seed=5)
    renamed = {k.replace("dense", "stage").replace("linear", "head.fc"): v for k, v in sd.items()}
    rules = [[r"conv1\.(weight)", r"features.conv0.\1"],
             [r"stage(\d+)\.(\d+)\.bn(\d)\.(.+)", r"features.denseblock\1.denselayer\2.norm\3.\4"],
             [r"stage(\d+)\.(\d+)\.conv(\d)\.(.+)", r"features.denseblock\1.denselayer\2.conv\3.\4"],
             [r"trans(\d+)\.bn\.(.+)", r"features.transition\1.norm.\2"],
             [r"trans(\d+)\.conv\.(.+)", r"features.transition\1.conv.\2"],
             [r"bn\.(.+)", r"features.norm5.\1"], [r"head\.fc\.(.+)", r"classifier.\1"]]
    key_map = tmp_path / "map.json"
    key_map.write_text(json.dumps(rules))
    path = tmp_path / "other.ckpt"
    torch.save({"model_state_dict": renamed}, path)
    with pytest.raises(FileFormatError, match=r"no DenseNet key layout dnet knows .*--key-map FILE"):
        dnet.load(path)
    model = dnet.load(path, key_map=key_map, concat_order="new-first")
    assert model.config == cfg
    with torch.no_grad():
        assert float((model(X) - port_forward(port, sd, X, blocks)).abs().max()) <= 1e-4


@pytest.mark.parametrize("text,message", [
    ("{", r"map\.json: not a JSON key map \(Expecting property name"),
    ('{"a": "b"}', r"map\.json: a key map is a JSON list of 1 to 1000 \[pattern, replacement\] pairs"),
    ('[["a", 1]]', r"map\.json: rule 1 is not a \[pattern, replacement\] pair of strings"),
    ('[["(a", "b"]]', r"map\.json: rule 1: '\(a' is not a regular expression \(missing \), unterminated subpattern"),
])
def test_a_bad_key_map_is_one_line(tmp_path, text, message):
    key_map = tmp_path / "map.json"
    key_map.write_text(text)
    path = tmp_path / "m.pth"
    torch.save(_case("andreasveit-bc")[2], path)
    with pytest.raises(UsageError, match=message):
        dnet.load(path, key_map=key_map)


def test_an_extra_bn_after_the_stem_is_refused_naming_it(tmp_path):
    _, _, sd, _ = _case("andreasveit-bc")
    sd = {"conv1.weight": sd.pop("conv1.weight"), "bn0.weight": torch.ones(12), **sd}
    with pytest.raises(FileFormatError) as e:
        dnet.formats.statedict.model_from_state_dict(sd, "x.pth")
    assert str(e.value) == ("x.pth: 'bn0.weight' does not fit the andreasveit layout (andreasveit/densenet-pytorch): "
                            "no DenseNet dnet can express has that tensor; refused")


def test_a_third_party_head_is_refused_naming_its_first_key():
    _, _, sd, _ = _case("andreasveit-bc")
    sd["fc.1.weight"] = sd.pop("fc.weight")
    with pytest.raises(FileFormatError, match=r"^x\.pth: 'fc\.1\.weight' does not fit the andreasveit layout"):
        dnet.formats.statedict.model_from_state_dict(sd, "x.pth")
    tv = dnet.create_model("densenet-bc-l100-k12").state_dict()
    tv["classifier.0.weight"], tv["classifier.2.weight"] = tv.pop("classifier.weight"), torch.zeros(10, 10)
    with pytest.raises(FileFormatError) as e:
        dnet.formats.statedict.model_from_state_dict(tv, "tv.pth")
    assert str(e.value) == ("tv.pth: no 'classifier.weight'; not a torchvision-style DenseNet state dict; "
                            "'classifier.0.weight' fits no DenseNet dnet can express")


def test_a_missing_layer_is_named_in_the_files_own_keys():
    _, _, sd, _ = _case("andreasveit-bc")
    sd = {k: v for k, v in sd.items() if not k.startswith("block2.layer.1.")}
    with pytest.raises(FileFormatError) as e:
        dnet.formats.statedict.model_from_state_dict(sd, "x.pth")
    assert str(e.value) == ("x.pth: dense layers of block 2 are not numbered 1..n (layer 2 of 3 is missing: the next "
                            "one is 'block2.layer.2.bn1.weight')")


def test_a_missing_tensor_is_named():
    _, _, sd, _ = _case("bamos-bc")
    del sd["dense1.1.bn2.running_var"]
    with pytest.raises(FileFormatError) as e:
        dnet.formats.statedict.model_from_state_dict(sd, "x.pth")
    assert str(e.value) == ("x.pth: keys do not match the DenseNet its shapes describe (missing "
                            "'features.denseblock1.denselayer2.norm2.running_var'; 1 missing, 0 unexpected)")


def _cli(*args):
    from click.testing import CliRunner

    from dnet.cli.main import main
    return CliRunner().invoke(main, [str(a) for a in args])


def test_convert_takes_a_key_map_and_the_concatenation_order(tmp_path):
    port, blocks, sd, cfg = _case("kuangliu-basic", seed=2)
    renamed = {k.replace("trans", "down"): v for k, v in sd.items()}
    rules = [[r"conv1\.weight", "features.conv0.weight"],
             [r"dense(\d+)\.(\d+)\.bn1\.(.+)", r"features.denseblock\1.denselayer\2.norm1.\3"],
             [r"dense(\d+)\.(\d+)\.conv1\.(.+)", r"features.denseblock\1.denselayer\2.conv1.\3"],
             [r"down(\d+)\.bn\.(.+)", r"features.transition\1.norm.\2"],
             [r"down(\d+)\.conv\.(.+)", r"features.transition\1.conv.\2"],
             [r"bn\.(.+)", r"features.norm5.\1"], [r"linear\.(.+)", r"classifier.\1"]]
    key_map = tmp_path / "map.json"
    key_map.write_text(json.dumps(rules))
    src = tmp_path / "renamed.bin"
    torch.save({"net": 1, "state_dict": renamed, "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}},
                                                             "param_groups": [{"lr": 0.1, "params": [0]}]}}, src)
    out = tmp_path / "converted.pth"
    r = _cli("convert", src, "--from", "pth", "--key-map", key_map, "--concat-order", "new-first", "--to", "pth",
             "-o", out, "--quiet")
    assert r.exit_code == 0, r.output
    model = dnet.load(out)
    assert model.config == cfg
    with torch.no_grad():
        assert float((model(X) - port_forward(port, sd, X, blocks)).abs().max()) <= 1e-4
    r = _cli("inspect", src, "--key-map", key_map, "--concat-order", "new-first", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["optimizer"] == {"key": "optimizer", "parameters_with_state": 1, "param_groups": 1,
                                 "settings": {"lr": 0.1}}
    assert info["extra"] == {"net": 1} and info["key_layout"]["concat_order"] == "new-first"
    assert info["densenet"]["name"] == "DenseNet-C L=11 k=4" and info["densenet"]["zoo"] is None
    r = _cli("inspect", src, "--key-map", key_map, "--concat-order", "new-first")
    assert r.exit_code == 0, r.output
    assert "optimizer  'optimizer': state of 1 parameters, 1 parameter group\n" in r.output
    assert r.output.splitlines()[-1].startswith("DenseNet-C L=11 k=4: blocks 3-2-2, θ=0.5, 8 initial channels")
    (tmp_path / "m.t7").write_bytes(b"\0" * 8)
    r = _cli("convert", tmp_path / "m.t7", "--from", "t7", "--key-map", key_map, "--to", "onnx", "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "a key map and a concatenation order are for pth sources" in r.output
