"""API conformance of dnet's TensorRT code against NVIDIA's real Python bindings of 10.9, 10.16 and 11.4.

TensorRT cannot be installed here (no GPU; the libraries come from NVIDIA's index), but the small
``tensorrt-cuXX-bindings`` wheels download from PyPI. Two checks read them:

1. **Names (the wheel's strings).** The compiled module ``tensorrt_bindings/tensorrt.so`` registers every class,
   method, property and enum value under a C string literal, so the identifiers among the NUL-terminated strings of
   its ``.rodata`` section are the names it exports. The linker merges a literal that is the tail of another one
   ("num_errors" lives inside "get_num_errors"), so every identifier suffix counts as present. This check needs
   nothing but the wheel; it cannot see which class a name belongs to, nor signatures.
2. **Classes, signatures and enum values (the compiled module itself).** ``tensorrt.so`` links only nine C entry
   points of libnvinfer, libnvonnxparser and libnvinfer_plugin (``createInferBuilder_INTERNAL`` and friends) and
   calls none of them while it is imported. With stand-in libraries that export those nine symbols (compiled here
   from a few lines of C; skipped without a C compiler), NVIDIA's real module imports in a subprocess without a GPU,
   and pybind11 reports each class's members, each method's signature (``create_builder_config(self:
   tensorrt.Builder) -> tensorrt.IBuilderConfig``), each property's type and whether it can be set, and each enum
   member's value. The typed collector below follows our sources' values through those return types (and through
   ``tensorrt.X`` annotations, and subclasses of TensorRT's interfaces) and checks every attribute on the class it
   is used on: ``config.set_input_shape`` fails (that is IExecutionContext's), ``trt.BuilderFlag.STRONGLY_TYPED``
   fails (NetworkDefinitionCreationFlag's), so does an override the base class lacks or an assignment to a
   read-only property. The stand-ins' enum values (tests/helpers/tensorrt_standins.py) are compared with the real
   ones here.

What it cannot see: whether a call's *arguments* fit (only names and result types are checked), what TensorRT
does at run time (test_tensorrt_gpu.py's job on a GPU), and attributes of values whose type it cannot follow (a
function's return value, a list element): those are listed in ``UNTYPED`` and checked by name only.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.tensorrt_standins import ENUMS

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "converters" / "tensorrt.py", ROOT / "engines" / "tensorrt.py", ROOT / "engines" / "tensorrt_runtime.py"]

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
            # import_tensorrt() is the module; dnet.engines.tensorrt_runtime.create(trt, trt.Builder, ...) a Builder or Runtime
            if isinstance(node.func, ast.Name) and node.func.id in ("import_tensorrt", "create"):
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
# Loading the compiled bindings (check 2).

# The C entry points tensorrt.so imports (readelf --dyn-syms: the same nine in 10.9, 10.16 and 11.4). Returning
# null is never exercised: importing the module only registers classes.
STUB_C = """
void *createInferBuilder_INTERNAL(void *a, int b) { return 0; }
void *createInferRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *createInferRuntime_INTERNAL(void *a, int b) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *createNvOnnxParser_INTERNAL(void *a, void *b, int c) { return 0; }
void *getBuilderPluginRegistry(int a) { return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *a, const char *b) { return 0; }
"""
STUB_LIBRARIES = ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin")
DESCRIBE_VERSION = 1  # bump when DESCRIBE changes, so cached descriptions are made again

# Runs in a subprocess: load the stand-in libraries, import NVIDIA's tensorrt.so, print what pybind11 knows.
DESCRIBE = r"""
import ctypes, importlib.util, json, os, re, sys
stubs, so = sys.argv[1:3]
for name in sorted(n for n in os.listdir(stubs) if ".so." in n):
    ctypes.CDLL(os.path.join(stubs, name), mode=ctypes.RTLD_GLOBAL)
spec = importlib.util.spec_from_file_location("tensorrt", so)
trt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trt)

def returns(doc, name):
    return sorted(set(re.findall(r"^(?:\d+\. )?" + re.escape(name) + r"\(.*\) -> (.+)$", doc or "", re.M)))

def member(owner, attr):
    raw = next((c.__dict__[attr] for c in getattr(owner, "__mro__", [owner]) if attr in c.__dict__), None)
    if isinstance(raw, property):
        found = re.findall(r"^\(.*\) -> (.+)$", raw.fget.__doc__ or "", re.M) if raw.fget else []
        return {"kind": "property", "returns": found[:1], "settable": raw.fset is not None}
    value = getattr(owner, attr)
    if isinstance(value, type):
        return {"kind": "class", "name": value.__qualname__}
    if isinstance(owner, type) and hasattr(owner, "__members__") and isinstance(value, owner):
        return {"kind": "member", "value": int(value)}
    if callable(value):
        return {"kind": "method", "returns": returns(value.__doc__, attr)}
    out = {"kind": "value", "type": type(value).__qualname__}
    try:
        out["value"] = int(value)
    except (TypeError, ValueError):
        pass
    return out

classes, seen = {}, set()
def describe(cls):
    if cls.__qualname__ in seen:
        return
    seen.add(cls.__qualname__)
    members = {a: member(cls, a) for a in dir(cls) if not a.startswith("__") or a == "__init__"}
    classes[cls.__qualname__] = members
    for a, m in members.items():
        if m["kind"] == "class":
            describe(getattr(cls, a))

module = {}
for name in dir(trt):
    if name.startswith("__"):
        continue
    module[name] = member(trt, name)
    if module[name]["kind"] == "class":
        describe(getattr(trt, name))
print(json.dumps({"module": module, "classes": classes}))
"""


def stub_libraries(major: int) -> Path:
    """Stand-ins for libnvinfer.so.MAJOR and friends exporting the nine entry points; skip without a C compiler."""
    folder = wheel_cache() / f"stub-libraries-{major}"
    wanted = [folder / f"{lib}.so.{major}" for lib in STUB_LIBRARIES]
    if all(p.is_file() for p in wanted):
        return folder
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in libraries that let NVIDIA's bindings import without a GPU")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "stub.c"
    source.write_text(STUB_C)
    for lib, target in zip(STUB_LIBRARIES, wanted):
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(target), f"-Wl,-soname,{lib}.so.{major}", str(source)],
                       check=True, capture_output=True, timeout=120)
    return folder


def bindings_api(wheel: Path, version: str) -> dict:
    """{"module": {name: member}, "classes": {qualname: {name: member}}} of the wheel's compiled module (cached)."""
    cached = wheel_cache() / f"{wheel.stem}.api-{DESCRIBE_VERSION}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    major = int(version.split(".")[0])
    stubs = stub_libraries(major)
    unpacked = wheel_cache() / wheel.stem
    with zipfile.ZipFile(wheel) as zf:
        so = next(n for n in zf.namelist() if re.fullmatch(r"tensorrt[^/]*/tensorrt[^/]*\.so", n))
        zf.extract(so, unpacked)
    proc = subprocess.run([sys.executable, "-c", DESCRIBE, str(stubs), str(unpacked / so)], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        pytest.skip(f"NVIDIA's tensorrt.so {version} did not import against the stand-in libraries: {last}")
    api = json.loads(proc.stdout)
    with zipfile.ZipFile(wheel) as zf:  # names the package's pure-Python __init__ adds (``__version__``, helpers)
        init = next(n for n in zf.namelist() if re.fullmatch(r"tensorrt[^/]*/__init__\.py", n))
        for node in ast.parse(zf.read(init)).body:
            targets = [node.name] if isinstance(node, ast.FunctionDef | ast.ClassDef) else [
                t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            for name in targets:
                api["module"].setdefault(name, {"kind": "value", "type": "python"})
    cached.write_text(json.dumps(api))
    return api


# ---------------------------------------------------------------------------------------------------------------
# Following our sources' values through those types.

ALIASES = {"nvonnxparser::IParserError": "ParserError"}  # pybind11 names a type registered after its first use so


@dataclass(frozen=True)
class Ty:
    """What an expression is: the module, a class object, an instance, a bound method, or our subclass of a class."""

    kind: str  # module | class | instance | method | local_class | local
    name: str = ""  # the TensorRT class (qualified: "ILogger.Severity")
    attr: str = ""  # method name
    own: frozenset = frozenset()  # a local subclass's own attributes and methods


MODULE = Ty("module")


def trt_type(text: str) -> str | None:
    text = ALIASES.get(text.strip(), text.strip())
    if text.startswith("tensorrt."):
        return text[len("tensorrt."):]
    return text if text in ALIASES.values() else None  # int, str, list[...], typing.*: not TensorRT classes


@dataclass
class TypedUses:
    """Every attribute our source reads or sets on a TensorRT value, checked on the class it belongs to."""

    source: str
    api: dict
    problems: list[str] = field(default_factory=list)
    checked: set[tuple[str, str]] = field(default_factory=set)  # (class or "tensorrt", attribute)
    untyped: set[str] = field(default_factory=set)  # attributes on TensorRT-derived values of unknown type

    def __post_init__(self) -> None:
        self.tree = ast.parse(self.source)
        self.names = TensorRTUses(self.source)  # which expressions derive from tensorrt at all
        self.self_attrs: dict[str, dict[str, Ty]] = {}  # class -> self.x -> type
        self.local_classes: dict[str, Ty] = {}
        # our functions annotated "-> tensorrt.X" return an X
        self.returns = {f.name: self._annotation(f.returns) for f in ast.walk(self.tree)
                        if isinstance(f, ast.FunctionDef) and self._annotation(f.returns) is not None}
        for _ in range(3):  # assignments may use values assigned later in the file: iterate to a fixpoint
            self._scope(self.tree, {}, None, record=False)
        self._scope(self.tree, {}, None, record=True)

    # -- the API ---------------------------------------------------------------------------------------------------

    def _member(self, ty: Ty, attr: str) -> dict | None:
        if ty.kind == "module":
            return self.api["module"].get(attr)
        owner = self.api["classes"].get(ty.name, {})
        return owner.get(attr)

    def _result(self, ty: Ty, attr: str) -> Ty | None:
        if ty.kind in ("local", "local_class") and attr in ty.own:
            return None
        base = Ty("class" if ty.kind in ("module", "class", "local_class") else "instance", ty.name)
        if ty.kind == "module":
            base = MODULE
        m = self._member(base, attr)
        if m is None:
            return None
        if m["kind"] == "class":
            return Ty("class", m["name"])
        if m["kind"] == "member":
            return Ty("instance", ty.name)
        if m["kind"] == "value":
            return Ty("instance", m["type"]) if m["type"] in self.api["classes"] else None
        if m["kind"] == "property":
            name = trt_type(m["returns"][0]) if m["returns"] else None
            return Ty("instance", name) if name else None
        if m["kind"] == "method" and base.kind == "instance":
            return Ty("method", ty.name, attr)
        return None

    def _call(self, ty: Ty) -> Ty | None:
        if ty.kind == "class":
            return Ty("instance", ty.name)
        if ty.kind == "local_class":
            return Ty("local", ty.name, own=ty.own)
        if ty.kind == "method":
            m = self._member(Ty("instance", ty.name), ty.attr) or {"returns": []}
            names = {trt_type(r) for r in m.get("returns", [])}
            if len(names) == 1 and None not in names:
                return Ty("instance", names.pop())
        return None

    # -- expressions -----------------------------------------------------------------------------------------------

    def _type(self, node: ast.AST, env: dict[str, Ty], cls: str | None) -> Ty | None:
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and cls is not None:
                local = self.local_classes.get(cls)
                if local is not None and node.attr in local.own:
                    return self.self_attrs.get(cls, {}).get(node.attr)
                if node.attr in self.self_attrs.get(cls, {}):
                    return self.self_attrs[cls][node.attr]
            base = self._type(node.value, env, cls)
            return self._result(base, node.attr) if base is not None else None
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "import_tensorrt":
                return MODULE
            if isinstance(node.func, ast.Name) and node.func.id in self.returns:
                return self.returns[node.func.id]
            fn = self._type(node.func, env, cls)
            return self._call(fn) if fn is not None else None
        return None

    @staticmethod
    def _annotation(node: ast.AST | None) -> Ty | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        text = _dotted(node) if node is not None else None
        if text and text.startswith("tensorrt."):
            return Ty("instance", text[len("tensorrt."):])
        return None

    # -- scopes ----------------------------------------------------------------------------------------------------

    def _scope(self, node: ast.AST, outer: dict[str, Ty], cls: str | None, record: bool) -> None:
        env = dict(outer)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for arg in node.args.args + node.args.kwonlyargs:
                ty = self._annotation(arg.annotation)
                if arg.arg in self.names.modules:
                    env[arg.arg] = MODULE
                elif ty is not None:
                    env[arg.arg] = ty
                elif arg.arg in env:
                    del env[arg.arg]  # a parameter shadows the enclosing name
        body = list(ast.iter_child_nodes(node))
        for _ in range(2):
            for stmt in self._statements(body):
                self._assign(stmt, env, cls)
        for stmt in self._statements(body):
            if isinstance(stmt, ast.ClassDef):
                self._class(stmt, env, record)
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self._scope(stmt, env, cls, record)
        if record:
            for sub in self._expressions(body):
                if isinstance(sub, ast.Attribute):
                    self._check(sub, env, cls)

    @staticmethod
    def _statements(nodes):
        """Statements of a scope, into if/for/with/try blocks but not into nested functions and classes."""
        for node in nodes:
            yield node
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda) and isinstance(
                    node, ast.stmt):
                yield from TypedUses._statements([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    @staticmethod
    def _expressions(nodes):
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for deco in node.decorator_list:
                    yield from ast.walk(deco)
                continue
            yield node
            yield from TypedUses._expressions(list(ast.iter_child_nodes(node)))

    def _assign(self, stmt: ast.AST, env: dict[str, Ty], cls: str | None) -> None:
        if isinstance(stmt, ast.Import):
            env.update({a.asname or a.name: MODULE for a in stmt.names if a.name == "tensorrt"})
            return
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "tensorrt":
            for a in stmt.names:
                ty = self._result(MODULE, a.name)
                if ty is not None:
                    env[a.asname or a.name] = ty
            return
        if isinstance(stmt, ast.Assign):
            pairs = [(t, self._type(stmt.value, env, cls)) for t in stmt.targets]
        elif isinstance(stmt, ast.AnnAssign):
            ty = self._annotation(stmt.annotation)
            pairs = [(stmt.target, ty or (self._type(stmt.value, env, cls) if stmt.value else None))]
        elif isinstance(stmt, ast.With):
            pairs = [(i.optional_vars, None) for i in stmt.items if i.optional_vars is not None]
        else:
            return
        for target, ty in pairs:
            if isinstance(target, ast.Name):
                if ty is not None:
                    env[target.id] = ty
            elif isinstance(target, ast.Attribute) and _dotted(target.value) == "self" and cls is not None:
                if ty is not None:
                    self.self_attrs.setdefault(cls, {})[target.attr] = ty

    def _class(self, node: ast.ClassDef, env: dict[str, Ty], record: bool) -> None:
        bases = [self._type(b, env, None) for b in node.bases]
        base = next((b for b in bases if b is not None and b.kind == "class"), None)
        methods = {s.name for s in node.body if isinstance(s, ast.FunctionDef)}
        assigned = {t.attr for s in ast.walk(node) if isinstance(s, ast.Assign | ast.AnnAssign)
                    for t in (s.targets if isinstance(s, ast.Assign) else [s.target])
                    if isinstance(t, ast.Attribute) and _dotted(t.value) == "self"}
        if base is not None:
            local = Ty("local_class", base.name, own=frozenset(methods | assigned))
            self.local_classes[node.name] = Ty("local", base.name, own=local.own)
            env[node.name] = local
            if record:
                for name in sorted(m for m in methods if not m.startswith("_")):  # an override: must be the base's
                    self._verify(Ty("class", base.name), name, node.lineno, store=False)
        self_env = dict(env)
        if node.name in self.local_classes:
            self_env["self"] = self.local_classes[node.name]
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef):
                self._scope(stmt, self_env, node.name, record)

    # -- checking --------------------------------------------------------------------------------------------------

    def _check(self, node: ast.Attribute, env: dict[str, Ty], cls: str | None) -> None:
        base = self._type(node.value, env, cls)
        if base is None:
            if self.names._from_trt(node.value):
                self.untyped.add(node.attr)
            return
        if base.kind in ("local", "local_class") and node.attr in base.own:
            return  # our subclass's own attribute or method
        if base.kind == "method":
            return
        self._verify(base, node.attr, node.lineno, store=isinstance(node.ctx, ast.Store))

    def _verify(self, ty: Ty, attr: str, line: int, store: bool) -> None:
        owner = "tensorrt" if ty.kind == "module" else ty.name
        lookup = MODULE if ty.kind == "module" else Ty("class", ty.name)
        m = self._member(lookup, attr)
        self.checked.add((owner, attr))
        if m is None:
            self.problems.append(f"line {line}: {owner} has no {attr!r}")
        elif store and ty.kind in ("instance", "local") and not (m["kind"] == "property" and m["settable"]):
            self.problems.append(f"line {line}: {owner}.{attr} cannot be set")


# ---------------------------------------------------------------------------------------------------------------
# The tests.


@pytest.fixture(scope="module")
def wheels() -> dict[str, Path]:
    out = {}
    for dist, version in SUPPORTED:
        wheel = obtain_wheel(dist, version)
        assert wheel_version(wheel) == version
        out[version] = wheel
    return out


@pytest.fixture(scope="module")
def bindings(wheels) -> dict[str, set[str]]:
    """version -> exported names (the wheel's strings), for every supported version."""
    return {version: exported_names(wheel) for version, wheel in wheels.items()}


@pytest.fixture(scope="module")
def apis(wheels) -> dict[str, dict]:
    """version -> what the compiled module says about itself, for every supported version."""
    return {version: bindings_api(wheel, version) for version, wheel in wheels.items()}


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
            "SAME_COMPUTE_CAPABILITY", "TF32", "clear_flag", "node_name", "get_error", "num_errors",
            "ProfilingVerbosity", "DETAILED", "create_engine_inspector", "get_engine_information",
            "IProgressMonitor", "progress_monitor"} <= build.names
    assert {"Runtime", "deserialize_cuda_engine", "create_execution_context", "set_input_shape", "get_tensor_shape",
            "set_tensor_address", "execute_async_v3", "engine_host_code_allowed", "TensorIOMode",
            "get_tensor_mode", "num_io_tensors", "get_tensor_profile_shape", "num_optimization_profiles",
            "IProfiler", "profiler"} <= run.names
    # Values that are not TensorRT's (torch tensors and streams, paths) are not collected.
    assert not {"data_ptr", "cuda_stream", "read_bytes", "is_file"} & (build.names | run.names)


def test_every_tensorrt_name_we_use_exists_in_every_supported_version(bindings, uses):
    for version, exported in bindings.items():
        for source, used in uses.items():
            assert missing_names(used, exported) == [], f"{source} uses names TensorRT {version} does not have"


def test_no_removed_tensorrt_11_api_is_used(uses):
    for source, used in uses.items():
        assert used.removed() == [], source


# What the typed check cannot follow in our sources (checked by name only, by the test above). An attribute that
# appears here is read on a value whose class the collector does not know; keep this list short.
UNTYPED: dict[str, set[str]] = {"converters/tensorrt.py": set(), "engines/tensorrt.py": set(), "engines/tensorrt_runtime.py": set()}


def test_every_tensorrt_attribute_we_use_exists_on_the_class_it_is_used_on(apis):
    for version, api in apis.items():
        for path in SOURCES:
            source = f"{path.parent.name}/{path.name}"
            typed = TypedUses(path.read_text(), api)
            assert typed.problems == [], f"{source} against TensorRT {version}"
            assert typed.untyped == UNTYPED[source], source


def test_the_typed_check_covers_the_calls_that_matter(apis):
    checked = set()
    for path in SOURCES:
        checked |= TypedUses(path.read_text(), apis["10.16.1.11"]).checked
    assert {("IBuilderConfig", "set_timing_cache"), ("IBuilderConfig", "create_timing_cache"),
            ("IBuilderConfig", "profiling_verbosity"), ("IBuilderConfig", "progress_monitor"),
            ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"), ("BuilderFlag", "TF32"),
            ("ICudaEngine", "get_tensor_profile_shape"), ("ICudaEngine", "num_optimization_profiles"),
            ("ICudaEngine", "create_engine_inspector"), ("EngineInspector", "get_engine_information"),
            ("IExecutionContext", "set_tensor_address"), ("IExecutionContext", "execute_async_v3"),
            ("IExecutionContext", "profiler"), ("Runtime", "engine_host_code_allowed"), ("ParserError", "node_name"),
            ("IProfiler", "report_layer_time"), ("IProgressMonitor", "step_complete"), ("ILogger", "log"),
            ("ILogger", "VERBOSE"), ("ITimingCache", "serialize"), ("ITensor", "name"),
            ("tensorrt", "__version__")} <= checked


WRONG_CLASS = """
def build(trt, logger, onnx_path):
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.BuilderFlag.STRONGLY_TYPED))
    config = builder.create_builder_config()
    config.set_input_shape("input", (1, 3, 224, 224))
    engine = trt.Runtime(logger).deserialize_cuda_engine(b"")
    engine.num_layers = 3
    base = trt.IProfiler

    class Times(base):
        def report_layer_times(self, layer_name, ms):
            self.total = ms

    return network, Times()
"""


def test_the_typed_check_catches_names_on_the_wrong_class(apis, bindings):
    """Each of these names exists somewhere in TensorRT, so the name check alone lets every one through."""
    for version, api in apis.items():
        typed = TypedUses(WRONG_CLASS, api)
        assert typed.problems == [
            "line 11: IProfiler has no 'report_layer_times'",
            "line 4: BuilderFlag has no 'STRONGLY_TYPED'",
            "line 6: IBuilderConfig has no 'set_input_shape'",
            "line 8: ICudaEngine.num_layers cannot be set",
        ], version
        assert missing_names(TensorRTUses(WRONG_CLASS), bindings[version]) == []


def test_standin_enums_carry_each_version_s_real_values(apis, uses):
    """tests/helpers/tensorrt_standins.py's enums are the real bindings' values, major version by major version."""
    used_enums = set()
    for path in SOURCES:
        used_enums |= {(c, a) for c, a in TypedUses(path.read_text(), apis["10.16.1.11"]).checked
                       if "__members__" in apis["10.16.1.11"]["classes"].get(c, {})}
    for version, api in apis.items():
        major = int(version.split(".")[0])
        for enum_name, members in ENUMS[major].items():
            real = {k: m["value"] for k, m in api["classes"][enum_name].items() if m["kind"] == "member"}
            assert {k: real.get(k) for k in members} == members, (version, enum_name)
        for enum_name, member_name in used_enums:
            if member_name in {k for k, m in api["classes"][enum_name].items() if m["kind"] == "member"}:
                assert member_name in ENUMS[major].get(enum_name, {}), (version, enum_name, member_name)
    # The values the defects were about: 10.x STRONGLY_TYPED = 1 (0 is EXPLICIT_BATCH); 11.x 0; VERSION_COMPATIBLE moved.
    flags = {v: apis[v]["classes"]["NetworkDefinitionCreationFlag"] for v in apis}
    assert [flags[v]["STRONGLY_TYPED"]["value"] for v in ("10.9.0.34", "10.16.1.11", "11.4.0.106")] == [1, 1, 0]
    assert "EXPLICIT_BATCH" not in flags["11.4.0.106"]
    assert [apis[v]["classes"]["BuilderFlag"]["VERSION_COMPATIBLE"]["value"] for v in apis] == [13, 13, 12]


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


def test_checker_fails_on_the_fp16_builder_flag(bindings, apis):
    used = TensorRTUses(SNIPPET)
    assert used.removed() == ["BuilderFlag.FP16"]
    assert missing_names(used, bindings["11.4.0.106"]) == ["FP16"]
    assert missing_names(used, bindings["10.16.1.11"]) == []  # 10.x still has it: only the 11.x check catches it
    assert TypedUses(SNIPPET, apis["11.4.0.106"]).problems == ["line 9: BuilderFlag has no 'FP16'"]
    assert TypedUses(SNIPPET, apis["10.16.1.11"]).problems == []


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
