"""dnet deploy triton: every written config.pbtxt parsed with Triton's own protobuf and compared with the model file."""

from __future__ import annotations

import shutil

import onnx
import pytest

from dnet.apps.deploy.triton import TritonOptions, write_repository
from dnet.core.artifact.onnxfile import read_meta
from dnet.core.artifact.sidecar import write_sidecar
from dnet.core.errors import FileFormatError, UsageError
from tests.helpers.models import tiny_onnx
from tests.helpers.serving import parse
from tests.helpers.tensorrt_standins import META, sidecar

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serve extra (tritonclient) is absent")
text_format = pytest.importorskip("google.protobuf.text_format")


def test_onnx_entry_matches_the_files_tensors_and_metadata(tmp_path):
    path = tiny_onnx(tmp_path)
    proto = onnx.load(str(path))
    entry, folder = write_repository(path, tmp_path / "repo", TritonOptions(max_batch=16))
    c = parse(folder)
    assert (c.name, c.platform, c.max_batch_size) == ("tiny", "onnxruntime_onnx", 16)
    assert [(i.name, pb2.DataType.Name(i.data_type), list(i.dims)) for i in c.input] == \
        [(proto.graph.input[0].name, "TYPE_FP32", [3, 32, 32])]
    assert [(o.name, list(o.dims), o.label_filename) for o in c.output] == [("logits", [5], "labels.txt")]
    assert list(c.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8, 16]
    assert c.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in c.instance_group] == [(1, "KIND_CPU")]
    meta = read_meta(proto)
    assert c.parameters["dnet.preprocess"].string_value.count('"cifar10"') == 1
    assert c.parameters["dnet.mean"].string_value == ",".join(map(str, meta.preprocess.mean))
    # 5 classes under CIFAR-10's preprocessing: not CIFAR-10's ten names, so numbered ones
    assert (folder / "labels.txt").read_text().split() == [f"class_{i}" for i in range(5)]
    assert (folder / "1" / "model.onnx").read_bytes() == path.read_bytes()
    assert "cifar10" in (folder / "README.md").read_text()
    assert not c.optimization.execution_accelerators.gpu_execution_accelerator


def test_onnx_on_gpu_gets_the_tensorrt_accelerator_for_fp32(tmp_path):
    _, folder = write_repository(tiny_onnx(tmp_path), tmp_path / "repo", TritonOptions(device="gpu"))
    c = parse(folder)
    assert pb2.ModelInstanceGroup.Kind.Name(c.instance_group[0].kind) == "KIND_GPU"
    (acc,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert (acc.name, dict(acc.parameters)) == ("tensorrt", {"precision_mode": "FP32"})


def test_plan_entry_takes_its_batch_sizes_from_the_sidecar_profile(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"stand-in plan: written, not run")
    write_sidecar(plan, sidecar())
    _, folder = write_repository(plan, tmp_path / "repo")
    c = parse(folder)
    assert (c.platform, c.max_batch_size) == ("tensorrt_plan", 32)
    assert list(c.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8, 16, 32]
    assert max(c.dynamic_batching.preferred_batch_size) <= c.max_batch_size
    assert [(i.name, list(i.dims)) for i in c.input] == [("input", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in c.output] == [("logits", [META.num_classes])]
    assert pb2.ModelInstanceGroup.Kind.Name(c.instance_group[0].kind) == "KIND_GPU"
    assert (folder / "1" / "model.plan").read_bytes() == plan.read_bytes()
    with pytest.raises(UsageError, match=r"runs batches 1\.\.32, so the max batch must lie there, not 64"):
        write_repository(plan, tmp_path / "repo2", TritonOptions(max_batch=64))


def test_a_plan_without_its_sidecar_is_refused_in_one_line(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    with pytest.raises(FileFormatError, match=r"its sidecar m\.plan\.json is missing"):
        write_repository(plan, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_fixed_batch_with_a_batcher_is_refused_and_without_one_accepted(tmp_path):
    path = tiny_onnx(tmp_path)
    proto = onnx.load(str(path))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(tmp_path / "fixed.onnx"))
    with pytest.raises(UsageError, match="its batch dimension is fixed at 1, so Triton cannot batch its requests"):
        write_repository(tmp_path / "fixed.onnx", tmp_path / "repo")
    _, folder = write_repository(tmp_path / "fixed.onnx", tmp_path / "repo", TritonOptions(batching=False))
    c = parse(folder)
    assert c.max_batch_size == 1 and not c.HasField("dynamic_batching")


def test_an_existing_entry_needs_force_and_a_failure_leaves_it_whole(tmp_path, monkeypatch):
    path = tiny_onnx(tmp_path)
    _, folder = write_repository(path, tmp_path / "repo")
    before = (folder / "config.pbtxt").read_text()
    with pytest.raises(UsageError, match="exists; pass --force to replace it"):
        write_repository(path, tmp_path / "repo")

    def fail(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(shutil, "copyfile", fail)
    with pytest.raises(OSError):
        write_repository(path, tmp_path / "repo", TritonOptions(force=True, max_batch=8))
    assert (folder / "config.pbtxt").read_text() == before
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["tiny"]


def test_serve_refuses_ports_that_clash_before_starting_anything(tmp_path):
    from dnet.apps.deploy.serve import ServeOptions, server

    with pytest.raises(UsageError, match="the HTTP, gRPC and metrics ports must differ, got 18100, 18100, 8002"):
        with server(tiny_onnx(tmp_path), ServeOptions(http_port=18100, grpc_port=18100)):
            pass
