"""The real DenseNet-BC-100 (../shared/fixtures/real) deployed and served: its FP32 and CPU INT8 ONNX in one Triton
repository whose config.pbtxt matches the files, and `dnet serve` of the INT8 file answering real CIFAR-10 images
with the engine's and `dnet eval`'s top-1."""

from __future__ import annotations

import concurrent.futures
import csv
import urllib.request

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from dnet import engines
from dnet.cli.main import main
from dnet.core.artifact.onnxfile import read_meta
from dnet.data.transforms import preprocess_array
from tests.helpers.shared import shared_fixture

pytest.importorskip("pytriton.triton", reason="the serve extra (nvidia-pytriton) is absent")
http = pytest.importorskip("tritonclient.http", reason="the serve extra (tritonclient) is absent")
pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serve extra (tritonclient) is absent")

from tests.helpers.serving import metric, parse, served  # noqa: E402 (after the skips: it needs the extra)

pytestmark = pytest.mark.slow
CHECKPOINT = "densenet-bc-l100-k12-cifar10.andreasveit.pth.tar"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SERVED = 200  # requests, the first 200 test images; calibration takes images 500-999, so none is served


def _dnet(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real checkpoint converted once for the module: FP32 ONNX and CPU INT8 ONNX (MSE calibration)."""
    checkpoint = shared_fixture("real", CHECKPOINT)
    data = np.load(shared_fixture("real", "cifar10-test-first1000.npz"))
    d = tmp_path_factory.mktemp("real")
    np.savez(d / "calib.npz", images=data["images"][500:])
    fp32, int8 = d / "bc100.onnx", d / "bc100.int8.onnx"
    _dnet("convert", checkpoint, "--from", "pth", "--to", "onnx", "-o", fp32, "--quiet")
    _dnet("convert", fp32, "--from", "onnx", "--to", "onnx", "--precision", "int8", "--calib", d / "calib.npz", "--calib-count", 500,
          "--calib-method", "mse", "-o", int8, "--quiet")
    return fp32, int8, data["images"], data["labels"]


def test_both_files_in_one_repository_match_their_config_field_by_field(real, tmp_path):
    fp32, int8, _, _ = real
    repo = tmp_path / "repo"
    for path, name in ((fp32, "bc100"), (int8, "bc100_int8")):
        _dnet("deploy", "triton", path, "-o", repo, "--name", name, "--max-batch", 32)
    assert sorted(p.name for p in repo.iterdir()) == ["bc100", "bc100_int8"]
    for path, name in ((fp32, "bc100"), (int8, "bc100_int8")):
        folder = repo / name
        proto = onnx.load(str(path))
        meta = read_meta(proto)
        c = parse(folder)
        assert (c.name, c.platform, c.max_batch_size) == (name, "onnxruntime_onnx", 32)
        (inp,) = proto.graph.input
        (out,) = proto.graph.output
        assert [(i.name, pb2.DataType.Name(i.data_type), list(i.dims)) for i in c.input] == \
            [(inp.name, "TYPE_FP32", [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]])]
        assert [(o.name, pb2.DataType.Name(o.data_type), list(o.dims), o.label_filename) for o in c.output] == \
            [(out.name, "TYPE_FP32", [d.dim_value for d in out.type.tensor_type.shape.dim[1:]], "labels.txt")]
        assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, 32, 32]
        assert not inp.type.tensor_type.shape.dim[0].HasField("dim_value")  # a dynamic batch, so Triton may batch
        assert list(c.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8, 16, 32]
        assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in c.instance_group] == [(1, "KIND_CPU")]
        assert (meta.model, meta.num_classes, meta.preprocess.name) == ("densenet-bc-l100-k12", 10, "cifar10")
        assert c.parameters["dnet.preprocess"].string_value.count('"cifar10"') == 1
        assert c.parameters["dnet.mean"].string_value == ",".join(map(str, meta.preprocess.mean))
        assert (folder / "labels.txt").read_text().split() == CIFAR10
        assert (folder / "1" / "model.onnx").read_bytes() == path.read_bytes()
        assert not c.optimization.execution_accelerators.gpu_execution_accelerator


def test_serving_the_int8_file_answers_200_concurrent_real_images_like_eval_and_batches_them(real, tmp_path):
    _, int8, images, labels = real
    images, labels = images[:SERVED], labels[:SERVED]
    with engines.open(int8) as engine:
        expected = engine(preprocess_array(images, engine.meta.preprocess)).argmax(1)
    np.savez(tmp_path / "served.npz", images=images, labels=labels)
    _dnet("eval", int8, "--data", tmp_path / "served.npz", "--quiet", "--predictions",
          tmp_path / "eval.csv")
    with open(tmp_path / "eval.csv", newline="") as f:
        evaluated = np.array([int(r["prediction"]) for r in csv.DictReader(f)])
    np.testing.assert_array_equal(evaluated, expected)
    assert (expected == labels).mean() >= 0.9  # a trained model, so a wrong tensor name or layout would show here

    with served(int8, "--name", "bc100", "--max-batch", "32", "--queue-delay-us", "20000") as (h, m, ready):
        assert ready.startswith("ready: bc100, bc100_image, bc100_encoded"), ready

        def ask(i: int) -> np.ndarray:
            client = http.InferenceServerClient(f"127.0.0.1:{h}", network_timeout=120)
            inp = http.InferInput("image", [1, 32, 32, 3], "UINT8")
            inp.set_data_from_numpy(images[i:i + 1])
            return client.infer("bc100_image", [inp]).as_numpy("logits")[0]

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            got = np.stack(list(pool.map(ask, range(SERVED))))
        np.testing.assert_array_equal(got.argmax(1), expected)
        text = urllib.request.urlopen(f"http://127.0.0.1:{m}/metrics", timeout=10).read().decode()
        inferences, executions = (metric(text, n, "bc100_image") for n in ("nv_inference_count",
                                                                             "nv_inference_exec_count"))
        assert inferences == SERVED and executions < inferences, (inferences, executions)
