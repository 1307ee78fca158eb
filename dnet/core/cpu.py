"""What the CPU can do, read from /proc/cpuinfo: the instruction sets that decide int8 and bf16 speed and arithmetic."""

from __future__ import annotations

import functools
from pathlib import Path

# The flags that change what an INT8 or BF16 file costs, or computes, on x86: without VNNI, ONNX Runtime multiplies
# u8×s8 pairs into a saturating int16 (vpmaddubsw); with it, into int32 (vpdpbusd).
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's flags (empty where /proc/cpuinfo is absent or unreadable: not Linux, not x86)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_vnni() -> bool:
    """Whether the CPU has an int8 dot product into int32 (AVX-512 VNNI or AVX-VNNI)."""
    return bool(flags() & {"avx512_vnni", "avx_vnni"})


def model_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, for benchmark tables ("unknown CPU" where /proc/cpuinfo does not say)."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown CPU"


def int8_flags_text() -> str:
    """The INT8-relevant flags this CPU has, for a table heading: "avx2 avx512_vnni …" or "none of …"."""
    have = [f for f in INT8_FLAGS if f in flags()]
    return " ".join(have) if have else f"none of {' '.join(INT8_FLAGS)}"
