"""INT8 faults made on purpose (a layer's weight scales, coarse activation grids), and the FP32 accuracy dnet prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.models import normalise_images

BROKEN = "denseblock1.denselayer2.conv2"  # a layer of the digits model whose quantization the tests break


def break_weight_scales(monkeypatch, layer: str, factor: float = 50.0) -> None:
    """Make every INT8 build (dnet.converters.int8.placement) quantize ``layer``'s weights with ``factor`` × their scales.

    The weights it dequantizes are then ``factor`` × too large; a build that leaves the layer in float keeps its
    float weights and is unharmed, as when a real layer's quantization is what breaks it.
    """
    from onnx import numpy_helper

    from dnet.converters.int8 import placement as qdq

    real = qdq._Writer.weight

    def weight(self, name, qmax):
        out = real(self, name, qmax)
        if name == f"features.{layer}.weight":
            scale = self.graph.initializer[-2]
            assert scale.name == f"{name}_wscale"
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * factor, scale.name))
        return out

    monkeypatch.setattr(qdq._Writer, "weight", weight)


def coarsen_activation_grids(monkeypatch, factor: float = 16.0) -> None:
    """Make every INT8 build (dnet.converters.int8.placement) use ``factor`` × the calibrated activation scales.

    Each int8 tensor then keeps about 127/``factor`` levels, so the dense blocks' int8 feature maps, which no layer
    left in float can undo, lose accuracy on any CPU: a drop that accuracy control cannot remove, by construction.
    """
    from dnet.converters.int8 import placement as qdq

    real = qdq._absmax
    monkeypatch.setattr(qdq, "_absmax", lambda ranges, name: factor * real(ranges, name))


def fp32_top1_text(fp32: Path) -> str:
    """The FP32 file's top-1 accuracy on the 360 digits test images, as dnet prints it ("96.67%")."""
    from dnet.data.datasets import open_dataset
    from dnet.engines.onnxruntime import run

    test = open_dataset("digits", split="test")
    top1 = np.mean(run(fp32, normalise_images(test.images, test.spec)).argmax(1) == test.labels)
    return f"{100 * top1:.2f}%"
