"""Every option that takes a number refuses NaN, infinity, zero, negative and absurd values in one line naming it,
while the command line is read (before any file is opened: the files named here do not exist)."""

from __future__ import annotations

import pytest

from tests.helpers.harness import cli

VERBS = {
    "eval": ["eval", "absent.onnx", "--dataset", "digits"],
    "bench": ["bench", "absent.onnx"],
    "convert": ["convert", "absent.pth", "--from", "pth", "--to", "onnx", "--precision", "int8", "-o", "out.onnx"],
    "compare": ["compare", "absent.pth", "absent.onnx"],
    "train": ["train", "--dataset", "digits", "-o", "never-made"],
    "demo": ["demo", "-o", "never-made"],
    "info": ["info", "densenet121"],
    "serve": ["serve", "absent.onnx"],
    "deploy": ["deploy", "triton", "absent.onnx", "-o", "never-made"],
}

# (verb, option, bad values); each value is refused with a line naming the option
BOUNDS = [
    ("eval", "--batch-size", ["0", "-1", "nan", "100000"]),
    ("eval", "--count", ["0", "-3", "1e3"]),
    ("eval", "--workers", ["-1", "100000", "inf"]),
    ("eval", "--tolerance", ["nan", "inf", "-5", "1000"]),
    ("bench", "--warmup", ["nan", "inf", "-1"]),
    ("bench", "--duration", ["nan", "inf", "0", "-2", "1e9"]),
    ("bench", "--iterations", ["0", "nan", "1e12"]),
    ("bench", "--warmup-iterations", ["-1", "nan"]),
    ("bench", "--input-size", ["0", "100000", "nan"]),
    ("bench", "--threads", ["0", "100000"]),
    ("convert", "--calib-count", ["0", "-1", "nan", "100000000000"]),
    ("convert", "--int8-check-count", ["-1", "nan"]),
    ("convert", "--int8-min-cosine", ["nan", "-0.1", "1.5", "inf"]),
    ("convert", "--int8-min-top1", ["nan", "2"]),
    ("convert", "--val-count", ["0", "nan"]),
    ("convert", "--max-drop", ["nan", "-1", "inf", "101"]),
    ("convert", "--fp16-tolerance", ["nan", "-1", "inf", "2"]),  # 0: the library says why (a bound must be > 0)
    ("convert", "--opset", ["99", "16", "0", "nan"]),
    ("convert", "--input-size", ["0", "100000", "-32"]),
    ("convert", "--workspace", ["0", "-1", "99999999999"]),
    ("compare", "--count", ["0", "-1", "100000", "nan"]),
    ("train", "--depth", ["0", "-10", "100000", "nan"]),
    ("train", "--growth-rate", ["0", "-4", "100000"]),
    ("train", "--init-features", ["0", "100000"]),
    ("train", "--num-classes", ["0", "-1", "10000000000"]),
    ("train", "--epochs", ["0", "-1", "1e9"]),
    ("train", "--batch-size", ["0", "100000"]),
    ("train", "--lr", ["nan", "inf", "0", "-0.1", "100"]),
    ("train", "--weight-decay", ["nan", "-1", "inf"]),
    ("train", "--drop-rate", ["nan", "-0.1", "1", "1.5"]),
    ("train", "--workers", ["-1", "100000"]),
    ("train", "--threads", ["0", "100000"]),
    ("train", "--seed", ["-1", "nan", "99999999999"]),
    ("demo", "--epochs", ["0", "nan"]),
    ("demo", "--depth", ["0", "100000"]),
    ("info", "--input-size", ["16", "1000001"]),
    ("info", "--num-classes", ["0", "10000000000"]),
    ("serve", "--max-batch", ["0", "nan", "100000"]),
    ("serve", "--queue-delay-us", ["-1", "inf", "100000000"]),
    ("serve", "--http-port", ["0", "65536"]),
    ("serve", "--grpc-port", ["-1", "nan"]),
    ("serve", "--metrics-port", ["70000"]),
    ("serve", "--threads", ["0", "100000"]),
    ("deploy", "--max-batch", ["-1", "nan", "100000"]),
    ("deploy", "--queue-delay-us", ["-1", "inf"]),
    ("deploy", "--instances", ["0", "100000"]),
]

CASES = [(verb, option, value) for verb, option, values in BOUNDS for value in values]


@pytest.mark.parametrize(("verb", "option", "value"), CASES, ids=[f"{v}{o}={x}" for v, o, x in CASES])
def test_an_out_of_range_number_is_one_line_naming_the_option(tmp_path, monkeypatch, verb, option, value):
    monkeypatch.chdir(tmp_path)
    r = cli(*VERBS[verb], option, value, tmpdir=tmp_path / "tmp")
    line = r.error_line(2)
    assert line.startswith(f"Invalid value for '{option}': {value} is not "), line
    assert line.endswith(("is not a finite number", "is not a whole number", "is not a number")) or " is not in the range " in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and list((tmp_path / "tmp").iterdir()) == []


def test_every_numeric_option_of_every_verb_is_covered():
    """A new numeric option without a bound (or without a case here) fails this test."""
    import click

    from dnet.cli.main import VERBS as ALL
    from dnet.cli.main import main
    from dnet.cli.options import Number

    ctx = click.Context(main)
    covered = {(v, o) for v, o, _ in BOUNDS}
    unbounded, missing = [], []
    commands = [(verb, main.get_command(ctx, verb)) for verb in ALL]
    commands += [(verb, sub) for verb, group in list(commands) if isinstance(group, click.Group)
                 for sub in group.commands.values()]  # deploy triton: counted as "deploy"
    for verb, command in commands:
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag:
                continue
            flag = max(param.opts, key=len)
            if isinstance(param.type, click.types.IntParamType | click.types.FloatParamType) or (
                    isinstance(param.type, click.types._NumberRangeBase)):
                unbounded.append((verb, flag))  # click's own number types let NaN and infinity through
            if isinstance(param.type, Number) and (verb, flag) not in covered and flag != "--opt-level":
                missing.append((verb, flag))
    assert unbounded == [("convert", "--opt-level")], unbounded  # 0..5 whole numbers: click's IntRange refuses NaN
    assert missing == [], missing


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "absent.onnx", "--batch-sizes", "1,,2"],
     "batch sizes: expected comma-separated integers like 1,8,32, got '1,,2' (--batch-sizes)"),
    (["bench", "absent.onnx", "--batch-sizes", "1,100000"],
     "batch sizes: at most 4,096 images a batch, got '1,100000' (--batch-sizes)"),
    (["convert", "absent.pth", "--from", "pth", "--to", "pth", "-o", "o.pth", "--precision", "int8"],
     "--precision int8 is for --to onnx and --to trt; --to pth writes FP32 weights (leave --precision out)"),
    (["train", "--dataset", "digits", "--depth", "1000", "--growth-rate", "4096", "-o", "never-made"],
     "DenseNet-BC-1000 (k=4096) has 6,170,210,517,002 parameters, more than the 1,000,000,000 dnet trains (about "
     "91,943 GiB for weights, gradients and momentum alone); choose a smaller --depth or --growth-rate"),
])
def test_contradictory_or_absurd_requests_are_one_line_before_any_work(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = cli(*args, tmpdir=tmp_path / "tmp")
    assert r.error_line(2) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
