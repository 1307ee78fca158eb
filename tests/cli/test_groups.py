"""One word per concept on the command line: options in titled sections, the model file positional, the deprecated
spellings still read for one release (each with one warning line), choices and defaults taken from the library."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from dnet.cli import main
from dnet.cli.groups import GENERAL, Verb
from dnet.cli.main import VERBS
from tests.helpers.models import (
    digits_model_fixture,  # noqa: F401 (fixture)
    fast_export,
    tiny_checkpoint,
)


def command(verb: str) -> click.Command:
    words = verb.split()
    cmd = main.get_command(click.Context(main), words[0])
    return cmd.commands[words[1]] if len(words) > 1 else cmd


ALL = [v for v in VERBS if v != "deploy"] + ["deploy triton"]


def invoke(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def sections(verb: str) -> dict[str, list[str]]:
    """Section title -> the long flags its rows start with, read from ``dnet VERB --help``."""
    code, out, err = invoke(*verb.split(), "--help")
    assert code == 0, err
    found, title = {}, None
    for line in out.split("\n\n", 2)[-1].splitlines():  # after the usage line and the docstring
        if re.fullmatch(r"\S.*:", line):
            title = line[:-1]
            assert title not in found, f"{title} twice"
            found[title] = []
        elif title is not None and re.match(r"  -", line):
            flags = re.findall(r"--[a-z0-9-]+", line.split("  ")[1])
            found[title].append(flags[0])
    return found


def test_convert_help_shows_its_sections_in_order():
    assert list(sections("convert")) == ["Source and output", "Calibration (INT8)", "INT8", "Accuracy control (INT8)",
                                         "FP16 check", "Export", "TensorRT build (--to trt)", GENERAL]
    assert sections("convert")["FP16 check"] == ["--fp16-check", "--fp16-tolerance"]
    assert sections("convert")[GENERAL] == ["--json", "--quiet", "--help"]


def test_train_help_shows_its_sections():
    assert list(sections("train")) == ["Data", "Model", "Optimisation", "Checkpoints", GENERAL]
    assert sections("train")["Checkpoints"] == ["--output", "--resume"]


@pytest.mark.parametrize("verb", ALL)
def test_every_option_of_every_verb_is_in_exactly_one_section(verb):
    cmd = command(verb)
    assert isinstance(cmd, Verb)
    listed = [flag for flags in sections(verb).values() for flag in flags]
    own = [next(o for o in p.opts if o.startswith("--")) for p in cmd.get_params(click.Context(cmd))
           if isinstance(p, click.Option) and not p.hidden]
    assert sorted(listed) == sorted(own) and len(listed) == len(set(listed))
    assert len(sections(verb)) == 1 or len(own) > 8  # a verb with a few options lists them under one title


def test_a_section_naming_no_option_is_the_programmers_mistake():
    with pytest.raises(TypeError, match=r"^x: sections name unknown or repeated flags: \['--nope'\]$"):
        Verb("x", params=[click.Option(["--yes"])], sections=(("A", ("--yes", "--nope")),))


def test_every_verb_takes_its_model_file_positionally():
    for verb in ("convert", "eval", "bench", "compare", "inspect", "serve", "deploy triton"):
        arguments = [p for p in command(verb).params if isinstance(p, click.Argument)]
        assert arguments and arguments[0].required, verb
    assert command("bench").params[0].nargs == -1


# (verb, deprecated spelling, new spelling, the warning): each pair parses to the same values
DEPRECATED = [
    ("eval", ["--engine", "m.onnx"], ["m.onnx"],
     "--engine is deprecated; pass the model file as the first argument: dnet eval FILE"),
    ("eval", ["--engine=m.onnx"], ["m.onnx"],
     "--engine is deprecated; pass the model file as the first argument: dnet eval FILE"),
    ("eval", ["m.onnx", "--batch", "8"], ["m.onnx", "--batch-size", "8"], "--batch is deprecated; use --batch-size"),
    ("eval", ["m.onnx", "--limit", "50"], ["m.onnx", "--count", "50"], "--limit is deprecated; use --count"),
    ("bench", ["--engine", "a.onnx", "--engine", "b.plan"], ["a.onnx", "b.plan"],
     "--engine is deprecated; pass the model files as the arguments: dnet bench FILE..."),
    ("bench", ["a.onnx", "--batch", "1,4"], ["a.onnx", "--batch-sizes", "1,4"],
     "--batch is deprecated; use --batch-sizes"),
    ("train", ["--batch", "16"], ["--batch-size", "16"], "--batch is deprecated; use --batch-size"),
    ("train", ["--out", "run"], ["-o", "run"], "--out is deprecated; use --output"),
    ("demo", ["--out=run"], ["--output", "run"], "--out is deprecated; use --output"),
    ("convert", ["m.pth", "--to", "trt", "-o", "m.plan", "--batch", "1,2,4"],
     ["m.pth", "--to", "trt", "-o", "m.plan", "--profile", "1,2,4"], "--batch is deprecated; use --profile MIN,OPT,MAX"),
    ("convert", ["m.pth", "--to", "onnx", "-o", "m.onnx", "--int8-check-images", "5"],
     ["m.pth", "--to", "onnx", "-o", "m.onnx", "--int8-check-count", "5"],
     "--int8-check-images is deprecated; use --int8-check-count"),
    ("pull", ["densenet121", "--source", "timm"], ["densenet121", "--pretrained", "timm"],
     "--source is deprecated; use --pretrained"),
]


@pytest.mark.parametrize(("verb", "old", "new", "warning"), DEPRECATED, ids=[f"{d[0]} {d[3].split()[0]} {i}" for i, d in enumerate(DEPRECATED)])
def test_a_deprecated_spelling_reads_as_the_new_one_with_one_warning(capsys, verb, old, new, warning):
    cmd = command(verb)
    ctx_new = cmd.make_context(verb, list(new))
    assert capsys.readouterr().err == ""
    ctx_old = cmd.make_context(verb, list(old))
    assert capsys.readouterr().err == f"dnet: warning: {warning}\n"  # once, even for a spelling given twice
    assert ctx_old.params == ctx_new.params


@pytest.mark.parametrize(("args", "line"), [
    (["eval", "m.onnx", "--limit", "3", "--count", "4"], "give --count once (--limit is its deprecated alias)"),
    (["train", "--out", "a", "-o", "b"], "give --output once (--out is its deprecated alias)"),
    (["convert", "m.pth", "--from", "pth", "--to", "onnx-int8", "--precision", "fp16", "-o", "m.onnx"],
     "--precision fp16 contradicts --to onnx-int8, which writes int8 (use --to onnx --precision fp16)"),
])
def test_a_deprecated_spelling_with_its_new_one_is_one_error_line(tmp_path, monkeypatch, args, line):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(*args)
    assert code == 2 and err.splitlines()[-1] == f"dnet: error: {line}"
    assert list(tmp_path.iterdir()) == []


def test_eval_engine_still_works_and_says_so(digits_model):
    code, new, err = invoke("eval", digits_model, "--dataset", "digits", "--count", 40, "--json", "-q")
    assert code == 0 and err == ""
    code, old, err = invoke("eval", "--engine", digits_model, "--dataset", "digits", "--limit", 40, "--json", "-q")
    assert code == 0 and err.splitlines() == [
        "dnet: warning: --engine is deprecated; pass the model file as the first argument: dnet eval FILE",
        "dnet: warning: --limit is deprecated; use --count"]
    a, b = json.loads(new), json.loads(old)
    assert a["images"] == b["images"] == 40
    assert (a["top1_error"], a["top5_error"]) == (b["top1_error"], b["top5_error"])


@pytest.mark.parametrize(("old", "precision"), [("onnx-fp16", "fp16"), ("onnx-int8", "int8")])
def test_to_onnx_fp16_and_int8_are_aliases_that_write_the_same_files(tmp_path, monkeypatch, old, precision):
    fast_export(monkeypatch)
    src = tiny_checkpoint(tmp_path)
    cache = ["--calib-cache", tmp_path / "tiny.calib.json"] if precision == "int8" else []
    docs = []
    for args in (["--to", "onnx", "--precision", precision], ["--to", old]):
        folder = tmp_path / args[-1]
        if cache:  # one calibration for both: the same cache, so the INT8 files are the same bytes
            args += cache if (tmp_path / "tiny.calib.json").exists() else ["--calib", _calib(tmp_path)] + cache
        code, out, err = invoke("convert", src, "--from", "pth", *args, "-o", folder / f"tiny.{precision}.onnx",
                                "--json", "-q", "--int8-check-count", 0)
        assert code == 0, err
        unchecked = "dnet: warning: INT8 file not checked: no check images asked for (0)\n"
        docs.append((json.loads(out), err.replace(unchecked, "") if precision == "int8" else err))
    (new, new_err), (alias, alias_err) = docs
    assert new_err == "" and alias_err == f"dnet: warning: --to {old} is deprecated; use --to onnx --precision {precision}\n"
    assert new["to"] == alias["to"] == old  # the library's target, as before
    names = [[(f["file"].split("/")[-1], f["role"]) for f in d["written"] if not f["file"].endswith(".calib.json")]
             for d in (new, alias)]
    assert names[0] == names[1] == [("tiny.onnx", "kept"), (f"tiny.{precision}.onnx", "output")]
    out_new, out_old = (tmp_path / d / f"tiny.{precision}.onnx" for d in (precision, old))
    assert out_new.read_bytes() == out_old.read_bytes()


def _calib(tmp_path):
    from tests.helpers.images import photo_tiles, write_images

    return write_images(tmp_path / "calib", photo_tiles(size=36, per_photo=2))


def test_provider_and_preprocess_are_the_librarys_lists():
    from dnet.core.specs import IMAGE_SPECS, SPECS
    from dnet.engines import base, onnxruntime, openvino, tensorrt

    for verb in ("eval", "bench", "serve"):
        (provider,) = [p for p in command(verb).params if p.name == "provider"]
        assert tuple(provider.type.choices) == base.PROVIDERS
    # every name some engine takes, and no other
    assert set(base.PROVIDERS) == {*onnxruntime.PROVIDERS, *openvino.PROVIDERS, "cpu", "cuda", *tensorrt.PROVIDERS[1:]}
    (convert_pre,) = [p for p in command("convert").params if p.name == "preprocess"]
    (eval_pre,) = [p for p in command("eval").params if p.name == "preprocess"]
    assert tuple(convert_pre.type.choices) == tuple(SPECS) and tuple(eval_pre.type.choices) == IMAGE_SPECS
    code, _, err = invoke("eval", "m.onnx", "--provider", "gpu")
    assert code == 2 and err == ("dnet: error: Invalid value for '--provider': 'gpu' is not one of 'cpu', 'cuda', "
                                 "'tensorrt', 'openvino', 'openvino-bf16'.\n")


def test_convert_to_offers_the_formats_and_refuses_a_precision_pytorch_cannot_hold(tmp_path):
    (to,) = [p for p in command("convert").params if p.name == "target"]
    assert tuple(to.type.choices) == ("pth", "torchvision", "onnx", "trt")
    code, _, err = invoke("convert", "m.pth", "--from", "pth", "--to", "onnx-int4", "-o", tmp_path / "m.onnx")
    assert code == 2 and err == ("dnet: error: Invalid value for '--to': 'onnx-int4' is not one of 'pth', "
                                 "'torchvision', 'onnx', 'trt'.\n")


def test_cli_defaults_are_the_librarys():
    from dnet.apps.bench import BATCH_SIZES, bench_engines
    from dnet.apps.compare import compare
    from dnet.apps.eval.loop import evaluate
    from dnet.apps.paired import evaluate_paired
    from dnet.data.datasets import open_dataset

    def default(verb, name):
        (p,) = [p for p in command(verb).params if p.name == name]
        return p.default

    assert default("eval", "batch") == 32 == evaluate.__kwdefaults__["batch"] == evaluate_paired.__kwdefaults__["batch"]
    assert default("eval", "split") == "test" == open_dataset.__defaults__[1]
    assert default("bench", "batches") == "1,8,32" == ",".join(map(str, BATCH_SIZES))
    assert (default("bench", "warmup"), default("bench", "duration")) == (1.0, 5.0) == (
        bench_engines.__kwdefaults__["warmup"], bench_engines.__kwdefaults__["duration"])
    assert default("compare", "count") == 8 == compare.__kwdefaults__["count"]


def test_json_and_quiet_are_the_shared_options():
    from dnet.cli.options import json_option, quiet_option

    def shared(decorator):
        return decorator()(lambda **_: None).__click_params__[0]

    for verb in ALL:
        params = {p.name: p for p in command(verb).params}
        if verb != "serve":  # serve prints one ready line and runs until stopped
            assert params["as_json"].opts == shared(json_option).opts and params["as_json"].help.endswith(
                " as one JSON document on stdout."), verb
    for verb in ("convert", "eval", "bench", "compare", "train", "demo", "pull"):  # the verbs that show progress
        params = {p.name: p for p in command(verb).params}
        assert params["quiet"].opts == shared(quiet_option).opts == ["-q", "--quiet"], verb


def test_output_is_dash_o_on_every_verb_that_writes_one():
    for verb in ("convert", "train", "demo", "deploy triton"):
        (out,) = [p for p in command(verb).params if "--output" in p.opts]
        assert out.opts == ["-o", "--output"], verb


@pytest.mark.parametrize("quiet", [False, True])
def test_compare_shows_its_stage_on_a_terminal_and_q_turns_it_off(tmp_path, monkeypatch, quiet):
    import io

    from dnet.cli import compare as cli_compare
    from dnet.cli.progress import TerminalProgress
    from dnet.core.progress import Recorder
    from tests.helpers.models import tiny_onnx

    onnx = tiny_onnx(tmp_path, "tiny.onnx")
    shown = io.StringIO()
    monkeypatch.setattr(cli_compare, "progress_for", lambda q: Recorder() if q else TerminalProgress(shown))
    code, out, err = invoke("compare", onnx, onnx, "--count", 2, *(["-q"] if quiet else []))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["stage", "shape", "rel", "error", "cosine", "max|Δ|", "top-1", "agree"]
    lines = shown.getvalue().replace("\r\x1b[K", "\n").splitlines()
    stage = "tiny.onnx against tiny.onnx: every stage on 2 inputs"
    assert lines == ([] if quiet else [f"{stage} …", lines[-1]]) and (quiet or re.fullmatch(
        rf"{re.escape(stage)}  \d+\.\d s", lines[-1]))
