"""The Torch7 reader on real Lua files (values, not just "no exception") and on hand-made hostile bytes."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

from dnet.core.errors import FileFormatError, UnsafeFileError
from dnet.formats.t7 import reader
from dnet.formats.t7.reader import Storage, Table, TorchObject
from dnet.formats.t7.writer import LuaFunction, T7Storage, T7Tensor, dumps, tensor
from tests.helpers.shared import shared_fixture


def tf(name: str):
    return reader.load(shared_fixture("t7", "torchfile-tests", name))


# -- the torchfile project's real Lua files ----------------------------------------------------------------------


def test_hello_table_has_an_int_value():
    obj = tf("hello=123.t7")
    assert obj == {"hello": 123} and type(obj["hello"]) is int and isinstance(obj, Table)


def test_custom_class_is_a_generic_object_with_no_fields():
    obj = tf("custom_class.t7")
    assert isinstance(obj, TorchObject) and obj.typename == "Blah" and obj.fields == {} and obj.version == 1


def test_double_tensor_values_exact():
    a = tf("doubletensor.t7")
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, [[1, 2, 3], [4, 5, 6.9]])


def test_float_tensor_sum():
    a = tf("floattensor.t7")
    assert a.dtype == np.float32 and a.shape == (2, 3, 4)
    assert abs(float(a.astype(np.float64).sum()) - 12.97241666913) < 1e-5


@pytest.mark.parametrize("name", ["function.t7", "function_upvals.t7"])
def test_function_is_refused_with_offset(name):
    with pytest.raises(UnsafeFileError) as e:
        tf(name)
    assert str(e.value) == (
        f"{name}: refused: the Torch7 file holds a Lua function (type tag 8) at byte 0; "
        "dnet never runs code from a file, and a DenseNet checkpoint holds none"
    )


def test_gmodule_with_cross_references():
    g = tf("gmodule_with_linear_identity.t7")
    assert g.typename == "nn.gModule" and g["nInputs"] == 2
    mods = g["modules"].as_list()
    assert [m.typename for m in mods] == ["nn.Identity", "nn.Identity", "nn.Linear", "nn.CAddTable"]
    assert mods[2]["weight"].shape == (2, 1) and mods[2]["bias"].shape == (2,)
    # the graph nodes refer to the very module objects of the modules list
    linear_nodes = [n for n in g["forwardnodes"].as_list() if n["data"].get("module") is mods[2]]
    assert len(linear_nodes) == 1


def test_list_table_heuristic_and_maps():
    assert tf("list_table.t7").as_list() == ["hello", "world", "third item", 123]
    m1 = tf("map_table1.t7")
    assert m1.as_list() is None and m1 == {0: "zero", 1: "hello", 2: "world", 3: "third item", 4: 123}
    m2 = tf("map_table2.t7")
    assert m2.as_list() is None and m2 == {1: "hello", 2: "world", 3: "third item", 4: 123, "a": "non number key"}


def test_nngraph_node_annotations():
    node = tf("nngraph_node.t7")
    assert node.typename == "nngraph.Node" and node["id"] == 0
    assert node["data"]["annotations"]["hello"] == 123


def test_recursive_class_refers_to_itself():
    obj = tf("recursive_class.t7")
    assert obj.typename == "A" and obj["a"] is obj


def test_recursive_kv_table_key_and_value_are_the_table():
    t = tf("recursive_kv_table.t7")
    assert len(t) == 1
    (k, v), = t.items()
    assert k is t and v is t


def test_tds_hash_and_vec():
    h = tf("tds_hash.t7")
    assert len(h) == 3 and h[1] == 2 and h[2] == 3 and h[10] == 11
    assert tf("tds_vec.t7") == [123, 456]


# -- the DenseNet fixtures: shared storages and offsets -------------------------------------------------------------


def _modules(obj):
    return obj["modules"].as_list()


def _storage(a: np.ndarray) -> np.ndarray:
    """The storage array a tensor views: the last array in its base chain (above it is the file buffer)."""
    while isinstance(a.base, np.ndarray) or type(a.base).__name__ == "DummyArray":
        a = a.base if isinstance(a.base, np.ndarray) else a.base.base
    return a


def _offset(a: np.ndarray, storage: np.ndarray) -> int:
    return (a.__array_interface__["data"][0] - storage.__array_interface__["data"][0]) // a.itemsize


def test_densenet_parameters_are_views_of_one_flat_storage():
    model = reader.load(shared_fixture("t7", "cifar10-densenet-bc-l40-k12.t7"))
    stem, last = _modules(model)[0], _modules(model)[-1]
    assert stem.typename == "cudnn.SpatialConvolution" and last.typename == "nn.Linear"
    w, lw = stem["weight"], last["weight"]
    assert w.shape == (24, 3, 3, 3) and lw.shape == (10, 132) and "bias" not in stem.fields
    flat = _storage(w)
    assert _storage(lw) is flat and flat.shape == (176_122,)  # one getParameters() storage: every parameter
    assert _offset(w, flat) == 0 and _offset(lw, flat) == 176_122 - 10 - 1320  # Linear weight, then its bias
    np.testing.assert_array_equal(lw, flat[_offset(lw, flat):][:1320].reshape(10, 132))
    lw[3, 7] += 2.0  # an in-place edit of one view lands in the flat storage at that view's offset
    assert flat[_offset(lw, flat) + 3 * 132 + 7] == lw[3, 7]
    grad = _storage(stem["gradWeight"])
    assert grad is not flat and grad.shape == (176_122,) and np.count_nonzero(grad) == 0


def test_densenet_input_is_the_documented_batch():
    x = reader.load(shared_fixture("t7", "cifar10-densenet-bc-l40-k12.input.t7"))
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x * 128, np.round(x * 128))  # N(0,1) rounded to multiples of 1/128
    y = reader.load(shared_fixture("t7", "cifar10-densenet-bc-l40-k12.output.t7"))
    assert y.shape == (2, 10) and abs(float(np.abs(y).max()) - 0.650) < 5e-4


def test_custom_layer_copies_hold_the_same_tensors():
    model = reader.load(shared_fixture("t7", "cifar10-densenet-bc-l40-k12-optmem4.t7"))
    layer = _modules(model)[1]
    assert layer.typename == "nn.DenseConnectLayerCustom"
    net1, mod1 = layer["net1"], _modules(layer)[0]
    assert net1 is not mod1  # deepCopy without memo: distinct module objects ...
    assert _modules(net1)[0]["weight"] is _modules(mod1)[0]["weight"]  # ... the same tensor objects
    assert layer["opt"]["growthRate"] == 12 and layer["opt"]["optMemory"] == 4
    # every layer's input_c views the one shared activation storage
    inputs = [m["input_c"] for m in _modules(model) if m.typename == "nn.DenseConnectLayerCustom" and m["input_c"].size]
    assert len(inputs) >= 2 and all(np.shares_memory(inputs[0], a) for a in inputs[1:])


# -- format details on written files ----------------------------------------------------------------------------


def test_strides_and_one_based_offsets_are_honoured():
    flat = T7Storage("torch.FloatStorage", np.arange(30, dtype=np.float32))
    t = T7Tensor("torch.FloatTensor", (3, 4), (1, 5), 3, flat)  # a transposed view from element 3 (1-based)
    u = T7Tensor("torch.FloatTensor", (5,), (1,), 16, flat)
    obj = reader.loads(dumps(Table({1: t, 2: u, 3: t})))
    a, b = obj[1], obj[2]
    np.testing.assert_array_equal(a, [[2 + i + 5 * j for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(b, [15, 16, 17, 18, 19])
    assert obj[3] is a  # the same tensor object twice
    b[2] = -1.0  # element 17 of the storage is a[0, 3] too
    assert a[0, 3] == -1.0


@pytest.mark.parametrize(
    "kind,dtype",
    [("Double", np.float64), ("Float", np.float32), ("Half", np.float16), ("Byte", np.uint8), ("Char", np.int8),
     ("Short", np.int16), ("Int", np.int32), ("Long", np.int64)],
)
def test_every_tensor_kind_and_its_cuda_name(kind, dtype):
    values = np.array([[1, 2, 3], [4, 5, 126]], dtype=dtype)
    for prefix_kind in (kind, "Cuda" if kind == "Float" else f"Cuda{kind}"):
        t = tensor(values, kind)
        t.typename = f"torch.{prefix_kind}Tensor"
        t.storage.typename = f"torch.{prefix_kind}Storage"
        a = reader.loads(dumps(t))
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, values)


def test_long_size_4_is_detected_and_selectable():
    obj = Table({"size": T7Storage("torch.LongStorage", np.array([7, 9], dtype="<i8")),
                 "t": tensor(np.arange(6, dtype=np.float32).reshape(2, 3))})
    data = dumps(obj, long_size=4)
    for got in (reader.loads(data), reader.loads(data, long_size=4)):
        assert isinstance(got["size"], Storage) and got["size"].data.tolist() == [7, 9]
        np.testing.assert_array_equal(got["t"], np.arange(6).reshape(2, 3))
    with pytest.raises(FileFormatError):
        reader.loads(data, long_size=8)
    assert reader.loads(dumps(obj))["size"].data.dtype == np.int64


def test_unknown_class_keeps_its_fields():
    obj = reader.loads(dumps(TorchObject("my.Thing", Table({"answer": 42, "name": "x"}), 3)))
    assert obj.typename == "my.Thing" and obj.version == 3 and obj.fields == {"answer": 42, "name": "x"}


def test_function_inside_a_model_is_refused_at_its_offset():
    data = dumps(Table({"f": LuaFunction()}))
    at = 4 + 4 + 4 + (4 + 4 + 1)  # table tag, index, size, the key "f"
    with pytest.raises(UnsafeFileError, match=rf"type tag 8\) at byte {at};"):
        reader.loads(data)


# -- hostile bytes: one error, with the byte offset, and nothing allocated from a header ----------------------


def _int(v):
    return struct.pack("<i", v)


def _str(s: bytes):
    return _int(len(s)) + s


def test_huge_storage_header_is_checked_before_allocating():
    data = _int(4) + _int(1) + _str(b"V 1") + _str(b"torch.FloatStorage") + struct.pack("<q", 2**40) + b"\0" * 16
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError) as e:
            reader.loads(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == (
        "corrupt or truncated Torch7 file at byte 37: torch.FloatStorage of 1099511627776 elements "
        "does not fit in the 16 bytes left"
    )
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "data,message",
    [
        (_int(2) + _int(1 << 30) + b"abc", "at byte 4: a string of 1073741824 bytes does not fit in the 3 bytes left"),
        (_int(3) + _int(1) + _int(1 << 28), "at byte 8: a table of 268435456 entries does not fit in the 0 bytes left"),
        (_int(3) + _int(1) + _int(-5), "at byte 8: a table of -5 entries does not fit"),
        (_int(3) + _int(1) + _int(1) + _int(99) + _int(0), "at byte 12: unknown type tag 99"),
        (_int(0) + b"xx", "at byte 4: 2 bytes follow the end of the object"),
        (b"", "at byte 0: the file is empty"),
        (_int(1) + b"\0\0", "at byte 4: a number needs 8 bytes, 2 left"),
    ],
)
def test_corrupt_headers_give_one_error_with_the_offset(data, message):
    with pytest.raises(FileFormatError, match=message.replace("(", r"\(")):
        reader.loads(data)


def test_every_truncation_of_a_real_file_is_one_error():
    data = shared_fixture("t7", "torchfile-tests", "gmodule_with_linear_identity.t7").read_bytes()
    for n in range(0, len(data), 13):
        with pytest.raises(FileFormatError, match=r"at byte \d+: "):
            reader.loads(data[:n])


def test_nesting_depth_is_bounded():
    inner: Table = Table()
    outer = inner
    for _ in range(300):
        outer = Table({1: outer})
    with pytest.raises(FileFormatError, match="objects nested deeper than 200 levels"):
        reader.loads(dumps(outer))
    assert reader.loads(dumps(outer), max_depth=400)[1][1][1] is not None


def test_views_outside_or_larger_than_their_storage_are_refused():
    flat = T7Storage("torch.FloatStorage", np.arange(10, dtype=np.float32))
    for t, what in [
        (T7Tensor("torch.FloatTensor", (4,), (1,), 8, flat), "offset 8 does not fit its storage of 10 elements"),
        (T7Tensor("torch.FloatTensor", (1000, 1000), (0, 0), 1, flat), "does not fit its storage"),
        (T7Tensor("torch.FloatTensor", (2,), (-1,), 5, flat), "negative sizes or strides"),
        (T7Tensor("torch.FloatTensor", (2,), (1,), 1, None), "has no storage"),
        (T7Tensor("torch.FloatTensor", (0, 2**62), (1, 1), 1, None), r"empty torch.FloatTensor of size \[0, 4611686018427387904\]"),
        (T7Tensor("torch.DoubleTensor", (2,), (1,), 1, flat), "torch.DoubleTensor over a torch.FloatStorage"),
    ]:
        with pytest.raises(FileFormatError, match=what):
            reader.loads(dumps(t))


def test_not_a_t7_file_and_ascii_files():
    with pytest.raises(FileFormatError, match=r"^not a Torch7 binary file: it does not start with a type tag \(first bytes 89 50"):
        reader.loads(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(FileFormatError, match="an ASCII-format Torch7 file"):
        reader.loads(b"4\n1\n3\nV 1\n")
