"""The description every dnet artifact carries: checkpoint metadata, ONNX ``metadata_props``, engine sidecars.

``ArtifactMeta`` is the one contract between converters, engines and ``dnet eval``: an artifact says which
model it is, how many classes it has, how to feed it and where it came from, so no other flag is needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field

from dnet.core.errors import DnetWarning, FileFormatError, UsageError
from dnet.core.specs import SPECS, PreprocessSpec

PREFIX = "dnet."  # key prefix in ONNX metadata_props
# Largest input side an artifact may claim: 16 Mpx, far above any DenseNet's (224..448); a file's claim above it
# would make dnet allocate inputs of that size (compare, eval) before anything else fails.
MAX_INPUT_SIZE = 4096
MAX_CLASSES = 1_000_000


INTERPOLATIONS = ("lua-bicubic", "bilinear", "none")
INT8_TARGETS = (None, "cpu", "tensorrt", "openvino")  # None: not INT8, or written before files recorded their target


def _check_spec(spec: PreprocessSpec) -> None:
    """A preprocessing read from a file: sizes that dnet can allocate, three channels, a known interpolation."""
    for name in ("resize", "crop", "input_size"):
        v = getattr(spec, name)
        if v is None and name != "input_size":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INPUT_SIZE:
            raise ValueError(f"preprocess {name} {v!r} is not a whole number in 1..{MAX_INPUT_SIZE}")
    if len(spec.mean) != 3 or len(spec.std) != 3 or not all(s > 0 for s in spec.std):
        raise ValueError("preprocess mean and std need three values, std positive")
    if spec.interpolation not in INTERPOLATIONS or not (isinstance(spec.pixel_scale, int | float) and
                                                         math.isfinite(spec.pixel_scale) and spec.pixel_scale > 0):
        raise ValueError(f"preprocess interpolation {spec.interpolation!r} or pixel scale {spec.pixel_scale!r} is unknown")
    # A mean outside the pixel range or a std below a thousandth of it is no camera's statistics: a tampered or broken
    # file (std 1e-30 turns every image into ±inf; NaN scores nothing), refused before it feeds a model.
    scale = float(spec.pixel_scale)
    if not all(math.isfinite(m) and -scale <= m <= 2 * scale for m in spec.mean):
        raise ValueError(f"preprocess mean {list(spec.mean)} is not within the pixel range 0..{scale:g}")
    if not all(math.isfinite(s) and scale / 1000 <= s <= 10 * scale for s in spec.std):
        raise ValueError(f"preprocess std {list(spec.std)} is not between {scale / 1000:g} and {10 * scale:g}")
    # The name is what a user reads (inspect, eval's header); the numbers are what runs: they must be the same thing.
    preset = SPECS.get(spec.name)
    if preset is None:
        raise ValueError(f"preprocess name {spec.name!r} is not one of {', '.join(sorted(SPECS))}")
    for name in ("mean", "std", "pixel_scale"):
        got, want = getattr(spec, name), getattr(preset, name)
        if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(_seq(got), _seq(want), strict=True)):
            raise ValueError(f"preprocess {name} {_text(got)} is not {spec.name}'s {_text(want)}: the file was edited")


def _seq(v) -> list[float]:
    return [float(x) for x in v] if isinstance(v, list | tuple) else [float(v)]


def _text(v) -> str:
    return str([float(x) for x in v]) if isinstance(v, list | tuple) else f"{float(v):g}"


def _check_calibration(calib) -> None:
    """INT8 calibration details as dnet writes them: a dict whose ``layout`` and ``accuracy`` are dicts too."""
    if calib is None:
        return
    if not isinstance(calib, dict):
        raise ValueError(f"calibration is {type(calib).__name__} {calib!r}, not a dict")
    for key in ("layout", "accuracy"):
        if calib.get(key) is not None and not isinstance(calib[key], dict):
            raise ValueError(f"calibration {key} is {type(calib[key]).__name__}, not a dict")
    layout = calib.get("layout") or {}
    if layout.get("excluded") is not None and not (isinstance(layout["excluded"], list) and
                                                   all(isinstance(x, str) for x in layout["excluded"])):
        raise ValueError("calibration layout excluded is not a list of layer names")


PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ArtifactMeta:
    model: str  # zoo name when the architecture is a zoo entry, else "custom"
    num_classes: int
    input_size: int
    preprocess: PreprocessSpec
    precision: str = "fp32"  # fp32 | fp16 | int8
    source: str = ""  # the file this artifact was made from (name only)
    source_sha256: str = ""
    config: dict = field(default_factory=dict)  # DenseNetConfig.to_dict() when known
    calibration: dict | None = None  # INT8: method, image count, data, cache sha256
    int8_target: str | None = None  # INT8: the runtime whose rules the Q/DQ placement follows: "cpu", "tensorrt" or "openvino"
    dnet_version: str = ""
    extra: dict = field(default_factory=dict)  # anything else a step wants to record

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArtifactMeta:
        try:
            d = dict(d)
            d["preprocess"] = PreprocessSpec.from_dict(d["preprocess"])
            known = {f.name for f in dataclasses.fields(cls)}
            meta = cls(**{k: v for k, v in d.items() if k in known})
            for name, top in (("num_classes", MAX_CLASSES), ("input_size", MAX_INPUT_SIZE)):
                v = getattr(meta, name)
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                    raise ValueError(f"{name} {v!r} is not a whole number in 1..{top:,}")
            if meta.int8_target not in INT8_TARGETS:
                raise ValueError(f"int8_target {meta.int8_target!r} is not one of cpu, tensorrt, openvino")
            if not isinstance(meta.extra, dict) or not isinstance(meta.config, dict):
                raise ValueError("extra and config must be dicts")
            for name in ("model", "precision", "source", "source_sha256", "dnet_version"):
                if not isinstance(getattr(meta, name), str):
                    raise ValueError(f"{name} {getattr(meta, name)!r} is not text")
            if meta.precision not in PRECISIONS:
                raise ValueError(f"precision {meta.precision!r} is not one of {', '.join(PRECISIONS)}")
            _check_spec(meta.preprocess)
            _check_calibration(meta.calibration)
            return meta
        except (KeyError, TypeError, ValueError, AttributeError, UsageError) as e:
            raise FileFormatError(f"artifact metadata is incomplete or malformed: {e}") from None

    def to_strings(self) -> dict[str, str]:
        """Flat string pairs for ONNX ``metadata_props`` (JSON for structured values)."""
        return {PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_strings(cls, props: dict[str, str], name: str | None = None) -> ArtifactMeta | None:
        """Inverse of :meth:`to_strings`; None when the props hold no dnet metadata at all. ``name`` (the file's)
        starts the message of metadata that is refused."""
        where = f"{name}: " if name else ""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            return None
        values = {}
        for k, v in ours.items():
            try:
                values[k] = json.loads(v)
            except json.JSONDecodeError as e:
                raise FileFormatError(f"{where}metadata key {PREFIX}{k} is not valid JSON ({e})") from None
        try:
            return cls.from_dict(values)
        except FileFormatError as e:
            raise FileFormatError(f"{where}{e}") from None


CLASSIFIER = "dnet runs image classifiers: one N×3×H×W image input and one N×classes output"


def shape_text(dims) -> str:
    """``1×3×?×?``: the dimensions, ``?`` where one is unknown."""
    return "×".join(str(d) if d > 0 else "?" for d in dims) or "a scalar"


def check_classifier_shapes(name, dims, out_dims, meta: ArtifactMeta | None, *, input_label: str = "input",
                            output_label: str = "output", no_rank: str = "no recorded shape") -> None:
    """The shape rules every model file obeys, whatever format holds it (ONNX, OpenVINO IR): a 4-d input with 3
    (or unknown) channels and sides up to MAX_INPUT_SIZE, a 2-d output of at most MAX_CLASSES, and dnet metadata
    (if any) that agrees with both. ``dims``/``out_dims`` use -1 for an unknown dimension and None for an unknown
    rank; the labels name the ports in the message (``input 'x'``)."""
    if dims is None or len(dims) != 4 or dims[1] not in (3, -1):
        shape = no_rank if dims is None else shape_text(dims)
        raise FileFormatError(f"{name}: {CLASSIFIER}; its {input_label} has {shape}")
    if any(d > MAX_INPUT_SIZE for d in dims[2:]):
        raise FileFormatError(f"{name}: its input is {dims[2]}×{dims[3]}; dnet runs inputs up to {MAX_INPUT_SIZE} "
                              "pixels a side")
    if out_dims is not None and (len(out_dims) != 2 or out_dims[1] > MAX_CLASSES):
        raise FileFormatError(f"{name}: {CLASSIFIER}; its {output_label} is {shape_text(out_dims)}, not N×classes")
    if meta is not None:
        if dims[2] > 0 and (dims[2], dims[3]) != (meta.input_size, meta.input_size):
            raise FileFormatError(f"{name}: its metadata says {meta.input_size}×{meta.input_size} inputs, the graph "
                                  f"takes {dims[2]}×{dims[3]}")
        if out_dims is not None and out_dims[1] > 0 and out_dims[1] != meta.num_classes:
            raise FileFormatError(f"{name}: its metadata says {meta.num_classes} classes, the graph gives {out_dims[1]}")


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Each verb reads a file's metadata several times (by path and by name); say a warning about it once."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, DnetWarning, stacklevel=3)
