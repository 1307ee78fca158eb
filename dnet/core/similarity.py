"""How close two outputs are: the numbers every precision check, comparison and benchmark reports."""

from __future__ import annotations

import numpy as np

from dnet.core.errors import ModelOutputError


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


def best_class(logits: np.ndarray) -> np.ndarray:
    """Per row of N×classes logits: the class scoring strictly above every other, or -1 when the best score is
    shared (a tie, e.g. all-equal logits of a zeroed classifier) or any score is not finite. ``argmax`` would
    name the first of tied classes and count a constant model right for class 0."""
    logits = np.asarray(logits)
    top = logits.argmax(1)
    best = logits[np.arange(len(logits)), top]
    unique = (logits >= best[:, None]).sum(1) == 1
    return np.where(unique & np.isfinite(logits).all(1), top, -1)


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Fraction of rows (N×classes logits) whose unique best class is the same (a tie agrees with nothing)."""
    a = best_class(ref)
    return float(np.mean((a == best_class(got)) & (a >= 0)))


def require_finite(logits: np.ndarray, name: str) -> np.ndarray:
    """``logits`` unchanged, or one line when any is NaN or infinite: such a model is broken, not inaccurate."""
    logits = np.asarray(logits)
    finite = np.isfinite(logits)
    if not finite.all():
        rows = int((~finite.reshape(len(logits), -1).all(1)).sum()) if logits.ndim > 1 else int((~finite).sum())
        raise ModelOutputError(f"{name}: the model gives NaN or infinite logits for {rows:,} of {len(logits):,} images; "
                               "its weights or its preprocessing (mean, std) are broken, so nothing is scored")
    return logits


__all__ = ["best_class", "cosine", "max_abs", "rel_l2", "require_finite", "top1_agreement"]
