"""Where two model files start to disagree: stage by stage, or convolution by convolution, on the same inputs.

Each dense block's and transition's output, and the logits, are compared by relative L2 error, cosine
similarity and max|Δ|; the logits row adds top-1 agreement. PyTorch files expose stages through forward
hooks; an ONNX file through a private copy of its graph with the stage tensors (recorded in its dnet metadata
at export) added as outputs (:mod:`dnet.converters.taps`, which the INT8 check reads too) — the file the user ships is never changed. Other files (TensorRT plans, ONNX
files that dnet did not export) are compared at the logits only.

:func:`compare_layers` does the same for every convolution of two ONNX files (names and tensors:
:mod:`dnet.converters.convs`), says whether taking the extra outputs changed what ONNX Runtime runs
(:class:`Fusion`), and ranks the layers by the error each adds to the error of the input it was fed.
"""

from __future__ import annotations

import collections
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from dnet import engines
from dnet.converters.convs import ConvSite, conv_sites
from dnet.converters.int8.calibration import read_folder
from dnet.converters.taps import LOGITS, LayerRow, Tapped, layer_rows, stage_outputs
from dnet.converters.taps import Running as _Running  # noqa: F401 (the running sums the per-layer rows are made of)
from dnet.core.artifact.onnxfile import read_meta, read_model
from dnet.core.errors import UsageError
from dnet.core.scratch import scratch_folder
from dnet.core.similarity import cosine, max_abs, rel_l2, require_finite, top1_agreement
from dnet.engines.base import KINDS
from dnet.engines.onnxruntime import session
from dnet.formats.loading import load


@dataclass(frozen=True)
class StageRow:
    stage: str
    shape: tuple[int, ...]
    rel_error: float  # ||other - ref|| / ||ref||
    cosine: float
    max_abs: float
    top1_agreement: float | None = None  # logits row only

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def _torch_stages(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    model = load(path).eval()
    outs: dict[str, np.ndarray] = {}
    hooks = []
    for name in model.stages():
        module = getattr(model.features, name)
        hooks.append(module.register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o.detach().numpy().copy())))
    with torch.inference_mode():
        logits = model(torch.from_numpy(batch)).numpy()
    for h in hooks:
        h.remove()
    return {**outs, LOGITS: logits}


def _stages(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Per-stage outputs (in order) and the logits of the model file ``path`` on ``batch``."""
    kind = KINDS.get(path.suffix.lower())
    if kind == "torch":
        return _torch_stages(path, batch)
    if kind == "onnxruntime":
        return stage_outputs(path, batch)
    with engines.open(path) as eng:
        return {LOGITS: eng(batch)}


def _row(stage: str, ref: np.ndarray, got: np.ndarray) -> StageRow:
    top1 = top1_agreement(ref, got) if stage == LOGITS else None
    return StageRow(stage, tuple(ref.shape), rel_l2(ref, got), cosine(ref, got), max_abs(ref, got), top1)


def _feed(path: Path):
    """(metadata, input side or -1 when not fixed) of a model file."""
    with engines.open(path) as eng:
        meta, shape = eng.meta, eng.input_shape
    return meta, (meta.input_size if meta is not None else shape[2])


def _inputs(ref: Path, other: Path, images: str | os.PathLike | None, count: int) -> np.ndarray:
    meta, size = _feed(ref)
    other_size = _feed(other)[1]
    if size > 0 and other_size > 0 and size != other_size:
        raise UsageError(f"{ref.name} takes {size}×{size} inputs and {other.name} {other_size}×{other_size}; "
                         "compare runs two versions of one model on the same inputs")
    size = size if size > 0 else other_size
    if images is None:
        if size <= 0:
            raise UsageError(f"{ref.name} has no fixed input size; give --images DIR")
        return np.random.default_rng(0).standard_normal((count, 3, size, size), dtype=np.float32)
    if meta is None:
        raise UsageError(f"{ref.name} does not record its preprocessing; compare a dnet file first, or omit --images")
    return read_folder(images, meta.preprocess, count, what="")


def compare(ref: str | os.PathLike, other: str | os.PathLike, *, images: str | os.PathLike | None = None,
            count: int = 8) -> list[StageRow]:
    """One row per stage both files expose (in network order), then the logits row."""
    ref, other = Path(ref), Path(other)
    batch = _inputs(ref, other, images, count)
    a, b = _stages(ref, batch), _stages(other, batch)
    require_finite(a[LOGITS], ref.name)
    require_finite(b[LOGITS], other.name)
    rows = []
    for stage in a:
        if stage in b:
            if a[stage].shape != b[stage].shape:
                raise UsageError(f"{stage}: {ref.name} gives shape {a[stage].shape}, {other.name} {b[stage].shape}; not the same model")
            rows.append(_row(stage, a[stage], b[stage]))
    return rows


# --- per convolution (ONNX files) -------------------------------------------------------------------------

@dataclass(frozen=True)
class Fusion:
    """Whether taking the per-layer outputs changed what ONNX Runtime runs for one file."""

    file: str
    outputs_added: int
    ops_file: dict[str, int]  # op types ONNX Runtime executes for the file as it is (its optimized graph)
    ops_copy: dict[str, int]  # ... for the private copy with the extra outputs
    logits_max_abs: float  # the copy's logits against the file's, same inputs

    @property
    def changed(self) -> bool:
        return self.ops_file != self.ops_copy or self.logits_max_abs != 0.0

    def line(self) -> str:
        if not self.changed:
            return (f"{self.file}: the {self.outputs_added} extra outputs leave what ONNX Runtime runs unchanged "
                    f"({sum(self.ops_file.values())} nodes, the same op counts; identical logits)")
        ops = sorted(set(self.ops_file) | set(self.ops_copy))
        diff = ", ".join(f"{op} {self.ops_file.get(op, 0)}→{self.ops_copy.get(op, 0)}" for op in ops
                         if self.ops_file.get(op, 0) != self.ops_copy.get(op, 0)) or "the same op counts"
        logits = (f"the copy's logits differ from the file's by max|Δ| {self.logits_max_abs:.3g}"
                  if self.logits_max_abs else "the logits stay identical")
        return (f"{self.file}: the {self.outputs_added} extra outputs change what ONNX Runtime runs ({diff}); {logits}; "
                "the layer rows are the copy's, the logits row the file's")

    def to_dict(self) -> dict:
        return {**asdict(self), "changed": self.changed}


@dataclass(frozen=True)
class LayerReport:
    ref: str
    other: str
    inputs: str  # "random" or the image folder
    count: int
    fused: bool  # ONNX Runtime fused Q/DQ into integer kernels (its default) rather than computing them as written
    pairing: str  # "name" (both files name their convolutions) or "position" (graph order)
    rows: tuple[LayerRow, ...]
    logits: StageRow  # of the files as they are
    fusion: tuple[Fusion, Fusion]  # REF, OTHER
    unmatched: tuple[str, ...] = ()  # convolutions only one file has

    def ranking(self, n: int | None = None) -> list[LayerRow]:
        """Rows by the error each layer adds, most first (depth breaks ties)."""
        return sorted(self.rows, key=lambda r: (-r.added, r.depth))[:n]

    def to_dict(self) -> dict:
        return {"ref": self.ref, "other": self.other, "inputs": self.inputs, "count": self.count, "fused": self.fused,
                "pairing": self.pairing, "layers": [r.to_dict() for r in self.rows], "logits": self.logits.to_dict(),
                "ranking": [r.layer for r in self.ranking()], "fusion": [f.to_dict() for f in self.fusion],
                "unmatched": list(self.unmatched)}


def _op_counts(path: Path) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


class _Tapped(Tapped):
    """One ONNX file, run as it is, and its private copy whose every convolution's input and output are graph
    outputs (:class:`dnet.converters.taps.Tapped`); what ONNX Runtime runs for each is read back (:class:`Fusion`)."""

    def __init__(self, path: Path, fused: bool) -> None:
        proto = read_model(path)
        meta = read_meta(proto)
        sites = conv_sites(proto, (meta.extra.get("convs") if meta is not None else None))
        with scratch_folder("compare") as tmp:  # ONNX Runtime's optimized graphs, read back for their op counts
            self.file = session(proto, fused=fused, optimized_model_path=Path(tmp) / "file.onnx")
            super().__init__(proto, sites, path.name, fused=fused, optimized_model_path=Path(tmp) / "copy.onnx")
            self.ops_file, self.ops_copy = _op_counts(Path(tmp) / "file.onnx"), _op_counts(Path(tmp) / "copy.onnx")
        self.logits_delta = 0.0

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The file's logits, and every tapped tensor (float32) from the copy."""
        copy_logits, values = super().run(batch)
        feed = batch.astype(np.float16) if self.fp16 else batch
        logits = np.asarray(self.file.run([self.logits], {self.input_name: feed})[0], np.float32)
        self.logits_delta = max(self.logits_delta, max_abs(logits, copy_logits))
        return logits, values

    def fusion(self) -> Fusion:
        return Fusion(self.name, len(self.taps), self.ops_file, self.ops_copy, self.logits_delta)


def _pair(a: _Tapped, b: _Tapped) -> tuple[list[tuple[str, ConvSite, ConvSite]], str, tuple[str, ...]]:
    """(name, REF's site, OTHER's site) per convolution both have; by name when both files name them all."""
    if not a.sites or not b.sites:
        raise UsageError(f"{(a if not a.sites else b).name} has no Conv node; per-layer comparison needs two DenseNets")
    if all(s.name for s in a.sites) and all(s.name for s in b.sites):
        theirs, ours = {s.name: s for s in b.sites}, {s.name for s in a.sites}
        pairs = [(s.name, s, theirs[s.name]) for s in a.sites if s.name in theirs]
        unmatched = tuple(s.name for s in a.sites if s.name not in theirs) + tuple(s.name for s in b.sites if s.name not in ours)
        if not pairs:
            raise UsageError(f"{a.name} and {b.name} share no convolution name; they are not the same model")
        return pairs, "name", unmatched
    if len(a.sites) != len(b.sites):
        unnamed = a.name if not all(s.name for s in a.sites) else b.name
        raise UsageError(f"cannot pair the convolutions: {a.name} has {len(a.sites)}, {b.name} {len(b.sites)}, and "
                         f"{unnamed} does not name them (a file dnet exported does)")
    return [(r.name or o.name or f"conv#{r.index + 1}", r, o) for r, o in zip(a.sites, b.sites, strict=True)], "position", ()


def compare_layers(ref: str | os.PathLike, other: str | os.PathLike, *, images: str | os.PathLike | None = None,
                   count: int = 8, fused: bool = False) -> LayerReport:
    """Every convolution of two ONNX files compared on the same inputs; see the module docstring.

    ``fused=False`` (the default) runs ONNX Runtime with its basic graph optimizations, which compute a Q/DQ file's
    arithmetic as written (what TensorRT computes) and which the extra outputs do not change; ``fused=True`` lets it
    fuse Q/DQ into its integer kernels, which outputs on the Conv tensors split (the report says so).
    """
    ref, other = Path(ref), Path(other)
    for path in (ref, other):
        if KINDS.get(path.suffix.lower()) != "onnxruntime":
            raise UsageError(f"per-layer comparison runs ONNX files, and {path.name} is not one; export it first "
                             "(dnet convert --to onnx)")
    batch = _inputs(ref, other, images, count)
    a, b = _Tapped(ref, fused), _Tapped(other, fused)
    pairs, pairing, unmatched = _pair(a, b)
    rows, logits_a, logits_b = layer_rows(a, b, pairs, batch)
    logits = _row(LOGITS, require_finite(logits_a, Path(ref).name), require_finite(logits_b, Path(other).name))
    return LayerReport(str(ref), str(other), str(images) if images is not None else "random", len(batch), fused,
                       pairing, rows, logits, (a.fusion(), b.fusion()), unmatched)
