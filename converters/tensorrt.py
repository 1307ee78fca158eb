"""ONNX to a serialized TensorRT engine (``NAME.plan``) and its description (``NAME.plan.json``).

Precision lives in the ONNX file (FP32, FP16 casts, INT8 Q/DQ pairs from ``converters.precision``); the build is
strongly typed, so TensorRT compiles exactly the types the ONNX says. TensorRT 11 removed the weak-typing
builder flags (the FP16 and INT8 members of ``BuilderFlag``), the implicit INT8 calibrator and ``platform_has_fast_*``; none of them is
used here, so the same code builds with TensorRT 10.9+ and 11.x (``tests/converters/test_tensorrt_api.py`` checks
every ``trt.*`` name used here against the real bindings of both).

``tensorrt`` and CUDA are imported only inside :func:`build_plan`; the sidecar and the compatibility decision
are plain functions that run anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from dnet.artifact import ArtifactMeta
from dnet.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from dnet.files import atomic_path, atomic_write_text, sha256_file

INPUT_NAME = "input"  # the input tensor name converters.onnx gives every model
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
SIDECAR_FORMAT = "dnet.tensorrt-plan"
SIDECAR_VERSION = 1
INSTALL_HINT = "TensorRT is not installed: pip install 'dnet[tensorrt]' (needs NVIDIA's package index)"
AMPERE = (8, 0)


@dataclass(frozen=True)
class BuildOptions:
    """How a plan is built; each field is one ``dnet convert --to trt`` option."""

    batch: tuple[int, int, int] = (1, 8, 32)  # optimization profile min, opt, max batch size
    workspace_mib: int | None = None  # workspace memory pool limit; None: TensorRT's default (the whole GPU)
    opt_level: int | None = None  # builder optimization level 0..5; None: TensorRT's default (3)
    timing_cache: Path | None = None  # loaded if it exists, written back after the build
    version_compatible: bool = False  # plan runs on later TensorRT versions (embeds the lean runtime)
    hardware_compat: str = "none"  # "none" | "ampere+" | "same-cc"
    # TensorRT lets FP32 convolutions use TF32 tensor cores (10-bit mantissa) unless told not to. Off here: an FP32
    # plan computes what the FP32 ONNX says (precision lives in the ONNX); FP16/INT8 ONNX files are the fast path.
    tf32: bool = False

    def __post_init__(self) -> None:
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise UsageError(f"--batch profile {lo},{opt},{hi} must satisfy 1 <= min <= opt <= max")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UsageError(f"workspace must be at least 1 MiB, got {self.workspace_mib}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise UsageError(f"builder optimization level must be 0..5, got {self.opt_level}")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise UsageError(
                f"hardware compatibility {self.hardware_compat!r} is not one of: {', '.join(HARDWARE_COMPAT)}"
            )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["batch"] = list(self.batch)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache is not None else None
        return d


def parse_batch_profile(text: str) -> tuple[int, int, int]:
    """``"1,8,32"`` -> (1, 8, 32); a single number N means N,N,N. One clear UsageError otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts = parts * 3
    try:
        if len(parts) != 3:
            raise ValueError
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--batch profile {text!r} is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)") from None
    if not 1 <= lo <= opt <= hi:
        raise UsageError(f"--batch profile {text!r} must satisfy 1 <= min <= opt <= max")
    return lo, opt, hi


# ---------------------------------------------------------------------------------------------------------------
# The sidecar: what a plan is, what built it, and on what it can run.


@dataclass(frozen=True)
class EngineSidecar:
    plan: str  # the plan's file name
    plan_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    input_name: str
    profile: dict  # {"min": [N,C,H,W], "opt": [...], "max": [...]}
    onnx: str  # the ONNX file's name
    onnx_sha256: str
    built_at: str  # ISO 8601, UTC
    build_seconds: float
    version_compatible: bool = False
    hardware_compat: str = "none"
    options: dict = field(default_factory=dict)  # BuildOptions.to_dict()
    meta: ArtifactMeta | None = None  # dnet metadata carried over from the ONNX file

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    @property
    def min_batch(self) -> int:
        return int(self.profile["min"][0])

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["compute_capability"] = list(self.compute_capability)
        d["meta"] = self.meta.to_dict() if self.meta is not None else None
        return {"format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "sidecar") -> EngineSidecar:
        if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
            raise FileFormatError(f"{where}: not a dnet TensorRT sidecar (no \"format\": \"{SIDECAR_FORMAT}\")")
        if d.get("format_version") != SIDECAR_VERSION:
            raise FileFormatError(
                f"{where}: sidecar format version {d.get('format_version')!r} is not {SIDECAR_VERSION}; rebuild the plan"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            values = {k: v for k, v in d.items() if k in known}
            major, minor = (int(x) for x in values["compute_capability"])
            values["compute_capability"] = (major, minor)
            values["meta"] = ArtifactMeta.from_dict(values["meta"]) if values.get("meta") else None
            for key in ("min", "opt", "max"):
                if len(values["profile"][key]) != 4:
                    raise ValueError(f"profile {key} is not N,C,H,W")
            sidecar = cls(**values)
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{where}: sidecar is incomplete or malformed ({type(e).__name__}: {e})") from None
        if sidecar.hardware_compat not in HARDWARE_COMPAT:
            raise FileFormatError(f"{where}: unknown hardware compatibility {sidecar.hardware_compat!r}")
        return sidecar


def sidecar_path(plan_path: str | Path) -> Path:
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def write_sidecar(plan_path: str | Path, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(plan_path)
    atomic_write_text(path, json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return path


def read_sidecar(plan_path: str | Path) -> EngineSidecar:
    """The sidecar beside ``plan_path``; a clear FileFormatError when it is missing or corrupt."""
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise FileFormatError(
            f"{path.name} is missing: a dnet plan needs the sidecar written beside it by dnet convert --to trt; "
            f"rebuild {Path(plan_path).name} from its ONNX file"
        )
    if path.stat().st_size > 16 << 20:  # a sidecar is a few kB; refuse to read a huge file as one
        raise FileFormatError(f"{path.name}: {path.stat().st_size} bytes is too large for a sidecar")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{path.name}: sidecar is not valid JSON ({e})") from None
    return EngineSidecar.from_dict(data, where=path.name)


def _version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in str(version).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_compatible(sidecar: EngineSidecar, trt_version: str, compute_capability: tuple[int, int]) -> None:
    """Refuse (EngineError) a plan this TensorRT version or GPU cannot run; the message says how to rebuild.

    Without version compatibility a plan runs only on the exact TensorRT version that built it; with it, on that
    version or a later one (up to the next major version, as NVIDIA documents for 10 -> 11). Without hardware
    compatibility, or with "same-cc", it runs only on the compute capability that built it; "ampere+" runs on any
    GPU of compute capability 8.0 or later.
    """
    rebuild = f"rebuild it here: dnet convert {sidecar.onnx or 'MODEL.onnx'} --from onnx --to trt -o {sidecar.plan}"
    built, running = _version_tuple(sidecar.tensorrt_version), _version_tuple(trt_version)
    if sidecar.version_compatible:
        if running < built or running[:1] > (built[0] + 1,):
            raise EngineError(
                f"{sidecar.plan} was built version-compatible with TensorRT {sidecar.tensorrt_version}, which "
                f"TensorRT {trt_version} cannot run (needs {built[0]}.x or {built[0] + 1}.x at least as new); {rebuild}"
            )
    elif running != built:
        raise EngineError(
            f"{sidecar.plan} was built with TensorRT {sidecar.tensorrt_version} but this is TensorRT {trt_version}; "
            f"{rebuild} (or build with --version-compatible)"
        )
    cc = tuple(compute_capability)
    built_cc = tuple(sidecar.compute_capability)
    cc_text, built_text = ".".join(map(str, cc)), ".".join(map(str, built_cc))
    if sidecar.hardware_compat == "ampere+":
        if cc < AMPERE:
            raise EngineError(
                f"{sidecar.plan} was built for Ampere or newer GPUs (compute capability >= 8.0) but this GPU has "
                f"compute capability {cc_text}; {rebuild}"
            )
    elif cc != built_cc:
        raise EngineError(
            f"{sidecar.plan} was built for a GPU of compute capability {built_text} ({sidecar.gpu_name}) but this GPU "
            f"has compute capability {cc_text}; {rebuild} (or build with --hardware-compat ampere+)"
        )


# ---------------------------------------------------------------------------------------------------------------
# Optional dependencies, imported only when a build or an engine needs them.


def import_tensorrt(what: str):
    """The ``tensorrt`` module, or NotInstalledError("TensorRT is not installed: ...; <what>")."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: the bindings are there but libnvinfer is not
        raise NotInstalledError(f"{INSTALL_HINT}; {what}") from None
    return trt


def cuda_device(what: str) -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of the current CUDA device, or NotInstalledError("no CUDA GPU found ...")."""
    import torch

    if not torch.cuda.is_available():
        raise NotInstalledError(f"no CUDA GPU found (torch.cuda.is_available() is False); {what}")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (int(major), int(minor))


def major_version(trt) -> int:
    return _version_tuple(trt.__version__)[0]


# ---------------------------------------------------------------------------------------------------------------
# The build.


def read_onnx_meta(onnx_path: Path) -> tuple[ArtifactMeta | None, tuple[int, int, int] | None]:
    """dnet metadata and the (C, H, W) of input ``input`` from an ONNX file, without loading external weights."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise FileFormatError(f"{onnx_path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    meta = ArtifactMeta.from_strings({p.key: p.value for p in model.metadata_props})
    chw = None
    for value in model.graph.input:
        if value.name == INPUT_NAME:
            dims = value.type.tensor_type.shape.dim
            sizes = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
            if len(sizes) == 4 and all(s > 0 for s in sizes[1:]):
                chw = sizes[1:]
    return meta, chw


def _input_chw(meta: ArtifactMeta | None, chw: tuple[int, int, int] | None, onnx_path: Path) -> tuple[int, int, int]:
    if chw is not None:
        return chw
    if meta is not None:
        return (3, meta.input_size, meta.input_size)
    raise FileFormatError(
        f"{onnx_path}: input {INPUT_NAME!r} has no fixed C,H,W and the file carries no dnet metadata; "
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
    lo, opt, hi = options.batch
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (lo, *chw), (opt, *chw), (hi, *chw))
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
    chw = _input_chw(meta, chw, onnx_path)
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
    if INPUT_NAME not in names:
        raise EngineError(f"{onnx_path.name}: no input named {INPUT_NAME!r} (inputs: {', '.join(names)})")

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

    lo, opt, hi = options.batch
    sidecar = EngineSidecar(
        plan=plan_path.name,
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name,
        compute_capability=cc,
        input_name=INPUT_NAME,
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


__all__ = [
    "BuildOptions",
    "EngineSidecar",
    "build_plan",
    "check_compatible",
    "parse_batch_profile",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]
