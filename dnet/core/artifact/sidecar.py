"""The sidecar beside every TensorRT plan (``NAME.plan.json``) and the policy of where a plan may run.

A plan is opaque; its sidecar says what it is (dnet metadata carried over from the ONNX file), what built it
(TensorRT version, GPU, compute capability, options), its optimization profile and the sha256 of the plan and of
the ONNX file. ``check_compatible`` is the one place that decides whether this TensorRT and this GPU may run it.
Plain Python: it runs on any machine.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from dnet.core.artifact.meta import ArtifactMeta
from dnet.core.atomic import atomic_write_text
from dnet.core.errors import EngineError, FileFormatError

HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
SIDECAR_FORMAT = "dnet.tensorrt-plan"
SIDECAR_VERSION = 1
AMPERE = (8, 0)
PROFILE = (1, 8, 32)  # the default optimization profile: min, opt, max batch size
# A version-compatible plan runs on later releases of the TensorRT major version that built it, and across majors
# only where NVIDIA's support matrix says so (TensorRT 11.4: 8.x -> 10.x and 10.x -> 11.x), not N -> N+1 for every N.
CROSS_MAJOR = {8: 10, 10: 11}


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
            try:
                values["meta"] = ArtifactMeta.from_dict(values["meta"]) if values.get("meta") else None
            except FileFormatError as e:  # name the file and the key
                raise FileFormatError(f"{where}: key meta: {e}") from None
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


def sidecar_text(sidecar: EngineSidecar) -> str:
    """The sidecar file's text (JSON)."""
    return json.dumps(sidecar.to_dict(), indent=2) + "\n"


def write_sidecar(plan_path: str | Path, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(plan_path)
    atomic_write_text(path, sidecar_text(sidecar))
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


def version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in str(version).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def runs_version_compatible(built: str, running: str) -> bool:
    """Whether TensorRT ``running`` may run a plan built version-compatible by TensorRT ``built``."""
    b, r = version_tuple(built), version_tuple(running)
    if not b or not r or r < b:
        return False
    return r[0] == b[0] or CROSS_MAJOR.get(b[0]) == r[0]


def check_compatible(sidecar: EngineSidecar, trt_version: str, compute_capability: tuple[int, int],
                     gpu_name: str) -> None:
    """Refuse (EngineError) a plan this TensorRT version or GPU cannot run; the message says how to rebuild.

    Without version compatibility a plan runs only on the exact TensorRT version that built it; with it, on that
    version or a later one of the same major version, or of the next major where NVIDIA supports it (10 -> 11).
    Hardware: without a compatibility level a plan is specific to the GPU model that built it (same name and
    compute capability); "same-cc" runs on any GPU of that compute capability; "ampere+" on any GPU of compute
    capability 8.0 or later.
    """
    rebuild = f"rebuild it here: dnet convert {sidecar.onnx or 'MODEL.onnx'} --from onnx --to trt -o {sidecar.plan}"
    if sidecar.version_compatible:
        if not runs_version_compatible(sidecar.tensorrt_version, trt_version):
            built = version_tuple(sidecar.tensorrt_version)[:1] or (0,)
            majors = " or ".join(f"{m}.x" for m in (built[0], CROSS_MAJOR.get(built[0])) if m is not None)
            raise EngineError(
                f"{sidecar.plan} was built version-compatible with TensorRT {sidecar.tensorrt_version}, which "
                f"TensorRT {trt_version} cannot run (needs {majors} at least as new); {rebuild}"
            )
    elif version_tuple(trt_version) != version_tuple(sidecar.tensorrt_version):
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
    elif sidecar.hardware_compat == "none" and gpu_name != sidecar.gpu_name:
        raise EngineError(
            f"{sidecar.plan} was built for the {sidecar.gpu_name} and, without a hardware compatibility level, runs "
            f"only on that GPU model, not on this {gpu_name}; {rebuild} (or build with --hardware-compat same-cc "
            f"to run on any GPU of compute capability {built_text})"
        )


__all__ = ["AMPERE", "CROSS_MAJOR", "HARDWARE_COMPAT", "PROFILE", "EngineSidecar", "check_compatible", "read_sidecar",
           "runs_version_compatible", "sidecar_path", "sidecar_text", "version_tuple", "write_sidecar"]
