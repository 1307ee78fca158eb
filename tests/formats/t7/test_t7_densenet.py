"""Lua DenseNet module trees -> dnet models: parity with Lua's own outputs, synthetic variants, refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import dnet
from dnet.core.atomic import sha256_file
from dnet.core.errors import DnetError, FileFormatError, UnsafeFileError
from dnet.formats.t7 import reader
from dnet.formats.t7.densenet import model_from_t7_object, parse_densenet
from dnet.formats.t7.reader import Table, TorchObject
from dnet.formats.t7.writer import LuaFunction, LuaStyle, _module, dumps, lua_densenet
from dnet.models.densenet import DenseNet, DenseNetConfig
from tests.helpers.shared import shared_fixture
from tests.helpers.t7_writer import cuda_names, one_torch_thread, randomized  # noqa: F401 (autouse fixture)

FIXTURES = {
    "cifar10-densenet-bc-l40-k12": (
        DenseNetConfig((6, 6, 6), 12, True, 0.5, 24, "cifar", 10), "standard", "cifar10", None,
    ),
    "cifar100-densenet-l40-k12-dropout": (
        DenseNetConfig((12, 12, 12), 12, False, 1.0, 24, "cifar", 100, drop_rate=0.2), "standard", "cifar100",
        "densenet-l40-k12",
    ),
    "cifar10-densenet-bc-l40-k12-optmem4": (
        DenseNetConfig((6, 6, 6), 12, True, 0.5, 24, "cifar", 10), "custom", "cifar10", None,
    ),
}


def _max_rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max()) / max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_reproduces_the_lua_output(name):
    path = shared_fixture("t7", f"{name}.t7")
    x = reader.load(shared_fixture("t7", f"{name}.input.t7"))
    ref = reader.load(shared_fixture("t7", f"{name}.output.t7"))
    model = dnet.load(path)
    assert not model.training
    with torch.no_grad():
        y = model(torch.from_numpy(np.array(x))).numpy()
    assert y.shape == ref.shape
    assert _max_rel_error(y, ref) <= 1e-4
    cfg, kind, spec, lua_match = FIXTURES[name]
    assert model.config == cfg
    meta = model.meta
    assert (meta.model, meta.num_classes, meta.input_size, meta.preprocess.name) == ("custom", cfg.num_classes, 32, spec)
    assert meta.source == f"{name}.t7" and meta.source_sha256 == sha256_file(path)
    assert meta.config == cfg.to_dict()
    assert meta.extra["layer_kind"] == kind and meta.extra["dropout"] == cfg.drop_rate
    assert meta.extra["lua_zoo_match"] == lua_match


def _tiny(**fields) -> DenseNetConfig:
    base = dict(block_config=(2, 2), growth_rate=4, bottleneck=True, compression=0.5, init_features=8, stem="cifar", num_classes=10)
    return DenseNetConfig(**{**base, **fields})


SYNTHETIC = {
    "imagenet-standard": (DenseNetConfig((2, 3, 2), 8, True, 0.5, 16, "imagenet", 1000), LuaStyle(), 112),
    "imagenet-custom-nn-bias": (
        DenseNetConfig((2, 3, 2), 8, True, 0.5, 16, "imagenet", 12, conv_bias=True),
        LuaStyle(prefix="nn", layer_kind="custom"), 112,
    ),
    "custom-basic-k6": (DenseNetConfig((3, 3, 3), 6, False, 1.0, 12, "cifar", 10), LuaStyle(layer_kind="custom"), 32),
    "custom-bc-k16-two-blocks-c100": (
        DenseNetConfig((4, 2), 16, True, 0.5, 32, "cifar", 100), LuaStyle(layer_kind="custom"), 16,
    ),
    "running-std": (_tiny(), LuaStyle(running_std=True), 16),
    "bn-eps-1e-3-nn": (_tiny(conv_bias=True), LuaStyle(prefix="nn", bn_eps=1e-3), 16),
    "dropout-view-bare-concat-7-classes": (
        _tiny(num_classes=7, drop_rate=0.3, bottleneck=False, compression=1.0),
        LuaStyle(dropout=0.3, flatten="nn.View", wrap_concat=False), 16,
    ),
    "compression-0.7-bn-size-2": (
        DenseNetConfig((3, 3, 3), 6, True, 0.7, 16, "cifar", 3, bn_size=2), LuaStyle(), 32,
    ),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_lua_file_matches_the_dnet_model_it_was_made_from(name):
    cfg, style, size = SYNTHETIC[name]
    original = randomized(DenseNet(cfg), seed=len(name))
    data = dumps(lua_densenet(original, style))
    model = model_from_t7_object(reader.loads(data), "x.t7")
    assert model.config.channels() == cfg.channels()
    assert model.config == dataclasses.replace(cfg, compression=model.config.compression)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = _max_rel_error(model(x).numpy(), original(x).numpy())
    assert err <= 1e-5
    assert model.meta.input_size == size
    assert model.meta.extra["layer_kind"] == style.layer_kind
    assert model.meta.extra["bn_running_std"] is style.running_std
    assert model.meta.extra["class_prefix"] == style.prefix
    expected_spec = "torch7" if cfg.stem == "imagenet" else {100: "cifar100"}.get(cfg.num_classes, "cifar10")
    assert model.meta.preprocess.name == expected_spec
    assert ("preprocess_note" in model.meta.extra) is (cfg.stem == "cifar" and cfg.num_classes not in (10, 100))


def test_model_saved_with_cuda_tensors_loads_as_float():
    original = randomized(DenseNet(_tiny()))
    data = dumps(cuda_names(lua_densenet(original, LuaStyle(layer_kind="custom"))))
    assert b"torch.CudaStorage" in data and b"torch.FloatStorage" not in data  # (_type fields still say Float)
    model = model_from_t7_object(reader.loads(data))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert _max_rel_error(model(x).numpy(), original(x).numpy()) <= 1e-5


def test_compression_is_inferred_as_the_round_value():
    cfg = SYNTHETIC["compression-0.7-bn-size-2"][0]
    model = model_from_t7_object(reader.loads(dumps(lua_densenet(randomized(DenseNet(cfg)), LuaStyle()))))
    assert model.config.compression == 0.7 and model.config.bn_size == 2


def test_long_size_4_file_loads_the_same_model(tmp_path):
    original = randomized(DenseNet(_tiny()))
    path = tmp_path / "win.t7"
    path.write_bytes(dumps(lua_densenet(original, LuaStyle(layer_kind="custom")), long_size=4))
    model = dnet.load(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert _max_rel_error(model(x).numpy(), original(x).numpy()) <= 1e-5


def test_v1_dropout_scaling_is_folded_into_the_convolution_before_it():
    cfg = _tiny(drop_rate=0.25)
    original = randomized(DenseNet(cfg))
    model = model_from_t7_object(reader.loads(dumps(lua_densenet(original, LuaStyle(dropout=0.25, dropout_v2=False)))))
    # old nn.Dropout multiplies by 1 - p at inference: what Lua computes is the original with every conv but
    # the stem scaled by 0.75
    expected = randomized(DenseNet(cfg))
    with torch.no_grad():
        for name, m in expected.named_modules():
            if isinstance(m, torch.nn.Conv2d) and name != "features.conv0":
                m.weight.mul_(0.75)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert _max_rel_error(model(x).numpy(), expected(x).numpy()) <= 1e-5
        assert _max_rel_error(model(x).numpy(), original(x).numpy()) > 1e-3


def test_densenet121_sized_file_is_named_by_the_zoo(tmp_path):
    original = dnet.create_model("densenet121").eval()  # the Lua init: random convs, BN γ=1 β=0, mean 0, var 1
    path = tmp_path / "densenet-121.t7"
    path.write_bytes(dumps(lua_densenet(original, LuaStyle(with_grads=False))))
    model = dnet.load(path)
    assert sum(p.numel() for p in model.parameters()) == 7_978_856
    assert (model.meta.model, model.meta.input_size, model.meta.preprocess.name) == ("densenet121", 224, "torch7")
    assert model.meta.extra["lua_zoo_match"] == "densenet121"
    for (k, a), (k2, b) in zip(model.state_dict().items(), original.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k


# -- refusals ---------------------------------------------------------------------------------------------------


def _tree():
    return lua_densenet(randomized(DenseNet(_tiny())), LuaStyle())


def _error(obj) -> str:
    with pytest.raises(FileFormatError) as e:
        parse_densenet(reader.loads(dumps(obj)))  # through the file format, as a real file would come
    assert "\n" not in str(e.value)
    return str(e.value)


def test_non_densenet_module_is_named_with_its_path():
    tree = _tree()
    tree.fields["modules"][5] = _module("nn.Sequential", modules=Table({1: _module("nn.SpatialDilatedConvolution")}))
    assert _error(tree) == "model.modules[5].modules[1]: nn.SpatialDilatedConvolution is not part of a DenseNet"


def test_resnet_like_tree_is_refused_at_its_first_residual_block():
    tree = lua_densenet(randomized(DenseNet(_tiny(stem="imagenet"))), LuaStyle())
    block = _module("nn.Sequential", modules=Table({1: _module("nn.ConcatTable"), 2: _module("nn.CAddTable")}))
    tree.fields["modules"][5] = _module("nn.Sequential", modules=Table({1: block}))
    assert _error(tree) == "model.modules[5].modules[1].modules[1]: nn.ConcatTable is not part of a DenseNet"


def test_unknown_module_class_inside_a_dense_layer():
    tree = _tree()
    inner = tree.fields["modules"][3].fields["modules"][1].fields["modules"][2]
    inner.fields["modules"][2] = _module("nn.MyFancyReLU")
    assert _error(tree) == "model.modules[3].modules[1].modules[2].modules[2]: nn.MyFancyReLU is not part of a DenseNet"


def test_known_module_in_the_wrong_place():
    tree = _tree()
    tree.fields["modules"][2] = _module("nn.Linear")
    assert _error(tree) == "model.modules[2]: nn.Linear where a DenseNet has a dense layer (after the stem)"


def test_reversed_concat_order_is_refused():
    tree = _tree()
    concat = tree.fields["modules"][2].fields["modules"][1]
    mods = concat.fields["modules"]
    mods[1], mods[2] = mods[2], mods[1]
    assert _error(tree) == (
        "model.modules[2].modules[1]: nn.Concat: puts the new features before the input; "
        "dnet's dense layer concatenates the input first"
    )


def test_missing_join_table_after_custom_layers():
    tree = lua_densenet(randomized(DenseNet(_tiny())), LuaStyle(layer_kind="custom"))
    mods = tree.fields["modules"].as_list()
    del mods[3]  # the first nn.JoinTable
    tree.fields["modules"] = Table({i: m for i, m in enumerate(mods, 1)})
    assert _error(tree) == (
        "model.modules[4]: cudnn.SpatialBatchNormalization where a DenseNet has nn.JoinTable(2) after "
        "memory-efficient dense layers"
    )


def test_a_container_inside_itself_is_refused():
    tree = _tree()
    inner = _module("nn.Sequential", modules=Table({1: tree}))
    tree.fields["modules"][2] = inner
    assert _error(tree) == "model.modules[2].modules[1]: nn.Sequential: contains itself"


def test_a_table_is_not_a_model():
    assert _error(Table({"epoch": 3, "modelFile": "model_3.t7"})) == (
        "model: the file holds a Lua table, not an nn module (fb.resnet.torch's latest.t7 and optimState files "
        "are not models: load a model_N.t7)"
    )


def test_wrong_field_types_are_one_error():
    tree = _tree()
    tree.fields["modules"][1].fields["kW"] = "three"
    assert _error(tree) == "model.modules[1]: cudnn.SpatialConvolution: field 'kW' is a string, expected an integer"


# -- bad files through dnet.load: one line each ----------------------------------------------------------------------


def _load_error(path) -> DnetError:
    with pytest.raises(DnetError) as e:
        dnet.load(path)
    assert "\n" not in str(e.value)
    return e.value


def test_bad_files_give_one_line(tmp_path):
    png = tmp_path / "cat.t7"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert str(_load_error(png)) == (
        "cat.t7: not a Torch7 binary file: it does not start with a type tag (first bytes 89 50 4e 47 0d 0a 1a 0a)"
    )
    full = shared_fixture("t7", "cifar10-densenet-bc-l40-k12.t7").read_bytes()
    cut = tmp_path / "cut.t7"
    cut.write_bytes(full[: len(full) // 2])
    e = _load_error(cut)
    assert isinstance(e, FileFormatError) and str(e).startswith("cut.t7: corrupt or truncated Torch7 file at byte ")

    tree = _tree()
    tree.fields["modules"][1].fields["init"] = LuaFunction()
    fn = tmp_path / "fn.t7"
    fn.write_bytes(dumps(tree))
    e = _load_error(fn)
    assert isinstance(e, UnsafeFileError) and "holds a Lua function (type tag 8) at byte " in str(e)

    other = tmp_path / "other.t7"
    other.write_bytes(dumps(TorchObject("nn.SpatialDilatedConvolution", Table({"kW": 3}), 1)))
    assert str(_load_error(other)) == "other.t7: model: nn.SpatialDilatedConvolution is not part of a DenseNet"


class _Pickled:
    pass


def test_pth_that_needs_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "thing": _Pickled()}, path)
    e = _load_error(path)
    assert isinstance(e, UnsafeFileError)
    assert str(e).startswith(f"{path}: refused: the file asks to run code (GLOBAL ")
    assert "_Pickled" in str(e) and "weights_only" not in str(e)  # names what it wanted, gives no unsafe advice
