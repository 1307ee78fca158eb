"""Which ONNX ``Conv`` node is which DenseNet convolution: ``conv0``, ``denseblock3.denselayer7.conv2``, ``transition2.conv``.

dnet's export records each convolution's output tensor in the file's metadata (``extra["convs"]``: module name under
``features`` -> tensor, in network order). Files without it (older dnet exports, other exporters) are read by the weight
each Conv uses: torch's exporters keep the parameter's name (``features.denseblock1.denselayer1.conv1.weight``), and
onnxruntime.quantization keeps it as the prefix of the quantized copy behind a DequantizeLinear (``..._quantized``).

What a "convolution's output" is, exactly:

- the float tensor the ``Conv`` node writes. In a Q/DQ file that is the tensor *before* the QuantizeLinear that follows
  the Conv (the QuantizeLinear's input), not the int8 tensor, nor its dequantized copy;
- a BatchNormalization that directly follows a convolution is folded into it by the exporter (``norm0`` after the
  ImageNet stem's ``conv0``, ``norm2`` after a bottleneck's ``conv1``): that convolution's output is the normalised one;
- in a uint8 file onnxruntime.quantization drops the ReLU after such a Conv, and the Conv then writes the ReLU's tensor
  name; the node is still found by its weight, and its values are still the ReLU's input;
- dnet's own INT8 layout (dnet.converters.int8.placement) keeps each weight as ``..._int8`` behind a DequantizeLinear, and computes
  each pre-activation BatchNormalization as a 1×1 depthwise Conv: those Convs (weight ``<BN node>_dw_weight``) are
  BatchNormalizations, not convolutions of the model, and are left out, so the sites are the same as the FP32 file's;
- a transition's ``Conv 1×1 -> AveragePool k×k stride k`` that dnet's CPU and OpenVINO INT8 layouts fold into one
  ``Conv k×k stride k`` (dnet.converters.int8.rewrites.pool_into_conv) writes the pool's output tensor: the FP32 file's
  convolution is then compared at its pool's output (``ConvSite.pooled``, :func:`aligned`), the tensor both compute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import onnx

from dnet.converters.batchnorm import BN_WEIGHT_SUFFIX
from dnet.converters.graph import ints, readers_of

# Module names under ``features`` of dnet's DenseNet (torchvision's names).
CONV_NAME = re.compile(r"conv0|denseblock\d+\.denselayer\d+\.conv[12]|transition\d+\.conv")
# What quantizers and float16 converters append to an initializer's name.
_WEIGHT_SUFFIXES = ("_DequantizeLinear_Output", "_quantized", "_int8", "_fp16")
# Nodes that only carry a weight to the Conv (a Q/DQ file's DequantizeLinear, an FP16 file's Cast).
_CARRIERS = ("DequantizeLinear", "Cast", "Identity")


@dataclass(frozen=True)
class ConvSite:
    """One Conv node: its DenseNet name (None when the file does not say) and the tensors around it."""

    index: int  # position among the graph's Conv nodes, in graph order
    name: str | None  # "denseblock1.denselayer2.conv1"
    output: str  # the float tensor the Conv writes
    input: str  # the tensor it reads (in a Q/DQ file: the output of its DequantizeLinear)
    pooled: str | None = None  # a 1×1 Conv whose output only an AveragePool k×k stride k reads: the pool's output
    folded: bool = False  # a Conv k×k stride k (k > 1): such a Conv and its pool folded into one (graph.pool_into_conv)


def site(index: int, name: str | None, node: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]]) -> ConvSite:
    """The :class:`ConvSite` of a Conv node; ``readers``: tensor -> the nodes that read it."""
    kernel, strides = ints(node, "kernel_shape", []), ints(node, "strides", [1, 1])
    after = readers.get(node.output[0], [])
    while len(after) == 1 and after[0].op_type in ("QuantizeLinear", "DequantizeLinear"):  # a Q/DQ file's unfolded one
        after = readers.get(after[0].output[0], [])
    pool = after[0] if len(after) == 1 and after[0].op_type == "AveragePool" else None
    window = ints(pool, "kernel_shape", []) if pool is not None else []
    pooled = (pool.output[0] if pool is not None and kernel in ([1, 1], []) and strides == [1, 1]
              and window and ints(pool, "strides", [1, 1]) == window and not any(ints(pool, "pads", [0] * 4))
              else None)
    return ConvSite(index, name, node.output[0], node.input[0], pooled,
                    folded=len(kernel) == 2 and kernel == strides and kernel[0] > 1)


def aligned(ref: ConvSite, other: ConvSite) -> tuple[ConvSite, ConvSite]:
    """Two sites of one layer, the unfolded one's output moved to its pool's when the other folded that pool in."""
    if ref.pooled is not None and other.folded:
        return replace(ref, output=ref.pooled), other
    if other.pooled is not None and ref.folded:
        return ref, replace(other, output=other.pooled)
    return ref, other


def module_of_weight(tensor: str) -> str | None:
    """``features.denseblock1.denselayer1.conv1.weight_quantized`` -> ``denseblock1.denselayer1.conv1``, else None."""
    name = tensor
    for suffix in _WEIGHT_SUFFIXES:
        name = name.removesuffix(suffix)
    if not name.endswith(".weight"):
        return None
    name = name.removesuffix(".weight").removeprefix("features.")
    return name if CONV_NAME.fullmatch(name) else None


def weight_name(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> str:
    """The initializer (or Constant) behind a Conv's weight input, through DequantizeLinear/Cast nodes."""
    tensor = node.input[1] if len(node.input) > 1 else ""
    for _ in range(4):
        producer = producers.get(tensor)
        if producer is None or producer.op_type not in _CARRIERS:
            break
        tensor = producer.input[0]
    return tensor


def is_batchnorm(tensor: str) -> bool:
    """Whether a Conv's weight (``weight_name``) is a BatchNormalization that dnet's INT8 layout made a depthwise Conv."""
    for suffix in _WEIGHT_SUFFIXES:
        tensor = tensor.removesuffix(suffix)
    return tensor.endswith(BN_WEIGHT_SUFFIX)


def conv_sites(proto: onnx.ModelProto, recorded: dict[str, str] | None = None) -> list[ConvSite]:
    """Every Conv node of ``proto`` in graph order, named from ``recorded`` (module -> output tensor) or its weight.

    The BatchNormalizations dnet's INT8 layout computes as depthwise Convs are not sites (module docstring)."""
    by_tensor = {tensor: module for module, tensor in (recorded or {}).items()}
    producers = {out: n for n in proto.graph.node for out in n.output}
    readers = readers_of(proto)
    sites, seen = [], set()
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        weight = weight_name(node, producers)
        if is_batchnorm(weight):
            continue
        name = by_tensor.get(node.output[0]) or module_of_weight(weight)
        if name in seen:  # two nodes claiming one module: trust neither's name
            name = None
        seen.add(name)
        sites.append(site(len(sites), name, node, readers))
    return sites


def block_of(name: str | None) -> str:
    """``denseblock3.denselayer7.conv2`` -> ``denseblock3``; ``transition2.conv`` -> ``transition2``; ``conv0`` -> ``stem``."""
    if not name or name == "conv0":
        return "stem"
    return name.split(".")[0]


__all__ = ["CONV_NAME", "ConvSite", "aligned", "block_of", "conv_sites", "is_batchnorm", "module_of_weight", "site",
           "weight_name"]
