"""Every documented Python line of the README runs as written: the Python section block after block in one namespace
(as a reader would paste it), every other section's ``python`` blocks each in a fresh one, and the inline calls of the
prose (`` `dnet.data.preprocess("cat.jpg", "torch7")` ``) with what the prose says they return checked. The files they
name (``model_best.t7``, ``cat.jpg``, ...) are small stand-ins written by the test; the TensorRT lines need a GPU and
are skipped with the reason. The block that fetches published weights gets them from a server on 127.0.0.1 standing
in for the publishers (random densenet121 weights under the recorded file names, in a fresh DNET_HOME): nothing here
contacts the internet. Library errors on these paths name the library's arguments, never a command-line flag."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

from dnet.errors import UsageError
from tests.httpserver import serve

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


BLOCKS = python_blocks()
# an inline call whose arguments are all literals: runnable as written (``dnet.engines.open(file)`` is a placeholder)
INLINE_CALL = re.compile(r'`(dnet\.[\w.]+\((?:\s*(?:"[^"`]*"|\d[\d.]*)\s*,?)*\))`')


def other_blocks() -> list[str]:
    """The ``python`` blocks outside the Python section (each runs alone)."""
    text = README.read_text(encoding="utf-8")
    head, rest = text.split("\n## Python API\n", 1)
    tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
    return re.findall(r"```python\n(.*?)```", head + "\n## " + tail, flags=re.S)


def inline_calls() -> list[str]:
    return INLINE_CALL.findall(README.read_text(encoding="utf-8"))


OTHER_BLOCKS, INLINE = other_blocks(), inline_calls()


def _tiny_densenet(stem: str = "imagenet"):
    from dnet.models import DenseNetConfig, create_model

    return create_model(DenseNetConfig(block_config=(1, 1), growth_rate=4, init_features=8, stem=stem, num_classes=5))


def _lua_file(path: Path) -> None:
    from dnet.converters.t7.writer import LuaStyle, dumps, lua_densenet

    path.write_bytes(dumps(lua_densenet(_tiny_densenet(), LuaStyle())))


def _torchvision_file(path: Path) -> None:
    import torch

    from dnet.statedict import torchvision_state_dict

    torch.save(torchvision_state_dict(_tiny_densenet()), path)


def _onnx_file(path: Path) -> None:
    from tests.converters.tiny_models import tiny_onnx

    tiny_onnx(path.parent, path.name)  # a small DenseNet's FP32 export, with dnet's metadata


def _photo(path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)


# the files the examples name, as small stand-ins (a DenseNet's t7/pth/onnx, a photo)
STAND_INS = {"model_best.t7": _lua_file, "densenet-121.t7": _lua_file, "densenet121.pth": _torchvision_file,
             "densenet121.onnx": _onnx_file, "cat.jpg": _photo}
# what the prose says an inline call returns, checked on the result
RETURNS = {'dnet.data.preprocess("cat.jpg", "torch7")': lambda x: (x.dtype.name, x.shape) == ("float32", (3, 224, 224))}


def _needs_gpu(code: str) -> bool:
    return "build_plan(" in code or ".plan" in code


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    return {"__name__": "readme", "__cwd__": tmp_path_factory.mktemp("readme")}


@pytest.fixture
def publisher(namespace, monkeypatch):
    """densenet121's torchvision and torch7 files, served from 127.0.0.1 (random weights, the recorded names)."""
    import torch

    from dnet.converters.t7.writer import LuaStyle, dumps, lua_densenet
    from dnet.models import create_model, zoo
    from dnet.statedict import torchvision_state_dict

    model = create_model("densenet121")
    buf = io.BytesIO()
    torch.save(torchvision_state_dict(model), buf)
    pth, t7 = buf.getvalue(), dumps(lua_densenet(model, LuaStyle()))
    monkeypatch.setenv("DNET_HOME", str(namespace["__cwd__"] / "dnet-home"))
    with serve({"tv.pth": pth, "lua.t7": t7}) as srv:
        files = zoo.WEIGHTS["densenet121"]
        prefix = hashlib.sha256(pth).hexdigest()[:8]
        monkeypatch.setitem(zoo.WEIGHTS, "densenet121", {
            **files,
            "torchvision": dataclasses.replace(files["torchvision"], url=srv.url("/tv.pth"), sha256=prefix,
                                               filename=f"densenet121-{prefix}.pth"),
            "torch7": dataclasses.replace(files["torch7"], url=srv.url("/lua.t7")),
        })
        yield srv


def test_every_python_line_of_the_readme_is_collected():
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) + len(OTHER_BLOCKS) == text.count("```python\n") and len(OTHER_BLOCKS) >= 2
    assert 'dnet.data.preprocess("cat.jpg", "torch7")' in INLINE and 'dnet.load("densenet-121.t7")' in INLINE
    assert set(RETURNS) <= set(INLINE)


@pytest.mark.slow  # an ONNX export and OpenVINO's conversion of it: about 6 s
@pytest.mark.parametrize("index", range(len(OTHER_BLOCKS)), ids=[f"other{i}" for i in range(len(OTHER_BLOCKS))])
def test_readme_python_block_outside_the_python_section_runs(index, tmp_path, monkeypatch):
    code = OTHER_BLOCKS[index]
    if "openvino" in code and importlib.util.find_spec("openvino") is None:
        pytest.skip("the OpenVINO example needs the optional extra 'openvino'")
    _run_alone(code, tmp_path, monkeypatch, f"README.md python block outside the Python section {index}")


@pytest.mark.parametrize("call", INLINE)
def test_readme_inline_python_call_runs(call, tmp_path, monkeypatch):
    if _needs_gpu(call):
        pytest.skip("a TensorRT plan needs a CUDA GPU and TensorRT (tests/converters/test_tensorrt_gpu.py covers it)")
    namespace = _run_alone(f"import dnet\nresult = {call}\n", tmp_path, monkeypatch, f"README.md inline {call}")
    if call in RETURNS:
        assert RETURNS[call](namespace["result"]), namespace["result"]


def _run_alone(code: str, folder: Path, monkeypatch, name: str) -> dict:
    """``code`` in a fresh namespace, in ``folder`` holding stand-ins for the files it names."""
    monkeypatch.chdir(folder)
    for file, make in STAND_INS.items():
        if f'"{file}"' in code:
            make(folder / file)
    namespace = {"__name__": "readme"}
    exec(compile(code, name, "exec"), namespace)
    return namespace


def test_the_section_has_an_example_for_each_step():
    steps = ["export(", "to_fp16(", "dnet.quantize(", "evaluate(", "convert(", "build_plan("]
    assert [any(step in b for b in BLOCKS) for step in steps] == [True] * len(steps)


@pytest.mark.slow  # a short training run (six epochs) and four conversions: about a minute on a quiet 2-core machine
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, namespace, monkeypatch, request):
    code = BLOCKS[index]
    if _needs_gpu(code):
        pytest.skip("the TensorRT example needs a CUDA GPU and TensorRT (tests/converters/test_tensorrt_gpu.py "
                    "covers the build where they exist)")
    if 'provider="openvino"' in code and importlib.util.find_spec("openvino") is None:
        pytest.skip("the OpenVINO example needs the optional extra 'openvino'")
    if "pretrained=" in code or "dnet.hub." in code:
        request.getfixturevalue("publisher")
    monkeypatch.chdir(namespace["__cwd__"])  # the files the examples write land in a fresh folder
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)


@pytest.mark.slow
def test_what_the_examples_say_they_produce_is_what_they_produce(namespace):
    ns = namespace
    if "progress" not in ns:
        pytest.skip("the README blocks did not run (run the whole file)")
    folder = ns["__cwd__"]
    for name in ("digits.onnx", "digits.fp16.onnx", "digits.int8.onnx", "digits.calib.json", "chain.fp16.onnx"):
        assert (folder / name).is_file(), name
    cached = sorted(p.relative_to(folder / "dnet-home").as_posix() for p in (folder / "dnet-home").rglob("*"))
    weights = [p for p in cached if p.endswith((".t7", ".pth"))]  # each beside its record, FILE.json
    assert weights[0] == "weights/torch7/densenet-121.t7" and len(weights) == 2
    assert re.fullmatch(r"weights/torchvision/densenet121-[0-9a-f]{8}\.pth", weights[1])
    assert {f"{w}.json" for w in weights} <= set(cached)
    assert ns["model"].meta.input_size == 8 and ns["run"].epochs_done == 6
    result = ns["result"]
    assert result.path.name == "digits.int8.onnx" and result.target == "cpu"
    assert result.summary["layout"]["name"] == "densenet" and result.check["batch"] == 64
    assert 0.99 <= result.check["cosine"] <= 1.0 + 1e-6
    assert 0.0 <= ns["report"].top1_error < 90.0 and ns["report"].images == 360
    assert [s.name for s in ns["progress"].stages] == [
        "loading last.pth", "FP32 ONNX export + check against PyTorch", "FP16 ONNX + check against FP32"]
    assert [c["check"] for c in ns["progress"].checks] == ["fp32_vs_pytorch"] * 3 + ["fp16_vs_fp32"]
    assert ns["files"] == [Path("chain.onnx"), Path("chain.fp16.onnx")]


def test_export_of_a_model_without_preprocessing_speaks_python(tmp_path):
    from dnet.converters.export import export
    from dnet.models import DenseNetConfig
    from dnet.models.densenet import DenseNet

    with pytest.raises(UsageError) as e:
        export(DenseNet(DenseNetConfig(block_config=(1,), growth_rate=4, init_features=8)), tmp_path / "m.onnx")
    assert str(e.value) == ('the model does not say how its inputs are preprocessed (model.meta is None); give export() '
                            'meta=model_meta(model, preprocess="torch7") (or another preprocessing name), or set '
                            'model.meta')
    assert not list(tmp_path.iterdir())


def test_int8_without_images_or_preprocessing_speaks_python(tmp_path):
    from dnet.converters.int8.quantize import to_int8
    from tests.converters.tiny_models import tiny_onnx

    src = tiny_onnx(tmp_path)
    with pytest.raises(UsageError) as e:
        to_int8(src, tmp_path / "q.onnx", calib=None)
    assert (str(e.value), e.value.option) == ("INT8 needs calibration images (a folder or an array of images), or a "
                                              "calibration cache of this model", "calib")
    assert "--" not in str(e.value)
