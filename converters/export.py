"""Export a dnet model to ONNX and prove the file computes what PyTorch computes.

The exported graph has one input ``input`` (float32 N×3×H×W, N dynamic) and one output ``logits``; its
``metadata_props`` carry the model's :class:`~dnet.core.artifact.meta.ArtifactMeta` (``dnet.*`` keys), including the
names of the graph tensors that hold each dense block's and transition's output (``extra.stages``) and each
convolution's output (``extra.convs``, see :mod:`dnet.converters.convs`), which ``dnet compare`` uses to compare files
stage by stage and layer by layer.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from dnet import __version__
from dnet.converters.batchnorm import bn_to_mul_add
from dnet.converters.convs import module_of_weight, weight_name
from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.artifact.onnxfile import INPUT, OUTPUT, check_graph, write_meta
from dnet.core.atomic import atomic_path
from dnet.core.errors import AccuracyError, UsageError, require_one_of
from dnet.core.progress import QUIET, Progress
from dnet.core.similarity import max_abs
from dnet.engines.onnxruntime import run
from dnet.models import zoo
from dnet.models.densenet import DenseNet

DEFAULT_OPSET = 18  # >= 17 (LayerNorm era); 18 is what torch's dynamo exporter emits natively
MIN_OPSET = 17
MAX_OPSET = 23  # the newest opset torch's exporter writes (torch.onnx._constants.ONNX_MAX_OPSET) and ONNX Runtime runs
BN_MODES = ("batchnorm", "muladd")
FP32_RTOL = 1e-4  # max|Δ| <= 1e-4 · max(1, max|ref|)


def model_meta(model: DenseNet, *, input_size: int | None = None, source: str = "", source_sha256: str = "",
               preprocess=None) -> ArtifactMeta:
    """The metadata an export of ``model`` carries: the model's own, completed with what the export knows."""
    if model.meta is None and preprocess is None:
        raise UsageError("the model does not say how its inputs are preprocessed (no model.meta); name a "
                         "preprocessing", option="preprocess")
    meta = model.meta if model.meta is not None else zoo.artifact_meta(model.config, preprocess=preprocess)
    changes: dict = {"input_size": input_size or meta.input_size, "precision": "fp32", "dnet_version": __version__,
                     "config": model.config.to_dict(), "calibration": None}
    if preprocess is not None:
        changes["preprocess"] = preprocess
    if source:
        changes.update(source=source, source_sha256=source_sha256)
    return dataclasses.replace(meta, **changes)


def _export_proto(model: DenseNet, size: int, opset: int) -> onnx.ModelProto:
    x = torch.zeros(2, 3, size, size)
    # torch's dynamo exporter (the maintained one) also folds the BNs that follow a convolution and
    # constant-folds the graph (optimize=True); its progress chatter goes to the log, not the user.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, optimize=True, verbose=False,
        )
    return program.model_proto


def _scopes(node: onnx.NodeProto) -> list[str]:
    """The module scopes torch's dynamo exporter records on a node (``pkg.torch.onnx.name_scopes``), outermost first."""
    raw = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
    try:
        scopes = ast.literal_eval(raw) if raw else []
    except (ValueError, SyntaxError):
        return []
    return [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else []


def stage_tensors(proto: onnx.ModelProto, stages: list[str]) -> dict[str, str]:
    """For each stage (``denseblock1``, ``transition1``, ...), the graph tensor holding its output.

    The dynamo exporter records each node's module scope (``pkg.torch.onnx.name_scopes``); a stage's output
    is the output of the last node, in graph order, inside ``features.<stage>``.
    """
    last: dict[str, str] = {}
    for node in proto.graph.node:
        scopes = _scopes(node)
        for stage in stages:
            if f"features.{stage}" in scopes:
                last[stage] = node.output[0]
    return {s: last[s] for s in stages if s in last}


def conv_tensors(proto: onnx.ModelProto, model: DenseNet) -> dict[str, str]:
    """For each convolution (``conv0``, ``denseblock1.denselayer1.conv1``, ...), the tensor its Conv node writes.

    A Conv node's innermost module scope names its convolution; a convolution the exporter folded the following
    BatchNorm into carries the BN's scope (``...norm2``) instead, and is named by the weight it uses, which keeps the
    convolution's parameter name. Network order.
    """
    convs = [n.removeprefix("features.") for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    known, found = set(convs), {}
    producers = {out: n for n in proto.graph.node for out in n.output}
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        candidates = [s.removeprefix("features.") for s in reversed(_scopes(node))]
        candidates.append(module_of_weight(weight_name(node, producers)))
        name = next((c for c in candidates if c in known), None)
        if name is not None:
            found[name] = node.output[0]
    return {c: found[c] for c in convs if c in found}


def export(
    model: DenseNet,
    out: str | os.PathLike,
    *,
    meta: ArtifactMeta | None = None,
    opset: int = DEFAULT_OPSET,
    input_size: int | None = None,
    bn: str = "batchnorm",
    check_inputs: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Path:
    """Export ``model`` to ``out`` (FP32 ONNX), check it, verify it against PyTorch, write it atomically.

    ``bn``: "batchnorm" keeps the pre-activation BNs as BatchNormalization (ONNX Runtime's kernel);
    "muladd" rewrites them as Mul/Add. ``check_inputs`` (N×3×H×W float32) are real inputs verified beside
    random ones; a mismatch beyond FP32_RTOL raises :class:`AccuracyError` with the numbers. ``progress`` receives
    the check's numbers (``fp32_vs_pytorch``: max|Δ| and its bound per batch).
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset must be {MIN_OPSET} to {MAX_OPSET}, got {opset}", option="opset")
    require_one_of("bn", bn, BN_MODES, "bn")
    model = model.eval()
    if meta is None and model.meta is None:
        raise UsageError("the model does not say how its inputs are preprocessed (model.meta is None); give export() "
                         "meta=model_meta(model, preprocess=\"torch7\") (or another preprocessing name), or set "
                         "model.meta", option="preprocess")
    meta = meta or model_meta(model, input_size=input_size)
    size = input_size or meta.input_size
    meta = dataclasses.replace(meta, input_size=size)
    proto = _export_proto(model, size, opset)
    wrote = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if wrote != opset:  # torch falls back to its native opset when a conversion fails, saying so only in a log
        raise UsageError(f"torch's exporter wrote opset {wrote}, not the {opset} asked for; choose opset "
                         f"{wrote} (the default) or another version", option="opset")
    stages = stage_tensors(proto, model.stages())
    convs = conv_tensors(proto, model)
    if bn == "muladd":
        bn_to_mul_add(proto)
    # The exporter's per-node provenance (module scopes, stack traces) makes files large; stages and convs are kept.
    for node in proto.graph.node:
        del node.metadata_props[:]
    for vi in list(proto.graph.output) + list(proto.graph.input):
        del vi.metadata_props[:]
    proto.producer_name, proto.producer_version = "dnet", __version__
    write_meta(proto, dataclasses.replace(meta, extra={**meta.extra, "stages": stages, "convs": convs, "bn": bn}))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, size, size), dtype=np.float32),
              rng.standard_normal((7, 3, size, size), dtype=np.float32)]
    if check_inputs is not None and len(check_inputs):
        inputs.append(np.asarray(check_inputs, np.float32))
    check_graph(proto, "exported graph")
    with atomic_path(out, size=proto.ByteSize()) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        report = verify_fp32(model, tmp, inputs)
    for row in report:
        (progress or QUIET).check("fp32_vs_pytorch", **row)
    return Path(out)


def max_abs_bound(ref: np.ndarray) -> float:
    return FP32_RTOL * max(1.0, float(np.max(np.abs(ref))))


def verify_fp32(model: DenseNet, onnx_path: str | os.PathLike, inputs: list[np.ndarray]) -> list[dict]:
    """Compare ONNX Runtime with PyTorch on each batch; raise AccuracyError beyond the FP32 bound."""
    report = []
    for batch in inputs:
        with torch.inference_mode():
            ref = model(torch.from_numpy(batch)).numpy()
        got = run(onnx_path, batch)
        delta, bound = max_abs(ref, got), max_abs_bound(ref)
        report.append({"batch": len(batch), "max_abs": delta, "bound": bound})
        if not delta <= bound:
            raise AccuracyError(
                f"ONNX export does not match PyTorch: batch of {len(batch)}: max|Δ| = {delta:.3g} > "
                f"{bound:.3g} (1e-4·max(1, max|ref| = {np.max(np.abs(ref)):.3g}))"
            )
    return report
