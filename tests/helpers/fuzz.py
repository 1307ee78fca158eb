"""Fuzz targets for the untrusted formats: the ``.t7`` reader, the ``.pth`` reader, the ONNX opener, and the two
readers main added: SVHN's ``.mat`` files (``dnet.data.mat5``) and OpenVINO IR ``.xml`` (opened and run once).

Each case is a mutated real file, written to disk and opened the way every verb opens it: ``dnet.load`` for
``.t7`` and ``.pth`` (reader, mapping, checks, model), ``dnet.engines.open`` for ``.onnx`` (reader, interface
checks, ONNX Runtime session). The only acceptable outcomes are a model or one of the project's errors (one line);
anything else is a bug, counted and printed with the case that caused it. For each case the peak resident memory
it added (Linux ``VmHWM``, reset before the case) is compared with the size of its input.

CI runs a few hundred cases of each (``tests/hostile/test_fuzz.py``, ``DNET_FUZZ_CASES``); by hand, for long::

    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz t7 --cases 100000 --seed 1
    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz pth --cases 100000
    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz onnx --cases 100000 --save-bugs /tmp/bugs
    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz mat --cases 100000
    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz ir --cases 10000   # about 15 cases a second
    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz sidecar --cases 100000
    PYTHONPATH=$PWD nice python -m tests.helpers.fuzz image --cases 100000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import io
import json
import os
import random
import struct
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from dnet.core.errors import DnetError

INTERESTING_INTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -2**31, 2**31 - 1, 2**30, 2**16, 255, 40)
INTERESTING_LONGS = (0, 1, -1, 2, 2**31, 2**40, 2**62, 2**63 - 1, -2**63)
FIXED_OVERHEAD = 32 << 20  # bytes a case may add whatever its size (Python objects, a small model, ORT arenas)


# --- memory ------------------------------------------------------------------------------------------------

def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# --- seeds -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _tiny_densenet():
    from tests.helpers.models import tiny_model

    return tiny_model(0)


def t7_seeds() -> dict[str, bytes]:
    from dnet.formats.t7.writer import LuaStyle, dumps, lua_densenet
    from tests.helpers.shared import SHARED

    out = {}
    for kind in ("standard", "custom"):
        out[f"written-{kind}.t7"] = dumps(lua_densenet(_tiny_densenet(), LuaStyle(layer_kind=kind, with_grads=False)))
    out["written-nn-runningstd.t7"] = dumps(lua_densenet(_tiny_densenet(), LuaStyle(prefix="nn", running_std=True,
                                                                                  with_grads=False)))
    folder = SHARED / "t7"
    if folder.is_dir():  # the real Lua files, when the shared fixtures are beside the checkout
        for p in sorted((folder / "torchfile-tests").glob("*.t7")) + [folder / "cifar10-densenet-bc-l40-k12.t7"]:
            out[p.name] = p.read_bytes()
    return out


def _save(obj, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def pth_seeds() -> dict[str, bytes]:
    from dnet.formats.checkpoint import FORMAT, VERSION
    from tests.helpers.shared import SHARED

    model = _tiny_densenet()
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "state_dict": model.state_dict(),
               "meta": model.meta.to_dict()}
    out = {"checkpoint.pth": _save(payload), "checkpoint-legacy.pth": _save(payload, _use_new_zipfile_serialization=False),
           "state-dict.pth": _save(model.state_dict())}
    folder = SHARED / "torchvision"
    if folder.is_dir():
        for p in sorted(folder.glob("*.pth")):
            out[p.name] = p.read_bytes()
    return out


def onnx_seeds() -> dict[str, bytes]:
    from tests.helpers.models import tiny_onnx

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = tiny_onnx(Path(tmp))
        return {"tiny.onnx": fp32.read_bytes()}


def mat_seeds() -> dict[str, bytes]:
    """SVHN-shaped MATLAB v5 files (X 32×32×3×N uint8, y N×1), plain and compressed, y as uint8 and as double."""
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(0)
    out = {}
    for compressed in (False, True):
        for y_type in ("uint8", "float64"):
            buf = io.BytesIO()
            scipy.io.savemat(buf, {"X": rng.integers(0, 256, (32, 32, 3, 12), dtype=np.uint8),
                                   "y": rng.integers(1, 11, (12, 1)).astype(y_type)}, do_compression=compressed)
            out[f"svhn-{'z' if compressed else 'plain'}-{y_type}.mat"] = buf.getvalue()
    return out


@functools.lru_cache(maxsize=1)
def _ir_seed() -> tuple[bytes, bytes]:
    """The tiny model as an OpenVINO IR: (.xml, .bin), float32 weights."""
    import openvino as ov

    from tests.helpers.models import tiny_onnx

    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(ov.convert_model(str(tiny_onnx(Path(tmp)))), str(Path(tmp) / "tiny.xml"), compress_to_fp16=False)
        return (Path(tmp) / "tiny.xml").read_bytes(), (Path(tmp) / "tiny.bin").read_bytes()


def ir_seeds() -> dict[str, bytes]:
    return {"tiny.xml": _ir_seed()[0]}


def sidecar_seeds() -> dict[str, bytes]:
    from dnet.core.artifact.sidecar import EngineSidecar
    from tests.helpers.tensorrt_standins import sidecar

    plain = sidecar()
    return {"sidecar.plan.json": json.dumps(plain.to_dict(), indent=2).encode(),
            "sidecar-bare.plan.json": json.dumps(EngineSidecar(**{**plain.__dict__, "meta": None}).to_dict()).encode()}


def image_seeds() -> dict[str, bytes]:
    """Small images in every format and mode dnet decodes: PNG (RGB, grey, palette, 16-bit, RGBA), JPEG (RGB, grey,
    CMYK, progressive), GIF (animated), BMP, WebP, TIFF."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    out = {}

    def save(name, im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    save("rgb.png", rgb, "PNG")
    save("grey.png", rgb.convert("L"), "PNG")
    save("palette.png", rgb.convert("P"), "PNG")
    save("rgba.png", rgb.convert("RGBA"), "PNG")
    save("grey16.png", Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), "PNG")
    save("rgb.jpg", rgb, "JPEG")
    save("grey.jpg", rgb.convert("L"), "JPEG")
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    save("progressive.jpg", rgb, "JPEG", progressive=True)
    save("anim.gif", rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P").rotate(90)])
    save("rgb.bmp", rgb, "BMP")
    save("rgb.webp", rgb, "WEBP")
    save("rgb.tiff", rgb, "TIFF")
    return out


SEEDS = {"t7": t7_seeds, "pth": pth_seeds, "onnx": onnx_seeds, "mat": mat_seeds, "ir": ir_seeds,
         "sidecar": sidecar_seeds, "image": image_seeds}
SUFFIX = {"t7": ".t7", "pth": ".pth", "onnx": ".onnx", "mat": ".mat", "ir": ".xml", "sidecar": ".plan.json",
          "image": ".img"}


# --- mutations ---------------------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random, structure: int = 4096) -> bytes:
    """1 to 4 of: truncate, set a byte, an int, a long, delete or duplicate a run; half of them near the start."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(data)
        if n == 0:
            break
        pos = rng.randrange(min(n, structure)) if rng.random() < 0.5 else rng.randrange(n)
        op = rng.choice(("truncate", "byte", "int", "long", "delete", "duplicate"))
        if op == "truncate":
            del data[pos:]
        elif op == "byte":
            data[pos] = rng.randrange(256)
        elif op == "int":
            data[pos:pos + 4] = struct.pack("<i", rng.choice(INTERESTING_INTS))
        elif op == "long":
            data[pos:pos + 8] = struct.pack("<q", rng.choice(INTERESTING_LONGS))
        elif op == "delete":
            del data[pos:pos + rng.randint(1, 64)]
        else:
            data[pos:pos] = data[pos:pos + rng.randint(1, 64)]
    return bytes(data)


def mutate_t7(data: bytes, rng: random.Random) -> bytes:
    return mutate_bytes(data, rng)


def _rezip(data: bytes, rng: random.Random) -> bytes:
    """Mutate one record of a torch zip (usually the pickle) and write the archive again with valid CRCs."""
    src = zipfile.ZipFile(io.BytesIO(data))
    records = [(i, src.read(i)) for i in src.infolist()]
    pick = [k for k, (i, _) in enumerate(records) if i.filename.endswith(".pkl")] if rng.random() < 0.8 else []
    k = rng.choice(pick) if pick else rng.randrange(len(records))
    info, body = records[k]
    records[k] = (info, mutate_bytes(body, rng, structure=len(body)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i, b in records:
            z.writestr(i.filename, b)
    return out.getvalue()


def _mutate_tensor(t: torch.Tensor, rng: random.Random) -> object:
    op = rng.choice(("shape", "dtype", "expand", "overlap", "drop", "scalar", "huge"))
    if op == "shape" and t.numel() > 1:
        return t.reshape(-1)[: max(1, t.numel() // 2)]
    if op == "dtype":
        return t.to(rng.choice((torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool)))
    if op == "expand" and t.numel():
        return t.reshape(-1)[:1].expand(*t.shape) if t.ndim else t
    if op == "overlap" and t.numel() > 1:
        flat = t.reshape(-1)
        return torch.as_strided(flat, t.shape, [1] * t.ndim)
    if op == "drop":
        return None
    if op == "scalar":
        return rng.choice((0, 1.5, "x", [1, 2], {"a": 1}))
    return torch.zeros(1).expand(rng.choice((10**4, 10**6)), rng.choice((10**3, 10**5)))


def _mutate_value(v, rng: random.Random):
    return rng.choice((None, -1, 0, 1, 3, 2**31, 10**6, 1.5, "x", [], {}, [10**5, 10**5], True, v))


def mutate_payload(data: bytes, rng: random.Random) -> bytes:
    """Load a seed, change its objects (config fields, metadata, tensors, keys), save it again."""
    obj = torch.load(io.BytesIO(data), weights_only=True)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    for _ in range(rng.randint(1, 3)):
        where = rng.random()
        if isinstance(obj, dict) and "config" in obj and where < 0.35:
            cfg = obj["config"]
            key = rng.choice(sorted(cfg))
            cfg[key] = _mutate_value(cfg[key], rng) if key != "block_config" else rng.choice(
                ([6, 12, 64, 48], [10**6], [], [0], [2, -3], "abc", [2, 3, 1]))
        elif isinstance(obj, dict) and obj.get("meta") and where < 0.5:
            meta = obj["meta"]
            key = rng.choice(sorted(meta))
            meta[key] = _mutate_value(meta[key], rng)
            if key == "preprocess" and isinstance(meta[key], dict) is False and rng.random() < 0.5:
                meta[key] = {"name": "x", "mean": [0, 0, 0], "std": [1, 1, 0], "input_size": 10**6}
        elif isinstance(sd, dict) and sd:
            key = rng.choice(sorted(sd))
            new = _mutate_tensor(sd[key], rng) if isinstance(sd[key], torch.Tensor) else _mutate_value(sd[key], rng)
            if new is None:
                del sd[key]
            elif rng.random() < 0.1:
                sd[key + ".extra"] = new
            else:
                sd[key] = new
    return _save(obj)


def mutate_pth(data: bytes, rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.4:
        return mutate_bytes(data, rng)
    if r < 0.7 and data[:4] == b"PK\x03\x04":
        return _rezip(data, rng)
    return mutate_payload(data, rng)


def _mutate_proto(proto: onnx.ModelProto, rng: random.Random) -> None:
    g = proto.graph
    op = rng.choice(("init_dims", "init_data", "init_type", "node_op", "node_input", "drop_node", "add_input",
                     "add_output", "drop_output", "io_dims", "io_type", "meta", "opset", "attribute", "swap_output"))
    if op.startswith("init") and g.initializer:
        t = rng.choice(list(g.initializer))
        if op == "init_dims":
            dims = list(t.dims) or [1]
            dims[rng.randrange(len(dims))] = rng.choice((0, 1, 2**20, 2**31, 2**40, -1))
            del t.dims[:]
            t.dims.extend(dims)
        elif op == "init_data":
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)] if t.raw_data else b""
        else:
            t.data_type = rng.choice((0, 2, 3, 7, 8, 10, 16, 99))
    elif op == "node_op" and g.node:
        rng.choice(list(g.node)).op_type = rng.choice(("Conv", "Relu", "Gemm", "Reshape", "Expand", "Nope", "Loop"))
    elif op == "node_input" and g.node:
        n = rng.choice(list(g.node))
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(("", "missing", g.input[0].name if g.input else "x"))
    elif op == "drop_node" and g.node:
        del g.node[rng.randrange(len(g.node))]
    elif op == "add_input":
        g.input.add().CopyFrom(onnx.helper.make_tensor_value_info(f"extra{rng.randrange(9)}", onnx.TensorProto.FLOAT,
                                                                  [1, 3, 32, 32]))
    elif op == "add_output":
        g.output.add().CopyFrom(onnx.helper.make_tensor_value_info("extra_out", onnx.TensorProto.FLOAT, [1, 5]))
    elif op == "drop_output" and g.output:
        del g.output[rng.randrange(len(g.output))]
    elif op == "swap_output" and g.output and g.node:
        g.output[0].name = rng.choice(list(rng.choice(list(g.node)).output) or ["x"])
    elif op in ("io_dims", "io_type"):
        vals = list(g.input) + list(g.output)
        if vals:
            v = rng.choice(vals)
            if op == "io_type":
                v.type.tensor_type.elem_type = rng.choice((0, 2, 7, 10, 11))
            else:
                dims = v.type.tensor_type.shape.dim
                if dims and rng.random() < 0.7:
                    d = dims[rng.randrange(len(dims))]
                    d.dim_value = rng.choice((1, 3, 7, 2**20, 10**9))
                else:
                    dims.add().dim_value = rng.choice((1, 3))
    elif op == "meta" and proto.metadata_props:
        p = rng.choice(list(proto.metadata_props))
        p.value = rng.choice(("1", "-5", "100000", "null", "{}", "[]", '"x"', "{", p.value[::-1]))
    elif op == "opset" and proto.opset_import:
        proto.opset_import[0].version = rng.choice((1, 7, 13, 99, 10**6))
    elif op == "attribute":
        nodes = [n for n in g.node if n.attribute]
        if nodes:
            a = rng.choice(list(rng.choice(nodes).attribute))
            if a.ints:
                a.ints[rng.randrange(len(a.ints))] = rng.choice((0, -1, 2**31, 10**6))
            else:
                a.i = rng.choice((0, -1, 2**31, 10**6))


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return mutate_bytes(data, rng)
    proto = onnx.load_model_from_string(data)
    for _ in range(rng.randint(1, 3)):
        _mutate_proto(proto, rng)
    return proto.SerializeToString()


_IR_VALUES = ("0", "-1", "1", "2", "3", "7", "4097", "100000", "2147483647", "-2147483648", "99999999999")
_IR_WORDS = ("", "?", "?,?", "1,2,3,4,5", "f64", "i8", "u8", "f16", "boolean", "abc", "explicit", "same_upper")


def mutate_ir(data: bytes, rng: random.Random) -> bytes:
    """An IR's XML with numbers or attribute values replaced, lines deleted or repeated, or cut short."""
    import re

    text = data.decode("utf-8")
    op = rng.random()
    if op < 0.2:
        return mutate_bytes(data, rng)
    if op < 0.5:
        spans = [m.span() for m in re.finditer(r"-?\d+", text)]
        for _ in range(rng.randint(1, 3)):
            a, z = rng.choice(spans)
            text = text[:a] + rng.choice(_IR_VALUES) + text[z:]
            spans = [m.span() for m in re.finditer(r"-?\d+", text)]
    elif op < 0.7:
        a, z = rng.choice([m.span() for m in re.finditer(r'"[^"]*"', text)])
        text = text[:a] + f'"{rng.choice(_IR_WORDS)}"' + text[z:]
    else:
        lines = text.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        if op < 0.85:
            del lines[i:i + rng.randint(1, 5)]
        else:
            lines.insert(rng.randrange(len(lines)), lines[i])
        text = "".join(lines)
    return text.encode("utf-8")


def mutate_mat(data: bytes, rng: random.Random) -> bytes:
    return mutate_bytes(data, rng, structure=512)


_JSON_VALUES = (None, 0, -1, 1, 2**31, 10**18, 1.5, float("nan"), "", "x", "INT4", [], [1], [1, 2, 3, 4],
                [10**6] * 4, {}, {"a": 1}, True)


def _walk(doc, rng: random.Random):
    """A random (container, key) inside a JSON document."""
    spots = []

    def visit(v):
        if isinstance(v, dict):
            for k in v:
                spots.append((v, k))
                visit(v[k])
        elif isinstance(v, list):
            for i in range(len(v)):
                spots.append((v, i))
                visit(v[i])

    visit(doc)
    return rng.choice(spots) if spots else (None, None)


def mutate_sidecar(data: bytes, rng: random.Random) -> bytes:
    """A sidecar's JSON with values replaced, keys dropped or renamed, or its bytes mutated."""
    if rng.random() < 0.3:
        return mutate_bytes(data, rng, structure=len(data))
    doc = json.loads(data)
    for _ in range(rng.randint(1, 3)):
        where, key = _walk(doc, rng)
        if where is None:
            break
        op = rng.random()
        if op < 0.7:
            where[key] = rng.choice(_JSON_VALUES)
        elif isinstance(where, dict):
            value = where.pop(key)
            if op < 0.85:
                where[key + "_"] = value
        else:
            del where[key]
    return json.dumps(doc).encode()


def mutate_image(data: bytes, rng: random.Random) -> bytes:
    """Image bytes mutated, mostly in the header (sizes, modes, chunk lengths)."""
    return mutate_bytes(data, rng, structure=256)


MUTATE = {"t7": mutate_t7, "pth": mutate_pth, "onnx": mutate_onnx, "mat": mutate_mat, "ir": mutate_ir,
          "sidecar": mutate_sidecar, "image": mutate_image}


# --- running -----------------------------------------------------------------------------------------------

def open_t7_or_pth(path: Path) -> None:
    from dnet.formats.loading import load

    load(path)


def open_onnx(path: Path) -> None:
    from dnet import engines

    with engines.open(path, threads=1):
        pass


def open_mat(path: Path) -> None:
    from dnet.data.svhn import read_mat

    read_mat(path)


def open_ir(path: Path) -> None:
    """Open the IR (its .bin, the seed's, beside it) and run it once, as ``bench`` and ``eval`` do."""
    import numpy as np

    from dnet import engines

    weights = path.with_suffix(".bin")
    if not weights.exists():
        weights.write_bytes(_ir_seed()[1])
    with engines.open(path, threads=1) as engine:
        side = [d if d > 0 else 32 for d in engine.input_shape[2:]]
        engine(np.zeros((2, 3, *side), np.float32))


def open_sidecar(path: Path) -> None:
    from dnet.core.artifact.sidecar import read_sidecar

    read_sidecar(path.with_name(path.name[: -len(".json")]))


def open_image_file(path: Path) -> None:
    """Decode it as every verb does, then preprocess it to a 32×32 input."""
    from dnet.core.specs import get_spec
    from dnet.data.images import open_image
    from dnet.data.transforms import preprocess

    preprocess(open_image(path), get_spec("cifar10"))


OPEN = {"t7": open_t7_or_pth, "pth": open_t7_or_pth, "onnx": open_onnx, "mat": open_mat, "ir": open_ir,
        "sidecar": open_sidecar, "image": open_image_file}


@dataclass
class Report:
    target: str
    cases: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    bugs: list = field(default_factory=list)  # (seed name, case index, exception text)
    peak_bytes: int = 0  # the largest resident memory a case added
    peak_case_size: int = 0
    peak_case: int = -1  # index of that case (replay the seed to get its bytes)
    worst_excess: float = 0.0  # max over cases of (added memory - FIXED_OVERHEAD) / input size
    largest_input: int = 0
    seconds: float = 0.0
    process_peak_bytes: int = 0  # the whole run's (mutations included): each reset also resets what getrusage says

    def to_dict(self) -> dict:
        return {"target": self.target, "cases": self.cases, "outcomes": dict(self.outcomes.most_common()),
                "bugs": len(self.bugs), "peak_added_mb": round(self.peak_bytes / 2**20, 1),
                "input_bytes_of_peak_case": self.peak_case_size, "peak_case": self.peak_case,
                "largest_input_bytes": self.largest_input,
                "process_peak_mb": round(self.process_peak_bytes / 2**20, 1),
                "worst_multiple_of_input_above_32mb": round(self.worst_excess, 2), "seconds": round(self.seconds, 1)}


def run(target: str, cases: int, seed: int = 0, *, save_bugs: Path | None = None, progress: bool = False) -> Report:
    """``cases`` mutated files of ``target``, opened one by one in this process; see the module docstring."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    seeds = SEEDS[target]()
    names = sorted(seeds)
    rng = random.Random(seed)
    report = Report(target)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dnet-fuzz-") as tmp:
        path = Path(tmp) / f"case{SUFFIX[target]}"
        for name in names:  # warm up: every import and lazy initialisation happens before memory is measured
            path.write_bytes(seeds[name])
            with contextlib.suppress(DnetError):
                OPEN[target](path)
        for i in range(cases):
            name = rng.choice(names)
            try:
                data = MUTATE[target](seeds[name], rng)
            except Exception:  # noqa: BLE001 (a mutation the seed cannot take: use the seed's bytes mutated plainly)
                data = mutate_bytes(seeds[name], rng)
            path.write_bytes(data)
            report.largest_input = max(report.largest_input, len(data))
            before = _status_kb("VmRSS") * 1024
            report.process_peak_bytes = max(report.process_peak_bytes, _status_kb("VmHWM") * 1024)
            _reset_peak()
            try:
                OPEN[target](path)
                outcome = "opened"
            except DnetError as e:
                text = str(e)
                outcome = type(e).__name__ if "\n" not in text and text else f"BUG multi-line {type(e).__name__}"
            except Exception as e:  # noqa: BLE001 (what the fuzzer is looking for)
                outcome = f"BUG {type(e).__name__}"
                report.bugs.append((name, i, f"{type(e).__name__}: {str(e)[:300]}"))
                if save_bugs is not None:
                    save_bugs.mkdir(parents=True, exist_ok=True)
                    (save_bugs / f"{target}-{i}{SUFFIX[target]}").write_bytes(data)
            added = max(0, _status_kb("VmHWM") * 1024 - before)
            report.process_peak_bytes = max(report.process_peak_bytes, before + added)
            if added > report.peak_bytes:
                report.peak_bytes, report.peak_case_size, report.peak_case = added, len(data), i
            report.worst_excess = max(report.worst_excess, (added - FIXED_OVERHEAD) / max(len(data), 1))
            report.outcomes[outcome] += 1
            report.cases += 1
            if progress and (i + 1) % 1000 == 0:
                print(json.dumps({"done": i + 1, **report.to_dict()}), file=sys.stderr, flush=True)
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(SEEDS))
    parser.add_argument("--cases", type=int, default=int(os.environ.get("DNET_FUZZ_CASES", "300")))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-bugs", type=Path, default=None, help="write each case that found a bug here")
    args = parser.parse_args(argv)
    report = run(args.target, args.cases, args.seed, save_bugs=args.save_bugs, progress=True)
    print(json.dumps(report.to_dict(), indent=1))
    for name, i, text in report.bugs[:20]:
        print(f"bug: case {i} (from {name}): {text}")
    return 1 if report.bugs else 0


if __name__ == "__main__":
    raise SystemExit(main())
