"""ONNX to a serialized TensorRT engine (``NAME.plan``) and its sidecar (``NAME.plan.json``).

Precision lives in the ONNX file (FP32, FP16 casts, INT8 Q/DQ pairs from ``dnet.converters.precision``); the build
is strongly typed, so TensorRT compiles exactly the types the ONNX says. TensorRT 11 removed the weak-typing
builder flags (the FP16 and INT8 members of ``BuilderFlag``), the implicit INT8 calibrator and
``platform_has_fast_*``; none of them is used here, so the same code builds with TensorRT 10.9+ and 11.x
(``tests/converters/test_tensorrt_api.py`` checks every ``trt.*`` name used here against the real bindings of both).

``tensorrt`` and CUDA are imported only inside :func:`build_plan` (through ``dnet.engines.gpu``); the sidecar and
the compatibility policy are ``dnet.artifact.sidecar``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from dnet.artifact.meta import ArtifactMeta
from dnet.artifact.onnxfile import INPUT, input_dims, read_meta, read_model
from dnet.artifact.sidecar import AMPERE, HARDWARE_COMPAT, EngineSidecar, write_sidecar
from dnet.engines.gpu import cuda_device, import_tensorrt, major_version
from dnet.errors import EngineError, FileFormatError, UsageError
from dnet.files import atomic_path, sha256_file

PROFILE = (1, 8, 32)  # the default optimization profile: min, opt, max batch size


def check_profile(profile: tuple[int, int, int]) -> tuple[int, int, int]:
    """An optimization profile (min, opt, max batch) with 1 <= min <= opt <= max, else UsageError."""
    lo, opt, hi = (int(v) for v in profile)
    if not 1 <= lo <= opt <= hi:
        raise UsageError(f"profile {lo},{opt},{hi} must satisfy 1 <= min <= opt <= max", option="profile")
    return lo, opt, hi


@dataclass(frozen=True)
class BuildOptions:
    """How a plan is built; each field is one ``dnet convert --to trt`` option."""

    profile: tuple[int, int, int] = PROFILE  # optimization profile: min, opt, max batch size
    workspace_mib: int | None = None  # workspace memory pool limit; None: TensorRT's default (the whole GPU)
    opt_level: int | None = None  # builder optimization level 0..5; None: TensorRT's default (3)
    timing_cache: Path | None = None  # loaded if it exists, written back after the build
    version_compatible: bool = False  # plan runs on later TensorRT versions (embeds the lean runtime)
    hardware_compat: str = "none"  # one of HARDWARE_COMPAT
    # TensorRT lets FP32 convolutions use TF32 tensor cores (10-bit mantissa) unless told not to. Off here: an FP32
    # plan computes what the FP32 ONNX says (precision lives in the ONNX); FP16/INT8 ONNX files are the fast path.
    tf32: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", check_profile(self.profile))
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UsageError(f"workspace must be at least 1 MiB, got {self.workspace_mib}", option="workspace_mib")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise UsageError(f"builder optimization level must be 0..5, got {self.opt_level}", option="opt_level")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise UsageError(
                f"hardware compatibility {self.hardware_compat!r} is not one of: {', '.join(HARDWARE_COMPAT)}",
                option="hardware_compat",
            )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["profile"] = list(self.profile)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache is not None else None
        return d


# ---------------------------------------------------------------------------------------------------------------
# The build.


def read_onnx_meta(onnx_path: Path) -> tuple[ArtifactMeta | None, tuple[int, int, int]]:
    """dnet metadata and the (C, H, W) of the input, from an ONNX file (its fixed dims, else its metadata)."""
    proto = read_model(onnx_path)
    meta = read_meta(proto)
    dims = input_dims(proto, INPUT)
    if len(dims) == 4 and all(s > 0 for s in dims[1:]):
        return meta, dims[1:]
    if meta is not None:
        return meta, (3, meta.input_size, meta.input_size)
    raise FileFormatError(
        f"{onnx_path}: input {INPUT!r} has no fixed C,H,W and the file carries no dnet metadata; "
        "export it with dnet convert --to onnx"
    )


def _parse_errors(parser) -> list[str]:
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node_name() or f"#{error.node()}"
        op = error.node_operator()
        lines.append(f"node {node}" + (f" ({op})" if op else "") + f": {error.desc()}")
    return lines


def _build_config(trt, builder, options: BuildOptions, chw: tuple[int, int, int], cache_bytes: bytes | None):
    config = builder.create_builder_config()
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif options.hardware_compat == "same-cc":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    # An empty buffer makes a fresh cache; ignore_mismatch=False refuses a cache made on another GPU or version.
    cache = config.create_timing_cache(cache_bytes or b"")
    config.set_timing_cache(cache, False)
    lo, opt, hi = options.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    return config


def _network_flags(trt) -> int:
    # TensorRT 11 networks are always strongly typed (the flag is deprecated and ignored there); 10.x must ask.
    if major_version(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_plan(onnx_path: str | Path, plan_path: str | Path, options: BuildOptions | None = None) -> Path:
    """Build ``plan_path`` (strongly typed) from ``onnx_path`` and write ``plan_path.json`` beside it.

    Raises NotInstalledError when TensorRT or a CUDA GPU is missing (the message names the ONNX file, which is kept),
    EngineError when TensorRT cannot parse or build the model (every parser error, with node names).
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    options = options or BuildOptions()
    if not onnx_path.is_file():
        raise FileFormatError(f"{onnx_path}: no such ONNX file")
    meta, chw = read_onnx_meta(onnx_path)
    precision = (meta.precision if meta is not None else "").upper()
    where = f"the {precision + ' ' if precision else ''}ONNX is at {onnx_path}"
    trt = import_tensorrt(where)
    gpu_name, cc = cuda_device(where)
    if options.hardware_compat == "ampere+" and cc < AMPERE:
        raise UsageError(
            f"--hardware-compat ampere+ needs an Ampere or newer GPU to build on; this {gpu_name} is "
            f"compute capability {cc[0]}.{cc[1]}"
        )

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weight files relative to the ONNX file.
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parse_errors(parser)
        raise EngineError(
            f"TensorRT cannot parse {onnx_path.name} ({len(errors)} error{'s' * (len(errors) != 1)}): "
            + "; ".join(errors or ["no error reported"])
        )
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if INPUT not in names:
        raise EngineError(f"{onnx_path.name}: no input named {INPUT!r} (inputs: {', '.join(names)})")

    cache_file = options.timing_cache
    cache_bytes = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else None
    config = _build_config(trt, builder, options, chw, cache_bytes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path.name}; its log above says why")
    plan = bytes(serialized)
    with atomic_path(plan_path) as tmp:
        tmp.write_bytes(plan)
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))

    lo, opt, hi = options.profile
    sidecar = EngineSidecar(
        plan=plan_path.name,
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name,
        compute_capability=cc,
        input_name=INPUT,
        profile={"min": [lo, *chw], "opt": [opt, *chw], "max": [hi, *chw]},
        onnx=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - started, 3),
        version_compatible=options.version_compatible,
        hardware_compat=options.hardware_compat,
        options=options.to_dict(),
        meta=meta,
    )
    write_sidecar(plan_path, sidecar)
    return plan_path


__all__ = ["PROFILE", "BuildOptions", "build_plan", "check_profile", "read_onnx_meta"]
