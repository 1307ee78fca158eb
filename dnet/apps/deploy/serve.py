"""``dnet serve``: a real Triton Inference Server (through PyTriton) with a dnet engine as its model.

Three models share one engine (``dnet.engines.open``: ONNX Runtime, OpenVINO, or TensorRT where present), each
dynamically batched up to ``max_batch`` with a queue delay:

- ``NAME``: float32 N×3×H×W in (clients that preprocess themselves), logits out;
- ``NAME_image``: uint8 N×H×W×3 RGB images in, preprocessed on the server with the file's own preprocessing;
- ``NAME_encoded``: encoded images (JPEG, PNG: one byte string per image) in, decoded and preprocessed on the server.

PyTriton runs ``tritonserver`` as a child process whose Python-backend stub is a separate embedded interpreter:

- the stub links ``libpython3.X.so`` and finds the system's copy first; with another interpreter (pyenv, conda)
  loading fails in ``threading``, so the server gets this interpreter's LIBDIR on ``LD_LIBRARY_PATH``;
- the stub of PyTriton 0.7.0 was compiled against numpy 1.x: with numpy 2 in its environment every output tensor
  arrives empty ("output tensor shape does not match size of output"). The stub therefore runs in a small
  environment of its own (made in the scratch folder) whose numpy is a 1.x copy (``STUB_NUMPY``, installed beside
  the venv by ``make install``) and whose other packages are this environment's. The infer functions run in this
  process, with its numpy; tensors cross between the two as raw bytes in shared memory.

Everything the server writes (its workspace, sockets, the stub's environment) lives in one scratch folder that is
removed when the server stops, on SIGINT or SIGTERM as on an error.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnet import DISTRIBUTION, engines
from dnet.core.errors import DataError, EngineError, NotInstalledError, UsageError
from dnet.core.scratch import scratch_folder
from dnet.data.transforms import preprocess, preprocess_array

INSTALL_HINT = f"Triton serving is not installed: pip install '{DISTRIBUTION}[serve]' and nvidia-pytriton (see README)"
STUB_NUMPY = "numpy==1.26.4"
STUB_SITE = "triton-stub"  # the folder beside the venv's site-packages (sys.prefix/triton-stub) holding STUB_NUMPY
MAX_ENCODED = 64 << 20  # bytes of one encoded image: far above any photo, refused before decoding


@dataclass(frozen=True)
class ServeOptions:
    name: str | None = None  # the model's name; default: the file's stem
    max_batch: int = 32  # the dynamic batcher's largest batch
    queue_delay_us: int = 2000  # how long the batcher waits to fill a batch
    batching: bool = True  # False: no dynamic batcher, every request runs alone (for comparisons)
    address: str = "0.0.0.0"
    http_port: int = 8000  # Triton's defaults
    grpc_port: int = 8001
    metrics_port: int = 8002
    provider: str | None = None  # engines.open's provider (cpu, openvino, tensorrt...)
    threads: int | None = None


def _pytriton():
    try:
        import pytriton.triton  # noqa: F401
    except ImportError:
        raise NotInstalledError(INSTALL_HINT) from None
    import pytriton

    return pytriton


def stub_site() -> Path | None:
    """The folder with numpy 1.x for the stub: ``$DNET_TRITON_STUB_SITE``, else ``sys.prefix/triton-stub``; None
    when this environment's numpy is 1.x already (the stub then shares it)."""
    if int(np.__version__.split(".")[0]) < 2:
        return None
    folder = Path(os.environ.get("DNET_TRITON_STUB_SITE") or Path(sys.prefix) / STUB_SITE)
    if not (folder / "numpy" / "__init__.py").is_file():
        raise NotInstalledError(
            f"Triton's Python backend stub needs numpy 1.x beside this environment's numpy {np.__version__}: "
            f"pip install --no-deps --target {folder} {STUB_NUMPY}")
    return folder


def _stub_environment(into: Path, site: Path | None) -> Path:
    """A virtual environment for the stub: this interpreter, ``site`` first on its path, then this environment's
    site-packages (pyzmq and PyTriton's proxy)."""
    env = into / "stub-env"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = env / "lib" / version / "site-packages"
    packages.mkdir(parents=True)
    (env / "bin").mkdir()
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    for name in ("python", "python3", version):
        (env / "bin" / name).symlink_to(base)
    (env / "pyvenv.cfg").write_text(f"home = {base.parent}\ninclude-system-site-packages = false\n"
                                    f"version = {'.'.join(map(str, sys.version_info[:3]))}\n")
    own = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (packages / "dnet-stub.pth").write_text("\n".join([*([str(site)] if site else []), *own]) + "\n")
    return env


def check_port(address: str, port: int, option: str) -> None:
    """Refuse a port another process listens on, before Triton starts and fails on it in its log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1" if address in ("0.0.0.0", "") else address, port))
        except OSError as e:
            raise UsageError(f"port {port} on {address} is not free ({e.strerror})", option=option) from None


class Model:
    """The infer functions of the three models, around one engine (a lock: OpenVINO's requests are not shared)."""

    def __init__(self, engine: engines.Engine) -> None:
        self.engine = engine
        self.spec = engine.meta.preprocess if engine.meta else None
        self.lock = threading.Lock()

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.engine(x)

    def images(self, images: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 -> the model's input, with the file's preprocessing."""
        if self.spec.interpolation == "none" and images.shape[1:3] != (self.spec.input_size,) * 2:
            from PIL import Image

            return np.stack([preprocess(Image.fromarray(im), self.spec) for im in images])
        return preprocess_array(images, self.spec)

    def encoded(self, blobs: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = []
        for blob in blobs.reshape(len(blobs), -1)[:, 0]:
            data = bytes(blob)
            if len(data) > MAX_ENCODED:
                raise DataError(f"an encoded image of {len(data):,} bytes is above {MAX_ENCODED:,}")
            try:
                pil = Image.open(io.BytesIO(data))
                pil.load()
            except Exception as e:  # Pillow's UnidentifiedImageError, OSError of a truncated file, bombs
                raise DataError(f"not a decodable image ({type(e).__name__}: {str(e)[:100]})") from None
            out.append(preprocess(pil, self.spec))
        return np.stack(out)


def bind(triton, model: Model, name: str, options: ServeOptions) -> list[str]:
    """Bind NAME (float input) and, where the file says how to preprocess, NAME_image and NAME_encoded."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    _, c, h, w = model.engine.input_shape
    classes = model.engine.meta.num_classes if model.engine.meta else -1
    # batcher None: no dynamic batching, each request runs with the batch its client sent (for comparisons)
    config = ModelConfig(batching=True, max_batch_size=options.max_batch,
                         batcher=DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us)
                         if options.batching else None)
    logits = [Tensor(name="logits", dtype=np.float32, shape=(classes,))]

    @batch
    def infer_float(input):  # noqa: A002 (the tensor's name)
        return {"logits": model.logits(input)}

    @batch
    def infer_image(image):
        return {"logits": model.logits(model.images(image))}

    @batch
    def infer_encoded(image):
        return {"logits": model.logits(model.encoded(image))}

    models = [(name, infer_float, Tensor(name="input", dtype=np.float32, shape=(c, h if h > 0 else -1,
                                                                             w if w > 0 else -1)))]
    if model.spec is not None:
        models.append((f"{name}_image", infer_image, Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))))
        models.append((f"{name}_encoded", infer_encoded, Tensor(name="image", dtype=np.bytes_, shape=(1,))))
    for model_name, fn, tensor in models:
        triton.bind(model_name=model_name, infer_func=fn, inputs=[tensor], outputs=logits, config=config,
                    strict=False)
    return [m[0] for m in models]


@contextlib.contextmanager
def server(path: str | os.PathLike, options: ServeOptions = ServeOptions()):
    """A running Triton server for the model file ``path``: yields (the Triton object, the model names); stopped and
    its scratch folder removed when the block ends, however it ends."""
    ports = (options.http_port, options.grpc_port, options.metrics_port)
    if len(set(ports)) < 3:
        raise UsageError(f"the HTTP, gRPC and metrics ports must differ, got {', '.join(map(str, ports))}")
    for port, option in ((options.http_port, "http_port"), (options.grpc_port, "grpc_port"),
                         (options.metrics_port, "metrics_port")):
        check_port(options.address, port, option)
    if options.max_batch < 1:
        raise UsageError(f"max batch {options.max_batch} must be 1 or more", option="max_batch")
    _pytriton()
    site = stub_site()
    import pytriton.server.triton_server as triton_server
    from pytriton.triton import Triton, TritonConfig

    path = Path(path)
    name = options.name or path.name[: -len(path.suffix)]
    engine = engines.open(path, provider=options.provider, threads=options.threads)
    with engine, scratch_folder("triton") as tmp:
        env = _stub_environment(tmp, site)
        triton_server.get_triton_python_backend_python_env = lambda: env  # the stub's interpreter: see the docstring
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        saved = os.environ.get("LD_LIBRARY_PATH")
        os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, saved) if p)
        config = TritonConfig(http_address=options.address, http_port=options.http_port,
                              grpc_address=options.address, grpc_port=options.grpc_port,
                              metrics_port=options.metrics_port, exit_timeout_secs=5, log_verbose=0)
        # PyTriton's sockets live in its workspace: a UNIX socket path has at most 107 bytes, so the workspace is a
        # short folder of the temporary folder itself (removed with the server), not one inside the scratch folder
        workspace = Path(tempfile.mkdtemp(prefix="dnet-triton-"))
        try:
            triton = Triton(config=config, workspace=workspace / "w")
        except BaseException:
            shutil.rmtree(workspace, ignore_errors=True)
            raise
        try:
            names = bind(triton, Model(engine), name, options)
            try:
                triton.run()
            except Exception as e:
                raise EngineError(f"Triton did not start: {_reason(e)}") from None
            yield triton, names
        finally:
            triton.stop()
            shutil.rmtree(workspace, ignore_errors=True)
            if saved is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = saved


def _reason(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if len(ln.strip().strip(";:.")) > 2]
    reason = lines[-1][:200] if lines else type(e).__name__
    return f"{reason}; the server's log above says which model failed and why (a TMPDIR path too long for a " \
        "socket is one cause: set TMPDIR=/tmp)"


def serve_forever(path: str | os.PathLike, options: ServeOptions = ServeOptions(),
                  ready: Callable[[list[str]], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (a KeyboardInterrupt here) or until the server dies; ``ready`` gets the names."""
    with server(path, options) as (triton, names):
        if ready is not None:
            ready(names)
        stop = threading.Event()
        while not stop.wait(1.0):
            if not triton.is_alive():
                raise EngineError("the Triton server stopped on its own; its log above says why")


__all__ = ["INSTALL_HINT", "STUB_NUMPY", "ServeOptions", "check_port", "server", "serve_forever", "stub_site"]
