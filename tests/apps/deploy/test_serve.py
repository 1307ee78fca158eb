"""dnet serve: a real Triton server on 127.0.0.1 (free ports), answers compared with the engine on the same inputs."""

from __future__ import annotations

import concurrent.futures
import io
import urllib.request

import numpy as np
import pytest

from dnet import engines
from dnet.data.transforms import preprocess_array
from tests.helpers.models import tiny_onnx

pytest.importorskip("pytriton.triton", reason="the serve extra (nvidia-pytriton) is absent")
http = pytest.importorskip("tritonclient.http", reason="the serve extra (tritonclient) is absent")

from tests.helpers.serving import metric, served  # noqa: E402  (after the skips: it needs the serve extra)


@pytest.mark.slow
def test_serve_answers_concurrent_requests_like_the_engine_batches_them_and_stops_clean_on_sigterm(tmp_path):
    from PIL import Image

    path = tiny_onnx(tmp_path)
    with served(path, "--max-batch", "16", "--queue-delay-us", "20000") as (h, m, ready):
        assert ready.startswith("ready: tiny, tiny_image, tiny_encoded"), ready
        images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
        with engines.open(path) as engine:
            expected = engine(preprocess_array(images, engine.meta.preprocess))

        def ask(i: int) -> np.ndarray:
            client = http.InferenceServerClient(f"127.0.0.1:{h}")
            if i % 3 == 0:
                x = preprocess_array(images[i:i + 1], engine.meta.preprocess)
                inp = http.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                return client.infer("tiny", [inp]).as_numpy("logits")[0]
            if i % 3 == 1:
                inp = http.InferInput("image", [1, 32, 32, 3], "UINT8")
                inp.set_data_from_numpy(images[i:i + 1])
                return client.infer("tiny_image", [inp]).as_numpy("logits")[0]
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            inp = http.InferInput("image", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[buf.getvalue()]], dtype=np.object_))
            return client.infer("tiny_encoded", [inp]).as_numpy("logits")[0]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            got = np.stack(list(pool.map(ask, range(len(images)))))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert (got.argmax(1) == expected.argmax(1)).all()
        text = urllib.request.urlopen(f"http://127.0.0.1:{m}/metrics", timeout=10).read().decode()
        inferences = sum(metric(text, "nv_inference_count", n) for n in ("tiny", "tiny_image", "tiny_encoded"))
        executions = sum(metric(text, "nv_inference_exec_count", n) for n in ("tiny", "tiny_image", "tiny_encoded"))
        assert inferences == len(images) and executions < inferences, (inferences, executions)
