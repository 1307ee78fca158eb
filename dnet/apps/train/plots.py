"""Training curves as a PNG (matplotlib, Agg): loss and error against epoch, train and test."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)

from dnet.core.atomic import atomic_path  # noqa: E402


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and error against epoch, train, test (and validation where held out), as a PNG (matplotlib, Agg)."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, ylabel in zip(axes, ("loss", "error"), ("loss", "top-1 error (%)"), strict=True):
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], label="train")
        ax.plot(epochs, [r[f"test_{metric}"] for r in history], label="test")
        if history and f"val_{metric}" in history[0]:
            ax.plot(epochs, [r[f"val_{metric}"] for r in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if metric == "loss":
            ax.set_yscale("log")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


__all__ = ["plot_curves"]
