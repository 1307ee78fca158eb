"""``dnet eval``: top-1/top-5 error of a model file on a data set, beside the published number."""

from __future__ import annotations

import json
import os

import click

from dnet import engines
from dnet.apps.eval.loop import evaluate
from dnet.apps.eval.report import check_tolerance, write_predictions
from dnet.apps.paired import evaluate_paired
from dnet.cli.groups import GENERAL, Alias, verb
from dnet.cli.main import reports_errors
from dnet.cli.options import (
    MAX_BATCH,
    MAX_IMAGES,
    MAX_WORKERS,
    amount,
    count,
    default_arg,
    json_option,
    provider_option,
    quiet_option,
)
from dnet.core.errors import UsageError
from dnet.core.outputs import check_output_path
from dnet.core.specs import IMAGE_SPECS
from dnet.data.datasets import DATASETS, SPLITS, dataset_of_spec, open_dataset
from dnet.engines.base import PROVIDERS


def _pick_dataset(dataset: str | None, data: str | None, meta) -> str:
    """--dataset, else the data set the model's preprocessing names (CIFAR, SVHN, digits), else ImageNet."""
    if dataset is not None:
        return dataset
    own = dataset_of_spec(meta.preprocess.name) if meta is not None else None
    if own is not None:
        return own
    if data is not None:
        return "imagenet"
    raise UsageError("say which data set: --dataset imagenet|cifar10|cifar100|svhn|digits|folder (and --data DIR)")


def _paper_hint(name: str, meta) -> str | None:
    """A folder of a CIFAR/SVHN model's images is not compared with the paper: the spelling that is."""
    own = dataset_of_spec(meta.preprocess.name) if meta is not None else None
    if name != "folder" or own is None or DATASETS[own].test_images is None:
        return None
    return (f"  a folder is compared with no published number; --dataset {own} --data PATH compares with the "
            f"paper's (PATH: the binary distribution's folder, or an .npz of 'images' and 'labels')")


SECTIONS = (
    ("Data", ("--data", "--dataset", "--split", "--download", "--count", "--skip-bad", "--workers", "--batch-size")),
    ("Model", ("--provider", "--preprocess", "--ten-crop", "--compare-to")),
    ("Report", ("--tolerance", "--predictions")),
    (GENERAL, ("--json", "--quiet")),
)
ALIASES = (Alias("--engine", None, "pass the model file as the first argument: dnet eval FILE"),
           Alias("--batch", "--batch-size"), Alias("--limit", "--count"))


@verb("eval", sections=SECTIONS, aliases=ALIASES)
@click.argument("engine_path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), default=None, metavar="PATH",
              help="Folder holding the data set (or the data set's own folder/file), or an .npz of uint8 'images' "
              "and their 'labels'.")
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
              help="Data set kind; default: the model's (CIFAR/SVHN/digits), else imagenet.")
@click.option("--split", type=click.Choice(list(SPLITS)), default=default_arg(open_dataset, "split"), show_default=True,
              help="val: the images the recipe holds out of training (SVHN: 6,000 of train + extra).")
@click.option("--preprocess", type=click.Choice(IMAGE_SPECS), default=None,
              help="Override the model file's preprocessing (ImageNet-style image sets).")
@click.option("--ten-crop", is_flag=True, help="fb.resnet.torch TenCrop: the ten crops' logits averaged (Lua sums "
              "them: the same ranking); compared with the published ten-crop numbers.")
@click.option("--batch-size", "batch", type=count(1, MAX_BATCH), default=default_arg(evaluate, "batch"),
              show_default=True, metavar="N", help="Images per run of the model.")
@click.option("--count", "limit", type=count(1, MAX_IMAGES), default=None, metavar="N",
              help="Evaluate N images spread evenly over the set (default: all).")
@click.option("--workers", type=count(0, MAX_WORKERS), default=None, metavar="N", help="Decoding processes (default: cores − 1).")
@provider_option(PROVIDERS)
@click.option("--tolerance", type=amount(0, 100), default=None, metavar="PTS",
              help="Exit with status 3 when top-1 error exceeds its published counterpart (same crops and "
                   "preprocessing) by more than PTS points.")
@click.option("--skip-bad", is_flag=True, help="Skip undecodable images (counted and listed) instead of failing.")
@click.option("--download", is_flag=True, help="Download the data set into --data (CIFAR, SVHN), checksum verified.")
@click.option("--predictions", "predictions_path", type=click.Path(dir_okay=False), default=None, metavar="OUT.csv",
              help="Write per-image predictions to this CSV.")
@click.option("--compare-to", "compare_to", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also evaluate FILE on the same decoded images; print the paired difference and McNemar's test.")
@json_option("the report")
@quiet_option()
@reports_errors
def eval_cmd(engine_path, data, dataset, split, preprocess, ten_crop, batch, limit, workers, provider, tolerance,
             skip_bad, download, predictions_path, compare_to, as_json, quiet) -> None:
    """Top-1/top-5 error of FILE (.pth/.pt/.t7, .onnx, .xml, .plan) on a data set, with a 95% CI, each beside its
    published number and source."""
    inputs = [engine_path] + ([compare_to] if compare_to else []) + ([data] if data else [])
    if predictions_path:  # before the evaluation, not after it: never a model file, a data file or a device
        check_output_path(predictions_path, inputs=inputs)
    with engines.open(engine_path, provider=provider) as engine:
        name = _pick_dataset(dataset, data, engine.meta)
        if download and data is None:
            raise UsageError("--download needs --data: the folder to download into")
        ds = open_dataset(name, data, split, download=download)
        if compare_to is not None:
            with engines.open(compare_to, provider=provider) as reference:
                paired = evaluate_paired(engine, reference, ds, batch=batch, limit=limit, workers=workers,
                                         preprocess=preprocess, ten_crop=ten_crop, skip_bad=skip_bad, progress=not quiet)
            if predictions_path:
                write_predictions(predictions_path, paired.report, ds, inputs=inputs)
            click.echo(json.dumps(paired.to_dict(), indent=2) if as_json else "\n".join(paired.lines()))
            if tolerance is not None:
                check_tolerance(paired.report, tolerance)
            return
        report = evaluate(engine, ds, batch=batch, limit=limit, workers=workers, preprocess=preprocess,
                          ten_crop=ten_crop, skip_bad=skip_bad, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        if predictions_path:
            write_predictions(predictions_path, report, ds, inputs=inputs)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            click.echo("\n".join(report.lines()))
            for path in report.skipped:
                click.echo(f"  skipped: {path}")
            hint = _paper_hint(name, engine.meta)
            if hint:
                click.echo(hint)
    if tolerance is not None:
        check_tolerance(report, tolerance)
