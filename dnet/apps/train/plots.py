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
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax1.plot(epochs, [r["test_loss"] for r in history], label="test")
    if history and "val_loss" in history[0]:
        ax1.plot(epochs, [r["val_loss"] for r in history], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(epochs, [r["train_error"] for r in history], label="train")
    ax2.plot(epochs, [r["test_error"] for r in history], label="test")
    if history and "val_error" in history[0]:
        ax2.plot(epochs, [r["val_error"] for r in history], label="validation")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("top-1 error (%)")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


__all__ = ["plot_curves"]
