"""``dnet models`` and ``dnet info``: the zoo and architecture summaries, counted from the configurations.

Neither builds a model nor imports torch (``dnet.models.summary`` counts analytically), so both answer at once.
"""

from __future__ import annotations

import json

import click

from dnet.cli.groups import verb
from dnet.cli.main import reports_errors
from dnet.cli.options import MAX_CLASSES, count, json_option
from dnet.core.table import format_table
from dnet.models import resolve_config, zoo
from dnet.models.published import SOURCES
from dnet.models.summary import param_count, summarize

# The table's error columns: (header, data set, augmented, ImageNet preprocessing), single-crop top-1 each.
COLUMNS = (("c10", "cifar10", False, None), ("c10+", "cifar10", True, None), ("c100", "cifar100", False, None),
           ("c100+", "cifar100", True, None), ("svhn", "svhn", False, None), ("in/torch7", "imagenet", True, "torch7"),
           ("in/torchvision", "imagenet", True, "torchvision"))


def _column(entry: zoo.ZooEntry, dataset: str, augmented: bool, preprocess: str | None) -> str:
    found = entry.published_for(dataset, preprocess=preprocess, augmented=augmented)
    return f"{found[0].error:.2f}" if found else "–"


def _entry_facts(entry: zoo.ZooEntry) -> dict:
    cfg = entry.config
    return {
        "name": entry.name,
        "family": entry.family,
        "dataset": entry.dataset,
        "depth": cfg.depth,
        "convolutions": entry.convolutions,
        "growth_rate": cfg.growth_rate,
        "bottleneck": cfg.bottleneck,
        "compression": cfg.compression,
        "block_config": list(cfg.block_config),
        "init_features": cfg.init_features,
        "params": param_count(cfg),
        "published_params": entry.published_params,
        "published": [p.to_dict() for p in entry.published],
        "config_source": [{"source": key, "citation": SOURCES[key]} for key in entry.config_source],
        "note": entry.note,
    }


@verb("models")
@json_option("the zoo")
@reports_errors
def models_cmd(as_json: bool) -> None:
    """List the model zoo: configurations, exact and published parameter counts, published errors (%)."""
    entries = list(zoo.ZOO.values())
    facts = [_entry_facts(e) for e in entries]
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    headers = ["name", "data", "L", "k", "BC", "θ", "params", "published"] + [c[0] for c in COLUMNS]
    rows = [
        [f["name"], f["dataset"], f["depth"], f["growth_rate"], "yes" if f["bottleneck"] else "no", f["compression"],
         f"{f['params']:,}", f["published_params"]] + [_column(e, *c[1:]) for c in COLUMNS]
        for e, f in zip(entries, facts, strict=True)
    ]
    click.echo(format_table(headers, rows, right=range(2, len(headers))))
    click.echo("errors: single-crop top-1 %, the number published with the released model where sources differ "
               "(+ = standard augmentation);\nL: weighted layers, classifier included (DenseNet-264 and -232 are "
               "named by their convolutions); --json: every number with its kind and source")


# info counts parameters and multiply-adds analytically, allocating nothing, so any size up to this is a question it
# can answer (convert and bench, which run the model, stop at MAX_INPUT_SIZE)
MAX_COUNTED_INPUT_SIZE = 1_000_000


@verb("info")
@click.argument("name")
@click.option("--input-size", type=count(32, MAX_COUNTED_INPUT_SIZE), default=None,
              help="Input height and width (default: the model's).")
@click.option("--num-classes", type=count(1, MAX_CLASSES), default=None, help="Replace the classifier's class count.")
@json_option("the summary")
@reports_errors
def info_cmd(name: str, input_size: int | None, num_classes: int | None, as_json: bool) -> None:
    """Architecture summary of a zoo model: channels per block, parameters, multiply-adds."""
    entry = zoo.get(name)
    config = resolve_config(name, num_classes=num_classes)
    size = input_size or entry.input_size
    s = summarize(config, size)
    if as_json:
        click.echo(json.dumps({"name": name, "params": s.params, "macs": s.macs, "conv_macs": s.conv_macs, "input_size": size,
                               "config": config.to_dict(), "blocks": s.blocks}, indent=2))
        return
    cfg = config
    click.echo(f"{name}: {entry.family}, L={cfg.depth}, k={cfg.growth_rate}, θ={cfg.compression}, "
               f"{cfg.init_features} initial channels, {cfg.stem} stem, {cfg.num_classes} classes")
    rows = [[b["block"], b["layers"], b["in_channels"], b["out_channels"], f"{b['spatial']}×{b['spatial']}"] for b in s.blocks]
    click.echo(format_table(["block", "layers", "in", "out", "size"], rows, right=range(5)))
    click.echo(f"parameters      {s.params:,}")
    click.echo(f"multiply-adds   {s.macs / 1e9:.2f} G at {size}×{size} "
               f"({s.conv_macs / 1e9:.3f} G in convolutions and classifier; BN and pooling counted as thop/timm do)")
