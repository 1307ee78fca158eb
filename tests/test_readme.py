"""Every documented line of the README and of docs/ runs as written. docs/python.md's ``python`` blocks run block after
block in one namespace (as a reader would paste them), every other page's ``python`` blocks each in a fresh one, and
the inline calls of the prose (`` `dnet.data.preprocess("cat.jpg", "torch7")` ``) with what the prose says they return
checked. Every ``dnet`` command of a shell block names a verb and flags the verb has, every ``make`` target exists,
every ``python -m`` module is there. The files the examples name (``model_best.t7``, ``cat.jpg``, ...) are small
stand-ins written by the test. A block that needs TensorRT, a GPU or the network says so in an HTML comment before it
(``<!-- skip: REASON -->``) and is skipped with that reason. The block that fetches published weights gets them from a
server on 127.0.0.1 standing in for the publishers (random densenet121 weights under the recorded file names, in a
fresh DNET_HOME): nothing here contacts the internet. Library errors on these paths name the library's arguments,
never a command-line flag."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

from dnet.core.errors import UsageError
from tests.helpers.httpserver import serve

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
PYTHON_PAGE = DOCS / "python.md"  # the page whose blocks run in order, in one namespace
FENCE = re.compile(r"(?:<!-- skip: ([^>]*?) -->\n)?```(\w*)\n(.*?)```", flags=re.S)


def fenced(page: Path, lang: str) -> list[tuple[str, str | None]]:
    """``page``'s ``lang`` blocks, each with the reason its skip comment gives (None: it runs)."""
    return [(code, skip) for skip, kind, code in FENCE.findall(page.read_text(encoding="utf-8")) if kind == lang]


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


BLOCKS = fenced(PYTHON_PAGE, "python")
# an inline call whose arguments are all literals: runnable as written (``dnet.engines.open(file)`` is a placeholder)
INLINE_CALL = re.compile(r'`(dnet\.[\w.]+\((?:\s*(?:"[^"`]*"|\d[\d.]*)\s*,?)*\))`')
OTHER_BLOCKS = [(f"{_name(page)}:{i}", code, skip) for page in PAGES if page != PYTHON_PAGE
                for i, (code, skip) in enumerate(fenced(page, "python"))]
INLINE = sorted({call for page in PAGES for call in INLINE_CALL.findall(page.read_text(encoding="utf-8"))})
SHELL_LINES = [(f"{_name(page)}: {line.strip()}", line.strip()) for page in PAGES
               for kind in ("sh", "") for code, _ in fenced(page, kind) for line in code.splitlines()
               if re.match(r"\s*(dnet|make|(\S+/)?python3?) ", line)]


def _tiny_densenet(stem: str = "imagenet"):
    from dnet.models import DenseNetConfig, build_model

    return build_model(DenseNetConfig(block_config=(1, 1), growth_rate=4, init_features=8, stem=stem, num_classes=5))


def _lua_file(path: Path) -> None:
    from dnet.formats.t7.writer import LuaStyle, dumps, lua_densenet

    path.write_bytes(dumps(lua_densenet(_tiny_densenet(), LuaStyle())))


def _torchvision_file(path: Path) -> None:
    import torch

    from dnet.formats.statedict import torchvision_state_dict

    torch.save(torchvision_state_dict(_tiny_densenet()), path)


def _onnx_file(path: Path) -> None:
    from tests.helpers.models import tiny_onnx

    tiny_onnx(path.parent, path.name)  # a small DenseNet's FP32 export, with dnet's metadata


def _photo_folder(path: Path) -> None:
    path.mkdir()
    for i in range(24):
        _photo(path / f"photo{i:02d}.jpg", seed=i)


def _photo(path: Path, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)


# the files the examples name, as small stand-ins (a DenseNet's t7/pth/onnx, a photo)
STAND_INS = {"model_best.t7": _lua_file, "densenet-121.t7": _lua_file, "densenet121.pth": _torchvision_file,
             "densenet121.onnx": _onnx_file, "cat.jpg": _photo, "photos": _photo_folder}
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

    from dnet.formats.statedict import torchvision_state_dict
    from dnet.formats.t7.writer import LuaStyle, dumps, lua_densenet
    from dnet.models import build_model, zoo

    model = build_model("densenet121")
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


def test_every_python_line_of_the_readme_and_the_docs_is_collected():
    count = sum(page.read_text(encoding="utf-8").count("```python\n") for page in PAGES)
    assert len(BLOCKS) + len(OTHER_BLOCKS) == count and len(OTHER_BLOCKS) >= 3 and len(BLOCKS) >= 6
    assert any(name.startswith("README.md:") for name, _, _ in OTHER_BLOCKS)  # the front page's example runs too
    assert 'dnet.data.preprocess("cat.jpg", "torch7")' in INLINE and 'dnet.load("densenet-121.t7")' in INLINE
    assert set(RETURNS) <= set(INLINE)
    assert len(SHELL_LINES) >= 30


@pytest.mark.slow  # an ONNX export and OpenVINO's conversion of it, the front page's INT8 example: about 10 s
@pytest.mark.parametrize("index", range(len(OTHER_BLOCKS)), ids=[name for name, _, _ in OTHER_BLOCKS])
def test_python_block_of_a_page_runs(index, tmp_path, monkeypatch):
    name, code, skip = OTHER_BLOCKS[index]
    if skip:
        pytest.skip(skip)
    if "openvino" in code and importlib.util.find_spec("openvino") is None:
        pytest.skip("the OpenVINO example needs the optional extra 'openvino'")
    _run_alone(code, tmp_path, monkeypatch, f"{name} python block")


@pytest.mark.parametrize("call", INLINE)
def test_inline_python_call_of_a_page_runs(call, tmp_path, monkeypatch):
    if _needs_gpu(call):
        pytest.skip("a TensorRT plan needs a CUDA GPU and TensorRT (tests/converters/test_tensorrt_gpu.py covers it)")
    namespace = _run_alone(f"import dnet\nresult = {call}\n", tmp_path, monkeypatch, f"inline {call}")
    if call in RETURNS:
        assert RETURNS[call](namespace["result"]), namespace["result"]


def _dnet_flags(verb: str) -> set[str]:
    import click

    from dnet.cli.main import main

    command = main.get_command(click.Context(main), verb)
    assert command is not None, f"no verb {verb!r}"
    return {opt for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}


def _dnet_choices(verb: str) -> dict[str, tuple[str, ...]]:
    import click

    from dnet.cli.main import main

    command = main.get_command(click.Context(main), verb)
    return {opt: tuple(p.type.choices) for p in command.params if isinstance(p, click.Option)
            and isinstance(p.type, click.Choice) for opt in p.opts}


@pytest.mark.parametrize("line", [line for _, line in SHELL_LINES], ids=[name for name, _ in SHELL_LINES])
def test_every_documented_command_names_what_exists(line):
    """A ``dnet`` line names a verb and its flags; a ``make`` line a target; ``python -m`` a module of the checkout."""
    words = shlex.split(line.split(" #", 1)[0].split("&&")[-1].replace("$PWD", "."))
    words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # environment assignments
    if words[0] == "dnet":
        flags = _dnet_flags(words[1]) | {"--help", "-h"}
        unknown = [w.split("=")[0] for w in words[2:] if w.startswith("-") and w.split("=")[0] not in flags
                   and not re.fullmatch(r"-\d[\d.]*", w)]
        assert unknown == [], f"dnet {words[1]} has no {unknown}"
        offered = _dnet_choices(words[1])  # a documented value is one --help offers (never a deprecated one)
        bad = [(w, v) for w, v in zip(words[2:], words[3:], strict=False) if w in offered and v not in offered[w]]
        assert bad == [], f"dnet {words[1]}: {bad} not offered"
    elif words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert [w for w in words[1:] if "=" not in w and w not in targets] == []
    elif "-m" in words:
        module = words[words.index("-m") + 1]
        if module.split(".")[0] in ("benchmarks", "tests"):
            path = ROOT.joinpath(*module.split("."))
            assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
    elif len(words) > 1 and words[1].endswith(".py"):
        assert (ROOT / words[1]).is_file(), words[1]


def test_every_docs_page_is_in_the_site_and_every_link_of_the_readme_resolves():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(set(re.findall(r"([\w-]+\.md)", nav)))
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text(encoding="utf-8"))
    assert links and [link for link in links if "://" not in link and not (ROOT / link).is_file()] == []
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200
    assert "pip install" in "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])


def _run_alone(code: str, folder: Path, monkeypatch, name: str) -> dict:
    """``code`` in a fresh namespace, in ``folder`` holding stand-ins for the files it names."""
    monkeypatch.chdir(folder)
    for file, make in STAND_INS.items():
        if f'"{file}"' in code and not (folder / file).exists():
            make(folder / file)
    namespace = {"__name__": "readme"}
    exec(compile(code, name, "exec"), namespace)
    return namespace


def test_the_section_has_an_example_for_each_step():
    steps = ["export(", "to_fp16(", "dnet.quantize(", "evaluate(", "convert(", "build_plan("]
    assert [any(step in b for b, _ in BLOCKS) for step in steps] == [True] * len(steps)


@pytest.mark.slow  # a short training run (six epochs) and four conversions: about a minute on a quiet 2-core machine
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, namespace, monkeypatch, request):
    code, skip = BLOCKS[index]
    if skip:
        pytest.skip(skip)
    if _needs_gpu(code):
        pytest.skip("the TensorRT example needs a CUDA GPU and TensorRT (tests/converters/test_tensorrt_gpu.py "
                    "covers the build where they exist)")
    if 'provider="openvino"' in code and importlib.util.find_spec("openvino") is None:
        pytest.skip("the OpenVINO example needs the optional extra 'openvino'")
    if "pretrained=" in code or "dnet.hub." in code:
        request.getfixturevalue("publisher")
    monkeypatch.chdir(namespace["__cwd__"])  # the files the examples write land in a fresh folder
    exec(compile(code, f"docs/python.md python block {index}", "exec"), namespace)


@pytest.mark.slow
def test_what_the_examples_say_they_produce_is_what_they_produce(namespace):
    ns = namespace
    if "progress" not in ns:
        pytest.skip("the docs/python.md blocks did not run (run the whole file)")
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
    from tests.helpers.models import tiny_onnx

    src = tiny_onnx(tmp_path)
    with pytest.raises(UsageError) as e:
        to_int8(src, tmp_path / "q.onnx", calib=None)
    assert (str(e.value), e.value.option) == ("INT8 needs calibration images (a folder or an array of images), or a "
                                              "calibration cache of this model", "calib")
    assert "--" not in str(e.value)
