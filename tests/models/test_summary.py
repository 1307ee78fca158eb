"""The analytic counts of ``dnet.models.summary`` against the counts of built models, for every zoo entry."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dnet.core.errors import ConfigError
from dnet.models import DenseNetConfig, zoo
from dnet.models.densenet import BlurPool, DenseNet
from dnet.models.summary import count_params, param_count, summarize


def measured(config: DenseNetConfig, size: int) -> tuple[int, int, int]:
    """(parameters, all multiply-adds, conv + classifier multiply-adds) of a built model, counted by forward hooks.

    The model lives on the meta device: shapes and element counts are exact, nothing is computed or allocated.
    The blur filter (a buffer, not a parameter) counts one multiply-add per tap per output element, in all
    multiply-adds only, as dnet.models.summary states.
    """
    with torch.device("meta"):
        model = DenseNet(config).eval()
    conv, other = [0], [0]

    def conv_hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            conv[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            conv[0] += m.in_features * m.out_features * out.shape[0]

    def other_hook(m, inp, out):
        if isinstance(m, nn.BatchNorm2d):
            other[0] += 2 * inp[0].numel()
        elif isinstance(m, nn.AvgPool2d):
            other[0] += out.numel() * (m.kernel_size * m.kernel_size + 1)
        elif isinstance(m, BlurPool):
            other[0] += out.numel() * m.filt.shape[-2] * m.filt.shape[-1]

    known = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.AvgPool2d, nn.MaxPool2d, nn.ReLU, nn.Dropout)
    for m in model.modules():
        assert not m._parameters or isinstance(m, known), f"a {type(m).__name__} the analytic count does not know"
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.BatchNorm2d | nn.AvgPool2d | BlurPool):
            m.register_forward_hook(other_hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size, device="meta"))
    return count_params(model), conv[0] + other[0], conv[0]


@pytest.mark.parametrize("name", zoo.names())
def test_analytic_counts_equal_the_built_models_counts(name):
    config = zoo.get(name).config
    size = config.input_size if config.stem == "cifar" else 64  # any size checks the formula; 64 keeps it quick
    params, macs, conv_macs = measured(config, size)
    s = summarize(config, size)
    assert (s.params, s.macs, s.conv_macs) == (params, macs, conv_macs)
    assert param_count(config) == params


@pytest.mark.parametrize("config", [
    DenseNetConfig(block_config=(3, 2), growth_rate=5, bottleneck=False, compression=1.0, init_features=7,
                   num_classes=3, conv_bias=True),
    DenseNetConfig(block_config=(2, 1, 2), growth_rate=4, compression=0.7, init_features=9, num_classes=4, bn_size=3),
    DenseNetConfig(block_config=(1, 2), growth_rate=6, init_features=10, stem="imagenet", num_classes=11),
    DenseNetConfig(block_config=(1, 2), growth_rate=6, init_features=10, stem="imagenet", blur_pool=True,
                   num_classes=11),
    DenseNetConfig(block_config=(2, 1), growth_rate=6, init_features=10, stem="deep", stem_width=5, num_classes=11,
                   conv_bias=True),
    DenseNetConfig(block_config=(2, 1), growth_rate=6, init_features=12, stem="deep", blur_pool=True, num_classes=11),
], ids=["basic-bias", "bc-odd-theta", "imagenet-stem", "imagenet-blur", "deep-stem-bias", "deep-blur"])
@pytest.mark.parametrize("size", [33, 47])
def test_analytic_counts_hold_for_odd_sizes_biases_and_widths(config, size):
    s = summarize(config, size)
    assert (s.params, s.macs, s.conv_macs) == measured(config, size)


def test_densenet121_counts_are_the_published_ones():
    s = summarize(zoo.get("densenet121").config, 224)
    assert s.params == 7_978_856 and s.conv_macs == 2_834_161_664 and round(s.macs / 1e9, 2) == 2.87
    assert [b["spatial"] for b in s.blocks] == [56, 28, 14, 7]


def test_deep_stem_counts_are_timms():
    assert param_count(zoo.get("densenetblur121d").config) == 7_998_088
    assert param_count(zoo.get("densenet264d").config) == 72_736_216


def test_the_blur_filter_is_no_parameter_and_counts_nine_multiply_adds_per_output_element():
    cfg = zoo.get("densenetblur121d").config
    plain = summarize(dataclasses.replace(cfg, blur_pool=False), 224)
    blurred = summarize(cfg, 224)
    assert blurred.params == plain.params and blurred.conv_macs == plain.conv_macs
    assert blurred.macs - plain.macs == 64 * 56 * 56 * 9  # 64 channels, 112×112 blurred to 56×56


def test_class_count_changes_only_the_classifier():
    cfg = zoo.get("densenet121").config
    assert param_count(dataclasses.replace(cfg, num_classes=10)) == 7_978_856 - 1024 * 990 - 990


def test_an_input_too_small_for_the_network_is_refused():
    with pytest.raises(ConfigError, match=r"^input_size: too small for this network") as e:
        summarize(zoo.get("densenet121").config, 16)
    assert e.value.option == "input_size"


def test_models_and_a_huge_info_input_size_do_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from dnet.cli.main import main
        for args in (["models"], ["info", "densenet121", "--input-size", "100000", "--json"]):
            try:
                main(args)
            except SystemExit as e:
                assert e.code == 0, (args, e.code)
        print(sorted(m for m in ("torch", "numpy", "onnx", "onnxruntime") if m in sys.modules), file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[]"
    d = json.loads(done.stdout[done.stdout.index("{"):])
    assert d["input_size"] == 100000 and d["params"] == 7_978_856
    assert d["conv_macs"] == summarize(zoo.get("densenet121").config, 100000).conv_macs > 2.834e9 * 199**2
