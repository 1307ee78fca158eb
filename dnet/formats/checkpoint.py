"""dnet checkpoints: a state dict with the configuration and metadata that describe it.

Saved with ``torch.save`` but holding only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: opening a checkpoint never executes code. Reading any ``.pth`` refuses, in one
line, what is not a PyTorch file, what would need code, and what is corrupt; the zip container is checked before
torch reads it (no compressed or oversized records), and a model is built only after its configuration has been
checked against the tensors the file holds (layers and weights counted, nothing allocated).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from dnet.core.artifact import ArtifactMeta
from dnet.core.artifact.pthfile import PICKLE_PROTOCOLS, ZIP_MAGIC
from dnet.core.atomic import atomic_path
from dnet.core.errors import ConfigError, FileFormatError, UnsafeFileError
from dnet.core.outputs import check_input_file
from dnet.models import zoo
from dnet.models.densenet import DenseNet, DenseNetConfig
from dnet.models.summary import param_count

FORMAT = "dnet.checkpoint"  # stored in every checkpoint: a format name, not the module
VERSION = 1
# What the weights-only unpickler says when a file asks for code (a global, a call, an object it may not build);
# any other complaint is about corrupt bytes.
_CODE = re.compile(r"Unsupported global|GLOBAL \S+|is blocked|must be imported|call reduce|Can only create new object|"
                   r"Can only build|TorchScript")
_LAYER = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.")


def _payload_bytes(obj) -> int:
    """The bytes of the tensors in ``obj`` (a checkpoint's size, less a few kB of pickle)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_payload_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_payload_bytes(v) for v in obj)
    return 0


def save_torch(path: str | os.PathLike, obj: object) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; a full disk is one line (torch's own writer says only "unexpected pos")."""
    with atomic_path(path, size=_payload_bytes(obj) + 4096) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def save_checkpoint(path: str | os.PathLike, model: DenseNet, meta: ArtifactMeta | None = None, **extra) -> Path:
    """Write ``model`` (and any extra plain state, e.g. optimizer state) atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": model.state_dict(),
        "meta": meta.to_dict() if meta is not None else None,
        **extra,
    }
    return save_torch(path, payload)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _check_container(path: Path) -> str:
    """What torch.load would trust: the first bytes, and for a zip its records (stored, inside the file, one
    ``data.pkl``). Returns the container: "zip" (torch.save since PyTorch 1.6) or "pickle" (the legacy format)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        size = path.stat().st_size
        try:
            with zipfile.ZipFile(path) as z:
                records = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:  # "zip file version 25.5"
            raise FileFormatError(f"{path}: not a readable PyTorch file (a damaged zip archive: {_first_line(e)})") from None
        if any(r.filename.rsplit("/", 1)[-1] == "constants.pkl" for r in records):  # what torch.jit.load runs
            raise UnsafeFileError(f"{path}: refused: a TorchScript archive holds code, which dnet never runs; "
                                  "save the state dict (model.state_dict()) instead")
        total = 0
        for r in records:
            if r.compress_type != zipfile.ZIP_STORED:
                raise FileFormatError(f"{path}: not a PyTorch file: record {r.filename!r} is compressed "
                                      "(torch.save stores records uncompressed)")
            total += r.file_size
            if r.file_size != r.compress_size or total > size:
                raise FileFormatError(f"{path}: not a readable PyTorch file: record {r.filename!r} claims "
                                      f"{r.file_size:,} bytes, more than the file holds")
        if not any(r.filename.rsplit("/", 1)[-1] == "data.pkl" for r in records):
            raise FileFormatError(f"{path}: not a PyTorch file: a zip archive without data.pkl (torch.save writes "
                                  "one)")
        return "zip"
    if len(head) < 2 or head[0] != 0x80 or head[1] not in PICKLE_PROTOCOLS:
        shown = head.hex(" ") if head else "nothing: the file is empty"
        raise FileFormatError(f"{path}: not a PyTorch file (torch.save writes a zip archive or a pickle; "
                              f"this one starts with {shown})")
    return "pickle"


def container_of(path: str | os.PathLike) -> str:
    """"zip" or "pickle": the kind of PyTorch file ``path`` is, from its bytes (any suffix), checked as
    :func:`read_pth` checks it; anything else is one :class:`FileFormatError`."""
    return _check_container(check_input_file(path, "PyTorch file"))


def read_pth(path: str | os.PathLike) -> object:
    """``torch.load(weights_only=True)`` with the project's errors: a file needing code is refused, anything
    that is not a readable PyTorch file is one :class:`FileFormatError`."""
    path = check_input_file(path, "PyTorch file")
    _check_container(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        inner = message.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in message else \
            (message.split("\n\n")[1] if "\n\n" in message else message)
        inner = inner.strip().splitlines()[0][:200] if inner.strip() else type(e).__name__
        if _CODE.search(message):
            what = m.group(0) if (m := re.search(r"GLOBAL \S+", inner)) else inner
            raise UnsafeFileError(f"{path}: refused: the file asks to run code ({what}); dnet reads only tensors, "
                                  "numbers, strings, lists and dicts, and never runs code from a file") from None
        raise FileFormatError(f"{path}: not a readable PyTorch file (corrupt pickle: {inner})") from None
    except MemoryError:
        raise FileFormatError(f"{path}: not a readable PyTorch file (it claims more memory than it holds)") from None
    except Exception as e:  # noqa: BLE001 (a mutated file makes torch's reader raise almost anything)
        if _CODE.search(str(e)):
            raise UnsafeFileError(f"{path}: refused: a TorchScript archive holds code, which dnet never runs") from None
        raise FileFormatError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {_first_line(e)})") from None


def is_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _weights_at_least(cfg: DenseNetConfig) -> int:
    """Parameters ``cfg`` has, counted from the configuration alone (``dnet.models.summary``, nothing built): a
    lower bound on the elements its state dict holds (BN running statistics add more)."""
    try:
        return param_count(cfg)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def build_for(cfg: DenseNetConfig, sd: dict, source: str) -> DenseNet:
    """The (initialised) DenseNet ``cfg`` describes, built only when the tensors of ``sd`` can fill it.

    Its dense layers are counted against those in the file and its weights (counted from the configuration,
    nothing built) against the elements the file holds, so a small file cannot make dnet build a large model.
    """
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise FileFormatError(f"{source}: the state dict is not a dict of named tensors")
    check_storage(sd, source)  # before any tensor is converted (copied)
    layers = {(int(m.group(1)), int(m.group(2))) for k in sd if (m := _LAYER.match(k))}
    if sum(cfg.block_config) != len(layers):
        raise FileFormatError(f"{source}: the configuration has {sum(cfg.block_config)} dense layers but the weights "
                              f"hold {len(layers)}; the checkpoint does not match its configuration")
    try:
        need, held = _weights_at_least(cfg), sum(t.numel() for t in sd.values())
        if need > held:
            raise FileFormatError(f"{source}: the configuration needs at least {need:,} weights but the file holds "
                                  f"{held:,}; the checkpoint does not match its configuration")
        return DenseNet(cfg)
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as e:  # e.g. a growth rate of 1.5
        raise FileFormatError(f"{source}: the configuration is not one dnet can build ({_first_line(e)})") from None


def model_with_weights(cfg: DenseNetConfig, sd: dict, source: str) -> DenseNet:
    """The DenseNet ``cfg`` describes holding the tensors of ``sd`` (:func:`build_for`), compared key by key,
    shape by shape and kind by kind before they are assigned."""
    model = build_for(cfg, sd, source)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise FileFormatError(f"{source}: the weights do not match the configuration ({what}; {len(missing)} missing, "
                              f"{len(unexpected)} unexpected)")
    weights = {}
    for k, v in expected.items():
        got = sd[k]
        kind_ok = got.dtype != torch.bool and not got.is_complex() and got.is_floating_point() == v.is_floating_point()
        if tuple(got.shape) != tuple(v.shape) or not kind_ok:
            raise FileFormatError(f"{source}: {k} is {got.dtype} {list(got.shape)}, the configuration needs "
                                  f"{v.dtype} {list(v.shape)}")
        weights[k] = got if got.dtype == v.dtype else got.to(v.dtype)
    model.load_state_dict(weights, strict=True, assign=True)  # no second copy of the weights
    return model


def check_storage(sd: dict[str, torch.Tensor], source: str) -> None:
    """Tensors may not cover more bytes than their storages hold: no stride-0 expansion, no overlapping views
    of one storage (either would let a small file become a large model once its weights are copied)."""
    storages: dict[int, int] = {}
    total = 0
    for k, t in sd.items():
        nbytes = t.numel() * t.element_size()
        storage = t.untyped_storage()
        if t.numel() and (0 in t.stride() or nbytes > storage.nbytes()):
            raise FileFormatError(f"{source}: tensor {k} of shape {list(t.shape)} repeats the {storage.nbytes():,} "
                                  "bytes of its storage; refused (a saved weight is stored whole)")
        storages[storage.data_ptr()] = storage.nbytes()
        total += nbytes
    if total > sum(storages.values()):
        raise FileFormatError(f"{source}: the tensors overlap in their storages ({total:,} bytes of tensors in "
                              f"{sum(storages.values()):,} bytes of storage); refused")


def model_from_checkpoint(obj: dict, source: str = "checkpoint") -> DenseNet:
    """Build the model a checkpoint describes and load its weights strictly; eval mode."""
    if obj.get("version") != VERSION:
        raise FileFormatError(f"{source}: dnet checkpoint version {obj.get('version')!r} is not supported (expected {VERSION})")
    config = obj.get("config")
    if not isinstance(config, dict):
        raise FileFormatError(f"{source}: the checkpoint has no configuration")
    try:
        cfg = DenseNetConfig.from_dict(config)
    except (ConfigError, TypeError, ValueError, OverflowError) as e:
        raise FileFormatError(f"{source}: the checkpoint's configuration is not one dnet can build ({_first_line(e)})") from None
    model = model_with_weights(cfg, obj.get("state_dict"), source)
    if obj.get("meta"):
        if not isinstance(obj["meta"], dict):
            raise FileFormatError(f"{source}: the checkpoint's metadata is not a dict")
        try:
            model.meta = ArtifactMeta.from_dict(obj["meta"])
        except FileFormatError as e:
            raise FileFormatError(f"{source}: {e}") from None
        if model.meta.num_classes != cfg.num_classes:
            raise FileFormatError(f"{source}: the metadata says {model.meta.num_classes} classes, the model has "
                                  f"{cfg.num_classes}")
        # the name decides which published number eval and compare hold the model to: the weights must be that network
        model.meta = zoo.checked_name(model.meta, Path(source).name, network=cfg)
    return model.eval()


def load_checkpoint(path: str | os.PathLike) -> DenseNet:
    obj = read_pth(path)
    if not is_checkpoint(obj):
        raise FileFormatError(f"{path}: not a dnet checkpoint")
    return model_from_checkpoint(obj, str(path))
