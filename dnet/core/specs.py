"""Named preprocessing specifications: what a model expects to be fed.

A spec travels with every artifact (checkpoint, ONNX metadata, engine sidecar), so a model file alone
says how to feed it. ``dnet.data.transforms`` applies a spec to images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dnet.core.errors import UsageError


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw RGB pixels become the model's input tensor.

    ``mean``/``std`` are in the units of ``pixel_scale``: pixels are first scaled to [0, pixel_scale]
    (1.0 for the fb.resnet.torch ImageNet pipeline, 255.0 for the Lua CIFAR loaders).
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixel_scale: float = 1.0
    resize: int | None = None  # shorter side to this many pixels, None: no resize
    crop: int | None = None  # centre crop size, None: no crop
    interpolation: str = "none"  # "lua-bicubic" (image.scale), "bilinear" (Pillow, antialiased), "none"
    input_size: int = 224

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise UsageError(f"preprocessing spec has unknown fields: {', '.join(sorted(unknown))}")
        d = dict(d)
        d["mean"] = tuple(float(x) for x in d["mean"])
        d["std"] = tuple(float(x) for x in d["std"])
        return cls(**d)


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # fb.resnet.torch datasets/imagenet.lua meanstd
IMAGENET_STD = (0.229, 0.224, 0.225)

SPECS: dict[str, PreprocessSpec] = {
    # fb.resnet.torch val pipeline: Scale(256) bicubic (image.scale), ColorNormalize, CenterCrop(224).
    "torch7": PreprocessSpec("torch7", IMAGENET_MEAN, IMAGENET_STD, 1.0, 256, 224, "lua-bicubic", 224),
    # torchvision's published accuracies: Resize(256) bilinear antialiased, CenterCrop(224).
    "torchvision": PreprocessSpec("torchvision", IMAGENET_MEAN, IMAGENET_STD, 1.0, 256, 224, "bilinear", 224),
    # Lua CIFAR loaders (DenseNet repository, fb.resnet.torch datasets/cifar10.lua, cifar100.lua): 0-255 scale.
    "cifar10": PreprocessSpec("cifar10", (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), 255.0, input_size=32),
    "cifar100": PreprocessSpec("cifar100", (129.3, 124.1, 112.4), (68.2, 65.4, 70.4), 255.0, input_size=32),
    # The DenseNet paper (Sec. 4.2): SVHN pixels are divided by 255 to lie in [0, 1], no mean subtraction.
    "svhn": PreprocessSpec("svhn", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), 255.0, input_size=32),
    # dnet's built-in digits (scikit-learn's 8×8 images): per-channel mean/std of the training split on the 0-255
    # scale (as the Lua CIFAR loaders normalise), rounded to one decimal; grey images, so the channels are equal.
    "digits": PreprocessSpec("digits", (77.9, 77.9, 77.9), (95.9, 95.9, 95.9), 255.0, input_size=8),
}
# The ImageNet pipelines a model file's own preprocessing may be overridden with when it is evaluated on images.
IMAGE_SPECS = ("torch7", "torchvision")


def get_spec(name: str) -> PreprocessSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UsageError(f"unknown preprocessing {name!r}; choose from {', '.join(sorted(SPECS))}") from None

