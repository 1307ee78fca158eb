"""dnet's INT8 Q/DQ placement for DenseNets, one layout per target, from one FP32 dnet export and calibrated ranges.

Every target shares:

- **One scale per dense block.** The block's input, every layer's new feature map, every concatenation, and the
  tensor a pool turns into the block's input share one activation scale: the largest calibrated range among
  them. The per-layer ``Concat(x0..xi)`` of the export becomes a chain ``Concat(C(i-1), x_i)``, and each Concat
  reads DequantizeLinear inputs and writes one QuantizeLinear of that same scale, so re-quantizing a
  concatenation is the identity: each feature map is rounded once, where it is produced, and the runtime
  concatenates int8 bytes (NVIDIA ModelOpt's ``concat_elimination`` shares the scales the same way).
- Every convolution reads a DequantizeLinear of an int8 tensor; weights int8 per output channel (axis 0), biases
  float, the classifier's output float (quantized logits tie and clip); only operators of onnx-tensorrt's list.

**target="tensorrt"**, by TensorRT's documented rules (NVIDIA/TensorRT ``NvInfer.h``, the developer guide's Q/DQ
placement, and ModelOpt's ``modelopt/onnx/quantization`` as the reference placement):

- A pre-activation BatchNormalization stays a float BatchNormalization between the concatenation's
  DequantizeLinear and ``Relu -> QuantizeLinear``: TensorRT runs ``DQ -> Scale -> ReLU -> Q`` as one int8
  pointwise layer. (As a 1×1 depthwise int8 convolution it would break ``IConvolutionLayer::setNbGroups``'s rule
  that an int8 group size be a multiple of 4; ModelOpt keeps such layers out of INT8 too.)
- ``Conv -> Relu -> QuantizeLinear``: no Q/DQ pair between a convolution and its ReLU, so TensorRT fuses
  Conv+ReLU+Q into one int8 kernel.
- Full 8-bit weights (±127): TensorRT accumulates in int32. Zero points int8 0.

**target="cpu"**, for ONNX Runtime's x86 (and ARM) kernels:

- Each pre-activation BN becomes the 1×1 depthwise convolution that computes it (one weight per channel is exact in
  int8), so it runs as an integer convolution of the block's int8 concatenation (as float BN between Q/DQ nodes
  ONNX Runtime ran DQ, BN and Q as three float passes, 3.7 times as long on densenet121).
- ``Conv -> Relu -> QuantizeLinear`` with a **uint8 zero point 0** over ``[0, amax]`` (255 steps): ONNX Runtime's
  ReluQuantFusion drops a ReLU before a Q whose zero point is the lowest code, and QLinearConv's clamp to
  ``[0, 255]`` is the ReLU, so no ReLU runs as a node (a ``DQ -> LeakyRelu(0) -> Q`` table per ReLU, the layout
  before, was 22 % of densenet121's time). A ReLU whose output joins a dense block's grid (the stem's, before its
  max pool) stays ``DQ -> LeakyRelu(alpha 0) -> Q`` on that grid: ``relu(Q(x)) == Q(relu(x))`` with zero point 0.
- Each transition's ``Conv 1×1 -> AveragePool k×k stride k`` is the ``Conv k×k stride k`` it equals
  (``graph.pool_into_conv``): the pool is no node of its own and its input no tensor (QLinearAveragePool was 7 %).
- Activations as uint8 with zero point 128 (``graph.int8_activations_as_uint8``: the same numbers, bit for bit),
  written into the file: ONNX Runtime's x86 integer kernels are u8×s8 and its own int8 -> uint8 pass skips every
  DenseNet feature map (each feeds two DequantizeLinear nodes), so a plain ``onnxruntime.InferenceSession`` runs
  the file as fast as dnet's own engine does. (ReLU outputs are uint8 already.)
- Weights 8-bit (±127) by default (``CPU_WEIGHT_BITS``), as for TensorRT: VNNI CPUs (``vpdpbusd``: u8×s8 summed in
  int32), ARM CPUs and OpenVINO compute them exactly, and 7 bits would quadruple the weights' rounding noise (on the
  digits model it cost 1.1 points of agreement with FP32). ``weight_bits=7`` (±63) is for ONNX Runtime on x86 CPUs
  without VNNI, ONNX Runtime's own ``reduce_range`` advice: those multiply u8×s8 pairs into a saturating int16
  (``vpmaddubsw``); 255·63 + 255·63 < 32767 cannot saturate, so such a CPU computes what the file says. dnet's ONNX
  Runtime engine warns when it opens an 8-bit file on an x86 CPU without VNNI (dnet.engines.onnxruntime).

**target="openvino"**, NNCF's placement for OpenVINO's low-precision transformations (LPT):

- Pre-activation BNs stay float BatchNormalization between DequantizeLinear and ``Relu -> QuantizeLinear``, as for
  TensorRT: OpenVINO folds the BN's scale and shift into the FakeQuantize that follows (no layer of its own; as a
  depthwise int8 GroupConvolution it took 18 % of densenet121's time).
- ReLU outputs uint8 from zero, and the transitions' pools folded, as for the cpu target; the dense blocks' grids
  int8 with zero point 0 (a uint8 zero point 128 costs OpenVINO a Convert layer per tensor); weights 8-bit by
  default, 7 on request as for the cpu target (oneDNN's u8×s8 kernels without VNNI add pairs in int16 too; NNCF's
  ``overflow_fix`` is for the same).

**Layers left in higher precision** (``exclude``: accuracy-controlled conversion, ``dnet.converters.int8.mixed``, or
``--int8-exclude``). A layer is a named convolution (``denseblock3.denselayer7.conv2``, ``transition1.conv``, ``conv0``;
:mod:`dnet.converters.convs`) or the ``classifier``. An excluded layer keeps its weights in float and computes in float:
``fallback="fp32"`` (the default for ONNX files), or ``"fp16"`` (for TensorRT, which then runs it in FP16): its float
input is ``Cast`` to float16, its weights and bias are float16 initializers, and its output is ``Cast`` back to float32.
Around it, a tensor is quantized only where an integer operation still reads it: the input an excluded convolution
alone reads stays float (so the layer before it writes float), and an output that a dense block's concatenation reads
is still quantized into the block's shared grid before the concatenation (so the chained int8 concatenations stay
exact; the rounding of a new feature map to the block's grid is the one loss excluding its convolution cannot undo).
The file stays explicit Q/DQ and strongly typed: every precision is in the graph, none in a builder flag.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dnet.converters.batchnorm import bn_to_depthwise_conv
from dnet.converters.convs import module_of_weight, weight_name
from dnet.converters.graph import readers_of, sort_topologically
from dnet.converters.int8.rewrites import chain_concats, int8_activations_as_uint8, pool_into_conv
from dnet.core.errors import FileFormatError, UsageError, require_one_of

QMAX = 127  # symmetric int8 activations: [-127, 127] scaled, zero point 0
WEIGHT_BITS = (7, 8)
TARGETS = ("cpu", "tensorrt", "openvino")  # the runtime whose rules a file's placement follows
# each target's file beside NAME (dnet.converters.pipeline.names_for): NAME.int8.onnx, NAME.int8-trt.onnx, NAME.int8-ov.onnx
INT8_FILE_KEYS = {"cpu": "int8", "tensorrt": "int8-trt", "openvino": "int8-ov"}
CPU_WEIGHT_BITS = 8  # the CPU file's default (module doc); 7 for ONNX Runtime on x86 CPUs without VNNI
TENSORRT_WEIGHT_BITS = 8  # the TensorRT file's only choice: int32 accumulation, nothing saturates
DEFAULT_WEIGHT_BITS = CPU_WEIGHT_BITS
POOLS = ("AveragePool", "MaxPool")  # commute with a shared scale: their input joins their output's block
ZERO_POINT = "qdq_zero_point_int8"
UINT8_ZERO_POINT = "qdq_zero_point_uint8"  # cpu: a ReLU's output on [0, amax], 255 steps (module doc)
UINT8_QMAX = 255
FALLBACKS = ("fp32", "fp16")  # the precision of an excluded layer
CLASSIFIER = "classifier"


@dataclass
class Layout:
    """What the rewrite did: per dense block its features and shared scale; counts for the metadata and tests."""

    blocks: list[dict] = field(default_factory=list)
    convs: int = 0  # integer convolutions (the depthwise BNs included)
    quantized_tensors: int = 0
    relus_on_int8: int = 0  # cpu: ReLUs computed on the int8 grid (DQ -> LeakyRelu(0) -> Q)
    pools_folded: int = 0  # cpu, openvino: transition Conv 1×1 -> AveragePool as one strided Conv (graph.pool_into_conv)
    relus_fused: int = 0  # cpu: Conv -> Relu -> Q(uint8, zero point 0), the ReLU done by the convolution's clamp
    float_bns: int = 0  # tensorrt: pre-activation BNs kept as float BatchNormalization between DQ and Relu -> Q
    uint8_activations: int = 0  # cpu: int8 activations written as uint8 (zero point 128)
    weight_bits: int = DEFAULT_WEIGHT_BITS
    target: str = TARGETS[0]
    excluded: list[str] = field(default_factory=list)  # layers left in float, in network order
    fallback: str = FALLBACKS[0]

    def to_dict(self) -> dict:
        d = {"name": "densenet", "target": self.target, "blocks": self.blocks, "convs": self.convs,
             "quantized_tensors": self.quantized_tensors, "relus_on_int8": self.relus_on_int8,
             "relus_fused": self.relus_fused, "pools_folded": self.pools_folded,
             "float_bns": self.float_bns, "uint8_activations": self.uint8_activations,
             "weight_bits": self.weight_bits}
        if self.excluded:
            d.update(excluded=self.excluded, fallback=self.fallback)
        return d


def layers(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """The layers an INT8 file can leave in float, by name in network order: each convolution whose weight names its
    DenseNet module (:mod:`dnet.converters.convs`), and the ``classifier`` (the Gemm whose weight is
    ``classifier.weight``). A pre-activation BN's depthwise convolution is not one: its int8 weights are exact."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    found: dict[str, onnx.NodeProto] = {}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            name = module_of_weight(weight_name(node, producers))
        elif node.op_type == "Gemm" and len(node.input) > 1:
            name = CLASSIFIER if weight_name(node, producers).startswith(f"{CLASSIFIER}.weight") else None
        else:
            continue
        if name is not None and name not in found:
            found[name] = node
    return found


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def dense_blocks(proto: onnx.ModelProto) -> list[list[onnx.NodeProto]]:
    """The channel Concats of each dense block, in graph order (a block: a chain of Concats after chain_concats)."""
    concats = [n for n in proto.graph.node if n.op_type == "Concat" and _axis(n) in (1, -3)]
    outputs = {n.output[0]: n for n in concats}
    blocks: list[list[onnx.NodeProto]] = []
    member: dict[str, int] = {}
    for n in concats:
        b = member.get(n.input[0]) if n.input[0] in outputs else None
        if b is None:
            blocks.append([n])
            b = len(blocks) - 1
        else:
            blocks[b].append(n)
        member[n.output[0]] = b
    return blocks


def _some(named: dict, n: int = 4) -> str:
    names = list(named)
    shown = ", ".join(names[:n]) + (f", … {names[-1]}" if len(names) > n else "")
    return f"{len(names)}: {shown}"


def _absmax(ranges: dict[str, tuple[float, float]], name: str) -> float:
    lo, hi = ranges[name]
    return max(abs(float(lo)), abs(float(hi)))


def _block_members(block: list[onnx.NodeProto], producer: dict[str, onnx.NodeProto]) -> list[str]:
    """Every tensor that shares the block's scale: concat inputs and outputs, and what a pool makes its input from."""
    names = [block[0].input[0], *(n.input[-1] for n in block), *(n.output[0] for n in block)]
    first = producer.get(block[0].input[0])
    while first is not None and first.op_type in POOLS:
        names.append(first.input[0])
        first = producer.get(first.input[0])
    return names


class _Writer:
    """Adds Q/DQ nodes and their constants, naming them after the tensor they quantize."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
        self.inits = {t.name: t for t in proto.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.int8), ZERO_POINT))
        self.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.uint8), UINT8_ZERO_POINT))

    def scale(self, name: str, value: float) -> str:
        self.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}_scale"))
        return f"{name}_scale"

    def q(self, x: str, y: str, scale: str, zero_point: str = ZERO_POINT) -> None:
        self.nodes.append(helper.make_node("QuantizeLinear", [x, scale, zero_point], [y], name=f"{y}_Q"))

    def dq(self, x: str, y: str, scale: str, zero_point: str = ZERO_POINT, axis: int | None = None) -> None:
        kw = {} if axis is None else {"axis": axis}
        self.nodes.append(helper.make_node("DequantizeLinear", [x, scale, zero_point], [y], name=f"{y}_DQ", **kw))

    def weight(self, name: str, qmax: int) -> str:
        """Per-output-channel symmetric int8 ``name`` (axis 0) behind a DequantizeLinear; returns its float name."""
        w = numpy_helper.to_array(self.inits[name]).astype(np.float64)
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -qmax, qmax).astype(np.int8)
        self.graph.initializer.extend([
            numpy_helper.from_array(q, f"{name}_int8"),
            numpy_helper.from_array(scale, f"{name}_wscale"),
            numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}_wzero"),
        ])
        self.dq(f"{name}_int8", f"{name}_dq", f"{name}_wscale", f"{name}_wzero", axis=0)
        return f"{name}_dq"

    def float16(self, node: onnx.NodeProto) -> None:
        """Make ``node`` compute in float16 between two Casts: float16 copies of its weight and bias."""
        for k in range(1, len(node.input)):
            if node.input[k] in self.inits:
                w = numpy_helper.to_array(self.inits[node.input[k]]).astype(np.float16)
                self.graph.initializer.append(numpy_helper.from_array(w, f"{node.input[k]}_fp16"))
                node.input[k] = f"{node.input[k]}_fp16"
        x, y = node.input[0], node.output[0]
        self.nodes.append(helper.make_node("Cast", [x], [f"{y}_in_fp16"], name=f"{y}_in_Cast", to=TensorProto.FLOAT16))
        self.nodes.append(helper.make_node("Cast", [f"{y}_fp16"], [y], name=f"{y}_Cast", to=TensorProto.FLOAT))
        node.input[0], node.output[0] = f"{y}_in_fp16", f"{y}_fp16"


def weight_bits_for(target: str, weight_bits: int | None) -> int:
    """The weight bits of a ``target``'s file: the target's default for None; 7 is refused for TensorRT."""
    require_one_of("INT8 target", target, TARGETS, "int8_target")
    if weight_bits is None:
        return TENSORRT_WEIGHT_BITS if target == "tensorrt" else CPU_WEIGHT_BITS
    require_one_of("INT8 weight bits", weight_bits, WEIGHT_BITS, "int8_weight_bits")
    if target == "tensorrt" and weight_bits != TENSORRT_WEIGHT_BITS:
        raise UsageError("7-bit weights are for ONNX Runtime on x86 CPUs without VNNI; the TensorRT layout uses 8-bit "
                         "weights (TensorRT accumulates in int32)", option="int8_weight_bits")
    return weight_bits


def densenet_layout(proto: onnx.ModelProto, ranges: dict[str, tuple[float, float]], *, target: str = TARGETS[0],
                    weight_bits: int | None = None, exclude: Iterable[str] = (),
                    fallback: str = FALLBACKS[0]) -> Layout:
    """Rewrite the FP32 DenseNet export ``proto`` in place into ``target``'s Q/DQ layout (module doc).

    ``ranges`` are calibrated (lowest, highest) values of the FP32 graph's tensors, keyed by name (the
    calibration cache's); a tensor the layout needs without a range raises FileFormatError. ``weight_bits``: None
    for the target's default. ``exclude`` names layers (:func:`layers`) left in ``fallback`` precision (fp32 or fp16).
    """
    weight_bits = weight_bits_for(target, weight_bits)
    require_one_of("the precision of excluded layers", fallback, FALLBACKS, "int8_fallback")
    graph = proto.graph
    folded = 0
    if target != "tensorrt":  # before the layers are named: the folded transition keeps its weight's name
        folded = pool_into_conv(proto)
    named = layers(proto)
    unknown = sorted(set(exclude) - set(named))
    if unknown:
        raise UsageError(f"no layer named {unknown[0]!r} in this model (its layers: {_some(named)})",
                         option="int8_exclude")
    floats = {named[n].output[0] for n in exclude}  # by output: the rewrites below copy the nodes
    layout = Layout(weight_bits=weight_bits, target=target, excluded=[n for n in named if n in set(exclude)],
                    fallback=fallback, pools_folded=folded)
    chain_concats(proto)
    if target == "cpu":
        bn_to_depthwise_conv(proto)
    else:
        layout.float_bns = sum(n.op_type == "BatchNormalization" for n in graph.node)
    producer = {o: n for n in graph.node for o in n.output}
    consumers = defaultdict(list, readers_of(proto))  # a tensor nothing reads: no readers

    def need(name: str, what: str) -> float:
        if name not in ranges:
            raise FileFormatError(f"the calibration has no range for {name!r} ({what}); calibrate this FP32 file again")
        return _absmax(ranges, name) or 1.0

    # 1. scales: one per dense block; every other convolution or classifier input its own
    scale_of: dict[str, float] = {}
    for b, block in enumerate(dense_blocks(proto)):
        names = _block_members(block, producer)
        amax = max(need(n, f"dense block {b + 1}") for n in names)
        scale_of.update(dict.fromkeys(names, amax / QMAX))
        layout.blocks.append({"block": b + 1, "features": len(block) + 1, "scale": amax / QMAX})
    block_tensors = set(scale_of)
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and node.output[0] not in floats and node.input[0] not in scale_of:
            scale_of[node.input[0]] = need(node.input[0], f"the input of {node.op_type} {node.name}") / QMAX

    # 2. a QuantizeLinear where each tensor is made, a DequantizeLinear for its readers
    w = _Writer(proto)
    for name, s in scale_of.items():
        relu = producer.get(name)
        zero_point = ZERO_POINT
        relu_alone = relu is not None and relu.op_type == "Relu" and len(consumers[relu.input[0]]) == 1
        if target in ("cpu", "openvino") and relu_alone and name not in block_tensors:
            # Conv -> Relu -> Q(uint8, zero point 0): ONNX Runtime drops a ReLU before a Q whose zero point is the
            # lowest code (ReluQuantFusion), so the convolution writes the ReLU's codes itself (QLinearConv)
            s, zero_point = s * QMAX / UINT8_QMAX, UINT8_ZERO_POINT
            layout.relus_fused += 1
        sname = w.scale(name, s)
        # TensorRT: Conv -> Relu -> Q, no pair between them (it fuses Conv+ReLU+Q only so)
        if target == "cpu" and relu_alone and zero_point == ZERO_POINT:
            # conv -> Q -> DQ -> LeakyRelu(0) -> Q: relu(Q(x)) == Q(relu(x)); ONNX Runtime runs it as one int8 table
            r = relu.input[0]
            w.q(r, f"{r}_q", sname)
            w.dq(f"{r}_q", f"{r}_dq", sname)
            relu.input[0] = f"{r}_dq"
            relu.op_type = "LeakyRelu"
            relu.attribute.extend([helper.make_attribute("alpha", 0.0)])
            layout.relus_on_int8 += 1
        w.q(name, f"{name}_q", sname, zero_point)
        w.dq(f"{name}_q", f"{name}_dq", sname, zero_point)
        for node in consumers[name]:
            for k, i in enumerate(node.input):
                if i == name:
                    node.input[k] = f"{name}_dq"
        layout.quantized_tensors += 1
    # 3. weights: int8 per output channel
    qmax_w = 2 ** (weight_bits - 1) - 1
    dequantized = {f"{n}_dq" for n in scale_of}
    for node in graph.node:
        if node.output[0] in floats:
            if fallback == "fp16":
                w.float16(node)
        elif node.op_type in ("Conv", "Gemm") and node.input[1] in w.inits:
            node.input[1] = w.weight(node.input[1], qmax_w)
            layout.convs += node.op_type == "Conv" and node.input[0] in dequantized
    assert block_tensors <= set(scale_of)  # an excluded layer's output still joins its block's int8 grid
    graph.node.extend(w.nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]
    sort_topologically(proto)
    if target == "cpu":
        layout.uint8_activations = int8_activations_as_uint8(proto)
    return layout
