"""``dnet inspect FILE``: the module tree of a Lua Torch ``.t7`` file, with classes and tensor shapes, or the description
an ONNX file dnet wrote carries (model, precision, preprocessing, source; for INT8 the calibration, the layout, the
layers left in higher precision and the measured drop)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.artifact.onnxfile import read_meta, read_model
from dnet.cli.convert import accuracy_line
from dnet.cli.main import reports_errors
from dnet.converters.t7 import reader, tree
from dnet.converters.t7.densenet import lua_zoo_match, parse_densenet
from dnet.errors import FileFormatError, UsageError
from dnet.models import zoo
from dnet.table import format_table


def _densenet_summary(obj: object) -> dict:
    """What ``dnet.load`` would make of the tree: the configuration, or why it is not a DenseNet."""
    try:
        p = parse_densenet(obj)
    except FileFormatError as e:
        return {"error": str(e)}
    entry = zoo.find(p.config)
    return {"config": p.config.to_dict(), "layer_kind": p.layer_kind, "input_size": p.input_size,
            "zoo": entry.name if entry else None, "lua_zoo_match": lua_zoo_match(p.config)}


def _inspect_onnx(path: Path, as_json: bool) -> None:
    meta = read_meta(read_model(path))
    if as_json:
        click.echo(json.dumps({"file": path.name, "bytes": path.stat().st_size,
                               "meta": meta.to_dict() if meta is not None else None}, indent=1))
        return
    if meta is None:
        click.echo(f"{path.name}: an ONNX file without dnet metadata")
        return
    click.echo(f"{path.name}: {meta.model}, {meta.precision.upper()}, {meta.num_classes} classes, "
               f"{meta.input_size}×{meta.input_size} input, {meta.preprocess.name} preprocessing, "
               f"from {meta.source or 'an unnamed source'}")
    calib = meta.calibration or {}
    if calib:
        layout = calib.get("layout", {})
        click.echo(f"INT8: {layout.get('name', '?')} layout, {layout.get('weight_bits', 8)}-bit weights, calibrated "
                   f"({calib.get('method')}) on {calib.get('images')} images of {calib.get('data') or '?'}")
        if calib.get("accuracy"):
            click.echo(accuracy_line(calib["accuracy"]))
        elif layout.get("excluded"):
            click.echo(f"{len(layout['excluded'])} layers in {layout['fallback'].upper()}: "
                       + ", ".join(layout["excluded"]) + " (drop not measured)")


@click.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--long-size", type=click.Choice(["auto", "4", "8"]), default="auto", show_default=True,
              help="Bytes of a Lua 'long' in the file: 8 on Linux/macOS, 4 on Windows.")
@click.option("--check", is_flag=True, help="Fail (exit 1) unless the file is a DenseNet dnet can import.")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@reports_errors
def inspect_cmd(path: Path, long_size: str, check: bool, as_json: bool) -> None:
    """Print the module tree of a .t7 file (paths, classes, tensor shapes, layer settings, and what it is), or the
    description of an ONNX file (for INT8: its layers in higher precision and the measured drop)."""
    if path.suffix.lower() == ".onnx":
        if check or long_size != "auto":
            raise UsageError("--check and --long-size are for .t7 files")
        _inspect_onnx(path, as_json)
        return
    obj = reader.load(path, long_size=None if long_size == "auto" else int(long_size))
    root = tree.module_tree(obj)
    t = tree.totals(root)
    dn = _densenet_summary(obj)
    if check and "error" in dn:
        raise FileFormatError(f"{path.name}: {dn['error']}")
    if as_json:
        click.echo(json.dumps({"file": path.name, "bytes": path.stat().st_size, "modules": t.modules,
                               "parameters": t.parameters, "densenet": dn, "tree": root.to_dict()}, indent=1))
        return
    click.echo(format_table(["module", "class", "tensors", "settings"], tree.rows(root)))
    click.echo(f"{path.name}: {t.modules} modules, {t.parameters:,} weight and bias elements, "
               f"{path.stat().st_size:,} bytes (gradients and forward buffers not listed)")
    if "error" in dn:
        click.echo(f"not a DenseNet dnet can import: {dn['error']}")
        return
    c = dn["config"]
    name = dn["zoo"] or (f"the Lua version of {dn['lua_zoo_match']}" if dn["lua_zoo_match"] else "not in the zoo")
    click.echo(
        f"DenseNet{'-BC' if c['bottleneck'] else ''}: blocks {'-'.join(map(str, c['block_config']))}, "
        f"k={c['growth_rate']}, θ={c['compression']}, {c['init_features']} initial channels, {c['stem']} stem, "
        f"{c['num_classes']} classes, dropout {c['drop_rate']}, {dn['layer_kind']} dense layers, "
        f"{dn['input_size']}×{dn['input_size']} input; {name}"
    )
