"""OpenVINO engine: OpenVINO IR (``.xml`` + ``.bin``) and ONNX files (``provider="openvino"``) on the CPU.

The inference precision is always stated, never left to the CPU plugin: when not told, OpenVINO runs in bf16 on
CPUs with native bf16 (AVX-512 BF16, AMX), which moves FP32 logits by a few 1e-2. dnet asks for ``f32`` (provider
"openvino", the default for ``.xml``) or, as a stated option, ``bf16`` (provider "openvino-bf16"). A CPU without
native bf16 ignores the bf16 hint and computes in f32 (measured on an AVX2-only AMD Zen 3: the compiled model reports
f32 and the logits equal the f32 run's bit for bit); the engine says what the plugin chose in ``inference_precision``.

Files are read by the frontend of their own format (``ir`` or ``onnx``), never by OpenVINO's guess among all its
frontends; an ONNX file is checked by ``dnet.core.artifact.onnxfile.read_model`` first, as for ONNX Runtime. dnet's
metadata travels with the model: OpenVINO keeps an ONNX file's ``metadata_props`` in ``rt_info["framework"]``, and
``openvino.save_model`` writes them into the IR.

Nothing imports ``openvino`` until a file is opened (it is the optional extra ``openvino``).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from dnet import DISTRIBUTION
from dnet.core.artifact.meta import CLASSIFIER, PREFIX, ArtifactMeta, check_classifier_shapes, shape_text
from dnet.core.artifact.onnxfile import read_model
from dnet.core.errors import DnetError, EngineError, FileFormatError, NotInstalledError, UsageError
from dnet.core.outputs import check_input_file
from dnet.engines.base import Engine
from dnet.models.zoo import checked_name

INSTALL_HINT = f"OpenVINO is not installed: pip install '{DISTRIBUTION}[openvino]'"
# provider -> INFERENCE_PRECISION_HINT of OpenVINO's CPU plugin
PROVIDERS = {"openvino": "f32", "openvino-bf16": "bf16"}
FRONTENDS = {".xml": "ir", ".onnx": "onnx"}
# Elements of the largest tensor of a graph, per image, over the input's: the widest DenseNet tensor is about 440×
# its input (DenseNet-BC-190, k=40, on CIFAR: 1,320 channels at 32×32 after block 1); ImageNet stems shrink first.
MAX_ACTIVATION = 4096


def require_openvino():
    """The ``openvino`` module, or NotInstalledError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise NotInstalledError(INSTALL_HINT) from None
    return openvino


def _first_line(e: Exception) -> str:
    """OpenVINO's messages end with the reason after lines of 'Check ... failed at src/...'; keep the reason."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    reason = lines[-1] if lines else type(e).__name__
    return reason[:200]


def read(path: str | os.PathLike):
    """An ``openvino.Model`` from an IR ``.xml`` (with its ``.bin``) or an ONNX file, read by that format's frontend.

    Both files of an IR must be regular files (a FIFO would block the reader); whatever OpenVINO's reader raises
    (its ``GeneralFailure``, ``OpConversionFailure``... share no base but ``Exception``) is one line; the model must
    be an image classifier (:func:`check_interface`).
    """
    require_openvino()
    from openvino.frontend import FrontEndManager

    path = Path(path)
    frontend = FRONTENDS.get(path.suffix.lower())
    if frontend is None:
        raise FileFormatError(f"{path}: OpenVINO runs .xml (IR) and .onnx files, not {path.suffix or '(no suffix)'!r}")
    if frontend == "ir":
        check_input_file(path, "OpenVINO IR")
        weights = path.with_suffix(".bin")
        if not os.path.lexists(weights):
            raise FileFormatError(f"{path}: its weights {weights.name} are missing (an OpenVINO IR is an .xml and a "
                                  ".bin of the same name)")
        check_input_file(weights, "OpenVINO IR weights")
    if frontend == "onnx":
        read_model(path)  # one clear line for a missing, corrupt or external-data file before OpenVINO sees it
    fe = FrontEndManager().load_by_framework(frontend)
    try:
        model = fe.convert(fe.load(str(path)))
    except Exception as e:  # noqa: BLE001 (OpenVINO's failures share no base but Exception)
        raise FileFormatError(f"{path}: OpenVINO cannot read it ({_first_line(e)})") from None
    check_interface(model, path)
    return model


def _dims(port) -> list[int] | None:
    """A port's dimensions, -1 where dynamic; None when even its rank is dynamic."""
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return None
    return [-1 if d.is_dynamic else d.get_length() for d in shape]


def check_interface(model, path: Path) -> None:
    """The interface every verb relies on, as for ONNX (``dnet.core.artifact.onnxfile.check_interface``): one float
    input and one float output whose shapes pass ``check_classifier_shapes``, and no tensor far larger than the
    input."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
        if len(inputs) != 1 or len(outputs) != 1:
            raise FileFormatError(f"{path}: {CLASSIFIER}; this file has {len(inputs)} inputs and {len(outputs)} outputs")
        for port, role in ((inputs[0], "input"), (outputs[0], "output")):
            if port.get_element_type().get_type_name() not in ("f32", "f16"):
                raise FileFormatError(f"{path}: {CLASSIFIER}; its {role} is {port.get_element_type().get_type_name()}, "
                                      "not a float32 or float16 tensor")
        dims, out_dims = _dims(inputs[0]), _dims(outputs[0])
        meta = model_meta(model)
    except FileFormatError:
        raise
    except Exception as e:  # noqa: BLE001
        raise FileFormatError(f"{path}: OpenVINO cannot read it ({_first_line(e)})") from None
    check_classifier_shapes(path, dims, out_dims, meta, no_rank="a shape of unknown rank")
    if dims[2] > 0 and dims[3] > 0:
        _check_activations(model, path, 3 * dims[2] * dims[3])


def _check_activations(model, path: Path, per_image: int) -> None:
    """No tensor of the graph (its shapes are inferred when it is read) holds more than MAX_ACTIVATION times the
    input's elements per image: a padding or size attribute of 100000 would otherwise make a 48 kB file allocate
    gigabytes when it runs (found by the ``ir`` fuzz target)."""
    try:
        for op in model.get_ordered_ops():
            if op.get_type_name() in ("Constant", "Parameter"):  # weights are bounded by the .bin they are read from
                continue
            for port in op.outputs():
                dims = _dims(port)
                if dims is None or len(dims) < 2:
                    continue
                elements = math.prod(d for d in dims[1:] if d > 0)
                if elements > MAX_ACTIVATION * per_image:
                    raise FileFormatError(
                        f"{path}: {op.get_friendly_name()} ({op.get_type_name()}) gives {shape_text(dims)}, {elements // per_image:,}× "
                        f"the input per image; a DenseNet's tensors stay under {MAX_ACTIVATION:,}× (a corrupt size or "
                        "padding?)")
    except FileFormatError:
        raise
    except Exception as e:  # noqa: BLE001
        raise FileFormatError(f"{path}: OpenVINO cannot read it ({_first_line(e)})") from None


def model_meta(model) -> ArtifactMeta | None:
    """dnet's description of the model, from ``rt_info["framework"]`` (where OpenVINO keeps ONNX metadata_props)."""
    if not model.has_rt_info(["framework"]):
        return None
    node = model.get_rt_info()["framework"]
    keys = node.value.keys() if hasattr(node, "value") else node.keys()
    props = {k: model.get_rt_info(["framework", k]).astype(str) for k in keys if k.startswith(PREFIX)}
    try:
        return ArtifactMeta.from_strings(props)
    except Exception:  # metadata another tool wrote under our prefix: run the model, describe nothing
        return None


def classifier_features(model) -> int | None:
    """Channels entering the IR's classifier: the weight of the MatMul that makes its output (through a Convert or a
    bias Add), as ``dnet.core.artifact.onnxfile.classifier_features`` reads an ONNX graph; None for a graph that ends
    otherwise."""
    try:
        results = model.get_results()
        if len(results) != 1:
            return None
        node = results[0].input_value(0).get_node()
        for _ in range(4):
            if node.get_type_name() == "MatMul":
                break
            if node.get_type_name() not in ("Convert", "Add"):
                return None
            node = next(v.get_node() for v in node.input_values() if v.get_node().get_type_name() != "Constant")
        shape = node.input_value(1).get_partial_shape() if node.get_type_name() == "MatMul" else None
        if shape is None or shape.is_dynamic or len(shape) != 2:
            return None
        rows, cols = (d.get_length() for d in shape)
        return int(cols if node.get_attributes().get("transpose_b") else rows)
    except Exception:  # noqa: BLE001 (a graph OpenVINO cannot walk names no classifier: the name is not checked)
        return None


class OpenVinoEngine(Engine):
    kind = "openvino"

    def __init__(self, path: Path, compiled, provider: str, meta: ArtifactMeta | None) -> None:
        self.path = path
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.device = provider
        self.meta = meta
        self.requested_precision = PROVIDERS[provider]
        # what the CPU plugin chose: "f32" where a bf16 request meets a CPU without native bf16
        self.inference_precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        inp = compiled.input(0)
        dims = [-1 if d.is_dynamic else d.get_length() for d in inp.get_partial_shape()]
        if len(dims) != 4:
            raise EngineError(f"{path.name}: dnet runs image classifiers with an N×3×H×W input, this one has shape "
                              f"{inp.get_partial_shape()}")
        self.input_shape = (dims[0], dims[1], dims[2], dims[3])
        self._fp16_input = inp.get_element_type().get_type_name() == "f16"

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = self.input_shape[0]
        if n > 0 and len(batch) != n:  # a file with a fixed batch: feed it piece by piece
            return np.concatenate([self.run(batch[i:i + n]) for i in range(0, len(batch), n)])
        feed = batch.astype(np.float16) if self._fp16_input else batch
        try:
            out = self.request.infer({0: feed})[0]
        except Exception as e:  # noqa: BLE001 (OpenVINO's failures share no base but Exception)
            raise EngineError(f"{self.path.name}: OpenVINO cannot run it ({_first_line(e)})") from None
        return np.array(out, dtype=np.float32)  # a copy: the request reuses its output buffer

    def layer_precisions(self, layer_type: str = "Convolution") -> dict[str, int]:
        """How many layers of ``layer_type`` run at each precision in the compiled model (e.g. ``{"u8": 120}``)."""
        counts: Counter = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == layer_type:
                counts[info["runtimePrecision"].astype(str)] += 1
        return dict(counts)

    def close(self) -> None:
        self.request = None
        self.compiled = None


def open_file(path: str | os.PathLike, *, provider: str | None = None, threads: int | None = None) -> OpenVinoEngine:
    """Open an IR ``.xml`` or an ONNX file on OpenVINO's CPU plugin.

    ``provider``: "openvino" (f32; None and "cpu" mean it too) or "openvino-bf16" (bf16 where the CPU has it);
    ``threads`` sets OpenVINO's inference threads (None: its default).
    """
    path = Path(path)
    name = "openvino" if provider in (None, "cpu") else provider
    if name not in PROVIDERS:
        raise UsageError(f"provider {name!r} is not one of the openvino engine's: {', '.join(PROVIDERS)}",
                         option="provider")
    ov = require_openvino()
    model = read(path)
    config = {"INFERENCE_PRECISION_HINT": PROVIDERS[name]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = ov.Core().compile_model(model, "CPU", config)
        # the zoo name decides which published number the model is held to: the graph must be that network
        meta = checked_name(model_meta(model), path.name, classifier_features(model))
        return OpenVinoEngine(path, compiled, name, meta)
    except (DnetError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 (OpenVINO's failures share no base but Exception)
        raise FileFormatError(f"{path}: OpenVINO cannot compile it ({_first_line(e)})") from None


__all__ = ["PROVIDERS", "OpenVinoEngine", "classifier_features", "model_meta", "open_file", "read", "require_openvino"]
