"""``dnet.load``: any DenseNet file (dnet checkpoint, torchvision/timm state dict, Lua ``.t7``) as a model."""

from __future__ import annotations

import os

import torch

from dnet.core.atomic import sha256_file
from dnet.core.errors import DnetError, FileFormatError
from dnet.core.outputs import check_input_file
from dnet.formats.checkpoint import container_of, is_checkpoint, model_from_checkpoint, read_pth
from dnet.formats.statedict import model_from_state_dict, read_layout, unwrap
from dnet.formats.t7.densenet import load_t7_densenet
from dnet.models import zoo
from dnet.models.densenet import DenseNet
from dnet.models.summary import param_count

# Files dnet reads with another verb; anything else is read as what its bytes say (a PyTorch file has any suffix:
# .pth, .pt, .pth.tar, .pkl, .ckpt, .bin, none).
OTHER_FORMATS = (".onnx", ".xml", ".plan", ".engine")


def load(path: str | os.PathLike, *, key_map: str | os.PathLike | None = None,
         concat_order: str | None = None) -> DenseNet:
    """The model a file holds, in eval mode, with ``model.meta`` describing its source.

    ``key_map`` (a JSON file of ``[pattern, replacement]`` rules, :func:`dnet.formats.layouts.read_key_map`) and
    ``concat_order`` ("new-first" for ports that write ``torch.cat([new, x], 1)``) read state dicts in layouts dnet
    does not know.
    """
    path = check_input_file(path, "model file")  # a FIFO would hang, a folder is not a model
    suffix = path.suffix.lower()
    if suffix == ".t7":
        return load_t7_densenet(path)
    if suffix in OTHER_FORMATS:
        raise FileFormatError(f"{path}: dnet.load reads .t7 files and PyTorch files (torch.save's zip or pickle, "
                              f"any suffix), not {suffix}")
    obj = read_pth(path)
    if is_checkpoint(obj):
        return model_from_checkpoint(obj, str(path))
    return model_from_state_dict(obj, path, key_map=key_map, concat_order=concat_order)


def _plain(value: object) -> object:
    """An extra entry of a checkpoint as a JSON value: numbers and strings (a 0-d tensor as its number), else a
    few words on what it is."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return f"tensor {list(value.shape)}"
        return float(f"{value.item():.7g}") if value.is_floating_point() else value.item()  # float32 digits
    if isinstance(value, dict | list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _optimizer(value: object) -> dict | None:
    """Counts of an optimizer's ``state_dict()`` (per-parameter state and parameter groups), or None."""
    if not (isinstance(value, dict) and isinstance(value.get("param_groups"), list)):
        return None
    groups = value["param_groups"]
    first = groups[0] if groups and isinstance(groups[0], dict) else {}
    return {"parameters_with_state": len(value.get("state") or {}), "param_groups": len(groups),
            "settings": {k: _plain(v) for k, v in first.items() if k != "params"}}


def describe_pth(path: str | os.PathLike, *, key_map: str | os.PathLike | None = None,
                 concat_order: str | None = None) -> dict:
    """What a PyTorch file holds, as ``dnet inspect`` shows it: container, wrapper keys and the other entries beside
    the weights (optimizer state, epoch, best accuracy...), key layout, and the DenseNet ``dnet.load`` makes of it
    (configuration, parameters, zoo name), or why it makes none (``"error"``). Read as ``dnet.load`` reads it."""
    path = check_input_file(path, "PyTorch file")
    container = container_of(path)
    obj = read_pth(path)
    out: dict = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                 "container": container, "kind": "dnet checkpoint" if is_checkpoint(obj) else "state dict",
                 "wrapper_keys": [], "state_dict_under": None, "optimizer": None, "extra": {}, "tensors": None,
                 "module_prefix": False, "key_layout": None, "densenet": None}
    try:
        wrappers = ("state_dict",) if is_checkpoint(obj) else unwrap(obj, path.name)[1]
    except DnetError:
        wrappers = ()
    if wrappers:  # a checkpoint dict: the weights under one key, and what was saved beside them
        inner = obj
        for key in wrappers:
            inner = inner[key]
        out["wrapper_keys"], out["state_dict_under"] = list(obj), ".".join(wrappers)
        for k, v in obj.items():
            if k == wrappers[0] or (is_checkpoint(obj) and k in ("format", "version", "config", "meta")):
                continue
            if (opt := _optimizer(v)) is not None:
                out["optimizer"] = {"key": k, **opt}
            else:
                out["extra"][k] = _plain(v)
    else:
        inner = obj
    if isinstance(inner, dict):
        out["tensors"] = sum(isinstance(v, torch.Tensor) for v in inner.values())
        out["module_prefix"] = any(isinstance(k, str) and k.startswith("module.") for k in inner)
    try:
        if is_checkpoint(obj):
            model = model_from_checkpoint(obj, path.name)
        else:
            layout = read_layout(obj, path.name, key_map=key_map, concat_order=concat_order)[1]
            out["key_layout"] = {"name": layout.name, "from": layout.where, "concat_order": layout.concat_order,
                                 **({"note": layout.note} if layout.note else {})}
            model = model_from_state_dict(obj, path, key_map=key_map, concat_order=concat_order)
    except DnetError as e:
        out["error"] = str(e)
        return out
    cfg, entry = model.config, zoo.find(model.config)
    out["densenet"] = {"name": paper_name(cfg), "config": cfg.to_dict(), "parameters": param_count(cfg),
                       "zoo": entry.name if entry is not None else None,
                       "preprocess": model.meta.preprocess.name if model.meta is not None else None}
    return out


def paper_name(cfg) -> str:
    """The paper's name of a configuration, e.g. 'DenseNet-BC L=100 k=12' (L counted as the paper counts it)."""
    kind = {(True, True): "-BC", (True, False): "-B", (False, True): "-C"}.get((cfg.bottleneck, cfg.compression < 1), "")
    return f"DenseNet{kind} L={cfg.depth} k={cfg.growth_rate}"
