"""dnet.converters.pipeline.convert: the chain, the files it keeps, and what it refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from dnet import engines
from dnet.converters.int8.calibration import CalibrationSet
from dnet.converters.int8.options import Int8Options
from dnet.converters.pipeline import ConvertOptions, convert, names_for
from dnet.converters.tensorrt import BuildOptions
from dnet.core.artifact import onnxfile
from dnet.core.errors import DnetError, NotInstalledError, UsageError
from dnet.core.similarity import cosine, rel_l2
from dnet.engines.onnxruntime import run as ort_run
from tests.helpers.images import locked_folder, photo_tiles, write_images
from tests.helpers.models import fast_export, tiny_checkpoint, tiny_onnx
from tests.helpers.shared import shared_fixture


@pytest.fixture
def fast(monkeypatch):
    fast_export(monkeypatch)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("calib"), photo_tiles(size=40, per_photo=3))


def test_names_keep_intermediates_beside_the_output(tmp_path):
    n = names_for(tmp_path / "densenet121.int8.onnx")
    assert n["fp32"] == tmp_path / "densenet121.onnx" and n["int8"] == tmp_path / "densenet121.int8.onnx"
    assert names_for(tmp_path / "densenet121.plan")["fp16"] == tmp_path / "densenet121.fp16.onnx"
    assert n["calib_cache"] == tmp_path / "densenet121.calib.json"


def test_pth_to_int8_writes_fp32_cache_and_int8_in_order(tmp_path, fast, calib_dir):
    src = tiny_checkpoint(tmp_path)
    out = tmp_path / "tiny.int8.onnx"
    written = convert(src, src_format="pth", target="onnx-int8", out=out,
                      int8=Int8Options(calib=CalibrationSet(folder=calib_dir, count=12)))
    assert written == [tmp_path / "tiny.onnx", tmp_path / "tiny.calib.json", out]
    meta = onnxfile.read_meta(onnxfile.read_model(out))
    assert meta.precision == "int8" and meta.source == "tiny.pth" and meta.calibration["images"] == 12
    assert meta.calibration["data"] == str(calib_dir)
    with engines.open(out) as eng:
        assert eng(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 5)


def test_int8_output_named_like_the_fp32_one_does_not_overwrite_it(tmp_path, fast, calib_dir):
    src = tiny_checkpoint(tmp_path)
    written = convert(src, src_format="pth", target="onnx-int8", out=tmp_path / "tiny.onnx",
                      int8=Int8Options(calib=CalibrationSet(folder=calib_dir, count=8)))
    assert written[0] == tmp_path / "tiny.fp32.onnx" and written[-1] == tmp_path / "tiny.onnx"
    assert onnxfile.read_meta(onnxfile.read_model(written[-1])).precision == "int8"


def test_pth_to_fp16_and_to_pth(tmp_path, fast, calib_dir):
    src = tiny_checkpoint(tmp_path)
    written = convert(src, src_format="pth", target="onnx-fp16", out=tmp_path / "t.fp16.onnx",
                      int8=Int8Options(calib=CalibrationSet(folder=calib_dir, count=8)))
    assert [p.name for p in written] == ["t.onnx", "t.fp16.onnx"]
    (pth,) = convert(src, src_format="pth", target="pth", out=tmp_path / "copy.pth")
    import dnet

    assert dnet.load(pth).meta == dnet.load(src).meta


def test_torchvision_state_dict_target(tmp_path):
    import torch

    import dnet
    from dnet.core.errors import ConfigError
    from dnet.formats.checkpoint import save_checkpoint
    from dnet.models import DenseNetConfig, build_model

    cfg = DenseNetConfig(block_config=(2, 2), growth_rate=4, init_features=8, stem="imagenet", num_classes=5)
    model = build_model(cfg).eval()
    src = save_checkpoint(tmp_path / "in.pth", model)
    (out,) = convert(src, src_format="pth", target="torchvision", out=tmp_path / "tv.pth")
    sd = torch.load(out, weights_only=True)
    assert list(sd) == list(model.state_dict())  # plain torchvision keys, no dnet wrapper
    back = dnet.load(out)  # shapes alone say what it is
    assert back.config == cfg
    # a CIFAR-stem model has no torchvision form: refused, nothing written
    with pytest.raises(ConfigError, match="cifar stem"):
        convert(tiny_checkpoint(tmp_path), src_format="pth", target="torchvision", out=tmp_path / "tv2.pth")
    assert not (tmp_path / "tv2.pth").exists()


def test_trt_without_tensorrt_keeps_the_tensorrt_layout_onnx_beside_the_cpu_file_and_says_where(tmp_path, fast,
                                                                                                calib_dir):
    src = tiny_checkpoint(tmp_path)
    int8 = Int8Options(calib=CalibrationSet(folder=calib_dir, count=8))
    cpu = convert(src, src_format="pth", target="onnx-int8", out=tmp_path / "tiny.int8.onnx", int8=int8)[-1]
    cpu_bytes = cpu.read_bytes()
    kept: list = []
    with pytest.raises(NotInstalledError, match=r"the INT8 ONNX is at .*tiny\.int8-trt\.onnx"):
        convert(src, src_format="pth", target="trt", out=tmp_path / "tiny.plan", precision="int8", int8=int8,
                kept=kept)
    trt = tmp_path / "tiny.int8-trt.onnx"
    assert kept == [tmp_path / "tiny.onnx", tmp_path / "tiny.calib.json", trt]
    assert cpu.read_bytes() == cpu_bytes  # the CPU file of the earlier run is not replaced
    metas = [onnxfile.read_meta(onnxfile.read_model(p)) for p in (cpu, trt)]
    assert [m.int8_target for m in metas] == ["cpu", "tensorrt"]
    assert not (tmp_path / "tiny.plan").exists()


def test_a_non_dnet_onnx_says_which_facts_it_lacks(tmp_path, calib_dir):
    proto = onnx.load(str(tiny_onnx(tmp_path)))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with pytest.raises(UsageError, match=r"^foreign\.onnx is not a dnet export \(no dnet metadata\): it does not say "
                                         r"how calibration images are preprocessed; name a preprocessing$") as e:
        convert(foreign, src_format="onnx", target="onnx-int8", out=tmp_path / "f.int8.onnx",
                int8=Int8Options(calib=CalibrationSet(folder=calib_dir, count=8)))
    assert e.value.option == "preprocess"
    assert not (tmp_path / "f.int8.onnx").exists()
    written = convert(foreign, src_format="onnx", target="onnx-int8", out=tmp_path / "f.int8.onnx",
                      int8=Int8Options(calib=CalibrationSet(folder=calib_dir, count=8)), preprocess="cifar10")
    assert written[-1].is_file() and onnxfile.read_meta(onnxfile.read_model(written[-1])) is None


def test_unwritable_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    src = tiny_checkpoint(tmp_path)
    locked = locked_folder(tmp_path, monkeypatch)
    try:
        with pytest.raises(DnetError, match="cannot write to output folder"):
            convert(src, src_format="pth", target="onnx", out=locked / "m.onnx")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_a_missing_output_folder_is_created_and_removed_again_when_the_request_is_refused(tmp_path, fast):
    src = tiny_checkpoint(tmp_path)
    written = convert(src, src_format="pth", target="onnx", out=tmp_path / "new" / "sub" / "m.onnx")
    assert written == [tmp_path / "new" / "sub" / "m.onnx"] and written[0].is_file()
    with pytest.raises(UsageError, match=r"^a t7 source is a \.t7 file, got tiny\.pth$"):
        convert(src, src_format="t7", target="onnx", out=tmp_path / "other" / "deeper" / "m.onnx")
    assert not (tmp_path / "other").exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DnetError, match="does not exist"):
        convert(src, src_format="pth", target="onnx", out=tmp_path / "a-file" / "m.onnx")


def test_wrong_suffix_is_refused(tmp_path):
    src = tiny_checkpoint(tmp_path)
    with pytest.raises(UsageError, match=r"^a t7 source is a \.t7 file, got tiny\.pth$") as e:
        convert(src, src_format="t7", target="onnx", out=tmp_path / "m.onnx")
    assert e.value.option == "src_format"


T7 = ["cifar10-densenet-bc-l40-k12", "cifar10-densenet-bc-l40-k12-optmem4", "cifar100-densenet-l40-k12-dropout"]


# One fixture in the fast suite, all three in the slow one (about 25 s each: an FP32 export, FP16 and INT8 with checks).
@pytest.mark.parametrize("name", [T7[0], *(pytest.param(n, marks=pytest.mark.slow) for n in T7[1:])])
def test_t7_fixture_converts_to_fp16_and_int8_that_run_on_cpu(tmp_path, name):
    from dnet.data.transforms import preprocess_array

    src = shared_fixture("t7", f"{name}.t7")
    calib = write_images(tmp_path / "calib", photo_tiles(size=32, per_photo=4))
    fp16 = convert(src, src_format="t7", target="onnx-fp16", out=tmp_path / f"{name}.fp16.onnx",
                   int8=Int8Options(calib=CalibrationSet(folder=calib, count=16)))
    int8 = convert(src, src_format="t7", target="onnx-int8", out=tmp_path / f"{name}.int8.onnx",
                   int8=Int8Options(calib=CalibrationSet(folder=calib, count=16)))
    fp32 = tmp_path / f"{name}.onnx"
    meta = onnxfile.read_meta(onnxfile.read_model(fp32))
    x = preprocess_array(photo_tiles(size=32, per_photo=3, offset=2), meta.preprocess)
    ref = ort_run(fp32, x)
    h, q = ort_run(fp16[-1], x), ort_run(int8[-1], x)
    assert rel_l2(ref, h) <= 1e-3 and np.array_equal(ref.argmax(1), h.argmax(1))
    assert cosine(ref, q) >= 0.99


def test_the_output_may_not_be_the_source(tmp_path):
    src = tiny_onnx(tmp_path)
    before = src.read_bytes()
    with pytest.raises(UsageError, match="is the source file; dnet never overwrites its input"):
        convert(src, src_format="onnx", target="onnx-fp16", out=src)
    assert src.read_bytes() == before


def test_calibrating_on_an_in_memory_data_set_keeps_digits_accuracy(tmp_path):
    from dnet.data.datasets import open_dataset
    from dnet.formats.checkpoint import save_checkpoint
    from tests.helpers.models import digits_model

    model, x, labels = digits_model()
    src = save_checkpoint(tmp_path / "digits.pth", model, model.meta)
    train = open_dataset("digits", split="train")
    written = convert(src, src_format="pth", target="onnx-int8", out=tmp_path / "digits.int8.onnx",
                      int8=Int8Options(calib=CalibrationSet(images=train.images, count=128, name="digits/train")))
    meta = onnxfile.read_meta(onnxfile.read_model(written[-1]))
    assert meta.calibration["data"] == "digits/train" and meta.calibration["images"] == 128
    # the file's own arithmetic (Q/DQ unfused): ONNX Runtime's fused x86 int8 kernels saturate on CPUs without VNNI
    acc32 = np.mean(ort_run(written[0], x).argmax(1) == labels)
    acc8 = np.mean(ort_run(written[-1], x, fused=False).argmax(1) == labels)
    assert acc32 > 0.9 and acc8 >= acc32 - 0.02  # 360 real test images


def test_the_tensorrt_build_options_are_one_buildoptions_field():
    assert ConvertOptions().build == BuildOptions() and ConvertOptions().build.profile == (1, 8, 32)
    opts = ConvertOptions(build=BuildOptions(profile=(2, 4, 16), workspace_mib=64, hardware_compat="ampere+"))
    assert (opts.build.profile, opts.build.workspace_mib, opts.build.hardware_compat) == ((2, 4, 16), 64, "ampere+")
    with pytest.raises(UsageError) as e:
        ConvertOptions(build={"profile": (1, 8, 32)})
    assert str(e.value) == "build options must be a BuildOptions, got dict" and e.value.option == "build"
    with pytest.raises(TypeError, match="profile"):
        ConvertOptions(profile=(1, 8, 32))  # no longer restated beside it
