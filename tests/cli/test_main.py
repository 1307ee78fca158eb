import importlib
import json
import re
import subprocess
import sys

import click
from click.testing import CliRunner

from dnet import __version__, zoo
from dnet.cli import main
from dnet.cli.main import VERBS

EXPECTED_NAMES = [
    "densenet-l40-k12", "densenet-l100-k12", "densenet-l100-k24", "densenet-bc-l100-k12", "densenet-bc-l250-k24",
    "densenet-bc-l190-k40", "wide-densenet-bc-l40-k36", "wide-densenet-bc-l40-k48", "wide-densenet-bc-l40-k60",
    "densenet121", "densenet169", "densenet201", "densenet161", "densenet264", "densenet232",
    "densenet-cosine264-k32", "densenet-cosine264-k48", "densenetblur121d", "densenet264d",
]


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_models_json_holds_every_name():
    r = run("models", "--json")
    assert r.exit_code == 0
    facts = json.loads(r.output)
    assert [f["name"] for f in facts] == EXPECTED_NAMES == zoo.names()
    by_name = {f["name"]: f for f in facts}
    assert by_name["densenet121"]["params"] == 7_978_856
    c10 = [p for p in by_name["densenet-bc-l100-k12"]["published"] if p["kind"] == "C10+ top-1"]
    assert [(p["error"], p["source"], p["dataset"], p["augmented"]) for p in c10] == [(4.51, "CVPR17-T2", "cifar10", True)]
    tv = [p for p in by_name["densenet121"]["published"] if p["preprocess"] == "torchvision"]
    assert [(p["error"], p["metric"], p["source"]) for p in tv] == [(25.566, "top1", "TV"), (8.028, "top5", "TV")]
    d232 = by_name["densenet232"]
    assert (d232["block_config"], d232["init_features"], d232["params"], d232["convolutions"]) == (
        [6, 12, 48, 48], 96, 55_570_984, 232)
    assert [p["source"] for p in d232["config_source"]] == ["T7-DEFS"]
    assert not any("not confirmed" in f["note"] for f in facts)
    cosine = [(p["error"], p["source"], p["citation"].split(",")[0]) for p in by_name["densenet-cosine264-k48"]["published"]]
    assert cosine == [(20.4, "REPO-TR", "liuzhuang13/DenseNet README"), (20.26, "MEM-ABS", "Pleiss et al.")]
    ten_crop = {(p["metric"], p["error"]) for p in by_name["densenet121"]["published"] if p["crops"] == 10}
    assert ten_crop == {("top1", 23.61), ("top5", 6.66)}


def test_models_table_has_a_row_per_entry():
    r = run("models")
    assert r.exit_code == 0
    assert sum(1 for line in r.output.splitlines() if line.split() and line.split()[0] in EXPECTED_NAMES) == len(EXPECTED_NAMES)


def test_info_densenet121():
    r = run("info", "densenet121")
    assert r.exit_code == 0
    assert "7,978,856" in r.output and "2.87 G at 224×224" in r.output


def test_info_json():
    r = run("info", "densenet-bc-l100-k12", "--json")
    d = json.loads(r.output)
    assert d["params"] == 769_162 and [b["out_channels"] for b in d["blocks"]] == [216, 300, 342]


def test_unknown_model_is_one_line_exit_2():
    r = run("info", "densenet12")
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["dnet: error: unknown model 'densenet12'; closest: densenet121, densenet264, densenet232"]


def test_help_lists_only_working_verbs():
    r = run("--help")
    listed = {line.split()[0] for line in r.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(VERBS) == {"models", "info", "inspect", "train", "convert", "eval", "compare", "demo", "bench", "pull",
                                    "deploy", "serve"}


def test_help_lists_every_verb_with_its_line_without_importing_any_verb():
    code = ("import sys; from click.testing import CliRunner; from dnet.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.output); "
            "print(sorted(m for m in sys.modules if m.startswith('dnet.cli.') and m not in "
            "('dnet.cli.main', 'dnet.cli.options')), sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    *text, imported = out.rstrip().splitlines()
    assert imported == "[] []"
    for verb, (_, line) in VERBS.items():
        assert re.search(rf"^  {verb} +{re.escape(line)}$", "\n".join(text), re.M), verb


def test_each_verbs_line_names_a_command_that_imports():
    for verb, (target, line) in VERBS.items():
        module, attr = target.split(":")
        assert isinstance(getattr(importlib.import_module(module), attr), click.Command), verb
        assert line.endswith(".") and len(line) <= 66  # one line in an 80-column terminal
