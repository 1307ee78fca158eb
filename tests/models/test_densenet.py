import copy
import json

import pytest
import torch

import dnet
from dnet.core.errors import ConfigError, UnknownModelError
from dnet.models import DenseNetConfig, build_model, zoo
from dnet.models.summary import count_params, summarize
from tests.helpers.shared import shared_fixture

TINY = DenseNetConfig(block_config=(2, 3), growth_rate=4, bottleneck=True, init_features=8, num_classes=5)
TINY_BASIC = DenseNetConfig(block_config=(3, 2), growth_rate=4, bottleneck=False, compression=1.0, init_features=6,
                            num_classes=5, drop_rate=0.0)


def _round_half_up_m(n: int) -> str:
    from decimal import ROUND_HALF_UP, Decimal

    return f"{Decimal(n) / Decimal(10**6):.1f}".replace(
        f"{Decimal(n) / Decimal(10**6):.1f}", str((Decimal(n) / Decimal(10**6)).quantize(Decimal('0.1'), ROUND_HALF_UP))
    ) + "M"


@pytest.mark.parametrize("name", [n for n in zoo.names() if zoo.get(n).dataset == "cifar"])
def test_cifar_parameter_count_rounds_to_published(name):
    entry = zoo.get(name)
    assert _round_half_up_m(count_params(build_model(name))) == entry.published_params


@pytest.mark.parametrize(
    "name, expected",
    [("densenet121", 7_978_856), ("densenet169", 14_149_480), ("densenet201", 20_013_928), ("densenet161", 28_681_000)],
)
def test_imagenet_parameter_count_is_exact(name, expected):
    assert count_params(build_model(name)) == expected


def test_exact_cifar_counts():
    # Exact values, so a change to the architecture shows up even when the rounding would hide it.
    assert count_params(build_model("densenet-bc-l100-k12")) == 769_162
    assert count_params(build_model("densenet-l40-k12")) == 1_019_722


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201", "densenet161"])
def test_imagenet_state_dict_matches_torchvision_keys_and_shapes(name):
    ref = json.loads(shared_fixture("torchvision", "imagenet_state_dict_keys.json").read_text())[name]
    ours = [[k, list(v.shape)] for k, v in build_model(name).state_dict().items()]
    assert ours == ref["state_dict"]


def test_densenet121_macs_match_timm():
    s = summarize(build_model("densenet121"), 224)
    assert round(s.macs / 1e9, 2) == 2.87
    assert s.conv_macs == 2_834_161_664


def test_forward_shapes_for_both_stems():
    m = build_model(TINY).eval()
    assert m(torch.randn(3, 3, 32, 32)).shape == (3, 5)
    im = build_model(DenseNetConfig(block_config=(1, 1), growth_rate=4, init_features=8, stem="imagenet", num_classes=7)).eval()
    assert im(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_lua_initialisation():
    torch.manual_seed(0)
    m = build_model("densenet-bc-l100-k12")
    conv = m.features.denseblock1.denselayer1.conv2  # 3x3, 12 out: std sqrt(2/(9*12))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 12)) ** 0.5, rel=0.05)
    assert torch.all(m.features.norm5.weight == 1) and torch.all(m.features.norm5.bias == 0)
    assert torch.all(m.classifier.bias == 0)


def test_dropout_follows_every_conv_but_the_first():
    cfg = DenseNetConfig(block_config=(1, 1), growth_rate=4, init_features=8, drop_rate=0.5, num_classes=3)
    m = build_model(cfg).train()
    calls = []
    orig = torch.nn.functional.dropout

    def spy(x, p=0.5, training=True, inplace=False):
        calls.append(p)
        return orig(x, p, training, inplace)

    torch.nn.functional.dropout = spy
    try:
        m(torch.randn(2, 3, 16, 16))
    finally:
        torch.nn.functional.dropout = orig
    # two convs per BC layer x 2 layers + the transition's conv; nn.Dropout in the transition calls F.dropout too
    assert len(calls) == 5 and set(calls) == {0.5}


def test_conv_bias_option():
    cfg = DenseNetConfig(block_config=(1,), growth_rate=4, init_features=8, conv_bias=True)
    keys = build_model(cfg).state_dict().keys()
    assert "features.conv0.bias" in keys and "features.denseblock1.denselayer1.conv2.bias" in keys


TINY_DROPOUT = DenseNetConfig(block_config=(2, 2, 1), growth_rate=4, init_features=8, num_classes=5, drop_rate=0.2)


@pytest.mark.parametrize("cfg", [TINY, TINY_BASIC, TINY_DROPOUT])
def test_memory_efficient_equals_standard(cfg):
    torch.manual_seed(1)
    std = build_model(cfg).train()
    eff = copy.deepcopy(std)
    eff.set_memory_efficient(True)
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(2)
    y1 = std(x)
    torch.manual_seed(2)  # same dropout masks: the recomputation replays the RNG state of the forward pass
    y2 = eff(x)
    assert (y1 - y2).abs().max().item() <= 1e-6
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n, p1), p2 in zip(std.named_parameters(), eff.parameters(), strict=False):
        assert (p1.grad - p2.grad).abs().max().item() <= 1e-5, n
    # BN running statistics updated once per step in both modes
    for (n, b1), b2 in zip(std.named_buffers(), eff.buffers(), strict=False):
        assert torch.allclose(b1.float(), b2.float(), atol=1e-6), n


def test_memory_efficient_flag_from_create_model():
    assert build_model(TINY, memory_efficient=True).memory_efficient
    assert not build_model(TINY).memory_efficient


def test_num_classes_override():
    assert build_model("densenet121", num_classes=10).classifier.out_features == 10


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(depth=41, growth_rate=12, bottleneck=False), "depth"),
        (dict(depth=40, growth_rate=0, bottleneck=True), "growth_rate"),
        (dict(depth=100, growth_rate=12, bottleneck=True, compression=1.5), "compression"),
        (dict(depth=100, growth_rate=12, bottleneck=True, compression=0.0), "compression"),
        (dict(depth=100, growth_rate=12, bottleneck=True, compression=1e-3), "compression"),  # ⌊216·θ⌋ = 0
    ],
)
def test_impossible_configuration_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        DenseNetConfig.from_depth(**kwargs)


def test_depth_rule_message():
    with pytest.raises(ConfigError) as e:
        DenseNetConfig.from_depth(99, 12, bottleneck=True)
    assert str(e.value) == "depth: DenseNet-BC needs depth = 6·n + 4 with n ≥ 1 (e.g. 40), got 99"


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownModelError) as e:
        zoo.get("densenet12")
    assert str(e.value) == "unknown model 'densenet12'; closest: densenet121, densenet264, densenet232"


def test_zoo_depth_matches_name():
    # 121/169/201/161 count the classifier too; the tech report's 264 and 232 count convolutions only.
    for name in zoo.names():
        entry = zoo.get(name)
        if "-l" in name:
            assert f"-l{entry.config.depth}-" in name
        elif name in ("densenet264", "densenet232", "densenet-cosine264-k32", "densenet-cosine264-k48"):
            assert str(entry.convolutions) in name and entry.config.depth == entry.convolutions + 1
        elif name[len("densenet"):].isdigit():
            assert entry.config.depth == int(name[len("densenet"):])


@pytest.mark.parametrize(("name", "blocks", "k", "stem", "params", "convolutions"), [
    ("densenet264", (6, 12, 64, 48), 32, 64, 33_337_704, 264),
    ("densenet232", (6, 12, 48, 48), 48, 96, 55_570_984, 232),
    ("densenet-cosine264-k32", (6, 12, 64, 48), 32, 64, 33_337_704, 264),
    ("densenet-cosine264-k48", (6, 12, 64, 48), 48, 96, 72_686_632, 264),
])
def test_tech_report_model_has_exact_blocks_parameters_and_convolutions(name, blocks, k, stem, params, convolutions):
    entry = zoo.get(name)
    model = build_model(name)
    cfg = model.config
    assert (cfg.block_config, cfg.growth_rate, cfg.init_features) == (blocks, k, stem)
    assert count_params(model) == params
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == convolutions == entry.convolutions
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 1
    assert "not confirmed" not in entry.note


def test_cosine264_k48_matches_the_abstracts_73m_and_carries_both_published_errors():
    entry = zoo.get("densenet-cosine264-k48")
    assert round(count_params(build_model(entry.name)) / 1e6) == 73 and entry.published_params == "73M"
    assert [(p.error, p.source) for p in entry.published_for("imagenet", preprocess="torch7")] == [
        (20.4, "REPO-TR"), (20.26, "MEM-ABS")]


def test_every_published_number_names_a_source_and_its_kind():
    from dnet.models.published import SOURCES

    numbers = [p for name in zoo.names() for p in zoo.get(name).published]
    assert len(numbers) == 66 + 2 and all(p.source in SOURCES and p.citation == SOURCES[p.source] for p in numbers)
    table3 = {(name, p.metric, p.crops): p.error for name in zoo.names() for p in zoo.get(name).published
              if p.source == "CVPR17-T3"}
    assert table3 == {
        ("densenet121", "top1", 1): 25.02, ("densenet121", "top1", 10): 23.61,
        ("densenet121", "top5", 1): 7.71, ("densenet121", "top5", 10): 6.66,
        ("densenet169", "top1", 1): 23.80, ("densenet169", "top1", 10): 22.08,
        ("densenet169", "top5", 1): 6.85, ("densenet169", "top5", 10): 5.92,
        ("densenet201", "top1", 1): 22.58, ("densenet201", "top1", 10): 21.46,
        ("densenet201", "top5", 1): 6.34, ("densenet201", "top5", 10): 5.54,
        ("densenet264", "top1", 1): 22.15, ("densenet264", "top1", 10): 20.80,
        ("densenet264", "top5", 1): 6.12, ("densenet264", "top5", 10): 5.29,
    }


def test_config_round_trip():
    cfg = zoo.get("densenet161").config
    assert DenseNetConfig.from_dict(cfg.to_dict()) == cfg
    assert dnet.zoo.find(cfg).name == "densenet161"
