"""The TensorRT build without TensorRT: options, the refusals, and the build flow through a stand-in ``tensorrt``.

The stand-in (tests/helpers/tensorrt_standins.py) records what the builder is asked to do; that the real module has
every name used is test_tensorrt_api.py's job, that it builds is test_tensorrt_gpu.py's.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest

import dnet.converters.tensorrt as ct
from dnet.converters.tensorrt import BuildOptions, build_plan
from dnet.core.artifact.layers import read_layers
from dnet.core.artifact.sidecar import read_sidecar
from dnet.core.atomic import sha256_file
from dnet.core.errors import EngineError, FileFormatError, NotInstalledError, UsageError
from tests.helpers.tensorrt_standins import ENGINE_INFO, ENGINE_LAYERS, INSTALL, META, fake_tensorrt, stub_onnx

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------------------
# Options.


def test_build_options_defaults_and_refusals():
    options = BuildOptions()
    assert (options.profile, options.workspace_mib, options.opt_level, options.timing_cache) == ((1, 8, 32), None, None, None)
    assert (options.version_compatible, options.hardware_compat, options.tf32) == (False, "none", False)
    with pytest.raises(UsageError, match=r"^hardware compatibility 'turing' is not one of: none, ampere\+, same-cc$"):
        BuildOptions(hardware_compat="turing")
    with pytest.raises(UsageError, match=r"^builder optimization level must be 0\.\.5, got 6$"):
        BuildOptions(opt_level=6)
    with pytest.raises(UsageError, match=r"^workspace must be at least 1 MiB, got 0$"):
        BuildOptions(workspace_mib=0)
    with pytest.raises(UsageError, match=r"^profile 4,2,8 must satisfy"):
        BuildOptions(profile=(4, 2, 8))



@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError



def test_build_without_tensorrt_says_so_and_keeps_the_onnx(tmp_path, no_tensorrt):
    onnx_path = stub_onnx(tmp_path / "m.int8.onnx")
    before = sha256_file(onnx_path)
    with pytest.raises(NotInstalledError) as e:
        build_plan(onnx_path, tmp_path / "m.plan")
    assert str(e.value) == f"{INSTALL}; the INT8 ONNX is at {onnx_path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx"]
    assert sha256_file(onnx_path) == before


def test_build_without_a_gpu_says_so(tmp_path, monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    onnx_path = stub_onnx(tmp_path / "m.onnx", dataclasses.replace(META, precision="fp16"))
    with pytest.raises(NotInstalledError) as e:
        build_plan(onnx_path, tmp_path / "m.plan")
    assert str(e.value) == f"no CUDA GPU found (torch.cuda.is_available() is False); the FP16 ONNX is at {onnx_path}"
    assert not (tmp_path / "m.plan").exists()


def test_build_refuses_a_file_that_is_not_onnx(tmp_path, no_tensorrt):
    (tmp_path / "m.onnx").write_bytes(b"\xff\xfe not protobuf" * 10)
    with pytest.raises(FileFormatError, match=r"m\.onnx: not a readable ONNX file"):
        build_plan(tmp_path / "m.onnx", tmp_path / "m.plan")
    with pytest.raises(FileFormatError, match=r"absent\.onnx: no such ONNX file"):
        build_plan(tmp_path / "absent.onnx", tmp_path / "m.plan")



# ---------------------------------------------------------------------------------------------------------------
# The build flow, through a stand-in tensorrt module that records what it is asked (with each version's real enums).


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(ct, "cuda_device", lambda what: ("NVIDIA A10", (8, 6)))


@pytest.mark.parametrize("version, flags", [("10.9.0.34", 1 << 1), ("11.4.0.106", 0)])
def test_build_asks_tensorrt_for_a_strongly_typed_network_with_every_option(tmp_path, monkeypatch, gpu, version, flags):
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_path = stub_onnx(tmp_path / "m.int8.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"earlier")
    options = BuildOptions(profile=(2, 4, 16), workspace_mib=64, opt_level=2, timing_cache=cache,
                           version_compatible=True, hardware_compat="ampere+")
    plan = build_plan(onnx_path, tmp_path / "m.plan", options)

    assert plan == tmp_path / "m.plan" and plan.read_bytes().startswith(b"PLAN:")
    # 10.x: 1 << STRONGLY_TYPED (= 2; 1 would be EXPLICIT_BATCH, a weakly typed network); 11.x: always strongly typed
    assert trt.calls["network_flags"] == flags
    assert trt.calls["parsed"] == str(onnx_path)
    assert trt.calls["pool"] == (trt.MemoryPoolType.WORKSPACE, 64 << 20)
    assert trt.calls["builder_optimization_level"] == 2
    assert trt.calls["flags"] == [trt.BuilderFlag.VERSION_COMPATIBLE]
    assert trt.calls["cleared"] == [trt.BuilderFlag.TF32]  # an FP32 layer computes in FP32 unless tf32=True
    assert trt.calls["hardware_compatibility_level"] == trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert trt.calls["profiling_verbosity"] == trt.ProfilingVerbosity.DETAILED
    assert trt.calls["profile"] == ("input", (2, 3, 4, 4), (4, 3, 4, 4), (16, 3, 4, 4))
    assert trt.calls["cache_in"] == [b"earlier"] and trt.calls["cache_ignore_mismatch"] is False
    assert cache.read_bytes() == b"earlier+tuned"

    side = read_sidecar(plan)
    assert side.plan_sha256 == sha256_file(plan) and side.onnx_sha256 == sha256_file(onnx_path)
    assert (side.tensorrt_version, side.gpu_name, side.compute_capability) == (version, "NVIDIA A10", (8, 6))
    assert side.profile == {"min": [2, 3, 4, 4], "opt": [4, 3, 4, 4], "max": [16, 3, 4, 4]}
    assert (side.onnx, side.version_compatible, side.hardware_compat) == ("m.int8.onnx", True, "ampere+")
    assert side.meta == META and side.meta.calibration["images"] == 64
    assert side.options["workspace_mib"] == 64 and side.options["timing_cache"] == str(cache)
    assert trt.seen["host_code"] == ("engine_host_code_allowed", True)  # the inspection run deserializes it
    assert json.loads((tmp_path / "m.plan.layers.json").read_text()) == ENGINE_INFO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.plan", "m.plan.json", "m.plan.layers.json",
                                                          "timing.cache"]


def test_10x_network_flag_is_strongly_typed_not_explicit_batch(tmp_path, monkeypatch, gpu):
    """Defect 5: with 10.x's real values, create_network(1) would be EXPLICIT_BATCH, a weakly typed network."""
    trt = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    flags = trt.calls["network_flags"]
    assert flags & (1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert not flags & (1 << trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert flags == 2


def test_build_defaults_set_no_optional_option_and_start_a_fresh_timing_cache(tmp_path, monkeypatch, gpu):
    trt = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert not {"pool", "builder_optimization_level", "flags", "hardware_compatibility_level"} & set(trt.calls)
    assert trt.calls["cleared"] == [trt.BuilderFlag.TF32]
    assert trt.calls["cache_in"] == [b""]
    assert trt.calls["profile"] == ("input", (1, 3, 4, 4), (8, 3, 4, 4), (32, 3, 4, 4))
    assert read_sidecar(plan).hardware_compat == "none"
    assert trt.seen["host_code"] is None


def test_build_reports_every_parser_error_with_node_names(tmp_path, monkeypatch, gpu):
    errors = [(3, "conv_3", "Conv", "unsupported auto_pad"), (7, "", "", "invalid weights type")]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", parse_errors=errors))
    with pytest.raises(EngineError) as e:
        build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert str(e.value) == (
        "TensorRT cannot parse m.onnx (2 errors): node conv_3 (Conv): unsupported auto_pad; node #7: invalid weights type"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_parse_that_returns_true_with_errors_is_refused(tmp_path, monkeypatch, gpu):
    errors = [(4, "node_cat_2", "Concat", "int8 inputs with different scales")]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", parse_errors=errors, parse_returns=True))
    with pytest.raises(EngineError) as e:
        build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert str(e.value) == ("TensorRT parsed, but reported errors in, m.onnx (1 error): node node_cat_2 (Concat): "
                            "int8 inputs with different scales")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("driver, built_for, situation", [
    ("12.4", "13", "the NVIDIA driver supports CUDA 12.4, TensorRT's wheels are built for CUDA 13 (tensorrt-cu13): "
                   "install tensorrt-cu12 or a driver for CUDA 13"),
    (None, "12", "no NVIDIA driver found (libcuda.so.1 did not load), TensorRT's wheels are built for CUDA 12 "
                 "(tensorrt-cu12)"),
    ("13.0", None, "the NVIDIA driver supports CUDA 13.0"),
])
def test_a_builder_that_cannot_initialise_cuda_names_the_driver_and_cuda(tmp_path, monkeypatch, gpu, driver,
                                                                         built_for, situation):
    import dnet.engines.tensorrt_runtime as gpu_module

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0.106", cuda_init_fails=True))
    monkeypatch.setattr(gpu_module, "driver_cuda", lambda: driver)
    monkeypatch.setattr(gpu_module, "tensorrt_cuda", lambda: built_for)
    onnx_path = stub_onnx(tmp_path / "m.int8.onnx")
    with pytest.raises(NotInstalledError) as e:
        build_plan(onnx_path, tmp_path / "m.plan")
    assert str(e.value) == (f"TensorRT 11.4.0.106 could not initialise CUDA (trt.Builder returned nullptr): {situation}; "
                            f"the INT8 ONNX is at {onnx_path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx"]


def test_another_type_error_of_the_builder_is_not_taken_for_cuda():
    from dnet.engines.tensorrt_runtime import create

    def builder(logger):
        raise TypeError("__init__(): incompatible constructor arguments")

    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        create(types.SimpleNamespace(__version__="10.16.1.11"), builder, None, "")


def test_tf32_is_left_on_when_asked(tmp_path, monkeypatch, gpu):
    trt = fake_tensorrt("11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", BuildOptions(tf32=True))
    assert "cleared" not in trt.calls and read_sidecar(tmp_path / "m.plan").options["tf32"] is True


def test_failed_build_leaves_no_plan(tmp_path, monkeypatch, gpu):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", build_fails=True))
    with pytest.raises(EngineError, match=r"^TensorRT could not build an engine from m\.onnx"):
        build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_ampere_plus_needs_an_ampere_gpu_to_build(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11"))
    monkeypatch.setattr(ct, "cuda_device", lambda what: ("Tesla T4", (7, 5)))
    with pytest.raises(UsageError, match=r"ampere\+ needs an Ampere or newer GPU to build on; this Tesla T4 is compute capability 7\.5$"):
        build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", BuildOptions(hardware_compat="ampere+"))


# ---------------------------------------------------------------------------------------------------------------
# Defect 2: the timing cache's return values; the sidecar before the cache.


@pytest.mark.parametrize("content, why", [(b"other-gpu:sm86:10.9", "set_timing_cache returns False"),
                                          (b"corrupt\x00\x01", "create_timing_cache returns None")])
def test_a_timing_cache_tensorrt_refuses_is_replaced_by_an_empty_one_with_a_warning(tmp_path, monkeypatch, gpu, capsys,
                                                                                     content, why):
    trt = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(content)
    plan = build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", BuildOptions(timing_cache=cache))
    assert trt.calls["cache_in"] == [content, b""], why  # the file's cache was tried, then an empty one
    assert cache.read_bytes() == b"+tuned"  # the new cache replaced the unusable one
    assert read_sidecar(plan).plan_sha256 == sha256_file(plan)
    assert capsys.readouterr().err == (
        f"dnet: warning: timing cache {cache} is not one TensorRT 10.16.1.11 can use on this GPU (corrupt, or made on "
        "another GPU or TensorRT version); building with an empty cache, which will replace it\n"
    )


def test_a_timing_cache_that_cannot_be_saved_never_leaves_a_plan_without_its_sidecar(tmp_path, monkeypatch, gpu, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11"))
    cache = tmp_path / "no-such-folder" / "timing.cache"
    plan = build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", BuildOptions(timing_cache=cache))
    assert read_sidecar(plan).plan_sha256 == sha256_file(plan)
    assert capsys.readouterr().err == (
        f"dnet: warning: the timing cache was not saved to {cache} (output folder {cache.parent} does not exist); "
        "the plan and its sidecar are written\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# Defect 6: one logger; --verbose; the progress line; the layer information.


def test_one_tensorrt_logger_serves_every_build_and_engine(tmp_path, monkeypatch, gpu):
    import torch

    import dnet.engines.tensorrt as et
    from dnet import engines

    trt = fake_tensorrt("10.16.1.11", engine_profile=((1, 3, 4, 4), (8, 3, 4, 4), (32, 3, 4, 4)))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(et, "cuda_device", lambda what: ("NVIDIA A10", (8, 6)))
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(cuda_stream=0))
    onnx_path = stub_onnx(tmp_path / "m.onnx")
    plans = [build_plan(onnx_path, tmp_path / f"{name}.plan") for name in ("a", "b")]
    for plan in plans:
        engines.open(plan).close()
    assert len(trt.loggers) == 1
    assert [owner for owner, _ in trt.logger_users] == ["Builder", "OnnxParser", "Runtime"] * 2 + ["Runtime"] * 2
    assert all(logger is trt.loggers[0] for _, logger in trt.logger_users)


def test_verbose_sends_tensorrt_s_build_log_and_then_quietens_it_again(tmp_path, monkeypatch, gpu, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0.106"))
    lines = []
    build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "v.plan", verbose=True, log=lines.append)
    assert lines == ["TensorRT verbose: Original: 2 layers", "TensorRT info: Total Activation Memory: 4096 bytes"]
    build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "q.plan")
    assert capsys.readouterr().err == ""  # below WARNING: not shown without --verbose


def test_a_long_build_shows_one_progress_line_and_clears_it(tmp_path, monkeypatch, gpu, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11"))
    build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", progress=True)
    frames = capsys.readouterr().err.split("\r")
    shown = [f.rstrip() for f in frames if f.strip()]
    assert shown == [
        "building: Building engine 0/2",
        "building: Building engine 0/2 > Tactic selection 0/3",
        "building: Building engine 0/2 > Tactic selection 1/3",
        "building: Building engine 0/2 > Tactic selection 2/3",
        "building: Building engine 0/2 > Tactic selection 3/3",
        "building: Building engine 0/2",
        "building: Building engine 1/2",
        "building:",
    ]
    assert frames[-1] == ""  # the line is blanked and the cursor back at its start


def test_build_stores_the_inspector_s_layer_information_beside_the_plan(tmp_path, monkeypatch, gpu):
    trt = fake_tensorrt("10.16.1.11")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert trt.seen["inspected"] == trt.LayerInformationFormat.JSON
    layers = read_layers(plan)
    assert [layer.name for layer in layers] == ENGINE_LAYERS
    assert [layer.precision for layer in layers] == ["fp32", "int8", "int8", "int8", "int8", "fp32", "fp32", "fp32"]


def test_a_plan_the_inspector_cannot_describe_is_still_written_with_its_sidecar(tmp_path, monkeypatch, gpu, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.16.1.11", engine_info=None))
    plan = build_plan(stub_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.plan", "m.plan.json"]
    err = capsys.readouterr().err
    assert err.startswith("dnet: warning: no layer information for m.plan (TensorRT's engine information is not JSON")
    assert read_sidecar(plan).plan_sha256 == sha256_file(plan)


@pytest.mark.parametrize("names, cuda", [(["numpy", "tensorrt_cu13_bindings", "tensorrt-cu13-libs"], "13"),
                                         (["tensorrt-cu12"], "12"), (["tensorrt", "torch"], None)])
def test_the_cuda_of_tensorrt_s_wheels_comes_from_their_distribution_names(monkeypatch, names, cuda):
    from importlib import metadata

    from dnet.engines.tensorrt_runtime import tensorrt_cuda

    monkeypatch.setattr(metadata, "distributions", lambda: [types.SimpleNamespace(metadata={"Name": n}) for n in names])
    assert tensorrt_cuda() == cuda
