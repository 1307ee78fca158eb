"""The layers of ``../shared/design/ARCHITECTURE.md``, enforced: imports only go down, and never in a circle.

Every module of ``dnet/``, ``converters/`` (installed as ``dnet.converters``) and ``engines/`` (``dnet.engines``) is
read with ``ast``; an import of a project module from a higher layer, an import circle, or a project import inside a
function fails with the file, the line and the rule. ``benchmarks/`` may use any layer but never ``tests``.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> installed package
FOLDERS = {"dnet": "dnet", "converters": "dnet.converters", "engines": "dnet.engines"}

# One prefix per folder (the longest wins; subfolders take their folder's layer). dnet's root holds only the package's
# front door (L0) and ``python -m dnet`` (L4).
LAYERS: dict[str, int] = {
    "dnet": 0, "dnet.core": 0,
    "dnet.formats": 1, "dnet.models": 1, "dnet.data": 1,
    "dnet.converters": 2, "dnet.engines": 2,
    "dnet.apps": 3,
    "dnet.cli": 4, "dnet.__main__": 4,
}
# The modules (not folders) that have a prefix of their own.
MODULE_PREFIXES = {"dnet.__main__"}
NAMES = {0: "L0 core", 1: "L1 models/data/formats", 2: "L2 converters/engines", 3: "L3 applications", 4: "L4 cli"}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def project_modules(root: Path) -> dict[str, Path]:
    """Installed module name -> file, for every .py file of the three folders."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(tree: ast.Module, module: str, modules: dict[str, Path]):
    """(target module, line, inside a function) for every import of a project module."""
    package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]

    def resolve(name: str) -> str | None:
        if name in modules:
            return name
        head = name
        while "." in head:  # "from dnet.models import zoo" names dnet.models.zoo; "dnet.x.Y" names dnet.x
            head = head.rpartition(".")[0]
            if head in modules:
                return head
        return None

    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] in ("dnet", "converters", "engines", "tests"):
                        yield alias.name, child.lineno, inside
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    base = ".".join(anchor[: len(anchor) - child.level + 1] + ([base] if base else []))
                if base.split(".")[0] in ("dnet", "converters", "engines", "tests"):
                    for alias in child.names:
                        full = f"{base}.{alias.name}"
                        yield (full if full in modules else base), child.lineno, inside
            yield from visit(child, inside)

    for name, line, inside in visit(tree, False):
        yield name, resolve(name), line, inside


def check_tree(root: Path) -> list[str]:
    """Every violation of the layer rules under ``root``, one line each (file:line: rule)."""
    modules = project_modules(root)
    problems, graph = [], {m: set() for m in modules}
    for module, path in modules.items():
        where = path.relative_to(root)
        own = layer_of(module)
        if own is None:
            problems.append(f"{where}: module {module} has no layer in tests/test_layers.py LAYERS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, target, line, inside in _imports(tree, module, modules):
            if name.split(".")[0] in ("converters", "engines"):
                problems.append(f"{where}:{line}: imports {name}; the installed name is dnet.{name}")
                continue
            if name.split(".")[0] == "tests":
                problems.append(f"{where}:{line}: imports {name}; the package never imports the tests")
                continue
            if target is None:
                problems.append(f"{where}:{line}: imports {name}, which is not a module of the project")
                continue
            if inside:
                problems.append(f"{where}:{line}: imports {target} inside a function; project imports go at the "
                                "top of the module (only optional heavy dependencies are imported late)")
            else:
                graph[module].add(target)
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                problems.append(f"{where}:{line}: {module} ({NAMES[own]}) imports {target} ({NAMES[theirs]}); "
                                "imports only go down the layers")
    problems += [f"import circle: {' -> '.join(c)}" for c in _cycles(graph)]
    problems = list(dict.fromkeys(problems))  # "from x import a, b" names one rule once
    for path in sorted((root / "benchmarks").rglob("*.py")) if (root / "benchmarks").is_dir() else []:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.split(".")[0] in ("tests", "converters", "engines"):
                    problems.append(f"{path.relative_to(root)}:{node.lineno}: benchmarks import {name}; "
                                    "benchmarks use the installed package only")
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative circle per strongly connected component (Tarjan), each closed on its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(_path_in(sorted(component), graph))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _path_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    members, start = set(component), component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in members)
        back = [w for w in nxt if w == start]
        if back:
            return [*path, start]
        fresh = [w for w in nxt if w not in seen]
        if not fresh:
            return [*path, nxt[0]]
        path.append(fresh[0])
        seen.add(fresh[0])


# ---- the tests ---------------------------------------------------------------------------------------------------


def test_every_module_imports_only_lower_layers_without_circles():
    problems = check_tree(ROOT)
    assert problems == [], "\n".join(problems)


def _copy_tree(tmp_path: Path) -> Path:
    for folder in (*FOLDERS, "benchmarks"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))
    return tmp_path


def test_the_layers_have_one_prefix_per_folder_and_cover_every_folder():
    """Each LAYERS key is a package folder (or a listed module), none inside another; every folder is covered."""
    packages = {m for m, p in project_modules(ROOT).items() if p.name == "__init__.py"}
    assert set(LAYERS) - MODULE_PREFIXES <= packages, sorted(set(LAYERS) - MODULE_PREFIXES - packages)
    nested = [(a, b) for a in LAYERS for b in LAYERS if a != b and a != "dnet" and b.startswith(a + ".")]
    assert nested == [], f"a prefix inside another folder's prefix: {nested}"
    uncovered = sorted(p for p in packages if layer_of(p) is None)
    assert uncovered == []
    top = {p for p in packages if p.count(".") == 1}
    assert top == set(LAYERS) - MODULE_PREFIXES - {"dnet"}, "every folder under dnet/ is a layer's folder"


def test_a_planted_upward_import_fails_naming_file_line_and_rule(tmp_path):
    root = _copy_tree(tmp_path)
    zoo = root / "dnet" / "models" / "zoo.py"
    lines = zoo.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("from ")) + 1
    lines.insert(at, "from dnet.apps.eval.report import EvalReport  # planted")
    zoo.write_text("\n".join(lines) + "\n")
    problems = check_tree(root)
    assert problems == [f"dnet/models/zoo.py:{at + 1}: dnet.models.zoo (L1 models/data/formats) imports dnet.apps.eval.report "
                        "(L3 applications); imports only go down the layers",
                        "import circle: dnet.apps.eval.report -> dnet.models.zoo -> dnet.apps.eval.report"]


def test_a_planted_circle_and_a_late_project_import_fail(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "dnet" / "models" / "ring_a.py").write_text("from dnet.models import ring_b\n")
    (root / "dnet" / "models" / "ring_b.py").write_text("from dnet.models import ring_a\n")
    (root / "dnet" / "models" / "late.py").write_text("def f():\n    from dnet.core import atomic\n    return atomic\n")
    problems = check_tree(root)
    assert "import circle: dnet.models.ring_a -> dnet.models.ring_b -> dnet.models.ring_a" in problems
    assert ("dnet/models/late.py:2: imports dnet.core.atomic inside a function; project imports go at the top of the "
            "module (only optional heavy dependencies are imported late)") in problems
    assert len(problems) == 2, problems


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_import_dnet_engines_loads_neither_torch_nor_pil(tmp_path):
    done = _run("""
        import sys
        import dnet.engines
        import dnet.core.artifact.onnxfile
        heavy = sorted(m for m in ("torch", "PIL", "matplotlib", "sklearn", "scipy") if m in sys.modules)
        print(",".join(heavy) or "none")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_the_old_top_level_names_are_not_importable(tmp_path):
    for name in ("converters", "engines"):
        done = _run(f"import {name}", tmp_path)
        assert done.returncode != 0 and f"No module named '{name}'" in done.stderr, done


@pytest.mark.parametrize("name", ["load", "create_model", "DenseNet", "DenseNetConfig", "zoo", "DnetError"])
def test_dnet_exposes_its_upper_names_lazily(name, tmp_path):
    done = _run(f"""
        import sys
        import dnet
        assert "torch" not in sys.modules
        getattr(dnet, {name!r})
        print("ok")
    """, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
