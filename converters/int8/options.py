"""Every INT8 choice of a conversion in one frozen value, grouped as onnxruntime's ``StaticQuantConfig`` groups them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnet.converters.int8.calibration import METHODS, CalibrationSet
from dnet.converters.int8.divergence import INT8_CHECK_IMAGES, INT8_MIN_COSINE, INT8_MIN_TOP1
from dnet.converters.int8.mixed import MixedPrecision, ValidationSet
from dnet.converters.int8.placement import FALLBACKS, TARGETS, WEIGHT_BITS
from dnet.core.errors import UsageError, require_one_of

LAYOUTS = ("densenet", "ort")  # dnet's placement for the target, or onnxruntime.quantization's (the reference)


@dataclass(frozen=True)
class Int8Options:
    """Target, calibration, weights, the check against FP32, exclusions and the accuracy bound of an INT8 file."""

    target: str | None = None  # cpu | openvino | tensorrt; None: the conversion's (tensorrt for a TensorRT engine, else cpu)
    layout: str = LAYOUTS[0]
    calib: CalibrationSet | None = None  # calibration images (the FP32 and FP16 checks borrow a few)
    method: str = "minmax"
    cache: Path | None = None  # calibration cache; default NAME.calib.json beside the output
    weight_bits: int | None = None  # None: the target's (cpu 7, tensorrt 8; dnet.converters.int8.placement)
    check_images: int = INT8_CHECK_IMAGES  # held-out images the file is checked on against FP32 (0: no check)
    min_cosine: float = INT8_MIN_COSINE
    min_top1: float = INT8_MIN_TOP1
    exclude: tuple[str, ...] = ()  # layer name patterns left in higher precision (dnet.converters.int8.mixed)
    fallback: str | None = None  # their precision: fp32 or fp16; None: fp16 for TensorRT, fp32 for an ONNX file
    val: ValidationSet | None = None  # images the drop in top-1 accuracy is measured on
    max_drop: float | None = None  # points: leave the most sensitive layers in float until the drop is within it

    def __post_init__(self) -> None:
        if self.target is not None:
            require_one_of("INT8 target", self.target, TARGETS, "int8_target")
        require_one_of("INT8 layout", self.layout, LAYOUTS, "int8_layout")
        require_one_of("calibration method", self.method, METHODS, "calib_method")
        if self.weight_bits is not None:
            require_one_of("INT8 weight bits", self.weight_bits, WEIGHT_BITS, "int8_weight_bits")
        if self.fallback is not None:
            require_one_of("the precision of excluded layers", self.fallback, FALLBACKS, "int8_fallback")
        if self.check_images < 0:
            raise UsageError(f"INT8 check images must be 0 or more, got {self.check_images}", option="int8_check_images")
        for name in ("min_cosine", "min_top1"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"int8 {name.replace('_', ' ')} must be within [0, 1], got {getattr(self, name)}",
                                 option=f"int8_{name}")
        self.mixed_precision("cpu")  # refuses what no model could meet
        if self.layout != "densenet" and self.mixed:
            raise UsageError("layers in higher precision and accuracy control need the densenet INT8 layout",
                             option="int8_layout")

    @property
    def mixed(self) -> bool:
        """Whether the file's precision is chosen per layer (by hand or by accuracy control)."""
        return bool(self.exclude) or self.val is not None or self.max_drop is not None

    def target_for(self, engine: bool) -> str:
        """The target of a conversion's INT8 file: tensorrt when it feeds a TensorRT engine (``engine``)."""
        if engine:
            if self.target == "cpu":
                raise UsageError("a TensorRT engine is built from the TensorRT INT8 layout: leave out the cpu target "
                                 "(or convert --to onnx --precision int8 for the CPU file)", option="int8_target")
            return "tensorrt"
        return self.target or "cpu"

    def mixed_precision(self, target: str) -> MixedPrecision | None:
        """What to_int8 is asked for; excluded layers default to FP16 for TensorRT, FP32 for a CPU file."""
        if not self.mixed:
            return None
        fallback = self.fallback or ("fp16" if target == "tensorrt" else "fp32")
        return MixedPrecision(self.exclude, fallback, self.val, self.max_drop)
