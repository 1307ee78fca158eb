"""Where two model files start to disagree: stage by stage, or convolution by convolution, on the same inputs.

Each dense block's and transition's output, and the logits, are compared by relative L2 error, cosine
similarity and max|Δ|; the logits row adds top-1 agreement. PyTorch files expose stages through forward
hooks; an ONNX file through a private copy of its graph with the stage tensors (recorded in its dnet metadata
at export) added as outputs — the file the user ships is never changed. Other files (TensorRT plans, ONNX
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
from dnet.artifact.onnxfile import read_meta, read_model
from dnet.converters.convs import ConvSite, block_of, conv_sites
from dnet.converters.int8.calibration import read_folder
from dnet.engines.base import KINDS
from dnet.engines.onnxruntime import session
from dnet.errors import UsageError, runtime_failure
from dnet.files import scratch_folder
from dnet.loading import load
from dnet.similarity import cosine, max_abs, rel_l2, require_finite, top1_agreement

LOGITS = "logits"


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


def _onnx_stages(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    proto = read_model(path)
    meta = read_meta(proto)
    stages: dict[str, str] = dict((meta.extra.get("stages") or {}) if meta is not None else {})
    produced = {o for n in proto.graph.node for o in n.output}
    stages = {s: t for s, t in stages.items() if t in produced}
    if stages:
        inferred = onnx.shape_inference.infer_shapes(proto)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
        for tensor in stages.values():
            proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, types.get(tensor, onnx.TensorProto.FLOAT), None))
    sess = session(proto)
    inp = sess.get_inputs()[0]
    feed = batch.astype(np.float16) if inp.type == "tensor(float16)" else batch
    names = [proto.graph.output[0].name, *stages.values()]
    try:
        results = sess.run(names, {inp.name: feed})
    except Exception as e:  # noqa: BLE001 (ORT's own error types)
        raise runtime_failure(path.name, "ONNX Runtime", e, len(batch)) from None
    out = {s: np.asarray(r, np.float32) for s, r in zip(stages, results[1:], strict=True)}
    return {**out, LOGITS: np.asarray(results[0], np.float32)}


def stage_outputs(path: str | os.PathLike, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Per-stage outputs (in order) and the logits of the model file ``path`` on ``batch``."""
    path = Path(path)
    kind = KINDS.get(path.suffix.lower())
    if kind == "torch":
        return _torch_stages(path, batch)
    if kind == "onnxruntime":
        return _onnx_stages(path, batch)
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
    a, b = stage_outputs(ref, batch), stage_outputs(other, batch)
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

# Images per ONNX Runtime run: a DenseNet-121 keeps about 60 MB of tapped tensors per image and file.
LAYER_CHUNK = 4


class _Running:
    """``rel_l2``, ``cosine`` and ``max_abs`` of :mod:`dnet.similarity`, summed over chunks of a batch (float64)."""

    def __init__(self) -> None:
        self.ref2 = self.got2 = self.dot = self.diff2 = self.max = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        a, b = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
        d = b - a
        self.ref2, self.got2, self.dot, self.diff2 = self.ref2 + a @ a, self.got2 + b @ b, self.dot + a @ b, self.diff2 + d @ d
        self.max = max(self.max, float(np.max(np.abs(d)))) if d.size else self.max

    def rel(self) -> float:
        return float(np.sqrt(self.diff2) / max(np.sqrt(self.ref2), 1e-30))

    def cosine(self) -> float:
        return float(self.dot / max(np.sqrt(self.ref2) * np.sqrt(self.got2), 1e-30))


@dataclass(frozen=True)
class LayerRow:
    """One convolution: its float output in OTHER against REF's, and the same for the input it reads."""

    depth: int  # 1-based, REF's network order
    layer: str  # "denseblock3.denselayer7.conv2"
    block: str  # "stem", "denseblock3", "transition2"
    shape: tuple[int, ...]
    rel_error: float  # of the Conv's float output
    cosine: float
    max_abs: float
    input_rel_error: float  # of the tensor the Conv reads (in a Q/DQ file: after its DequantizeLinear)
    ref_tensor: str  # the ONNX tensors compared
    other_tensor: str

    @property
    def added(self) -> float:
        """The relative error the layer adds to the relative error of its input."""
        return self.rel_error - self.input_rel_error

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "added": self.added}


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


class _Tapped:
    """One ONNX file and a private copy of it whose every convolution's input and output are graph outputs."""

    def __init__(self, path: Path, fused: bool) -> None:
        proto = read_model(path)
        meta = read_meta(proto)
        self.name = path.name
        self.sites = conv_sites(proto, (meta.extra.get("convs") if meta is not None else None))
        self.graph_inputs = {i.name for i in proto.graph.input}
        self.logits = proto.graph.output[0].name
        # A Conv's input in a Q/DQ file is a DequantizeLinear's output; taking it as a graph output would make ONNX
        # Runtime duplicate that DequantizeLinear, so the int8 tensor before it is taken and dequantized here.
        self.dequantize = _dequantizers(proto, {s.input for s in self.sites})
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        present = {o.name for o in copy.graph.output}
        wanted = [t for s in self.sites for t in (self.dequantize[s.input][0] if s.input in self.dequantize else s.input,
                                                  s.output)]
        self.taps = [t for t in dict.fromkeys(wanted) if t not in self.graph_inputs and t not in present]
        types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(proto).graph.value_info}
        for t in self.taps:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None))
        with scratch_folder("compare") as tmp:  # ONNX Runtime's optimized graphs, read back for their op counts
            self.file = session(proto, fused=fused, optimized_model_path=Path(tmp) / "file.onnx")
            self.copy = session(copy, fused=fused, optimized_model_path=Path(tmp) / "copy.onnx")
            self.ops_file, self.ops_copy = _op_counts(Path(tmp) / "file.onnx"), _op_counts(Path(tmp) / "copy.onnx")
        inp = self.file.get_inputs()[0]
        self.input_name, self.fp16 = inp.name, inp.type == "tensor(float16)"
        self.logits_delta = 0.0

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The file's logits, and every tapped tensor (float32) from the copy."""
        feed = {self.input_name: batch.astype(np.float16) if self.fp16 else batch}
        logits = np.asarray(self.file.run([self.logits], feed)[0], np.float32)
        results = self.copy.run([self.logits, *self.taps], feed)
        self.logits_delta = max(self.logits_delta, max_abs(logits, np.asarray(results[0], np.float32)))
        raw = dict(zip(self.taps, results[1:], strict=True))
        values = {t: np.asarray(v, np.float32) for t, v in raw.items()}
        for tensor, (source, scale, zero) in self.dequantize.items():
            values[tensor] = (raw[source].astype(np.int32) - zero).astype(np.float32) * scale
        values.update({t: np.asarray(feed[self.input_name], np.float32) for t in self.graph_inputs})
        return logits, values

    def fusion(self) -> Fusion:
        return Fusion(self.name, len(self.taps), self.ops_file, self.ops_copy, self.logits_delta)


def _dequantizers(proto: onnx.ModelProto, tensors: set[str]) -> dict[str, tuple[str, np.float32, np.int32]]:
    """For each of ``tensors`` written by a per-tensor DequantizeLinear: (its int8 input, scale, zero point)."""
    inits = {t.name: t for t in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in tensors or node.input[1] not in inits:
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        zero = onnx.numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else np.zeros(())
        if scale.size == 1 and zero.size == 1 and scale.dtype == np.float32:
            out[node.output[0]] = (node.input[0], np.float32(scale.item()), np.int32(zero.item()))
    return out


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
    outs, ins = [_Running() for _ in pairs], [_Running() for _ in pairs]
    shapes: list[tuple[int, ...]] = []
    logits_a, logits_b = [], []
    for start in range(0, len(batch), LAYER_CHUNK):
        chunk = batch[start:start + LAYER_CHUNK]
        (la, ta), (lb, tb) = a.run(chunk), b.run(chunk)
        logits_a.append(la)
        logits_b.append(lb)
        for i, (name, r, o) in enumerate(pairs):
            if ta[r.output].shape != tb[o.output].shape:
                raise UsageError(f"{name}: {ref.name} gives shape {ta[r.output].shape}, {other.name} "
                                 f"{tb[o.output].shape}; not the same model")
            outs[i].add(ta[r.output], tb[o.output])
            ins[i].add(ta[r.input], tb[o.input])
            if start == 0:
                shapes.append((len(batch), *ta[r.output].shape[1:]))
    rows = tuple(LayerRow(i + 1, name, block_of(name), shapes[i], outs[i].rel(), outs[i].cosine(), outs[i].max,
                          ins[i].rel(), r.output, o.output) for i, (name, r, o) in enumerate(pairs))
    logits = _row(LOGITS, require_finite(np.concatenate(logits_a), Path(ref).name),
                  require_finite(np.concatenate(logits_b), Path(other).name))
    return LayerReport(str(ref), str(other), str(images) if images is not None else "random", len(batch), fused,
                       pairing, rows, logits, (a.fusion(), b.fusion()), unmatched)
