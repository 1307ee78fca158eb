"""Published weights by name: dnet's cache, ``pull`` and ``create_model(..., pretrained=...)``.

The zoo records where each model's trained weights are published (``zoo.WEIGHTS``: the Lua ``.t7`` release,
torchvision's files, timm's). ``pull`` fetches one into the cache, ``$DNET_HOME`` (default: the user's cache
folder, ``~/.cache/dnet`` on Linux), through the one downloader (``dnet.data.download.fetch``: checked, atomic,
resumable). Where the publisher gives a sha256 (torchvision: the 8 hex digits in the file name) the bytes must
match it; where none is published the sha256 of what was fetched is recorded beside the file (``FILE.json``), and
every later use is checked against that record. A file put into the cache by hand is checked the same way.

``create_model`` lives here rather than in ``dnet.models`` because reading weights needs ``dnet.formats.loading``, which
imports ``dnet.models``; ``dnet.create_model`` is this one (``dnet.models.build_model`` builds the architecture).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from dnet.core.atomic import atomic_write_text, sha256_file
from dnet.core.errors import DnetError, DownloadError, FileFormatError, UsageError, require_one_of
from dnet.core.outputs import check_input_file
from dnet.core.specs import get_spec
from dnet.data.download import fetch
from dnet.formats.loading import load
from dnet.models import DenseNet, DenseNetConfig, zoo
from dnet.models.factory import build_model

SOURCES = zoo.WEIGHT_SOURCES
# pretrained=True (and `dnet pull NAME` without --pretrained) takes the first source a model has, in this order: the
# hosts that still serve their files first (the Lua release's links were withdrawn in 2024).
PREFERENCE = ("torchvision", "timm", "torch7")
FORMATS = {".t7": "t7", ".pth": "pth"}  # cached file suffix -> dnet convert's source format


def home() -> Path:
    """dnet's cache folder: ``$DNET_HOME``, else the platform's user cache folder + ``dnet``."""
    if os.environ.get("DNET_HOME"):
        return Path(os.environ["DNET_HOME"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "dnet" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dnet"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dnet"


def weights_file(name: str, source: str | None = None, *, option: str = "source") -> zoo.WeightsFile:
    """The published file of ``name`` from ``source`` (None: the first of PREFERENCE the model has)."""
    entry = zoo.get(name)
    files = entry.weights
    if source is not None:
        require_one_of("weights source", source, SOURCES, option)
    if not files:
        why = f" ({entry.note})" if entry.note and "untrained" in entry.note else ""
        raise UsageError(f"no trained weights of {name} are published{why}")
    if source is None:
        source = next(s for s in PREFERENCE if s in files)
    if source not in files:
        raise UsageError(f"{name} has no published {source} weights; it has: {', '.join(files)}", option=option)
    return files[source]


@dataclass(frozen=True)
class Pulled:
    """A published file in the cache, checked."""

    name: str
    source: str
    path: Path
    url: str
    sha256: str
    size: int
    published_sha256: str  # what the publisher gives ("" when nothing), else the recorded digest is the check
    fetched: bool  # False: it was already in the cache
    resumed_from: int = 0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "path": str(self.path)}


RECORD_BYTES = 1 << 16  # a record is a few hundred bytes; anything larger is not one


def _record(path: Path) -> dict | None:
    """The record beside a cached file, or None when there is none (or what is there is not one: never read if it
    is not a small regular file, so a FIFO or a device there cannot block or flood the read)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > RECORD_BYTES:
            return None
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def _cache_folder(folder: Path) -> None:
    """The cache folder exists and can be written, or one line saying how to point dnet at another."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DnetError(f"cannot create the cache folder {folder} ({e.strerror or e}); set DNET_HOME to a folder "
                        "you can write") from None
    if not os.access(folder, os.W_OK):
        raise DnetError(f"cannot write to the cache folder {folder} (read-only or permission denied); set DNET_HOME "
                        "to a folder you can write")


def pull(name: str, source: str | None = None, *, progress: bool = False, option: str = "source") -> Pulled:
    """The published weights of zoo entry ``name`` in the cache, fetched if they are not there yet; checked."""
    wf = weights_file(name, source, option=option)
    path = home() / "weights" / wf.source / wf.filename
    record_path = path.with_name(f"{path.name}.json")
    record = _record(record_path)
    if path.is_file():  # in the cache already: read only, so a read-only cache serves what it holds
        try:
            digest, size, fetched, resumed = sha256_file(check_input_file(path, "weights")), path.stat().st_size, False, 0
        except OSError as e:
            raise DownloadError(f"{path}: cannot read the cached file ({e.strerror or e}); delete it to fetch it "
                                "again") from None
        for what, expected in (("published", wf.sha256), ("recorded", record["sha256"] if record else "")):
            if expected and not digest.startswith(expected):
                raise DownloadError(f"{path}: its sha256 {digest} is not the {what} {expected}; delete it to fetch "
                                    "it again")
    else:
        _cache_folder(path.parent)
        got = fetch(wf.url, path, sha256=wf.sha256 or None, progress=progress)
        digest, size, fetched, resumed = got.sha256, got.size, True, got.resumed_from
    if (record is None or fetched) and (fetched or os.access(path.parent, os.W_OK)):
        atomic_write_text(record_path, json.dumps({"model": name, "source": wf.source, "url": wf.url, "sha256": digest,
                                                   "size": size, "published_sha256": wf.sha256}, indent=2) + "\n")
    return Pulled(name, wf.source, path, wf.url, digest, size, wf.sha256, fetched, resumed)


def pretrained_file(name: str, source: str | None = None, *, progress: bool = False,
                    option: str = "pretrained") -> tuple[Path, str, zoo.WeightsFile]:
    """The cached file of ``name``'s published weights, its ``dnet convert`` source format and its record."""
    pulled = pull(name, source, progress=progress, option=option)
    return pulled.path, FORMATS[pulled.path.suffix], zoo.get(name).weights[pulled.source]


def load_pretrained(name: str, source: str | None = None, *, progress: bool | None = None) -> DenseNet:
    """Zoo entry ``name`` with its published weights (eval mode); ``model.meta`` names the model, source and feed."""
    progress = sys.stderr.isatty() if progress is None else progress
    path, _fmt, wf = pretrained_file(name, source, progress=progress)
    model = load(path)
    expected = zoo.get(name).config
    if zoo.architecture(model.config) != zoo.architecture(expected):
        raise FileFormatError(f"{path}: holds {_describe(model.config)}, not the zoo's {name} "
                              f"({_describe(expected)}); the published file and dnet's record of it disagree")
    extra = {**model.meta.extra, "weights": wf.source, "url": wf.url}
    if wf.note and wf.source == "timm":
        extra["preprocess_note"] = wf.note
    model.meta = dataclasses.replace(model.meta, model=name, preprocess=get_spec(wf.preprocess), extra=extra)
    return model


def _describe(cfg: DenseNetConfig) -> str:
    stem = f"{cfg.stem} stem" + (" with blur pooling" if cfg.blur_pool else "")
    return f"blocks {'-'.join(map(str, cfg.block_config))}, k={cfg.growth_rate}, {cfg.init_features} initial channels, {stem}"


def create_model(name_or_config: str | DenseNetConfig, *, num_classes: int | None = None,
                 memory_efficient: bool = False, pretrained: str | bool | None = None,
                 progress: bool | None = None) -> DenseNet:
    """A DenseNet from a zoo name or a configuration; ``pretrained`` loads published weights into it.

    ``pretrained``: ``"torch7"`` (the Lua release), ``"torchvision"``, ``"timm"``, or True for the first of
    those the model has (torchvision, timm, torch7). The file is fetched into the cache on first use (a progress
    bar when stderr is a terminal, or as ``progress`` says). Without ``pretrained`` the weights are freshly
    initialised. ``model.meta`` says what the model expects, so it exports without further options.
    """
    if not pretrained:
        return build_model(name_or_config, num_classes=num_classes, memory_efficient=memory_efficient)
    if not isinstance(name_or_config, str):
        raise UsageError("published weights are found by zoo name; a DenseNetConfig has none", option="pretrained")
    model = load_pretrained(name_or_config, None if pretrained is True else pretrained, progress=progress)
    if num_classes is not None and num_classes != model.config.num_classes:
        raise UsageError(f"the published {name_or_config} weights classify {model.config.num_classes} classes, not "
                         f"{num_classes}", option="num_classes")
    model.set_memory_efficient(memory_efficient)
    return model


__all__ = ["PREFERENCE", "SOURCES", "Pulled", "create_model", "home", "load_pretrained", "pretrained_file", "pull",
           "weights_file"]
