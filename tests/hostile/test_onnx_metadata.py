"""Foreign or tampered ONNX files that used to end in tracebacks: one shared symbolic dimension for batch, height
and width; dnet's calibration metadata replaced by an integer; an edited key given twice; out of memory."""

from __future__ import annotations

import json

import onnx
import pytest

from dnet.core.errors import EngineError, runtime_failure


def _shared_dims(path, strip_meta: bool):
    m = onnx.load(str(path))
    if strip_meta:
        del m.metadata_props[:]
    for i in (0, 2, 3):
        d = m.graph.input[0].type.tensor_type.shape.dim[i]
        d.ClearField("dim_value")
        d.dim_param = "N"
    onnx.save(m, str(path))


@pytest.mark.parametrize("strip_meta", [True, False], ids=["foreign", "dnet"])
def test_one_symbolic_dimension_for_batch_and_image_is_one_line(box, models, strip_meta):
    path = box.add(models["onnx"], "shared.onnx")
    _shared_dims(path, strip_meta)
    box.freeze()
    expect = ("shared.onnx: its input 'input' is N×3×N×N: the batch and the image's height or width are one symbolic "
              "dimension 'N'; export it with a batch dimension of its own")
    assert box.cli("bench", path, "--batch-sizes", 1, "--duration", 0.05, "--warmup", 0).error_line(1) == expect
    assert box.cli("eval", path, "--dataset", "digits", "-q").error_line(1) == expect
    box.unchanged()


def test_symbolic_height_and_width_without_metadata_are_timed_at_224_and_it_says_so(box, models):
    path = box.add(models["onnx"], "free.onnx")
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for i, name in ((2, "H"), (3, "W")):
        d = m.graph.input[0].type.tensor_type.shape.dim[i]
        d.ClearField("dim_value")
        d.dim_param = name
    onnx.save(m, str(path))
    r = box.cli("bench", path, "--batch-sizes", 1, "--iterations", 2, "--warmup-iterations", 0, "--json")
    assert r.code == 0, r.stderr
    assert "dnet: warning: free.onnx has no fixed height and width and no dnet metadata: timed at 224×224 (choose " \
           "the size with --input-size)" in r.stderr


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("dnet.calibration", "7", "calibration is int 7, not a dict"),
    ("dnet.calibration", '{"layout": 3}', "calibration layout is int, not a dict"),
    ("dnet.model", "12", "model 12 is not text"),
])
def test_tampered_metadata_is_one_line_naming_the_file_and_key(box, models, key, value, problem):
    path = box.add(models["onnx"], "tampered.onnx")
    m = onnx.load(str(path))
    if not any(p.key == key for p in m.metadata_props):
        m.metadata_props.add(key=key, value=value)
    for p in m.metadata_props:
        if p.key == key:
            p.value = value
    onnx.save(m, str(path))
    box.freeze()
    line = box.cli("inspect", path).error_line(1)
    assert line == f"{path}: artifact metadata is incomplete or malformed: {problem}", line
    box.unchanged()


def test_a_metadata_key_given_twice_is_refused(box, models):
    path = box.add(models["onnx"], "twice.onnx")
    m = onnx.load(str(path))
    m.metadata_props.add(key="dnet.precision", value=json.dumps("int8"))
    onnx.save(m, str(path))
    line = box.cli("inspect", path).error_line(1)
    assert line == (f"{path}: metadata key dnet.precision appears 2 times; dnet writes each once, so this file was "
                    "edited: refused")


def test_out_of_memory_is_said_as_such_not_as_a_file_the_runtime_cannot_run():
    e = runtime_failure("m.onnx", "ONNX Runtime", RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : "
                                                              "bad_alloc\nmore"), batch=512)
    assert isinstance(e, EngineError)
    assert str(e) == ("m.onnx: out of memory running a batch of 512 in ONNX Runtime ([ONNXRuntimeError] : 6 : "
                      "RUNTIME_EXCEPTION : bad_alloc); use a smaller batch size or free some memory")
    assert str(runtime_failure("m.onnx", "ONNX Runtime", ValueError("Invalid rank"))) == \
        "m.onnx: ONNX Runtime cannot run it (Invalid rank)"
