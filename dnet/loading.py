"""``dnet.load``: any DenseNet file (dnet checkpoint, torchvision/timm state dict, Lua ``.t7``) as a model."""

from __future__ import annotations

import os

from dnet.checkpoint import is_checkpoint, model_from_checkpoint, read_pth
from dnet.converters.t7.densenet import load_t7_densenet
from dnet.errors import FileFormatError
from dnet.files import check_input_file
from dnet.models.densenet import DenseNet
from dnet.statedict import model_from_state_dict


def load(path: str | os.PathLike) -> DenseNet:
    """The model a file holds, in eval mode, with ``model.meta`` describing its source."""
    path = check_input_file(path, "model file")  # a FIFO would hang, a folder is not a model
    suffix = path.suffix.lower()
    if suffix == ".t7":
        return load_t7_densenet(path)
    if suffix in (".pth", ".pt"):
        obj = read_pth(path)
        if is_checkpoint(obj):
            return model_from_checkpoint(obj, str(path))
        return model_from_state_dict(obj, path)
    raise FileFormatError(f"{path}: dnet.load reads .t7, .pth and .pt files, not {suffix or 'files without a suffix'}")
