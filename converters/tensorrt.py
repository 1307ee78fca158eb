"""ONNX to a serialized TensorRT engine (``NAME.plan``), its sidecar (``NAME.plan.json``) and layers (``NAME.plan.layers.json``).

Precision lives in the ONNX file (FP32, FP16 casts, INT8 Q/DQ pairs from ``dnet.converters.precision``); the build
is strongly typed, so TensorRT compiles exactly the types the ONNX says. TensorRT 11 removed the weak-typing
builder flags (the FP16 and INT8 members of ``BuilderFlag``), the implicit INT8 calibrator and
``platform_has_fast_*``; none of them is used here, so the same code builds with TensorRT 10.9+ and 11.x
(``tests/converters/test_tensorrt_api.py`` checks every ``trt.*`` name used here, on the class it is used on, against
the real bindings of both).

The build runs with ``ProfilingVerbosity.DETAILED`` and stores what ``IEngineInspector`` reports about the engine
(layers, precisions, tactics, formats) beside the plan, as trtexec's ``--exportLayerInfo`` does; ``dnet inspect
NAME.plan`` summarises it (``dnet.core.artifact.layers``).

``tensorrt`` and CUDA are imported only inside :func:`build_plan` (through ``dnet.engines.tensorrt_runtime``, which also holds the
process's one TensorRT logger); the sidecar and the compatibility policy are ``dnet.core.artifact.sidecar``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dnet.core.artifact.layers import layers_path, write_layers
from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.artifact.onnxfile import INPUT, input_dims, read_meta, read_model
from dnet.core.artifact.sidecar import AMPERE, HARDWARE_COMPAT, PROFILE, EngineSidecar, sidecar_path, sidecar_text
from dnet.core.atomic import atomic_path, sha256_file
from dnet.core.errors import DnetError, EngineError, FileFormatError, UsageError
from dnet.core.outputs import check_output_path
from dnet.engines.tensorrt_runtime import create, cuda_device, import_tensorrt, logging_to, major_version, stderr_line

if TYPE_CHECKING:  # annotations only: tensorrt is imported inside build_plan
    import tensorrt



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


def _parse_errors(parser: tensorrt.OnnxParser) -> list[str]:
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node_name() or f"#{error.node()}"
        op = error.node_operator()
        lines.append(f"node {node}" + (f" ({op})" if op else "") + f": {error.desc()}")
    return lines


def _timing_cache(trt, config: tensorrt.IBuilderConfig, path: Path | None, warn: Callable[[str], None]):
    """Attach a timing cache to ``config``: the one in ``path`` when TensorRT accepts it, else an empty one.

    ``create_timing_cache`` returns None for bytes it cannot read, and ``set_timing_cache(cache, False)`` returns False
    for a cache made on another GPU or TensorRT version (ONNX Runtime and Polygraphy check both): such a cache is
    replaced by an empty one, with a warning, never a crash.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if data:
        try:
            cache = config.create_timing_cache(data)
        except (RuntimeError, TypeError, ValueError):
            cache = None
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        warn(f"timing cache {path} is not one TensorRT {trt.__version__} can use on this GPU (corrupt, or made on "
             "another GPU or TensorRT version); building with an empty cache, which will replace it")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise EngineError("TensorRT could not create an empty timing cache; its log above says why")
    return cache


def _build_config(trt, builder: tensorrt.Builder, options: BuildOptions, chw: tuple[int, int, int],
                  warn: Callable[[str], None]) -> tensorrt.IBuilderConfig:
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
    # Layer names, precisions, tactics and formats for the inspector (and layer names the profiler can report).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    _timing_cache(trt, config, options.timing_cache, warn)
    lo, opt, hi = options.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    return config


def _network_flags(trt) -> int:
    # 10.x must ask for a strongly typed network (NetworkDefinitionCreationFlag.STRONGLY_TYPED is 1 there; 0 is the
    # deprecated EXPLICIT_BATCH, a weakly typed network). 11.x networks are always strongly typed: the flag is 0 and
    # ignored, and bit 1 would ask for PREFER_JIT_PYTHON_PLUGINS.
    if major_version(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _progress_monitor(trt, write: Callable[[str], None]):
    """A ``trt.IProgressMonitor`` that keeps one line on the terminal: the build phases and their steps."""
    base = trt.IProgressMonitor

    class BuildProgress(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.phases: dict[str, list[int]] = {}  # phase -> [steps done, steps], in the order they started

        def _show(self) -> None:
            text = " > ".join(f"{name} {done}/{total}" for name, (done, total) in self.phases.items())
            write(f"\rbuilding: {text}"[:119].ljust(119))

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            self.phases[phase_name] = [0, int(num_steps)]
            self._show()

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name in self.phases:
                self.phases[phase_name][0] = int(step) + 1
                self._show()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self.phases.pop(phase_name, None)
            self._show()

    return BuildProgress()


def _engine_information(trt, logger, plan: bytes, options: BuildOptions) -> str | None:
    """What ``IEngineInspector`` says about the built engine, as JSON (None if TensorRT cannot deserialize it)."""
    runtime = trt.Runtime(logger)
    if options.version_compatible:
        runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime; dnet built it just now
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_plan(onnx_path: str | Path, plan_path: str | Path, options: BuildOptions | None = None, *,
               verbose: bool = False, progress: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Build ``plan_path`` (strongly typed) from ``onnx_path``; write ``plan_path.json`` and ``plan_path.layers.json``.

    ``verbose`` sends TensorRT's whole build log to ``log`` (default: stderr); ``progress`` keeps a line on stderr
    with the build's phases. Raises NotInstalledError when TensorRT or a CUDA GPU is missing (the message names the
    ONNX file, which is kept), EngineError when TensorRT cannot parse or build the model (every parser error, with
    node names). The plan, its sidecar and its layers are written only after a successful build; the sidecar is
    written before the timing cache is saved, so a plan never lacks its sidecar.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    options = options or BuildOptions()
    log = log or stderr_line

    def warn(message: str) -> None:
        log(f"dnet: warning: {message}")

    if not onnx_path.is_file():
        raise FileFormatError(f"{onnx_path}: no such ONNX file")
    check_output_path(plan_path, inputs=[onnx_path])  # before the build, not after it
    if options.timing_cache is not None:  # read and written back: never the ONNX file, the plan, a device or a FIFO
        try:
            check_output_path(options.timing_cache, inputs=[onnx_path, plan_path])
        except UsageError:
            raise
        except DnetError:  # a folder that is missing or read-only: the build goes on and saving it warns
            pass
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
    with logging_to(trt, verbose, sink=log if verbose else None) as logger:
        builder: tensorrt.Builder = create(trt, trt.Builder, logger, where)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        # parse_from_file resolves external weight files relative to the ONNX file. It can return True and still
        # record errors (Polygraphy refuses that too): the network is then incomplete.
        parsed = parser.parse_from_file(str(onnx_path))
        if not parsed or parser.num_errors:
            errors = _parse_errors(parser)
            how = "cannot parse" if not parsed else "parsed, but reported errors in,"
            raise EngineError(
                f"TensorRT {how} {onnx_path.name} ({len(errors)} error{'s' * (len(errors) != 1)}): "
                + "; ".join(errors or ["no error reported"])
            )
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if INPUT not in names:
            raise EngineError(f"{onnx_path.name}: no input named {INPUT!r} (inputs: {', '.join(names)})")
        config = _build_config(trt, builder, options, chw, warn)
        if progress:
            config.progress_monitor = _progress_monitor(trt, lambda text: print(text, end="", file=sys.stderr,
                                                                                 flush=True))
        serialized = builder.build_serialized_network(network, config)
        if progress:
            print("\r" + " " * 119 + "\r", end="", file=sys.stderr, flush=True)
        if serialized is None:
            raise EngineError(f"TensorRT could not build an engine from {onnx_path.name}; its log above says why")
        plan = bytes(serialized)
        build_seconds = round(time.perf_counter() - started, 3)
        try:
            info = _engine_information(trt, logger, plan, options)
        except (RuntimeError, TypeError, ValueError) as e:
            info, why = None, str(e)
        else:
            why = "TensorRT could not deserialize the plan it built"
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
        build_seconds=build_seconds,
        version_compatible=options.version_compatible,
        hardware_compat=options.hardware_compat,
        options=options.to_dict(),
        meta=meta,
    )
    # both written before either is renamed into place: a full disk or ulimit -f keeps the previous pair whole
    with atomic_path(plan_path, size=len(plan), inputs=[onnx_path]) as tmp, \
            atomic_path(sidecar_path(plan_path), inputs=[onnx_path]) as side:
        tmp.write_bytes(plan)
        side.write_text(sidecar_text(sidecar), encoding="utf-8")
    try:
        if info is None:
            raise EngineError(why)
        write_layers(plan_path, info)
    except DnetError as e:
        layers_path(plan_path).unlink(missing_ok=True)  # an earlier plan's layers would describe another engine
        warn(f"no layer information for {plan_path.name} ({e}); dnet inspect will show the sidecar only")
    if options.timing_cache is not None:
        _save_timing_cache(config, options.timing_cache, warn, inputs=[onnx_path, plan_path])
    return plan_path


def _save_timing_cache(config: tensorrt.IBuilderConfig, path: Path, warn: Callable[[str], None], *,
                       inputs: list[Path]) -> None:
    cache = config.get_timing_cache()
    try:
        if cache is None:
            raise EngineError("TensorRT returned no timing cache")
        data = bytes(cache.serialize())
        with atomic_path(path, size=len(data), inputs=inputs) as tmp:  # the umask's mode, swept if killed
            tmp.write_bytes(data)
    except (DnetError, OSError) as e:
        warn(f"the timing cache was not saved to {path} ({e}); the plan and its sidecar are written")


__all__ = ["PROFILE", "BuildOptions", "build_plan", "check_profile", "read_onnx_meta"]
