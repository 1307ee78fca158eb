"""dnet.converters.export: export, checker, parity with PyTorch, metadata, memory-efficient graph, BN rewriting."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from dnet.converters import export as onnx_export
from dnet.core.artifact import onnxfile
from dnet.core.atomic import sha256_file
from dnet.core.errors import AccuracyError, FileFormatError, UsageError
from dnet.data.transforms import preprocess_array
from dnet.engines.onnxruntime import run as ort_run
from dnet.models.densenet import measure_bn_statistics
from tests.helpers.images import photo_tiles
from tests.helpers.models import CIFAR, TINY, fast_export, tiny_model
from tests.helpers.shared import shared_fixture


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    path = onnx_export.export(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, path


@pytest.fixture
def fast(monkeypatch):
    fast_export(monkeypatch)


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_export_has_opset_named_io_and_dynamic_batch(exported):
    _, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("batch", [1, 7])
def test_export_matches_pytorch_on_random_inputs(exported, batch):
    model, path = exported
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
    ref, got = torch_logits(model, x), ort_run(path, x)
    assert got.shape == (batch, TINY.num_classes)
    assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


def test_export_matches_pytorch_on_real_photos(exported):
    model, path = exported
    x = preprocess_array(photo_tiles(), CIFAR)
    ref, got = torch_logits(model, x), ort_run(path, x)
    assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


def test_export_writes_the_artifact_metadata(exported):
    model, path = exported
    meta = onnxfile.read_meta(onnxfile.read_model(path))
    assert (meta.model, meta.num_classes, meta.input_size, meta.precision) == ("custom", 5, 32, "fp32")
    assert meta.preprocess == CIFAR and meta.dnet_version == __import__("dnet").__version__
    assert meta.config == TINY.to_dict()
    assert list(meta.extra["stages"]) == model.stages()  # every dense block and transition, in order
    produced = {o for n in onnx.load(str(path)).graph.node for o in n.output}
    assert set(meta.extra["stages"].values()) <= produced


def test_export_records_source_name_and_sha256(tmp_path, fast):
    model = tiny_model()
    (tmp_path / "src.pth").write_bytes(b"pretend source")
    meta = onnx_export.model_meta(model, source="src.pth", source_sha256=sha256_file(tmp_path / "src.pth"))
    path = onnx_export.export(model, tmp_path / "m.onnx", meta=meta)
    got = onnxfile.read_meta(onnxfile.read_model(path))
    assert (got.source, got.source_sha256) == ("src.pth", sha256_file(tmp_path / "src.pth"))


def test_memory_efficient_model_exports_the_same_graph(tmp_path, exported):
    model, path = exported
    model.set_memory_efficient(True)
    try:
        other = onnx_export.export(model, tmp_path / "me.onnx")
    finally:
        model.set_memory_efficient(False)
    a, b = onnx.load(str(path)), onnx.load(str(other))
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == \
           [(n.op_type, list(n.input), list(n.output)) for n in b.graph.node]
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in a.graph.initializer} == \
           {t.name: numpy_helper.to_array(t).tobytes() for t in b.graph.initializer}


def test_bns_after_a_conv_are_folded_and_preactivation_bns_remain(exported):
    _, path = exported
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    layers = sum(TINY.block_config)
    # norm2 of every bottleneck layer follows conv1 and folds into it; norm1 of each layer, each
    # transition's norm and norm5 follow a concatenation or pooling and cannot fold.
    assert ops.count("Conv") == 1 + 2 * layers + (len(TINY.block_config) - 1)
    assert ops.count("BatchNormalization") == layers + (len(TINY.block_config) - 1) + 1


def test_bn_as_mul_add_matches_and_has_no_batchnorm(tmp_path, fast):
    model = tiny_model(seed=0)
    path = onnx_export.export(model, tmp_path / "ma.onnx", bn="muladd")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Mul") == sum(TINY.block_config) + 2
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    ref = torch_logits(model, x)
    assert np.max(np.abs(ort_run(path, x) - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


def test_a_mismatch_fails_the_export_with_the_numbers_and_leaves_no_file(tmp_path, fast, monkeypatch):
    model = tiny_model()
    real = onnx_export.run
    monkeypatch.setattr(onnx_export, "run", lambda p, x, threads=None: real(p, x) + 0.5)
    with pytest.raises(AccuracyError, match=r"batch of 1: max\|Δ\| = 0\.5 > .*1e-4·max\(1, max\|ref\|"):
        onnx_export.export(model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_opset_below_17_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"^opset must be 17 to 23, got 16$"):
        onnx_export.export(tiny_model(), tmp_path / "m.onnx", opset=16)


def test_model_without_metadata_needs_a_preprocessing_name(tmp_path, fast):
    model = tiny_model()
    model.meta = None
    with pytest.raises(UsageError, match=r"^the model does not say how its inputs are preprocessed") as e:
        onnx_export.export(model, tmp_path / "m.onnx")
    assert e.value.option == "preprocess"  # the CLI names its flag
    assert not (tmp_path / "m.onnx").exists()


def test_corrupt_and_truncated_onnx_are_refused_in_one_line(tmp_path, exported):
    _, path = exported
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(FileFormatError, match="not a readable ONNX file"):
        onnxfile.read_model(bad)
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(FileFormatError, match="not a readable ONNX file"):
        onnxfile.read_model(bad)


# ~15 s on an idle 2-core machine (the dynamo export of 121 layers dominates; 2-3 min when the cores are shared)
def test_densenet121_fp32_matches_pytorch_at_batch_1_and_7(tmp_path):
    from dnet.core.specs import get_spec
    from dnet.models import build_model

    torch.manual_seed(0)
    model = measure_bn_statistics(build_model("densenet121"), torch.randn(4, 3, 224, 224))
    meta = onnx_export.model_meta(model, preprocess=get_spec("torch7"))
    assert meta.model == "densenet121"
    path = onnx_export.export(model, tmp_path / "densenet121.onnx", meta=meta)
    rng = np.random.default_rng(7)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
        ref, got = torch_logits(model, x), ort_run(path, x)
        assert got.shape == (batch, 1000)
        assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


T7_FIXTURES = ["cifar10-densenet-bc-l40-k12", "cifar10-densenet-bc-l40-k12-optmem4", "cifar100-densenet-l40-k12-dropout"]


@pytest.mark.parametrize("name", T7_FIXTURES)
def test_t7_fixture_fp32_onnx_matches_pytorch_at_batch_1_and_7(tmp_path, name):
    import dnet

    src = shared_fixture("t7", f"{name}.t7")
    model = dnet.load(src)
    path = onnx_export.export(model, tmp_path / f"{name}.onnx")
    size = onnxfile.read_meta(onnxfile.read_model(path)).input_size
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
        ref, got = torch_logits(model, x), ort_run(path, x)
        assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))
