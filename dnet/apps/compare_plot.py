"""Per-layer divergence as a PNG (matplotlib, Agg): each convolution's relative error against its depth, blocks marked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dnet.apps.compare import LayerReport
from dnet.core.atomic import atomic_path

MARKED = 3  # the layers named on the plot: the first of the ranking


def plot_layers(report: LayerReport, path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Relative error of every convolution's output (and of the input it read) against depth, log scale; written atomically
    (never over one of ``inputs``, the files compared).

    Dense blocks are shaded and labelled, transitions drawn as dashed lines, the logits are the last point, and the
    layers that add the most error are named.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows
    depth = [r.depth for r in rows]
    tiny = 1e-12  # log scale: an exact match is drawn at the bottom
    fig, ax = plt.subplots(figsize=(max(8.0, min(24.0, len(rows) / 8)), 4.5))
    ax.plot(depth, [max(r.rel_error, tiny) for r in rows], "o-", ms=3, lw=1, label="output")
    ax.plot(depth, [max(r.input_rel_error, tiny) for r in rows], "-", lw=0.8, alpha=0.6, label="input it read")
    end = len(rows) + 1
    ax.plot([end], [max(report.logits.rel_error, tiny)], "s", color="black", label="logits")
    ax.set_yscale("log")
    spans: dict[str, list[int]] = {}
    for r in rows:
        spans.setdefault(r.block, []).append(r.depth)
    for i, (block, ds) in enumerate(spans.items()):
        if block.startswith("transition"):
            for d in ds:
                ax.axvline(d, color="grey", ls="--", lw=0.8)
                ax.text(d, 1.01, block.replace("transition", "t"), transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=7, color="grey")
        elif block.startswith("denseblock"):
            ax.axvspan(min(ds) - 0.5, max(ds) + 0.5, color=f"C{i % 10}", alpha=0.08)
            ax.text((min(ds) + max(ds)) / 2, 1.01, block.replace("denseblock", "block "), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8)
    for r in report.ranking(MARKED):
        ax.annotate(r.layer, (r.depth, max(r.rel_error, tiny)), xytext=(4, 6), textcoords="offset points", fontsize=7,
                    color="C3")
    ax.set_xlim(0.5, end + 0.5)
    ax.set_xlabel("convolution (network order)")
    ax.set_ylabel("relative L2 error vs reference")
    ax.set_title(f"{Path(report.other).name} against {Path(report.ref).name}", fontsize=10, pad=16)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, inputs=inputs) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


__all__ = ["plot_layers"]
