"""``dnet inspect FILE.t7``: the module tree of a Lua Torch file, with classes and tensor shapes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.cli.main import reports_errors
from dnet.converters.t7 import reader, tree
from dnet.converters.t7.densenet import lua_zoo_match, parse_densenet
from dnet.errors import FileFormatError
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


def _echo(text: str) -> None:
    """Strings read from the file that were not UTF-8 (kept as surrogate escapes) printed as \\xNN, so a strict
    UTF-8 terminal never fails on them."""
    click.echo(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


@click.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--long-size", type=click.Choice(["auto", "4", "8"]), default="auto", show_default=True,
              help="Bytes of a Lua 'long' in the file: 8 on Linux/macOS, 4 on Windows.")
@click.option("--check", is_flag=True, help="Fail (exit 1) unless the file is a DenseNet dnet can import.")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@reports_errors
def inspect_cmd(path: Path, long_size: str, check: bool, as_json: bool) -> None:
    """Print the module tree of a .t7 file: paths, classes, tensor shapes, layer settings, and what it is."""
    obj = reader.load(path, long_size=None if long_size == "auto" else int(long_size))
    root = tree.module_tree(obj)
    t = tree.totals(root)
    dn = _densenet_summary(obj)
    if check and "error" in dn:
        raise FileFormatError(f"{path.name}: {dn['error']}")
    if as_json:
        _echo(json.dumps({"file": path.name, "bytes": path.stat().st_size, "modules": t.modules,
                               "parameters": t.parameters, "densenet": dn, "tree": root.to_dict()}, indent=1))
        return
    _echo(format_table(["module", "class", "tensors", "settings"], tree.rows(root)))
    _echo(f"{path.name}: {t.modules} modules, {t.parameters:,} weight and bias elements, "
               f"{path.stat().st_size:,} bytes (gradients and forward buffers not listed)")
    if "error" in dn:
        _echo(f"not a DenseNet dnet can import: {dn['error']}")
        return
    c = dn["config"]
    name = dn["zoo"] or (f"the Lua version of {dn['lua_zoo_match']}" if dn["lua_zoo_match"] else "not in the zoo")
    _echo(
        f"DenseNet{'-BC' if c['bottleneck'] else ''}: blocks {'-'.join(map(str, c['block_config']))}, "
        f"k={c['growth_rate']}, θ={c['compression']}, {c['init_features']} initial channels, {c['stem']} stem, "
        f"{c['num_classes']} classes, dropout {c['drop_rate']}, {dn['layer_kind']} dense layers, "
        f"{dn['input_size']}×{dn['input_size']} input; {name}"
    )
