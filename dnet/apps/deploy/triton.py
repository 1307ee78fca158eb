"""A Triton Inference Server model repository entry for a dnet file: ``REPO/NAME/config.pbtxt`` and ``1/model.*``.

Everything in the configuration is read from the model file itself: tensor names, data types and dimensions from
the ONNX graph, the OpenVINO IR or the plan's sidecar; the batcher sizes from the sidecar's TensorRT optimisation
profile (a plan cannot run a batch above its profile's max) or from the options for ONNX and IR files; the
preprocessing and the class labels from dnet's metadata. The configuration is written as text (Triton's protobuf text
format) so that writing a repository needs no Triton package; the tests parse it with Triton's own protobuf.

The entry is built in a temporary sibling folder and renamed into place, so a failure leaves nothing partial and an
existing entry is replaced only with ``force``, in one rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.artifact.onnxfile import OUTPUT, read_meta, read_model
from dnet.core.artifact.sidecar import read_sidecar, sidecar_path
from dnet.core.errors import FileFormatError, UsageError, require_one_of
from dnet.core.outputs import check_input_file
from dnet.core.ownership import partial_prefix
from dnet.engines import openvino

DEVICES = ("cpu", "gpu")
MAX_BATCH = 32  # ONNX and IR files, when not told: dnet's default TensorRT profile max (sidecar.PROFILE)
PLATFORMS = {".onnx": "onnxruntime_onnx", ".plan": "tensorrt_plan", ".engine": "tensorrt_plan"}
OPENVINO_BACKEND = "openvino"
# ONNX element type / OpenVINO element type name -> Triton data type
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16"}
OPENVINO_TYPES = {"f32": "TYPE_FP32", "f16": "TYPE_FP16"}
# Class names of the data sets whose order dnet's models were trained in (torchvision's CIFAR10.classes).
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
# TensorRT compiles INT8 Q/DQ graphs with int32 accumulation only from full 8-bit weights; dnet's CPU INT8 files may
# hold 7-bit weights (against the VNNI saturation) and a CPU Q/DQ layout, which ONNX Runtime's TensorRT accelerator
# would run in another arithmetic than the one the file was checked in.
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16"}


@dataclass(frozen=True)
class TritonOptions:
    name: str | None = None  # the model's name in the repository; default: the file's stem
    max_batch: int | None = None  # Triton's max_batch_size; None: 32 for ONNX and IR files, a plan's profile max
    preferred: tuple[int, ...] | None = None  # preferred batch sizes; default: powers of two up to max_batch
    queue_delay_us: int = 2000  # how long the batcher waits to fill a preferred batch
    batching: bool = True  # dynamic_batching on; False: requests run as they come (max_batch_size still allows N>1)
    device: str = "cpu"  # ONNX and IR files: cpu (KIND_CPU) or gpu (KIND_GPU); plans always run on the GPU
    instances: int = 1  # model instances (instance_group count)
    force: bool = False  # replace an existing REPO/NAME


@dataclass(frozen=True)
class Port:
    name: str
    data_type: str  # TYPE_FP32 ...
    dims: tuple[int, ...]  # without the batch dimension when the model batches; -1 where not fixed


@dataclass(frozen=True)
class ModelEntry:
    """What the configuration says, before it is text: also what ``dnet deploy triton --json`` prints."""

    name: str
    platform: str | None  # tensorrt_plan / onnxruntime_onnx; None for a backend (openvino)
    backend: str | None
    model_file: str  # model.onnx, model.plan, model.xml
    max_batch_size: int
    preferred: tuple[int, ...]
    queue_delay_us: int
    batching: bool
    kind: str  # KIND_CPU / KIND_GPU
    instances: int
    input: Port
    output: Port
    precision: str
    tensorrt_accelerator: str | None  # precision_mode of ONNX Runtime's TensorRT accelerator, None: not used
    accelerator_note: str
    meta: ArtifactMeta | None
    labels: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "platform": self.platform, "backend": self.backend, "model_file": self.model_file,
                "max_batch_size": self.max_batch_size, "preferred_batch_size": list(self.preferred),
                "max_queue_delay_microseconds": self.queue_delay_us, "dynamic_batching": self.batching,
                "instance_group": {"kind": self.kind, "count": self.instances},
                "input": {"name": self.input.name, "data_type": self.input.data_type, "dims": list(self.input.dims)},
                "output": {"name": self.output.name, "data_type": self.output.data_type,
                           "dims": list(self.output.dims)},
                "precision": self.precision, "tensorrt_accelerator": self.tensorrt_accelerator,
                "preprocess": self.meta.preprocess.to_dict() if self.meta else None}


def preferred_sizes(low: int, opt: int | None, high: int) -> tuple[int, ...]:
    """Powers of two from ``low`` up to ``high``, with ``opt`` (the profile's optimum) and ``high`` themselves."""
    sizes = {high}
    if opt is not None:
        sizes.add(opt)
    n = 1
    while n < high:
        if n >= low:
            sizes.add(n)
        n *= 2
    return tuple(sorted(s for s in sizes if low <= s <= high))


def _check_options(options: TritonOptions) -> None:
    require_one_of("device", options.device, DEVICES, "device")
    if options.max_batch is not None and options.max_batch < 0:
        raise UsageError(f"max batch {options.max_batch} must be 0 or more", option="max_batch")
    if options.instances < 1:
        raise UsageError(f"instances {options.instances} must be 1 or more", option="instances")
    if options.queue_delay_us < 0:
        raise UsageError(f"queue delay {options.queue_delay_us} µs must be 0 or more", option="queue_delay_us")
    if options.name is not None and (not options.name or "/" in options.name or options.name.startswith(".")):
        raise UsageError(f"model name {options.name!r} must be a plain folder name", option="name")


def _batch_sizes(file: str, first_dim: int, options: TritonOptions) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred sizes) for a file whose batch dimension is ``first_dim`` (-1: dynamic)."""
    max_batch = (first_dim if first_dim > 0 and not options.batching else MAX_BATCH) \
        if options.max_batch is None else options.max_batch
    options = dataclasses.replace(options, max_batch=max_batch)
    if first_dim > 0 and max_batch > 0 and (options.batching or max_batch != first_dim):
        raise UsageError(f"{file}: its batch dimension is fixed at {first_dim}, so Triton cannot batch its requests; "
                         "export it with a dynamic batch, or deploy it without a batcher (--no-batching)", option="batching")
    if options.max_batch == 0:
        if options.batching and options.preferred:
            raise UsageError("preferred batch sizes need a max batch above 0", option="preferred")
        return 0, ()
    preferred = options.preferred or preferred_sizes(1, None, options.max_batch)
    if any(p < 1 or p > options.max_batch for p in preferred):
        raise UsageError(f"preferred batch sizes {', '.join(map(str, preferred))} must lie in 1..{options.max_batch} "
                         "(the max batch)", option="preferred")
    return options.max_batch, tuple(sorted(set(preferred)))


def _trt_accelerator(meta: ArtifactMeta | None, precision: str) -> tuple[str | None, str]:
    """ONNX Runtime's TensorRT accelerator on a GPU: its precision mode, or None and why not."""
    if precision in TRT_PRECISION:
        return TRT_PRECISION[precision], f"TensorRT accelerator in {TRT_PRECISION[precision]}"
    if precision == "int8":
        layout = ((meta.calibration or {}).get("layout") or {}) if meta else {}
        if layout.get("name") == "densenet" and layout.get("weight_bits") == 8:
            return "INT8", "TensorRT accelerator in INT8 (explicit Q/DQ, full 8-bit weights)"
        return None, ("no TensorRT accelerator: this INT8 file was laid out for CPU runtimes (weights below 8 bits "
                      "or a CPU Q/DQ layout); build a TensorRT INT8 file for it (dnet convert --int8-weight-bits 8)")
    return None, f"no TensorRT accelerator for {precision} files"


def describe(path: str | os.PathLike, options: TritonOptions = TritonOptions()) -> ModelEntry:
    """The repository entry of one model file, read from the file (and a plan's sidecar); nothing is written."""
    _check_options(options)
    path = check_input_file(path, "model file")
    suffix = path.suffix.lower()
    name = options.name or path.name[: -len(path.suffix)]
    if suffix in (".plan", ".engine"):
        return _describe_plan(path, name, options)
    if suffix == ".onnx":
        return _describe_onnx(path, name, options)
    if suffix == ".xml":
        return _describe_openvino(path, name, options)
    raise FileFormatError(f"{path}: Triton serves .onnx, .plan and OpenVINO .xml files, not {suffix or '(no suffix)'!r}")


def _labels(meta: ArtifactMeta | None, classes: int) -> tuple[str, ...]:
    names = CLASS_NAMES.get(meta.preprocess.name) if meta else None
    if names is not None and len(names) == classes:
        return names
    return tuple(f"class_{i}" for i in range(classes))


def _entry(name, platform, backend, model_file, first_dim, in_port, out_port, precision, meta, options,
           *, max_batch=None, preferred=None, kind=None, accelerator=(None, "")) -> ModelEntry:
    if max_batch is None:
        max_batch, preferred = _batch_sizes(name, first_dim, options)
    if max_batch == 0:  # the batch dimension is part of the dims then
        in_port = Port(in_port.name, in_port.data_type, (first_dim, *in_port.dims))
        out_port = Port(out_port.name, out_port.data_type, (first_dim, *out_port.dims))
    classes = out_port.dims[-1]
    return ModelEntry(name, platform, backend, model_file, max_batch, preferred or (), options.queue_delay_us,
                      options.batching and max_batch > 0, kind or ("KIND_GPU" if options.device == "gpu" else "KIND_CPU"),
                      options.instances, in_port, out_port, precision, accelerator[0], accelerator[1], meta,
                      _labels(meta, classes) if classes > 0 else ())


def _describe_onnx(path: Path, name: str, options: TritonOptions) -> ModelEntry:
    proto = read_model(path)
    meta = read_meta(proto)
    initialized = {t.name for t in proto.graph.initializer}
    inp = next(v for v in proto.graph.input if v.name not in initialized)
    out = proto.graph.output[0]

    def dims(v) -> tuple[int, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                     for d in v.type.tensor_type.shape.dim)

    in_dims, out_dims = dims(inp), dims(out)
    if out_dims[1:] == (-1,) and meta is not None:
        out_dims = (out_dims[0], meta.num_classes)
    precision = meta.precision if meta else ("fp16" if inp.type.tensor_type.elem_type == 10 else "fp32")
    accelerator = _trt_accelerator(meta, precision) if options.device == "gpu" else (None, "")
    return _entry(name, PLATFORMS[".onnx"], None, "model.onnx", in_dims[0],
                  Port(inp.name, ONNX_TYPES[inp.type.tensor_type.elem_type], in_dims[1:]),
                  Port(out.name, ONNX_TYPES[out.type.tensor_type.elem_type], out_dims[1:]),
                  precision, meta, options, accelerator=accelerator)


def _describe_plan(path: Path, name: str, options: TritonOptions) -> ModelEntry:
    if not sidecar_path(path).is_file():
        raise FileFormatError(f"{path}: its sidecar {sidecar_path(path).name} is missing; Triton's configuration is "
                              "read from it (tensor names, shapes, the optimisation profile): rebuild the plan with "
                              "dnet convert --to trt")
    sidecar = read_sidecar(path)
    meta = sidecar.meta
    if meta is None:
        raise FileFormatError(f"{sidecar_path(path).name}: records no dnet metadata (class count, preprocessing); "
                              "rebuild the plan from a dnet ONNX file")
    low, opt, high = (int(sidecar.profile[k][0]) for k in ("min", "opt", "max"))
    max_batch = high if options.max_batch is None else options.max_batch
    if not low <= max_batch <= high:
        raise UsageError(f"{path.name}: its optimisation profile runs batches {low}..{high}, so the max batch must "
                         f"lie there, not {max_batch}", option="max_batch")
    preferred = options.preferred or preferred_sizes(low, opt if opt <= max_batch else None, max_batch)
    if any(p < low or p > max_batch for p in preferred):
        raise UsageError(f"preferred batch sizes {', '.join(map(str, preferred))} must lie in {low}..{max_batch} "
                         f"(the plan's optimisation profile)", option="preferred")
    _, c, h, w = (int(x) for x in sidecar.profile["max"])
    data_type = "TYPE_FP32"  # dnet's plans keep the ONNX file's float32 input and logits (FP16 keeps its I/O types)
    return _entry(name, PLATFORMS[".plan"], None, "model.plan", -1, Port(sidecar.input_name, data_type, (c, h, w)),
                  Port(OUTPUT, data_type, (meta.num_classes,)),
                  meta.precision, meta, options, max_batch=max_batch, preferred=tuple(sorted(set(preferred))),
                  kind="KIND_GPU")


def _describe_openvino(path: Path, name: str, options: TritonOptions) -> ModelEntry:
    model = openvino.read(path)  # imports OpenVINO (an optional extra) only now
    meta = openvino.model_meta(model)
    inp, out = model.inputs[0], model.outputs[0]

    def dims(port) -> tuple[int, ...]:
        return tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())

    in_dims, out_dims = dims(inp), dims(out)
    precision = meta.precision if meta else "fp32"
    return _entry(name, None, OPENVINO_BACKEND, "model.xml", in_dims[0],
                  Port(inp.get_any_name(), OPENVINO_TYPES[inp.get_element_type().get_type_name()], in_dims[1:]),
                  Port(out.get_any_name(), OPENVINO_TYPES[out.get_element_type().get_type_name()], out_dims[1:]),
                  precision, meta, options)


def _q(text: str) -> str:
    return json.dumps(str(text))  # a protobuf text-format string literal: JSON's escapes are a subset it reads


def config_text(entry: ModelEntry) -> str:
    """``config.pbtxt`` of ``entry`` in Triton's protobuf text format."""
    lines = [f"name: {_q(entry.name)}"]
    lines.append(f"platform: {_q(entry.platform)}" if entry.platform else f"backend: {_q(entry.backend)}")
    lines.append(f"max_batch_size: {entry.max_batch_size}")
    for role, port in (("input", entry.input), ("output", entry.output)):
        extra = '\n    label_filename: "labels.txt"' if role == "output" and entry.labels else ""
        lines.append(f"{role} [\n  {{\n    name: {_q(port.name)}\n    data_type: {port.data_type}\n"
                     f"    dims: [ {', '.join(map(str, port.dims))} ]{extra}\n  }}\n]")
    if entry.batching:
        lines.append(f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, entry.preferred))} ]\n"
                     f"  max_queue_delay_microseconds: {entry.queue_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {entry.instances}\n    kind: {entry.kind}\n  }}\n]")
    if entry.tensorrt_accelerator:
        lines.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator [\n      {\n"
                     '        name: "tensorrt"\n'
                     f'        parameters {{ key: "precision_mode" value: "{entry.tensorrt_accelerator}" }}\n'
                     "      }\n    ]\n  }\n}")
    for key, value in _parameters(entry).items():
        lines.append(f"parameters {{\n  key: {_q(key)}\n  value {{ string_value: {_q(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def _parameters(entry: ModelEntry) -> dict[str, str]:
    """The preprocessing a client must apply, as Triton model parameters (clients read them from the metadata)."""
    if entry.meta is None:
        return {}
    spec = entry.meta.preprocess
    return {"dnet.model": entry.meta.model, "dnet.precision": entry.precision,
            "dnet.preprocess": json.dumps(spec.to_dict(), sort_keys=True),
            "dnet.mean": ",".join(map(str, spec.mean)), "dnet.std": ",".join(map(str, spec.std)),
            "dnet.pixel_scale": str(spec.pixel_scale), "dnet.input_size": str(spec.input_size)}


def readme_text(entry: ModelEntry, source: Path) -> str:
    """The short README beside the configuration: what the model is and how to feed it."""
    spec = entry.meta.preprocess if entry.meta else None
    feed = ("no dnet metadata: the file does not say how to preprocess its inputs" if spec is None else
            f"preprocessing {spec.name!r}: RGB pixels scaled to [0, {spec.pixel_scale:g}], minus mean "
            f"{', '.join(f'{m:g}' for m in spec.mean)}, divided by std {', '.join(f'{s:g}' for s in spec.std)}, "
            + (f"shorter side resized to {spec.resize} ({spec.interpolation}), " if spec.resize else "")
            + (f"centre crop {spec.crop}, " if spec.crop else "")
            + f"as {entry.input.data_type[5:].lower()} N×3×{spec.input_size}×{spec.input_size} (channels first)")
    batch = (f"dynamic batching up to {entry.max_batch_size}, preferred sizes "
             f"{', '.join(map(str, entry.preferred))}, {entry.queue_delay_us} µs queue delay"
             if entry.batching else f"max batch {entry.max_batch_size}, no dynamic batching")
    return "\n".join([
        f"# {entry.name}", "",
        f"Written by dnet from {source.name} ({entry.precision}).", "",
        f"- input `{entry.input.name}` {entry.input.data_type}, dims {list(entry.input.dims)}: {feed}.",
        f"- output `{entry.output.name}` {entry.output.data_type}, dims {list(entry.output.dims)}: logits; "
        + ("`labels.txt` names the classes (ask for `class_count` to get top-k names)." if entry.labels else ""),
        f"- {batch}; {entry.instances} instance(s) {entry.kind}.",
        *([f"- {entry.accelerator_note}."] if entry.accelerator_note else []),
        "", "The same preprocessing is in config.pbtxt's parameters (dnet.preprocess), returned by the model's "
        "configuration endpoint.", "",
    ])


def write_repository(path: str | os.PathLike, repo: str | os.PathLike,
                     options: TritonOptions = TritonOptions()) -> tuple[ModelEntry, Path]:
    """Write ``REPO/NAME/`` for the model file ``path``; (the entry, the folder written). Atomic: the folder is made
    beside its target and renamed into place, so a failure leaves neither a partial nor a missing entry."""
    path = Path(path)
    entry = describe(path, options)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"{repo}: exists and is not a folder; a Triton model repository is a folder", option="repo")
    target = repo / entry.name
    if os.path.lexists(target) and not options.force:
        raise UsageError(f"{target} exists; pass --force to replace it", option="force")
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=partial_prefix(repo, entry.name), dir=repo))
    old = None
    try:
        version = staging / "1"
        version.mkdir()
        shutil.copyfile(path, version / entry.model_file)
        if entry.backend == OPENVINO_BACKEND:
            shutil.copyfile(path.with_suffix(".bin"), version / "model.bin")
        (staging / "config.pbtxt").write_text(config_text(entry), encoding="utf-8")
        if entry.labels:
            (staging / "labels.txt").write_text("\n".join(entry.labels) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(readme_text(entry, path), encoding="utf-8")
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; a served repository is read by the server's user
        if os.path.lexists(target):
            old = Path(tempfile.mkdtemp(prefix=partial_prefix(repo, entry.name + ".old"), dir=repo))
            os.replace(target, old / entry.name)
        os.replace(staging, target)
    except BaseException:
        if old is not None and not os.path.lexists(target):
            os.replace(old / entry.name, target)  # put the previous entry back
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return entry, target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["DEVICES", "ModelEntry", "Port", "TritonOptions", "config_text", "describe", "preferred_sizes",
           "readme_text", "write_repository"]
