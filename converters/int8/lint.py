"""What TensorRT's documented INT8 rules say about an INT8 ONNX file, without TensorRT or a GPU.

Any explicit-quantization (Q/DQ) ONNX file is read: dnet's, ModelOpt's, NNCF's ONNX export, onnxruntime.quantization's
QDQ format. Each rule of :data:`RULES` gives one :class:`Finding` (count 0 when the file follows it) with the first
node names and the document the rule comes from (TensorRT's headers, its developer guide, onnx-tensorrt's operator
list), so a report can be checked against NVIDIA's own words. The rule that matters most for DenseNets:
IConvolutionLayer::setNbGroups says an int8 grouped convolution needs group sizes (channels / groups) that are
multiples of 4, so a BatchNormalization rewritten as a depthwise convolution (group size 1) fails the build ("Could
not find any implementation") or runs as a slow standalone layer; ModelOpt keeps such layers out of INT8
(``find_nodes_from_convs_to_exclude``). 7-bit weights (±63) are ONNX Runtime's ``reduce_range`` remedy for x86 CPUs
without VNNI; TensorRT accumulates in int32, so for it the lost bit only quadruples the rounding noise.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

SEVERITIES = ("error", "warning", "info")
FIRST = 5  # node names kept per finding

NVINFER = "NVIDIA/TensorRT include/NvInfer.h (TensorRT 11.1)"
GUIDE = ("TensorRT developer guide, Working with Quantized Types: Q/DQ layer placement "
         "(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html)")
OPERATORS = "onnx/onnx-tensorrt docs/operators.md (10.1 GA release, commit 96e7811)"

# Every operator marked Y in onnx-tensorrt's support matrix (OPERATORS above, TensorRT 10, opsets 9 to 20). Restrictions
# on types and attributes are left to the rules above; an operator not here is not supported.
ONNX_TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Hardmax
Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Clip", "PRelu", "Elu", "Selu", "Sigmoid", "Tanh", "HardSigmoid",
                         "HardSwish", "Softplus", "ThresholdedRelu", "Gelu", "Mish"})
WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# The quantized types TensorRT's Q/DQ layers produce and read (NvInfer.h IQuantizeLayer: kINT8, kFP8, kINT4)
SIGNED_QUANTIZED = frozenset({TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4})
UNSIGNED = frozenset({TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT4})
VECTOR = 32  # channels per vector of TensorRT's int8 kCHW32 format


@dataclass(frozen=True)
class Rule:
    """One documented TensorRT rule: what it says and where."""

    id: str
    severity: str
    says: str
    source: str


RULES = (
    Rule("grouped-conv-int8", "error", "int8 grouped convolution whose group size (channels / groups) is not a "
         "multiple of 4", f"{NVINFER}, IConvolutionLayer::setNbGroups"),
    Rule("qdq-splits-conv-activation", "warning", "Q/DQ pair between a convolution and its activation blocks the "
         "Conv+activation+Q fusion", GUIDE),
    Rule("concat-scales", "warning", "concatenation inputs or output with different scales (requantization)",
         f"{GUIDE}; NVIDIA/TensorRT issue #3861"),
    Rule("quantized-output", "warning", "graph output on an int8 grid (QuantizeLinear at the end)",
         f"{OPERATORS}: INT8 is a quantized type, available only through quantization of a float tensor"),
    Rule("zero-point", "error", "zero point not a constant zero of a signed type (TensorRT quantizes symmetric int8 "
         "only)", f"{NVINFER}, IQuantizeLayer/IDequantizeLayer; {OPERATORS}, QuantizeLinear/DequantizeLinear"),
    Rule("qdq-type", "error", "Q/DQ of a type TensorRT's Q/DQ layers do not take (int32 biases, int16): INT8, FP8 "
         "and INT4 only", f"{OPERATORS}, DequantizeLinear; {NVINFER}, IQuantizeLayer"),
    Rule("unsupported-op", "error", "operator outside onnx-tensorrt's support list", OPERATORS),
    Rule("per-channel-activation", "error", "per-channel scale on an activation (per-channel is for weights only)",
         f"{NVINFER}, IQuantizeLayer"),
    Rule("weight-axis", "error", "per-channel convolution weights not quantized along the output channels (axis 0; "
         "axis 1 for ConvTranspose)", f"{NVINFER}, IQuantizeLayer (per-channel: K, dimension 0, of KCRS weights)"),
    Rule("weights-7-bit", "warning", "int8 weights within ±63 (7 bits): TensorRT accumulates in int32 and can use "
         "±127", "ONNX Runtime quantization docs, reduce_range (a remedy for x86 CPUs without VNNI only)"),
    Rule("concat-offset-32", "info", "int8 channel concatenation with input offsets not multiples of 32: TensorRT "
         "may insert copies", "NVIDIA/TensorRT include/NvInferRuntime.h, TensorFormat::kCHW32"),
)


@dataclass(frozen=True)
class Finding:
    """What one rule found: how many nodes break it, the first of them, and the rule itself."""

    rule: str
    severity: str
    count: int
    nodes: tuple[str, ...]  # the first FIRST names, in graph order
    says: str
    source: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "count": self.count, "nodes": list(self.nodes),
                "says": self.says, "source": self.source}


@dataclass(frozen=True)
class LintResult:
    """Every rule's finding, in :data:`RULES` order; ``quantized`` says whether the graph has any Q/DQ node."""

    findings: tuple[Finding, ...]
    quantized: bool

    def __getitem__(self, rule: str) -> Finding:
        return next(f for f in self.findings if f.rule == rule)

    def counts(self, severity: str | None = None) -> dict[str, int]:
        """Rule id -> count of the rules that found something (of one severity, or all)."""
        return {f.rule: f.count for f in self.findings if f.count and severity in (None, f.severity)}

    @property
    def errors(self) -> int:
        return sum(self.counts("error").values())

    @property
    def warnings(self) -> int:
        return sum(self.counts("warning").values())

    def to_dict(self) -> dict:
        return {"quantized": self.quantized, "errors": self.errors, "warnings": self.warnings,
                "findings": [f.to_dict() for f in self.findings]}


class _Graph:
    """Producer, consumer and constant lookups over one graph."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
        self.nodes = list(proto.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {t.name: t for t in proto.graph.initializer}
        for n in self.nodes:  # Constant nodes hold constants as initializers do
            if n.op_type == "Constant" and n.output:
                value = next((a.t for a in n.attribute if a.name == "value"), None)
                if value is not None:
                    self.inits.setdefault(n.output[0], value)
        self.outputs = [o.name for o in proto.graph.output]

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def dtype(self, name: str) -> int | None:
        t = self.inits.get(name)
        return None if t is None else t.data_type

    def made_by(self, name: str, op: str) -> onnx.NodeProto | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op else None

    def only_consumer(self, name: str, op: str | frozenset) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        ops = {op} if isinstance(op, str) else op
        return users[0] if len(users) == 1 and users[0].op_type in ops and name not in self.outputs else None


def _name(node: onnx.NodeProto) -> str:
    return node.name or (f"{node.op_type} -> {node.output[0]}" if node.output else node.op_type)


def _attr(node: onnx.NodeProto, name: str, default=None):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else onnx.helper.get_attribute_value(a)


def _scale(g: _Graph, qdq: onnx.NodeProto) -> np.ndarray | None:
    return g.const(qdq.input[1]) if len(qdq.input) > 1 else None


def _dequantized_weight(g: _Graph, name: str) -> tuple[onnx.NodeProto, np.ndarray] | None:
    """The DequantizeLinear of a constant quantized tensor that makes ``name``, and its quantized values."""
    dq = g.made_by(name, "DequantizeLinear")
    if dq is None:
        return None
    q = g.const(dq.input[0])
    if q is None:  # a weight quantized in the graph: Q(constant) -> DQ
        inner = g.made_by(dq.input[0], "QuantizeLinear")
        return (dq, None) if inner is not None and g.const(inner.input[0]) is not None else None
    return dq, q


def _constant_shape(g: _Graph, name: str) -> tuple[int, ...] | None:
    """The shape of the constant behind ``name``, through the DQ and Q nodes of a weight."""
    while (value := g.const(name)) is None:
        if (n := g.producer.get(name)) is None or n.op_type not in ("DequantizeLinear", "QuantizeLinear"):
            return None
        name = n.input[0]
    return value.shape


def _grouped_convs(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type != "Conv" or (groups := int(_attr(n, "group", 1))) == 1:
            continue
        if g.made_by(n.input[0], "DequantizeLinear") is None:
            continue  # a float convolution: the rule is int8's
        if (shape := _constant_shape(g, n.input[1])) is None:
            continue
        per_group_in, per_group_out = shape[1], shape[0] // groups
        if per_group_in % 4 or per_group_out % 4:
            found.append(n)
    return found


def _conv_qdq_activation(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or not n.output:
            continue
        q = g.only_consumer(n.output[0], "QuantizeLinear")
        dq = q and g.only_consumer(q.output[0], "DequantizeLinear")
        if dq and any(u.op_type in ACTIVATIONS for u in g.consumers.get(dq.output[0], [])):
            found.append(n)
    return found


def _same(values: list[np.ndarray | None]) -> bool:
    first = values[0]
    return all(v is not None and first is not None and v.shape == first.shape and np.allclose(v, first, rtol=1e-6,
                                                                                              atol=0) for v in values)


def _concat_scales(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type != "Concat":
            continue
        dqs = [g.made_by(i, "DequantizeLinear") for i in n.input]
        q_scales = [_scale(g, u) for u in g.consumers.get(n.output[0], []) if u.op_type == "QuantizeLinear"]
        if not any(dqs):
            scales = q_scales  # float inputs: a QuantizeLinear after the concatenation is one rounding
        elif all(dqs):
            scales = [_scale(g, dq) for dq in dqs] + q_scales
        else:
            found.append(n)  # int8 and float inputs mixed
            continue
        if len(scales) > 1 and not _same(scales):
            found.append(n)
    return found


def _quantized_outputs(g: _Graph) -> list[str]:
    found = []
    for out in g.outputs:
        made = g.producer.get(out)
        if made is None:
            continue
        if made.op_type == "QuantizeLinear" or (made.op_type == "DequantizeLinear"
                                                and g.made_by(made.input[0], "QuantizeLinear") is not None):
            found.append(out)
    return found


def _quantized_type(g: _Graph, n: onnx.NodeProto) -> int | None:
    """The integer type a Q/DQ node's quantized side has: its zero point's, else what ONNX defaults to."""
    if len(n.input) > 2 and n.input[2]:
        return g.dtype(n.input[2])
    if n.op_type == "QuantizeLinear":  # no zero point: uint8 unless opset 21's output_dtype says otherwise
        return _attr(n, "output_dtype", TensorProto.UINT8) or TensorProto.UINT8
    return g.dtype(n.input[0])


def _bad_zero_points(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        has_zero_point = len(n.input) > 2 and n.input[2]
        zp = g.const(n.input[2]) if has_zero_point else None
        if (_quantized_type(g, n) in UNSIGNED or (has_zero_point and zp is None)
                or (zp is not None and np.any(zp.astype(np.float64) != 0))):
            found.append(n)
    return found


def _unhandled_types(g: _Graph) -> list[onnx.NodeProto]:
    return [n for n in g.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and (t := _quantized_type(g, n)) is not None and t not in SIGNED_QUANTIZED | UNSIGNED]


def _unsupported(g: _Graph) -> list[onnx.NodeProto]:
    return [n for n in g.nodes if n.domain not in ("", "ai.onnx") or n.op_type not in ONNX_TENSORRT_OPS]


def _per_channel_activations(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type != "QuantizeLinear" or g.const(n.input[0]) is not None:
            continue
        s = _scale(g, n)
        if s is not None and s.size > 1:
            found.append(n)
    return found


def _weight_axes(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type not in ("Conv", "ConvTranspose") or len(n.input) < 2:
            continue
        weight = _dequantized_weight(g, n.input[1])
        if weight is None:
            continue
        dq = weight[0]
        s = _scale(g, dq)
        if s is None or s.size <= 1:
            continue
        axis = int(_attr(dq, "axis", 1))
        if axis != (1 if n.op_type == "ConvTranspose" else 0):
            found.append(n)
    return found


def _seven_bit_weights(g: _Graph) -> list[onnx.NodeProto]:
    found = []
    for n in g.nodes:
        if n.op_type not in WEIGHTED or len(n.input) < 2:
            continue
        weight = _dequantized_weight(g, n.input[1])
        if weight is None or weight[1] is None or g.dtype(weight[0].input[0]) != TensorProto.INT8:
            continue
        peak = int(np.abs(weight[1].astype(np.int32)).max()) if weight[1].size else 0
        if 0 < peak <= 63:
            found.append(n)
    return found


def _channels(proto: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> its channel count (dimension 1), where shape inference knows it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # a graph ONNX's inference cannot follow: the informational rule then sees no shapes
        return {}
    out = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) > 1 and dims[1].HasField("dim_value"):
            out[vi.name] = dims[1].dim_value
    return out


def _unaligned_concats(g: _Graph, proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    concats = [n for n in g.nodes if n.op_type == "Concat" and int(_attr(n, "axis", 0)) in (1, -3)
               and all(g.made_by(i, "DequantizeLinear") is not None for i in n.input)]
    if not concats:
        return []
    channels = _channels(proto)
    found = []
    for n in concats:
        sizes = [channels.get(i) for i in n.input]
        if None in sizes:
            continue
        offsets = np.cumsum([0, *sizes[:-1]])
        if any(o % VECTOR for o in offsets):
            found.append(n)
    return found


def lint(proto: onnx.ModelProto) -> LintResult:
    """Check ``proto`` (not modified) against every rule of :data:`RULES`."""
    g = _Graph(proto)
    hits: dict[str, list[str]] = {
        "grouped-conv-int8": [_name(n) for n in _grouped_convs(g)],
        "qdq-splits-conv-activation": [_name(n) for n in _conv_qdq_activation(g)],
        "concat-scales": [_name(n) for n in _concat_scales(g)],
        "quantized-output": _quantized_outputs(g),
        "zero-point": [_name(n) for n in _bad_zero_points(g)],
        "qdq-type": [_name(n) for n in _unhandled_types(g)],
        "unsupported-op": [f"{_name(n)} ({n.domain + '.' if n.domain else ''}{n.op_type})" for n in _unsupported(g)],
        "per-channel-activation": [_name(n) for n in _per_channel_activations(g)],
        "weight-axis": [_name(n) for n in _weight_axes(g)],
        "weights-7-bit": [_name(n) for n in _seven_bit_weights(g)],
        "concat-offset-32": [_name(n) for n in _unaligned_concats(g, proto)],
    }
    findings = tuple(Finding(r.id, r.severity, len(hits[r.id]), tuple(hits[r.id][:FIRST]), r.says, r.source)
                     for r in RULES)
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.nodes)
    return LintResult(findings, quantized)


__all__ = ["FIRST", "Finding", "LintResult", "ONNX_TENSORRT_OPS", "RULES", "Rule", "lint"]
