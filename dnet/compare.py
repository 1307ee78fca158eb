"""Where two model files start to disagree: stage-by-stage comparison on the same inputs.

Each dense block's and transition's output, and the logits, are compared by relative L2 error, cosine
similarity and max|Δ|; the logits row adds top-1 agreement. PyTorch files expose stages through forward
hooks; an ONNX file through a private copy of its graph with the stage tensors (recorded in its dnet metadata
at export) added as outputs — the file the user ships is never changed. Other files (TensorRT plans, ONNX
files that dnet did not export) are compared at the logits only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from dnet import engines
from dnet.artifact.onnxfile import read_meta, read_model
from dnet.converters.calibration import read_folder
from dnet.engines.base import KINDS
from dnet.engines.onnxruntime import session
from dnet.errors import EngineError, UsageError
from dnet.loading import load
from dnet.similarity import cosine, max_abs, rel_l2, top1_agreement

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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EngineError(f"{path.name}: ONNX Runtime cannot run it ({first[:200]})") from None
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
    rows = []
    for stage in a:
        if stage in b:
            if a[stage].shape != b[stage].shape:
                raise UsageError(f"{stage}: {ref.name} gives shape {a[stage].shape}, {other.name} {b[stage].shape}; not the same model")
            rows.append(_row(stage, a[stage], b[stage]))
    return rows
