"""How close two outputs are: the numbers every precision check, comparison and benchmark reports."""

from __future__ import annotations

import numpy as np


def rel_l2(ref: np.ndarray, got: np.ndarray) -> float:
    """||got − ref|| / ||ref|| over all elements (0 when equal)."""
    a, b = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    return float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30))


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity of the two outputs as flat vectors."""
    a, b = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def max_abs(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)))) if np.size(ref) else 0.0


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Fraction of rows (N×classes logits) whose best class is the same."""
    return float(np.mean(np.asarray(ref).argmax(1) == np.asarray(got).argmax(1)))


__all__ = ["cosine", "max_abs", "rel_l2", "top1_agreement"]
