"""Export a dnet model to ONNX and prove the file computes what PyTorch computes.

The exported graph has one input ``input`` (float32 N×3×H×W, N dynamic) and one output ``logits``; its
``metadata_props`` carry the model's :class:`~dnet.artifact.ArtifactMeta` (``dnet.*`` keys), including the
names of the graph tensors that hold each dense block's and transition's output (``extra.stages``), which
``dnet compare`` uses to compare files stage by stage.

This module is ``converters.onnx``; ``import onnx`` below is the ONNX package (absolute imports).
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
from onnx import numpy_helper

from dnet import __version__
from dnet.artifact import ArtifactMeta
from dnet.errors import AccuracyError, FileFormatError, UsageError
from dnet.files import atomic_path
from dnet.models import zoo
from dnet.models.densenet import DenseNet

DEFAULT_OPSET = 18  # >= 17 (LayerNorm era); 18 is what torch's dynamo exporter emits natively
MIN_OPSET = 17
INPUT = "input"
OUTPUT = "logits"
FP32_RTOL = 1e-4  # max|Δ| <= 1e-4 · max(1, max|ref|)


def default_input_size(model: DenseNet) -> int:
    if model.meta is not None:
        return int(model.meta.input_size)
    return 224 if model.config.stem == "imagenet" else 32


def model_meta(model: DenseNet, *, input_size: int | None = None, source: str = "", source_sha256: str = "",
               preprocess=None) -> ArtifactMeta:
    """The metadata an export of ``model`` carries: the model's own, completed with what the export knows."""
    size = input_size or default_input_size(model)
    if model.meta is not None:
        meta = model.meta
    else:
        if preprocess is None:
            raise UsageError(
                "the model carries no preprocessing description; name one with --preprocess "
                "(torch7, torchvision, cifar10, cifar100, digits)"
            )
        entry = zoo.find(model.config)
        meta = ArtifactMeta(entry.name if entry else "custom", model.config.num_classes, size, preprocess)
    changes: dict = {"input_size": size, "precision": "fp32", "dnet_version": __version__,
                     "config": model.config.to_dict(), "calibration": None}
    if preprocess is not None:
        changes["preprocess"] = preprocess
    if source:
        changes.update(source=source, source_sha256=source_sha256)
    return dataclasses.replace(meta, **changes)


# --- reading and metadata -------------------------------------------------------------------------------


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file with the project's errors; external-data files are refused (dnet writes none)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends carry no common base worth naming
        raise FileFormatError(f"{path}: not a readable ONNX file ({type(e).__name__}: {str(e)[:120]})") from None
    if not proto.graph.node:
        raise FileFormatError(f"{path}: not a readable ONNX file (the graph has no nodes)")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise FileFormatError(f"{path}: tensor {t.name!r} is stored in an external file; dnet reads self-contained ONNX files")
    return proto


def read_meta(proto: onnx.ModelProto) -> ArtifactMeta | None:
    """The dnet metadata of an ONNX model, or None for a file dnet did not write."""
    return ArtifactMeta.from_strings({p.key: p.value for p in proto.metadata_props})


def write_meta(proto: onnx.ModelProto, meta: ArtifactMeta) -> None:
    """Replace the ``dnet.*`` metadata_props of ``proto`` with ``meta`` (other keys are kept)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith("dnet.")]
    del proto.metadata_props[:]
    for k, v in keep + sorted(meta.to_strings().items()):
        proto.metadata_props.add(key=k, value=v)


def check_graph(proto: onnx.ModelProto, what: str) -> None:
    """The ONNX checker, with its complaint as one line of the project's errors (``what`` names the graph)."""
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as e:
        raise FileFormatError(f"ONNX checker refused the {what}: {str(e).strip().splitlines()[0]}") from None


def input_size_of(proto: onnx.ModelProto) -> int | None:
    """H of the graph's first input when it is static and square, else None."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].dim_value and dims[2].dim_value == dims[3].dim_value:
        return int(dims[2].dim_value)
    return None


# --- export -----------------------------------------------------------------------------------------------


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


def stage_tensors(proto: onnx.ModelProto, stages: list[str]) -> dict[str, str]:
    """For each stage (``denseblock1``, ``transition1``, ...), the graph tensor holding its output.

    The dynamo exporter records each node's module scope (``pkg.torch.onnx.name_scopes``); a stage's output
    is the output of the last node, in graph order, inside ``features.<stage>``.
    """
    last: dict[str, str] = {}
    for node in proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        raw = props.get("pkg.torch.onnx.name_scopes")
        if not raw:
            continue
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        for stage in stages:
            if f"features.{stage}" in scopes:
                last[stage] = node.output[0]
    return {s: last[s] for s in stages if s in last}


def bn_to_mul_add(proto: onnx.ModelProto) -> int:
    """Rewrite every inference BatchNormalization as a per-channel Mul and Add (returns how many).

    DenseNet's BNs that follow a concatenation (pre-activation) cannot fold into a convolution; exporters fold
    the others. Measured (benchmarks/inference_cpu.py --muladd, densenet121, ONNX Runtime 1.31 CPU, 2 threads): Mul/Add ran
    at 0.90-0.94× the speed of BatchNormalization, which ONNX Runtime fuses into its NCHWc convolutions; so
    "batchnorm" is the default and this rewrite an option.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    new_nodes, count = [], 0
    for node in proto.graph.node:
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not all(i in inits for i in node.input[1:5]):
            new_nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        s_name, b_name = f"{node.name}_scale", f"{node.name}_shift"
        proto.graph.initializer.extend([
            numpy_helper.from_array(scale.astype(np.float32).reshape(1, -1, 1, 1), s_name),
            numpy_helper.from_array(shift.astype(np.float32).reshape(1, -1, 1, 1), b_name),
        ])
        mid = f"{node.output[0]}_scaled"
        new_nodes.append(onnx.helper.make_node("Mul", [node.input[0], s_name], [mid], name=f"{node.name}_mul"))
        new_nodes.append(onnx.helper.make_node("Add", [mid, b_name], [node.output[0]], name=f"{node.name}_add"))
        new_nodes[-1].metadata_props.extend(node.metadata_props)
        count += 1
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    used = {i for n in proto.graph.node for i in n.input}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return count


def export(
    model: DenseNet,
    out: str | os.PathLike,
    *,
    meta: ArtifactMeta | None = None,
    opset: int = DEFAULT_OPSET,
    input_size: int | None = None,
    bn: str = "batchnorm",
    check_inputs: np.ndarray | None = None,
) -> Path:
    """Export ``model`` to ``out`` (FP32 ONNX), check it, verify it against PyTorch, write it atomically.

    ``bn``: "batchnorm" keeps the pre-activation BNs as BatchNormalization (ONNX Runtime's kernel);
    "muladd" rewrites them as Mul/Add. ``check_inputs`` (N×3×H×W float32) are real inputs verified beside
    random ones; a mismatch beyond FP32_RTOL raises :class:`AccuracyError` with the numbers.
    """
    if opset < MIN_OPSET:
        raise UsageError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    if bn not in ("batchnorm", "muladd"):
        raise UsageError(f"bn must be 'batchnorm' or 'muladd', got {bn!r}")
    model = model.eval()
    meta = meta or model_meta(model, input_size=input_size)
    size = input_size or meta.input_size
    meta = dataclasses.replace(meta, input_size=size)
    proto = _export_proto(model, size, opset)
    stages = stage_tensors(proto, model.stages())
    if bn == "muladd":
        bn_to_mul_add(proto)
    # The exporter's per-node provenance (module scopes, stack traces) makes files large; stages are kept.
    for node in proto.graph.node:
        del node.metadata_props[:]
    for vi in list(proto.graph.output) + list(proto.graph.input):
        del vi.metadata_props[:]
    proto.producer_name, proto.producer_version = "dnet", __version__
    write_meta(proto, dataclasses.replace(meta, extra={**meta.extra, "stages": stages, "bn": bn}))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, size, size), dtype=np.float32),
              rng.standard_normal((7, 3, size, size), dtype=np.float32)]
    if check_inputs is not None and len(check_inputs):
        inputs.append(np.asarray(check_inputs, np.float32))
    check_graph(proto, "exported graph")
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        verify_fp32(model, tmp, inputs)
    return Path(out)


def cpu_session(path_or_bytes, threads: int | None = None):
    """A quiet ONNX Runtime CPU session for a file path or serialized model bytes (checks and comparisons)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    model = str(path_or_bytes) if isinstance(path_or_bytes, (str, Path)) else path_or_bytes
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run_onnx(path_or_bytes, batch: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run an ONNX model (file path or serialized bytes) on the CPU and return its first output."""
    sess = cpu_session(path_or_bytes, threads)
    return sess.run(None, {sess.get_inputs()[0].name: batch})[0]


def max_abs_bound(ref: np.ndarray) -> float:
    return FP32_RTOL * max(1.0, float(np.max(np.abs(ref))))


def verify_fp32(model: DenseNet, onnx_path: str | os.PathLike, inputs: list[np.ndarray]) -> list[dict]:
    """Compare ONNX Runtime with PyTorch on each batch; raise AccuracyError beyond the FP32 bound."""
    report = []
    for batch in inputs:
        with torch.inference_mode():
            ref = model(torch.from_numpy(batch)).numpy()
        got = run_onnx(onnx_path, batch)
        delta, bound = float(np.max(np.abs(got - ref))), max_abs_bound(ref)
        report.append({"batch": len(batch), "max_abs": delta, "bound": bound})
        if not delta <= bound:
            raise AccuracyError(
                f"ONNX export does not match PyTorch: batch of {len(batch)}: max|Δ| = {delta:.3g} > "
                f"{bound:.3g} (1e-4·max(1, max|ref| = {np.max(np.abs(ref)):.3g}))"
            )
    return report


def sort_topologically(proto: onnx.ModelProto) -> None:
    """Order the graph's nodes so every input is produced before it is used (the checker demands it).

    Graph rewriters (the float16 converter) append their Cast nodes at the end; this restores a valid order,
    keeping the original order among nodes that are already ready (a stable Kahn sort).
    """
    graph = proto.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise FileFormatError(f"the graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def unshare_initializers(proto: onnx.ModelProto) -> int:
    """Give every node its own copy of an initializer that several nodes read (returns copies made).

    The exporter deduplicates equal constants (e.g. the γ = 1 of freshly initialised BNs); graph rewriters that
    insert a Cast per (node, input) name their new tensors after the input, and collide on shared ones.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name}_{i}"
                proto.graph.initializer.append(copy)
                node.input[i] = copy.name
                copies += 1
            else:
                seen.add(name)
    return copies
