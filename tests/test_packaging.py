"""How dnet installs: one namespace, the ONNX Runtime extras that never meet, exact pins, short files."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import dnet
from dnet.core.errors import NotInstalledError

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FOLDERS = {"dnet": "dnet", "converters": "dnet.converters", "engines": "dnet.engines"}
MAX_LINES = 400
LONG_FILES: dict[str, str] = {}  # path -> why it may be longer than MAX_LINES (none today)


def test_every_package_folder_is_installed_under_the_dnet_namespace():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"dnet": "dnet", "dnet.converters": "converters", "dnet.engines": "engines"}
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([package, *parts]))
    assert sorted(setuptools["packages"]) == sorted(found)


def test_the_cpu_and_gpu_runtimes_come_from_separate_extras_only():
    project = PYPROJECT["project"]
    names = lambda reqs: {canonicalize_name(Requirement(r).name) for r in reqs}  # noqa: E731
    assert not names(project["dependencies"]) & {"onnxruntime", "onnxruntime-gpu"}
    extras = project["optional-dependencies"]
    assert names(extras["cpu"]) == {"onnxruntime"} and names(extras["gpu"]) == {"onnxruntime-gpu"}
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[cpu,dev,openvino]'" in makefile and "gpu" not in re.findall(r"pip install[^\n]*", makefile)[1]


def test_the_openvino_extra_brings_openvino_and_nothing_that_moves_torch_or_onnxruntime():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert [canonicalize_name(Requirement(r).name) for r in extras["openvino"]] == ["openvino"]
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("OpenVINO is not installed here (the optional extra 'openvino')")
    needs = {canonicalize_name(Requirement(r).name) for r in metadata.requires("openvino") or []}
    assert needs == {"numpy", "openvino-telemetry"}  # numpy's range admits the pinned one (checked below)


def test_constraints_pin_every_distribution_a_make_install_needs():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    needed, todo = set(), [Requirement(f"{dnet.DISTRIBUTION}[cpu,dev,openvino]")]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        for extra in req.extras or {""}:
            if (name, extra) in needed:
                continue
            needed.add((name, extra))
            for sub in metadata.requires(req.name) or []:
                sub = Requirement(sub)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append(sub)
    missing = sorted({n for n, _ in needed} - set(pins) - {canonicalize_name(dnet.DISTRIBUTION)})
    assert missing == [], f"not pinned in constraints.txt: {missing} (run make constraints)"
    for name in {n for n, _ in needed} - {canonicalize_name(dnet.DISTRIBUTION)}:
        assert metadata.version(name).split("+")[0] == pins[name], name


def test_the_version_is_the_installed_distributions():
    assert dnet.__version__ == metadata.version(dnet.DISTRIBUTION) == PYPROJECT["project"]["version"]


def test_a_missing_onnx_runtime_is_one_line_saying_which_extra(monkeypatch, tmp_path):
    from dnet.engines import onnxruntime as ort_engine

    monkeypatch.setattr(ort_engine, "ort", None)
    with pytest.raises(NotInstalledError) as e:
        ort_engine.session(tmp_path / "m.onnx")
    assert str(e.value) == (f"ONNX Runtime is not installed: pip install '{dnet.DISTRIBUTION}[cpu]' (or "
                            f"'{dnet.DISTRIBUTION}[gpu]' on a CUDA machine; never both, they share one import package)")


def test_no_module_is_longer_than_the_limit():
    long = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            rel = str(path.relative_to(ROOT))
            if n > MAX_LINES and rel not in LONG_FILES:
                long[rel] = n
    assert long == {}, f"split these modules (or say why in LONG_FILES): {long}"


def test_the_distribution_name_is_not_the_taken_dnet():
    # "dnet" on PyPI is a 2015 networking library; the project installs as dnet-densenet, imports as dnet
    assert PYPROJECT["project"]["name"] == dnet.DISTRIBUTION == "dnet-densenet"
    assert PYPROJECT["project"]["scripts"] == {"dnet": "dnet.cli:main"}


def test_every_install_line_of_the_readme_and_the_docs_names_the_distribution():
    """`pip install 'dnet[...]'` would install an unrelated PyPI package: every line names dnet-densenet (or `.`)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    lines = [line for page in pages for line in re.findall(r"pip install [^`\n]*", page.read_text())]
    assert any("'dnet-densenet[cpu]'" in line for line in lines[:4])  # the front page's first install line
    targets = [t.strip("'\"") for line in lines for t in line.split()[2:] if not t.startswith("-") and "dnet" in t]
    assert targets and all(re.fullmatch(r"dnet-densenet(\[[a-z0-9,]+\])?", t) for t in targets), targets
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"  # an SPDX expression, not the deprecated table


@pytest.mark.slow
def test_the_built_wheel_installs_only_the_dnet_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("*.whl"))
    assert wheel.name.startswith("dnet_densenet-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata_file = next(n for n in names if n.endswith(".dist-info/METADATA"))
        lines = z.read(metadata_file).decode().splitlines()
        assert "Name: dnet-densenet" in lines and "License-Expression: BSD-3-Clause" in lines
        assert "Classifier: Typing :: Typed" in lines and "dnet/py.typed" in names
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"dnet"}
    assert "dnet/formats/t7/reader.py" in names and "dnet/engines/onnxruntime.py" in names
    assert not any(n.startswith(("converters/", "engines/", "tests/", "benchmarks/")) for n in names)
    # installed: one top-level package, dnet, and the dnet command
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    installed = {p.name for p in site.iterdir()} - {"bin"}
    assert {n for n in installed if not n.endswith(".dist-info")} == {"dnet"}
    assert [n for n in installed if n.endswith(".dist-info")] == [f"dnet_densenet-{dnet.__version__}.dist-info"]
    assert (site / "bin" / "dnet").is_file()


def test_the_documentation_site_is_built_strictly_by_make_lint_into_an_ignored_folder():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lint: .*\bdocs\b", makefile, flags=re.M)  # .ci/run's `make lint` builds the site
    build = re.search(r"^docs: .*\n\t(.*)$", makefile, flags=re.M).group(1)
    assert "mkdocs build --strict" in build and "--site-dir site" in build
    assert "/site/" in (ROOT / ".gitignore").read_text().splitlines()
    dev = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    assert "mkdocs" in dev and pins["mkdocs"] == metadata.version("mkdocs")
