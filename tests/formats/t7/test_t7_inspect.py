"""``dnet inspect``: the module tree of a .t7 file, and one-line errors for bad files."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dnet.cli import main
from dnet.formats.t7.writer import LuaFunction, dumps
from tests.helpers.shared import shared_fixture


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_tree_json_lists_modules_classes_and_shapes():
    r = run("inspect", "--json", shared_fixture("t7", "cifar10-densenet-bc-l40-k12-optmem4.t7"))
    assert r.exit_code == 0, r.output
    facts = json.loads(r.output)
    assert facts["parameters"] == 176_122 and facts["bytes"] == 2_317_794
    tree = facts["tree"]
    assert tree["class"] == "nn.Sequential" and len(tree["children"]) == 35
    stem, layer = tree["children"][0], tree["children"][1]
    assert stem["class"] == "cudnn.SpatialConvolution"
    assert stem["tensors"] == {"weight": {"type": "FloatTensor", "shape": [24, 3, 3, 3]}}
    assert stem["settings"]["kW"] == 3 and stem["settings"]["padW"] == 1
    assert layer["class"] == "nn.DenseConnectLayerCustom" and layer["path"] == "model.modules[2]"
    conv3 = layer["children"][1]["children"][3]
    assert conv3["path"] == "model.modules[2].modules[2].modules[4]"
    assert conv3["tensors"]["weight"]["shape"] == [12, 48, 3, 3]
    assert facts["densenet"]["config"]["block_config"] == [6, 6, 6] and facts["densenet"]["layer_kind"] == "custom"


def test_tree_table_and_summary_line():
    r = run("inspect", shared_fixture("t7", "cifar100-densenet-l40-k12-dropout.t7"))
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["module", "class", "tensors", "settings"]
    assert any("nn.Dropout" in line and "p=0.2" in line for line in lines)
    assert lines[-1] == (
        "DenseNet: blocks 12-12-12, k=12, θ=1.0, 24 initial channels, cifar stem, 100 classes, dropout 0.2, "
        "standard dense layers, 32×32 input; the Lua version of densenet-l40-k12"
    )


def test_non_densenet_is_shown_and_refused_with_check():
    path = shared_fixture("t7", "torchfile-tests", "gmodule_with_linear_identity.t7")
    r = run("inspect", path)
    assert r.exit_code == 0 and r.output.splitlines()[-1] == "not a DenseNet dnet can import: model: nn.gModule is not part of a DenseNet"
    r = run("inspect", "--check", path)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "dnet: error: gmodule_with_linear_identity.t7: model: nn.gModule is not part of a DenseNet"
    ]


def test_bad_files_exit_1_with_one_line(tmp_path):
    cases = {
        "png.t7": (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a Torch7 binary file"),
        "cut.t7": (shared_fixture("t7", "cifar10-densenet-bc-l40-k12.t7").read_bytes()[:5000], "corrupt or truncated Torch7 file at byte"),
        "fn.t7": (dumps({"f": LuaFunction()}), "refused: the Torch7 file holds a Lua function (type tag 8) at byte 21"),
    }
    for name, (data, text) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = run("inspect", tmp_path / name)
        assert r.exit_code == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"dnet: error: {name}: ") and text in lines[0], lines
    assert run("inspect", tmp_path / "absent.t7").exit_code == 1
