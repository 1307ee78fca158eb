"""API conformance of converters/tensorrt.py and engines/tensorrt.py against NVIDIA's real Python bindings.

TensorRT cannot be installed here (no GPU; the libraries come from NVIDIA's index), but the small
``tensorrt-cuXX-bindings`` wheels download from PyPI. Their compiled module ``tensorrt_bindings/tensorrt.so`` cannot
be imported without libnvinfer, yet pybind11 registers every class, method, property and enum value under a C
string literal, so the identifiers among the NUL-terminated strings of the module's ``.rodata`` section are the
names the module exports. The linker merges a literal that is the tail of another one ("num_errors" lives inside
"get_num_errors"), so every identifier suffix of those strings counts as present. The approach is checked below: known
names are found in every version, and names NVIDIA removed in 11.x are found in 10.x and absent from 11.x.

The names our sources use are collected by AST: every attribute reached from the ``tensorrt`` module (``trt``) or
from a value derived from it (``builder = trt.Builder(...)``, ``config = builder.create_builder_config()``, ...).
"""

from __future__ import annotations

import ast
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "converters" / "tensorrt.py", ROOT / "engines" / "tensorrt.py"]

# The versions we claim to support: the oldest 10.x our pyproject allows (SAME_COMPUTE_CAPABILITY arrived in 10.9),
# the last 10.x, and the current 11.x.
SUPPORTED = [
    ("tensorrt-cu12-bindings", "10.9.0.34"),
    ("tensorrt-cu12-bindings", "10.16.1.11"),
    ("tensorrt-cu13-bindings", "11.4.0.106"),
]

# NVIDIA, "Removed Python APIs and Replacements" (TensorRT 10.x -> 11.x migration): weak typing and implicit INT8.
REMOVED_QUALIFIED = {
    f"BuilderFlag.{flag}"
    for flag in (
        "FP16", "INT8", "FP8", "BF16", "INT4", "FP4",
        "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
    )
}
REMOVED_NAMES = {
    "int8_calibrator", "set_calibration_profile", "get_calibration_profile", "set_quantization_flag",
    "get_quantization_flag", "clear_quantization_flag", "quantization_flags", "platform_has_fast_fp16",
    "platform_has_fast_int8", "build_engine", "IInt8Calibrator", "IInt8EntropyCalibrator",
    "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "CalibrationAlgoType",
}


# ---------------------------------------------------------------------------------------------------------------
# Reading the bindings.


def wheel_cache() -> Path:
    return Path(os.environ.get("DNET_TRT_WHEELS") or Path.home() / ".cache" / "dnet" / "trt-wheels")


def obtain_wheel(dist: str, version: str) -> Path:
    """The cached wheel, downloaded once with pip; the test is skipped (with pip's reason) when PyPI is unreachable."""
    cache = wheel_cache()
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    # One fixed platform and Python, so every machine reads the same binary whatever runs the test.
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--dest", str(cache), f"{dist}=={version}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip download {dist}=={version} timed out and {cache} has no copy")
    found = sorted(cache.glob(pattern))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"cannot download {dist}=={version} (PyPI unreachable?) and {cache} has no copy: {last}")
    return found[0]


def rodata(elf: bytes) -> bytes:
    """The ``.rodata`` section of a little-endian ELF64 shared object."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if elf[strtab + name : elf.index(b"\0", strtab + name)] == b".rodata":
            return elf[offset : offset + size]
    raise ValueError("no .rodata section")


IDENT = re.compile(rb"(?<=\x00)[A-Za-z_][A-Za-z0-9_]*(?=\x00)")


def exported_names(wheel: Path) -> set[str]:
    """Every name the wheel's ``tensorrt`` module can export (see the module docstring for why suffixes count)."""
    with zipfile.ZipFile(wheel) as zf:
        so = next(n for n in zf.namelist() if re.fullmatch(r"tensorrt[^/]*/tensorrt[^/]*\.so", n))
        init = next(n for n in zf.namelist() if re.fullmatch(r"tensorrt[^/]*/__init__\.py", n))
        strings = {m.group().decode() for m in IDENT.finditer(b"\0" + rodata(zf.read(so)) + b"\0")}
        init_tree = ast.parse(zf.read(init))
    names = {s[i:] for s in strings for i in range(len(s)) if s[i].isalpha() or s[i] == "_"}
    # Names the package's pure-Python __init__ defines on top of the compiled module (``__version__``, helpers).
    for node in init_tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def wheel_version(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        init = next(n for n in zf.namelist() if re.fullmatch(r"tensorrt[^/]*/__init__\.py", n))
        return re.search(r'__version__ = "([^"]+)"', zf.read(init).decode()).group(1)


# ---------------------------------------------------------------------------------------------------------------
# Reading our sources.


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class TensorRTUses:
    """The TensorRT names a source file uses.

    A value is "from TensorRT" when it is the module (``import tensorrt as trt``, ``trt = import_tensorrt(...)``, a
    parameter named like the module) or an attribute, call or item of such a value; names (and ``self.x``) assigned
    such a value are from TensorRT everywhere in the file (a deliberate over-approximation: a name reused for
    something else adds names to check, it never hides one).
    """

    def __init__(self, source: str) -> None:
        self.tree = ast.parse(source)
        self.modules = {"trt"}
        self.imported: dict[str, str] = {}  # from tensorrt import X as Y: Y -> X
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self.modules |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
            elif isinstance(node, ast.ImportFrom) and node.module == "tensorrt":
                self.imported |= {a.asname or a.name: a.name for a in node.names}
        self.derived: set[str] = self.modules | set(self.imported)
        self._propagate()
        self.names: set[str] = set(self.imported.values())  # every attribute name used on a TensorRT value
        self.qualified: set[str] = set(self.imported.values())  # paths from the module itself: "BuilderFlag.FP16"
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute) and self._from_trt(node.value):
                self.names.add(node.attr)
                root, _, rest = (_dotted(node) or "").partition(".")
                if root in self.modules:
                    self.qualified.add(rest)
                elif root in self.imported:
                    self.qualified.add(f"{self.imported[root]}.{rest}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and self._from_trt(node.args[0])
                and isinstance(node.args[1], ast.Constant)
            ):
                self.names.add(str(node.args[1].value))

    def _from_trt(self, node: ast.AST) -> bool:
        if isinstance(node, (ast.Name, ast.Attribute)) and _dotted(node) in self.derived:
            return True
        if isinstance(node, ast.Attribute):
            return self._from_trt(node.value)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "import_tensorrt":
                return True
            return self._from_trt(node.func)
        if isinstance(node, ast.Subscript):
            return self._from_trt(node.value)
        return False

    def _propagate(self) -> None:
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                pairs: list[tuple[ast.AST, ast.AST]] = []
                if isinstance(node, ast.Assign):
                    pairs = [(t, node.value) for t in node.targets]
                elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                    pairs = [(node.target, node.value)]
                elif isinstance(node, (ast.For, ast.comprehension)):
                    pairs = [(node.target, node.iter)]
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    pairs = [(node.optional_vars, node.context_expr)]
                for target, value in pairs:
                    name = _dotted(target)
                    if name and name not in self.derived and self._from_trt(value):
                        self.derived.add(name)
                        changed = True

    def removed(self) -> list[str]:
        """The removed TensorRT 11 APIs this source uses."""
        return sorted((self.qualified & REMOVED_QUALIFIED) | (self.names & REMOVED_NAMES))


def missing_names(uses: TensorRTUses, exported: set[str]) -> list[str]:
    return sorted(n for n in uses.names if n not in exported)


# ---------------------------------------------------------------------------------------------------------------
# The tests.


@pytest.fixture(scope="module")
def bindings() -> dict[str, set[str]]:
    """version -> exported names, for every supported version."""
    out = {}
    for dist, version in SUPPORTED:
        wheel = obtain_wheel(dist, version)
        assert wheel_version(wheel) == version
        out[version] = exported_names(wheel)
    return out


@pytest.fixture(scope="module")
def uses() -> dict[str, TensorRTUses]:
    return {f"{path.parent.name}/{path.name}": TensorRTUses(path.read_text()) for path in SOURCES}


def test_reading_the_bindings_finds_known_names_and_the_11x_removals(bindings):
    known = {
        "Builder", "Runtime", "OnnxParser", "Logger", "execute_async_v3", "set_input_shape", "set_tensor_address",
        "build_serialized_network", "create_optimization_profile", "set_shape", "STRONGLY_TYPED", "WORKSPACE",
        "deserialize_cuda_engine", "num_errors", "serialize", "__version__",
    }
    removed_in_11 = {"int8_calibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "platform_has_fast_fp16",
                     "platform_has_fast_int8", "FP16", "supports_model"}
    for version, names in bindings.items():
        assert len(names) > 5000, version
        assert known <= names, (version, sorted(known - names))
        assert "definitely_not_a_tensorrt_name" not in names
        if version.startswith("10."):
            assert removed_in_11 <= names, (version, sorted(removed_in_11 - names))
        else:
            assert not removed_in_11 & names, (version, sorted(removed_in_11 & names))
    # SAME_COMPUTE_CAPABILITY is why 10.9 is our oldest: the reader sees it appear there.
    assert all("SAME_COMPUTE_CAPABILITY" in names for names in bindings.values())


def test_collector_finds_the_names_our_sources_use(uses):
    build, run = uses["converters/tensorrt.py"], uses["engines/tensorrt.py"]
    assert {"OnnxParser", "parse_from_file", "create_network", "create_builder_config", "set_memory_pool_limit",
            "builder_optimization_level", "create_timing_cache", "set_timing_cache", "get_timing_cache",
            "serialize", "create_optimization_profile", "set_shape", "add_optimization_profile",
            "build_serialized_network", "STRONGLY_TYPED", "VERSION_COMPATIBLE", "AMPERE_PLUS",
            "SAME_COMPUTE_CAPABILITY", "TF32", "clear_flag", "node_name", "get_error", "num_errors"} <= build.names
    assert {"Runtime", "deserialize_cuda_engine", "create_execution_context", "set_input_shape", "get_tensor_shape",
            "set_tensor_address", "execute_async_v3", "engine_host_code_allowed", "TensorIOMode",
            "get_tensor_mode", "num_io_tensors"} <= run.names
    # Values that are not TensorRT's (torch tensors and streams, paths) are not collected.
    assert not {"data_ptr", "cuda_stream", "read_bytes", "is_file"} & (build.names | run.names)


def test_every_tensorrt_name_we_use_exists_in_every_supported_version(bindings, uses):
    for version, exported in bindings.items():
        for source, used in uses.items():
            assert missing_names(used, exported) == [], f"{source} uses names TensorRT {version} does not have"


def test_no_removed_tensorrt_11_api_is_used(uses):
    for source, used in uses.items():
        assert used.removed() == [], source


SNIPPET = """
import tensorrt as trt

def build(onnx_bytes):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    return builder.build_serialized_network(network, config)
"""


def test_checker_fails_on_the_fp16_builder_flag(bindings):
    used = TensorRTUses(SNIPPET)
    assert used.removed() == ["BuilderFlag.FP16"]
    assert missing_names(used, bindings["11.4.0.106"]) == ["FP16"]
    assert missing_names(used, bindings["10.16.1.11"]) == []  # 10.x still has it: only the 11.x check catches it


def test_checker_follows_values_derived_from_tensorrt(bindings):
    used = TensorRTUses(
        "def f(trt, logger, calib):\n"
        "    builder = trt.Builder(logger)\n"
        "    config = builder.create_builder_config()\n"
        "    if builder.platform_has_fast_int8:\n"
        "        config.int8_calibrator = calib\n"
        "    for i in range(builder.num_DLA_cores):\n"
        "        pass\n"
        "    config.set_flag(trt.BuilderFlag.INT8)\n"
    )
    assert used.removed() == ["BuilderFlag.INT8", "int8_calibrator", "platform_has_fast_int8"]
    # BuilderFlag.INT8 hides behind DataType.INT8 in a flat name list: the qualified check above is what catches it.
    assert missing_names(used, bindings["11.4.0.106"]) == ["int8_calibrator", "platform_has_fast_int8"]


def test_checker_catches_from_imports_and_misspelt_names(bindings):
    used = TensorRTUses(
        "from tensorrt import BuilderFlag as Flag, Runtime\n"
        "def f(config, logger, plan):\n"
        "    config.set_flag(Flag.INT8)\n"
        "    engine = Runtime(logger).deserialise_cuda_engine(plan)\n"
        "    return engine.create_execution_context()\n"
    )
    assert used.removed() == ["BuilderFlag.INT8"]
    for exported in bindings.values():
        assert missing_names(used, exported) == ["deserialise_cuda_engine"]


def test_pyproject_minimum_is_the_oldest_version_checked():
    text = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'tensorrt = \["tensorrt>=([0-9.]+)', text).group(1)
    oldest = min((v for _, v in SUPPORTED), key=lambda v: tuple(int(x) for x in v.split(".")))
    assert oldest.startswith(minimum + "."), (minimum, oldest)
