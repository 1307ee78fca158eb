"""``dnet inspect FILE``: the module tree of a Lua Torch ``.t7`` file, what a PyTorch file holds (any suffix), what a
TensorRT ``.plan`` holds, or the description an ONNX file dnet wrote carries.

For a plan: its sidecar (model, precision, TensorRT version, GPU, profile) and a summary of the layer information
stored beside it at build time (``NAME.plan.layers.json``, see ``dnet.core.artifact.layers``): layers and ONNX nodes per
precision, the ONNX op types per precision when the plan's ONNX file is beside it, and the reformat layers TensorRT
inserted. For an ONNX file: model, precision, preprocessing, source; for INT8 the calibration, the layout, the
layers left in higher precision, the measured drop, and what TensorRT's documented INT8 rules say about the file
(``dnet.converters.int8.lint``; any INT8 ONNX, dnet's or another tool's).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dnet.cli.convert import accuracy_line
from dnet.cli.groups import verb
from dnet.cli.main import reports_errors
from dnet.cli.options import json_option
from dnet.converters.int8.lint import lint
from dnet.core.artifact.layers import layers_path, read_layers, summarise
from dnet.core.artifact.onnxfile import classifier_features, read_meta, read_model
from dnet.core.artifact.pthfile import looks_like_pth
from dnet.core.artifact.sidecar import read_sidecar
from dnet.core.atomic import sha256_file
from dnet.core.errors import FileFormatError, UsageError
from dnet.core.table import format_table
from dnet.engines.base import KINDS
from dnet.formats.layouts import CONCAT_ORDERS
from dnet.formats.loading import describe_pth
from dnet.formats.t7 import reader, tree
from dnet.formats.t7.densenet import lua_zoo_match, parse_densenet
from dnet.models import zoo


def _densenet_summary(obj: object) -> dict:
    """What ``dnet.load`` would make of the tree: the configuration, or why it is not a DenseNet."""
    try:
        p = parse_densenet(obj)
    except FileFormatError as e:
        return {"error": str(e)}
    entry = zoo.find(p.config)
    return {"config": p.config.to_dict(), "layer_kind": p.layer_kind, "input_size": p.input_size,
            "zoo": entry.name if entry else None, "lua_zoo_match": lua_zoo_match(p.config)}


def _lint_lines(result) -> list[str]:
    """One line per TensorRT rule: severity, rule, count, the first node names."""
    lines = [f"TensorRT INT8 rules (no TensorRT needed): {result.errors} errors, "
             f"{sum(result.counts('warning').values())} warnings"]
    for f in result.findings:
        names = (": " + ", ".join(f.nodes) + (", …" if f.count > len(f.nodes) else "")) if f.count else ""
        lines.append(f"  {f.severity:<7} {f.rule:<27} {f.count:>4}{names}")
    return lines


def _inspect_onnx(path: Path, as_json: bool) -> None:
    proto = read_model(path)
    meta = zoo.checked_name(read_meta(proto, path.name), path.name, classifier_features(proto))
    checked = lint(proto)
    result = checked if checked.quantized else None  # the rules are INT8's: an FP32/FP16 file is not linted
    if as_json:
        click.echo(json.dumps({"file": path.name, "bytes": path.stat().st_size,
                               "meta": meta.to_dict() if meta is not None else None,
                               "tensorrt_lint": result.to_dict() if result is not None else None}, indent=1))
        return
    if meta is None:
        click.echo(f"{path.name}: an ONNX file without dnet metadata")
        for line in _lint_lines(result) if result is not None else ():
            _echo(line)
        return
    click.echo(f"{path.name}: {meta.model}, {meta.precision.upper()}, {meta.num_classes} classes, "
               f"{meta.input_size}×{meta.input_size} input, {meta.preprocess.name} preprocessing, "
               f"from {meta.source or 'an unnamed source'}")
    calib = meta.calibration or {}
    if calib:
        layout = calib.get("layout", {})
        target = {"cpu": "CPU target (ONNX Runtime)", "openvino": "OpenVINO target",
                  "tensorrt": "TensorRT target"}.get(
            meta.int8_target, "target not recorded")
        click.echo(f"INT8: {target}, {layout.get('name', '?')} layout, {layout.get('weight_bits', 8)}-bit weights, "
                   f"calibrated ({calib.get('method')}) on {calib.get('images')} images of {calib.get('data') or '?'}")
        if calib.get("accuracy"):
            click.echo(accuracy_line(calib["accuracy"]))
        elif layout.get("excluded"):
            click.echo(f"{len(layout['excluded'])} layers in {layout['fallback'].upper()}: "
                       + ", ".join(layout["excluded"]) + " (drop not measured)")
    for line in _lint_lines(result) if result is not None else ():
        _echo(line)


def _inspect_pth(path: Path, as_json: bool, check: bool, key_map: Path | None, concat_order: str | None) -> None:
    info = describe_pth(path, key_map=key_map, concat_order=concat_order)
    if check and "error" in info:
        raise FileFormatError(info["error"])
    if as_json:
        _echo(json.dumps(info, indent=1))
        return
    container = {"zip": "zip archive (torch.save)", "pickle": "legacy pickle (torch.save's format before PyTorch 1.6)"}
    rows = [["container", f"{container[info['container']]}, {info['bytes']:,} bytes"], ["holds", info["kind"]]]
    if info["state_dict_under"]:
        rows.append(["wrapper", "{" + ", ".join(map(str, info["wrapper_keys"])) + "}, weights under "
                     + repr(info["state_dict_under"])])
    if info["extra"]:
        rows.append(["extra", ", ".join(f"{k} {v}" for k, v in info["extra"].items())])
    opt = info["optimizer"]
    groups = f"{opt['param_groups']} parameter group{'s' * (opt['param_groups'] != 1)}" if opt else ""
    rows.append(["optimizer", f"{opt['key']!r}: state of {opt['parameters_with_state']} parameters, {groups}"
                 if opt else "none"])
    if info["tensors"] is not None:
        layout = info["key_layout"]
        keys = f"{info['tensors']} tensors" + (" (module. prefixes removed)" if info["module_prefix"] else "")
        if layout:
            keys += f", {layout['name']} layout ({layout['from']}), {layout['concat_order']} concatenation"
        rows.append(["keys", keys])
    _echo(format_table(["", path.name], rows))
    if "error" in info:
        _echo(f"not a DenseNet dnet can import: {info['error']}")
        return
    dn, c = info["densenet"], info["densenet"]["config"]
    _echo(f"{dn['name']}: blocks {'-'.join(map(str, c['block_config']))}, θ={c['compression']}, "
          f"{c['init_features']} initial channels, {c['stem']} stem, {c['num_classes']} classes; "
          f"{dn['parameters']:,} parameters; {'zoo name ' + dn['zoo'] if dn['zoo'] else 'not in the zoo'}; {dn['preprocess']} preprocessing")


def _echo(text: str) -> None:
    """Strings read from the file that were not UTF-8 (kept as surrogate escapes) printed as \\xNN, so a strict
    UTF-8 terminal never fails on them."""
    click.echo(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def _onnx_ops(plan: Path, side) -> tuple[dict[str, str] | None, str | None]:
    """Node name -> op type of the plan's ONNX file when it is beside the plan and is the one it was built from."""
    onnx_path = plan.with_name(side.onnx)
    if not side.onnx or not onnx_path.is_file():
        return None, f"{side.onnx or 'its ONNX file'} is not beside the plan: ONNX op types not counted"
    if sha256_file(onnx_path) != side.onnx_sha256:
        return None, f"{onnx_path.name} is not the file the plan was built from (sha256 differs): op types not counted"
    return {node.name: node.op_type for node in read_model(onnx_path).graph.node}, None


def _inspect_plan(path: Path, as_json: bool) -> None:
    side = read_sidecar(path)
    layers = read_layers(path)
    ops, note = _onnx_ops(path, side) if layers is not None else (None, None)
    summary = summarise(layers, ops) if layers is not None else None
    if as_json:
        click.echo(json.dumps({"file": path.name, "bytes": path.stat().st_size, "sidecar": side.to_dict(),
                               "layers": summary, "note": note}, indent=1))
        return
    meta = side.meta
    what = f"{meta.model} ({meta.precision.upper()})" if meta is not None else "a model without dnet metadata"
    lo, opt, hi = (side.profile[k][0] for k in ("min", "opt", "max"))
    chw = "×".join(map(str, side.profile["max"][1:]))
    cc = ".".join(map(str, side.compute_capability))
    click.echo(f"{path.name}: {what}, TensorRT {side.tensorrt_version}, {side.gpu_name} (compute capability {cc}), "
               f"batch {lo},{opt},{hi} of {chw}, built from {side.onnx} in {side.build_seconds:g} s")
    if summary is None:
        click.echo(f"no layer information: {layers_path(path).name} is missing (rebuild the plan with dnet convert "
                   "--to trt to store it)")
        return
    precisions = sorted(set(summary["layers_by_precision"]) | set(summary["onnx_nodes_by_precision"]))
    rows = [[p, summary["layers_by_precision"].get(p, 0), summary["onnx_nodes_by_precision"].get(p, 0)]
            for p in precisions]
    rows.append(["total", summary["layers"], summary["onnx_nodes"]])
    click.echo(format_table(["precision", "engine layers", "ONNX nodes"], rows, right=(1, 2)))
    conversions = ", ".join(f"{k} {v}" for k, v in summary["reformats_by_conversion"].items())
    click.echo(f"reformat layers: {summary['reformats']}" + (f" ({conversions})" if conversions else "")
               + f"; Q/DQ layers not fused into a neighbour: {summary['qdq_layers']}")
    if summary["onnx_nodes_by_op"]:
        by_op = summary["onnx_nodes_by_op"]
        columns = sorted({p for counts in by_op.values() for p in counts})
        click.echo(format_table(["ONNX op", *columns], [[op, *(counts.get(p, 0) for p in columns)]
                                                        for op, counts in by_op.items()], right=range(1, len(columns) + 1)))
    if note:
        click.echo(note)


@verb("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--long-size", type=click.Choice(["auto", "4", "8"]), default="auto", show_default=True,
              help="Bytes of a Lua 'long' in the file: 8 on Linux/macOS, 4 on Windows.")
@click.option("--check", is_flag=True, help="Fail (exit 1) unless the file is a DenseNet dnet can import.")
@json_option("what the file holds")
@click.option("--key-map", type=click.Path(dir_okay=False, path_type=Path),
              help="PyTorch file: JSON rules from its keys to torchvision's (see dnet convert).")
@click.option("--concat-order", type=click.Choice(CONCAT_ORDERS), help="PyTorch file: the port's concatenation order.")
@reports_errors
def inspect_cmd(path: Path, long_size: str, check: bool, as_json: bool, key_map: Path | None,
                concat_order: str | None) -> None:
    """Print the module tree of a .t7 file (paths, classes, tensor shapes, settings, and what it is), what a PyTorch
    file holds (.pth, .pth.tar, .pt...: container, entries, key layout, the DenseNet), what a TensorRT .plan holds (its sidecar, and its layers per precision), or the description of an ONNX file (for INT8:
    its layers in higher precision and the measured drop)."""
    kind = "onnx" if path.suffix.lower() == ".onnx" else KINDS.get(path.suffix.lower())
    if kind in ("onnx", "tensorrt"):
        if check or long_size != "auto":
            raise UsageError("--check and --long-size are for .t7 files")
        (_inspect_onnx if kind == "onnx" else _inspect_plan)(path, as_json)
        return
    if path.suffix.lower() != ".t7" and path.is_file() and looks_like_pth(path):  # a PyTorch file, any suffix
        if long_size != "auto":
            raise UsageError("--long-size is for .t7 files")
        _inspect_pth(path, as_json, check, key_map, concat_order)
        return
    if key_map is not None or concat_order is not None:
        raise UsageError("--key-map and --concat-order are for PyTorch files")
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
