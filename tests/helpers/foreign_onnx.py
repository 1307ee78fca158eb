"""ONNX files dnet did not write, made from the tiny model: onnxruntime.quantization's QDQ and QOperator outputs, a
ModelOpt-style Q/DQ graph built by hand, dynamic batch/height/width, opset 7 and the newest opset onnx writes,
external data (moved, missing, truncated) and a feature-map output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def ort_quantized(src: Path, dst: Path, fmt: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return dst


def modelopt_qdq(src: Path, dst: Path) -> Path:
    """What NVIDIA ModelOpt writes: a Q/DQ pair (int8, zero point 0) on every Conv input, weights int8 behind a DQ."""
    m = onnx.load(str(src))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type == "Conv":
            x, w = n.input[0], n.input[1]
            s, z = f"{n.name}_xs", f"{n.name}_xz"
            g.initializer.extend([numpy_helper.from_array(np.array(1 / 32, np.float32), s),
                                  numpy_helper.from_array(np.array(0, np.int8), z)])
            nodes += [helper.make_node("QuantizeLinear", [x, s, z], [f"{x}_{n.name}_q"]),
                      helper.make_node("DequantizeLinear", [f"{x}_{n.name}_q", s, z], [f"{x}_{n.name}_dq"])]
            wf = numpy_helper.to_array(inits[w]).astype(np.float32)
            ws = np.maximum(np.abs(wf).reshape(wf.shape[0], -1).max(1), 1e-8) / 127
            wq = np.clip(np.round(wf / ws[:, None, None, None]), -127, 127).astype(np.int8)
            g.initializer.extend([numpy_helper.from_array(wq, f"{w}_q"),
                                  numpy_helper.from_array(ws.astype(np.float32), f"{w}_s"),
                                  numpy_helper.from_array(np.zeros(len(ws), np.int8), f"{w}_z")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{w}_q", f"{w}_s", f"{w}_z"], [f"{w}_{n.name}_dq"],
                                          axis=0))
            n.input[0], n.input[1] = f"{x}_{n.name}_dq", f"{w}_{n.name}_dq"
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, str(dst))
    return dst


def dynamic(src: Path, dst: Path) -> Path:
    m = onnx.load(str(src))
    for i, name in ((0, "batch"), (2, "height"), (3, "width")):
        d = m.graph.input[0].type.tensor_type.shape.dim[i]
        d.ClearField("dim_value")
        d.dim_param = name
    onnx.save(m, str(dst))
    return dst


def opset(src: Path, dst: Path, version: int) -> Path:
    from onnx import version_converter

    onnx.save(version_converter.convert_version(onnx.load(str(src)), version), str(dst))
    return dst


def external(src: Path, dst: Path, damage: str) -> Path:
    """Weights in ``dst.data``; then ``moved`` (the .onnx alone in another folder), ``missing`` or ``truncated``."""
    m = onnx.load(str(src))
    onnx.save(m, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data",
              size_threshold=0)
    data = dst.with_name(dst.name + ".data")
    if damage == "moved":
        (dst.parent / "moved").mkdir(exist_ok=True)
        dst = dst.rename(dst.parent / "moved" / dst.name)
    elif damage == "missing":
        data.unlink()
    elif damage == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return dst


def feature_map(src: Path, dst: Path) -> Path:
    m = onnx.load(str(src))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(conv.output[0], TensorProto.FLOAT, ["N", 8, 32, 32]))
    onnx.save(m, str(dst))
    return dst


def opset7(src: Path, dst: Path) -> Path:
    """A classifier as an old exporter wrote it (opset 7, IR version 3): the version converter cannot go below 15
    for BatchNormalization, so it is built by hand: Conv 3→5, Relu, GlobalAveragePool, Flatten."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["logits"])]
    g = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [5, 3, 3, 3])],  # IR 3: a graph input
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return dst


def newest_opset() -> int:
    return onnx.defs.onnx_opset_version()


MAKERS = {
    "ort-qdq": lambda s, d: ort_quantized(s, d, "QDQ"),
    "ort-qoperator": lambda s, d: ort_quantized(s, d, "QOperator"),
    "modelopt-qdq": modelopt_qdq,
    "dynamic-nhw": dynamic,
    "opset-7": opset7,
    "opset-newest": lambda s, d: opset(s, d, newest_opset()),
    "external-moved": lambda s, d: external(s, d, "moved"),
    "external-missing": lambda s, d: external(s, d, "missing"),
    "external-truncated": lambda s, d: external(s, d, "truncated"),
    "feature-map": feature_map,
}


def edit_meta(path, key: str, value: str) -> None:
    """Set the value of an existing metadata_props key of an ONNX file in place (a tampered file)."""
    proto = onnx.load(str(path))
    for p in proto.metadata_props:
        if p.key == key:
            p.value = value
    onnx.save(proto, str(path))


def ten_classes_named(path, model: str, config: dict | None = None) -> Path:
    """The tiny CIFAR ONNX made a 10-class one (its classifier's rows repeated), its metadata naming ``model``."""
    m = onnx.load(str(path))
    w = next(t for t in m.graph.initializer if t.name == "classifier.weight")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).repeat(2, axis=0), w.name))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    for p in m.metadata_props:
        p.value = {"dnet.model": json.dumps(model), "dnet.num_classes": "10",
                   "dnet.config": json.dumps(config) if config is not None else p.value}.get(p.key, p.value)
    onnx.save(m, str(path))
    return path
