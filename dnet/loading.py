"""``dnet.load``: any DenseNet file (dnet checkpoint, torchvision/timm state dict, Lua ``.t7``) as a model."""

from __future__ import annotations

import os

from dnet.checkpoint import is_checkpoint, model_from_checkpoint, read_pth
from dnet.converters.t7.densenet import load_t7_densenet
from dnet.errors import FileFormatError
from dnet.files import check_input_file
from dnet.models.densenet import DenseNet
from dnet.statedict import model_from_state_dict


# Files dnet reads with another verb; anything else is read as what its bytes say (a PyTorch file has any suffix:
# .pth, .pt, .pth.tar, .pkl, .ckpt, .bin, none).
OTHER_FORMATS = (".onnx", ".xml", ".plan", ".engine")


def load(path: str | os.PathLike, *, key_map: str | os.PathLike | None = None,
         concat_order: str | None = None) -> DenseNet:
    """The model a file holds, in eval mode, with ``model.meta`` describing its source.

    ``key_map`` (a JSON file of ``[pattern, replacement]`` rules, :func:`dnet.layouts.read_key_map`) and
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
