"""Published weights by name (dnet.models.hub, dnet pull, --pretrained): the cache, the records, checks, over a server on
127.0.0.1 standing in for the publishers (tests/helpers/httpserver.py). Nothing here contacts the internet."""

from __future__ import annotations

import hashlib
import io
import json
import re

import pytest
import torch
from click.testing import CliRunner

import dnet
from dnet.cli import main
from dnet.core.errors import DownloadError, FileFormatError, UsageError
from dnet.formats.t7.writer import LuaStyle, dumps, lua_densenet
from dnet.models import hub, zoo
from tests.helpers.httpserver import closed_port_url, serve
from tests.helpers.t7_writer import randomized

NAME = "densenet-l40-k12"  # a zoo entry small enough to serve (1.0M parameters); it has no published weights


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    folder = tmp_path / "dnet-home"
    monkeypatch.setenv("DNET_HOME", str(folder))
    return folder


@pytest.fixture(scope="module")
def published():
    """The weights a publisher serves for NAME: a torchvision-style state dict and a Lua .t7 of the same model."""
    model = randomized(dnet.create_model(NAME))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return model, buf.getvalue(), dumps(lua_densenet(model, LuaStyle()))


@pytest.fixture
def server(published, monkeypatch):
    _model, pth, t7 = published
    with serve({"w.pth": pth, "w.t7": t7}) as srv:
        prefix = hashlib.sha256(pth).hexdigest()[:8]
        monkeypatch.setitem(zoo.WEIGHTS, NAME, {
            "torchvision": zoo.WeightsFile("torchvision", srv.url("/w.pth"), f"{NAME}-{prefix}.pth", sha256=prefix,
                                           preprocess="cifar10"),
            "torch7": zoo.WeightsFile("torch7", srv.url("/w.t7"), f"{NAME}.t7", preprocess="cifar10"),
        })
        yield srv


def test_pull_fetches_into_the_cache_checks_and_records(server, home, published):
    got = hub.pull(NAME, "torchvision")
    pth = published[1]
    assert got.path == home / "weights" / "torchvision" / f"{NAME}-{hashlib.sha256(pth).hexdigest()[:8]}.pth"
    assert (got.path.read_bytes(), got.sha256, got.size, got.fetched) == (pth, hashlib.sha256(pth).hexdigest(), len(pth), True)
    record = json.loads(got.path.with_name(got.path.name + ".json").read_text())
    assert record == {"model": NAME, "source": "torchvision", "url": server.url("/w.pth"), "sha256": got.sha256,
                      "size": len(pth), "published_sha256": got.sha256[:8]}
    again = hub.pull(NAME, "torchvision")
    assert (again.fetched, again.sha256, len(server.requests)) == (False, got.sha256, 1)  # no second request


def test_without_a_published_checksum_the_fetched_sha256_is_recorded_and_checked_later(server):
    got = hub.pull(NAME, "torch7")
    assert got.published_sha256 == "" and got.sha256 == hashlib.sha256(got.path.read_bytes()).hexdigest()
    data = got.path.read_bytes()
    got.path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit changed
    with pytest.raises(DownloadError) as e:
        hub.pull(NAME, "torch7")
    digest = hashlib.sha256(got.path.read_bytes()).hexdigest()
    assert str(e.value) == (f"{got.path}: its sha256 {digest} is not the recorded {got.sha256}; delete it to fetch it "
                            "again")


def test_a_file_put_into_the_cache_by_hand_is_checked_against_the_published_sha256(server, home):
    wf = zoo.WEIGHTS[NAME]["torchvision"]
    path = home / "weights" / "torchvision" / wf.filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the published file")
    with pytest.raises(DownloadError, match=rf"its sha256 [0-9a-f]{{64}} is not the published {wf.sha256}"):
        hub.pull(NAME, "torchvision")
    assert server.requests == []


def test_create_model_with_pretrained_weights(server, published):
    model = dnet.create_model(NAME, pretrained="torchvision")
    assert all(torch.equal(v, published[0].state_dict()[k]) for k, v in model.state_dict().items())
    assert (model.meta.model, model.meta.preprocess.name, model.meta.extra["weights"]) == (NAME, "cifar10", "torchvision")
    assert model.meta.extra["url"] == server.url("/w.pth") and not model.training


def test_create_model_reads_the_lua_release_through_the_t7_importer(server, published):
    model = dnet.create_model(NAME, pretrained="torch7", memory_efficient=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - published[0].eval()(x)).abs().max().item() <= 1e-4
    assert model.memory_efficient and model.meta.extra["weights"] == "torch7"


def test_pretrained_true_takes_the_first_published_source_in_preference_order(server):
    assert hub.PREFERENCE == ("torchvision", "timm", "torch7")
    assert dnet.create_model(NAME, pretrained=True).meta.extra["weights"] == "torchvision"


def test_pretrained_weights_of_another_architecture_are_refused(server, monkeypatch):
    monkeypatch.setitem(zoo.WEIGHTS, "densenet-l100-k12", zoo.WEIGHTS[NAME])
    with pytest.raises(FileFormatError, match=r"holds blocks 12-12-12, k=12, 16 initial channels, cifar stem, not the "
                                               r"zoo's densenet-l100-k12 \(blocks 32-32-32"):
        dnet.create_model("densenet-l100-k12", pretrained="torchvision")


@pytest.mark.parametrize("name, source, message", [
    ("densenet264d", None, "no trained weights of densenet264d are published (timm's DenseNet-264 (k=48) with a deep "
                           "stem; timm publishes it untrained (densenet264d.untrained))"),
    ("densenetblur121d", "torchvision", "densenetblur121d has no published torchvision weights; it has: timm"),
    ("densenet121", "imagenet", "weights source must be one of torch7, torchvision, timm, got 'imagenet'"),
])
def test_what_is_not_published_is_one_line(name, source, message):
    with pytest.raises(UsageError) as e:
        hub.pull(name, source)
    assert str(e.value) == message


def test_pretrained_needs_a_zoo_name_and_keeps_its_class_count(server):
    with pytest.raises(UsageError, match="published weights are found by zoo name"):
        dnet.create_model(zoo.get(NAME).config, pretrained="torchvision")
    with pytest.raises(UsageError, match=f"the published {NAME} weights classify 10 classes, not 100"):
        dnet.create_model(NAME, pretrained="torchvision", num_classes=100)


def test_the_cache_is_under_dnet_home_else_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DNET_HOME", str(tmp_path / "h"))
    assert hub.home() == tmp_path / "h"
    monkeypatch.delenv("DNET_HOME")
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.home() == tmp_path / "xdg" / "dnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.home() == tmp_path / "user" / ".cache" / "dnet"


# -- the records -------------------------------------------------------------------------------------------------------


def test_every_imagenet_model_of_the_paper_has_its_published_files_recorded():
    for name in ("densenet121", "densenet169", "densenet201", "densenet161"):
        assert list(zoo.get(name).weights) == ["torch7", "torchvision", "timm"], name
    for name in ("densenet264", "densenet232", "densenet-cosine264-k32", "densenet-cosine264-k48"):
        assert list(zoo.get(name).weights) == ["torch7"], name
    assert list(zoo.get("densenetblur121d").weights) == ["timm"] and zoo.get("densenet264d").weights == {}
    assert all(not e.weights for e in zoo.ZOO.values() if e.dataset == "cifar")


def test_weight_records_are_well_formed():
    for name, files in zoo.WEIGHTS.items():
        assert name in zoo.ZOO
        for source, wf in files.items():
            assert wf.source == source and wf.url.startswith("https://") and wf.filename.endswith((".t7", ".pth"))
            if source == "torchvision":  # torchvision's names carry the first 8 hex digits of the file's sha256
                assert re.fullmatch(rf"{name}-{wf.sha256}\.pth", wf.url.rsplit("/", 1)[1]) and len(wf.sha256) == 8
            else:
                assert wf.sha256 == ""  # none published: recorded when fetched
    assert zoo.get("densenet121").weights["torchvision"].url == "https://download.pytorch.org/models/densenet121-a639ec97.pth"
    assert zoo.get("densenet121").weights["timm"].url == (
        "https://huggingface.co/timm/densenet121.ra_in1k/resolve/main/pytorch_model.bin")


# -- the command line ----------------------------------------------------------------------------------------------------


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def test_dnet_pull_json(server):
    code, out, _ = run("pull", NAME, "--pretrained", "torch7", "--json")
    facts = json.loads(out)
    assert code == 0 and (facts["name"], facts["source"], facts["fetched"]) == (NAME, "torch7", True)
    code, out, _ = run("pull", NAME, "--pretrained", "torch7")
    assert code == 0 and "cached" in out and f"recorded in {NAME}.t7.json" in out


def test_dnet_pull_offline_is_one_line(monkeypatch):
    url = closed_port_url()
    monkeypatch.setitem(zoo.WEIGHTS, NAME, {"torchvision": zoo.WeightsFile("torchvision", url, "w-00000000.pth", "0" * 8)})
    code, out, err = run("pull", NAME)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"dnet: error: cannot download {url}: ") and err.rstrip().endswith("(no network?)")


def test_dnet_convert_takes_a_zoo_name_with_pretrained(server, tmp_path):
    code, out, err = run("convert", NAME, "--pretrained", "torchvision", "--to", "pth", "-o", tmp_path / "m.pth")
    assert code == 0, err
    assert dnet.load(tmp_path / "m.pth").meta.preprocess.name == "cifar10"


@pytest.mark.parametrize("args, message", [
    (["--pretrained", "torchvision", "--from", "pth"], "with --pretrained SRC is a zoo name, not a file: leave out --from"),
    ([], "name the source format with --from t7|pth|onnx, or give a zoo name with --pretrained"),
])
def test_dnet_convert_needs_from_or_pretrained(tmp_path, args, message):
    code, _, err = run("convert", NAME, *args, "--to", "onnx", "-o", tmp_path / "m.onnx")
    assert (code, err.strip()) == (2, f"dnet: error: {message}")
