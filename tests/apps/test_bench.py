import json

import numpy as np
import pytest
from click.testing import CliRunner

from dnet.apps.bench import latency_stats, peak_rss_mb, reset_peak, rss_mb
from dnet.cli import main
from dnet.formats.checkpoint import save_checkpoint
from dnet.models import DenseNetConfig, build_model


def test_latency_stats_on_known_values():
    s = latency_stats([i / 1000 for i in range(1, 101)], batch=4)  # 1..100 ms
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["throughput"] == pytest.approx(4 / 0.0505)


def test_bench_cli_two_engines_json(tmp_path):
    cfg = DenseNetConfig(block_config=(1, 1), growth_rate=4, init_features=8, num_classes=3)
    a = save_checkpoint(tmp_path / "a.pth", build_model(cfg))
    b = save_checkpoint(tmp_path / "b.pth", build_model(cfg))
    r = CliRunner().invoke(main, ["bench", str(a), str(b), "--batch-sizes", "1,2",
                                  "--warmup", "0", "--duration", "0.05", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [(x["engine"], x["batch"]) for x in rows] == [("a.pth", 1), ("b.pth", 1), ("a.pth", 2), ("b.pth", 2)]
    for x in rows:
        assert x["iterations"] >= 10 and x["median_ms"] > 0
        assert x["median_ms"] <= x["p99_ms"]
        assert np.isclose(x["throughput"], x["batch"] * 1e3 / x["mean_ms"])


def test_bench_cli_table_and_bad_batch(tmp_path):
    cfg = DenseNetConfig(block_config=(1,), growth_rate=4, init_features=8, num_classes=3)
    a = save_checkpoint(tmp_path / "a.pth", build_model(cfg))
    r = CliRunner().invoke(main, ["bench", str(a), "--batch-sizes", "1", "--warmup", "0", "--duration", "0.02"])
    assert r.exit_code == 0 and "1.00×" in r.output
    r = CliRunner().invoke(main, ["bench", str(a), "--batch-sizes", "x"])
    assert r.exit_code == 2 and r.output.strip() == "dnet: error: batch sizes: expected comma-separated integers like 1,8,32, got 'x' (--batch-sizes)"


@pytest.mark.skipif(not reset_peak(), reason="needs Linux /proc/self/clear_refs")
def test_peak_memory_sees_a_freed_transient_allocation():
    reset_peak()
    before = rss_mb()
    block = np.ones(64 << 20, np.uint8)  # 64 MiB, touched; numpy maps blocks this large, so del unmaps it
    del block
    assert rss_mb() - before < 16  # gone from the resident memory...
    assert peak_rss_mb() - before >= 60  # ...but the peak remembers it


class CountingEngine:
    """An engine with dynamic height and width that records the shape of every batch it runs."""

    kind, meta, input_shape = "fake", None, (-1, 3, -1, -1)

    def __init__(self, name: str) -> None:
        from pathlib import Path

        self.path, self.shapes = Path(name), []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        return np.zeros((len(batch), 2), np.float32)


def test_iterations_and_warmup_iterations_are_exact_counts():
    from dnet.apps.bench import bench_engines

    a, b = CountingEngine("a"), CountingEngine("b")
    results = bench_engines([a, b], 2, iterations=7, warmup_iterations=3, input_size=40)
    assert [r.iterations for r in results] == [7, 7]
    assert len(a.shapes) == len(b.shapes) == 1 + 3 + 7  # the first (memory) run, the warm-up, the timed runs
    assert set(a.shapes) == {(2, 3, 40, 40)}
    c = CountingEngine("c")
    (r,) = bench_engines([c], 1, iterations=2, warmup_iterations=0)
    assert r.iterations == 2 and len(c.shapes) == 3 and c.shapes[0] == (1, 3, 224, 224)  # no metadata: 224


def test_bench_cli_takes_iterations_warmup_iterations_and_refuses_a_size_a_model_cannot_take(tmp_path):
    cfg = DenseNetConfig(block_config=(1,), growth_rate=4, init_features=8, num_classes=3)
    a = save_checkpoint(tmp_path / "a.pth", build_model(cfg))
    r = CliRunner().invoke(main, ["bench", str(a), "--batch-sizes", "1,3", "--iterations", "4",
                                  "--warmup-iterations", "1", "--input-size", "32", "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert [(x["batch"], x["iterations"]) for x in json.loads(r.output)] == [(1, 4), (3, 4)]
    r = CliRunner().invoke(main, ["bench", str(a), "--input-size", "64", "--iterations", "1"])
    assert r.exit_code == 2
    assert r.output.strip() == ("dnet: error: a.pth takes 32×32 inputs only, not 64×64; export the model at that "
                                "size to measure it there (--input-size)")
