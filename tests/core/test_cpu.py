"""dnet.core.cpu: the CPU's flags and model name from /proc/cpuinfo, and nothing invented where it is absent."""

from __future__ import annotations

from dnet.core import cpu

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma f16c
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma f16c avx512_vnni
"""


def test_flags_and_model_name_come_from_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu.flags(str(path)) == frozenset({"fpu", "sse2", "avx2", "fma", "f16c"})
    assert cpu.model_name(str(path)) == "AMD EPYC 7B13"


def test_an_absent_cpuinfo_gives_no_flags_and_an_unknown_cpu(tmp_path):
    assert cpu.flags(str(tmp_path / "absent")) == frozenset()
    assert cpu.model_name(str(tmp_path / "absent")) == "unknown CPU"


def test_vnni_is_either_kind_of_int8_dot_product(monkeypatch):
    for have, expect in (({"avx2"}, False), ({"avx2", "avx_vnni"}, True), ({"avx512f", "avx512_vnni"}, True)):
        monkeypatch.setattr(cpu, "flags", lambda have=have: frozenset(have))
        assert cpu.has_vnni() is expect
        assert cpu.int8_flags_text() == " ".join(f for f in cpu.INT8_FLAGS if f in have)
    monkeypatch.setattr(cpu, "flags", lambda: frozenset())
    assert cpu.int8_flags_text() == "none of " + " ".join(cpu.INT8_FLAGS)
