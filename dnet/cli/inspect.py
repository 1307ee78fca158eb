"""``dnet inspect FILE.t7``: the module tree of a Lua Torch file, with classes and tensor shapes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.cli import reports_errors
from dnet.cli.table import format_table


@click.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--long-size", type=click.Choice(["auto", "4", "8"]), default="auto", show_default=True,
              help="Bytes of a Lua 'long' in the file: 8 on Linux/macOS, 4 on Windows.")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@reports_errors
def inspect_cmd(path: Path, long_size: str, as_json: bool) -> None:
    """Print the module tree of a .t7 file: paths, classes, tensor shapes and layer settings."""
    from converters.t7 import reader, tree

    obj = reader.load(path, long_size=None if long_size == "auto" else int(long_size))
    root = tree.module_tree(obj)
    t = tree.totals(root)
    if as_json:
        click.echo(json.dumps({"file": path.name, "bytes": path.stat().st_size, "modules": t.modules,
                               "parameters": t.parameters, "tree": root.to_dict()}, indent=1))
        return
    click.echo(format_table(["module", "class", "tensors", "settings"], tree.rows(root)))
    click.echo(f"{path.name}: {t.modules} modules, {t.parameters:,} weight and bias elements, "
               f"{path.stat().st_size:,} bytes (gradients and forward buffers not listed)")


COMMANDS = [inspect_cmd]
