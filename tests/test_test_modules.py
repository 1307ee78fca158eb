"""Test modules share code through tests/helpers (and fixtures through a conftest.py), never by importing one
another: an import of a test module runs its tests' module-level code twice and registers its fixtures where the
linter cannot see them (ruff F811)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_of_test_modules(root: Path) -> list[str]:
    """'path:line: imports MODULE' for each import, in tests/**/*.py under ``root``, of a ``test_*`` module."""
    problems = []
    for path in sorted((root / "tests").rglob("*.py")):
        rel = path.relative_to(root)
        package = ".".join(rel.with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .test_x import y, from . import test_x
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for name in names:  # a relative import resolved above starts with "tests." too
                if name.startswith("tests.") and any(part.startswith("test_") for part in name.split(".")):
                    problems.append(f"{rel}:{node.lineno}: imports {name}")
                    break
    return problems


def test_no_test_module_imports_another():
    assert imports_of_test_modules(ROOT) == []


def test_the_check_finds_every_spelling_of_such_an_import(tmp_path):
    folder = tmp_path / "tests" / "hostile"
    folder.mkdir(parents=True)
    (folder / "test_a.py").write_text("X = 1\n")
    (folder / "test_b.py").write_text("from tests.hostile.test_a import X\nimport tests.hostile.test_a\n"
                                      "from tests.hostile import test_a\nfrom .test_a import X\nfrom . import test_a\n"
                                      "from tests.helpers.models import tiny_model\nimport json\n")
    assert imports_of_test_modules(tmp_path) == [
        "tests/hostile/test_b.py:1: imports tests.hostile.test_a",
        "tests/hostile/test_b.py:2: imports tests.hostile.test_a",
        "tests/hostile/test_b.py:3: imports tests.hostile.test_a",
        "tests/hostile/test_b.py:4: imports tests.hostile.test_a",
        "tests/hostile/test_b.py:5: imports tests.hostile.test_a",
    ]
