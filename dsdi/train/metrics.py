"""Image-level validation metrics (multi-label): LRAP and per-class AP with scikit-learn.

Soft targets are binarised: a class is positive when its soft label is >= 0.5, i.e. at least half as many
workers named it as the image's most-named class. In the paper's Fig. 1 (flood x4, smoke x1, damage:none x1)
only flooding is positive; the 0.25 "damage: none" is exactly the mislabel the soft labels are meant to damp.
The paper does not say how its Table 2 LRAP treated soft labels; pass ``positive_threshold`` to choose
otherwise (a tiny value such as 1e-6 counts every class any worker named).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

DEFAULT_POSITIVE_THRESHOLD = 0.5


def _binary_targets(
    y_true: np.ndarray, y_score: np.ndarray, positive_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) targets -> int 0/1 positives (>= threshold) and float64 scores, after shape checks."""
    # ValueError, not InputError: the callers (training's validation) pass arrays they built, and train.py
    # turns non-finite model outputs into NaN metrics before calling; no user value reaches these checks.
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must both be (n_images, n_classes); got {y_true.shape}, {y_score.shape}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score holds NaN or infinite values")
    return (y_true >= positive_threshold).astype(np.int64), y_score


def lrap(y_true: np.ndarray, y_score: np.ndarray, positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD) -> float:
    """Label ranking average precision (scikit-learn) over images.

    ``y_true``: (N, C) soft or hard labels, positive where >= ``positive_threshold`` (module docstring).
    ``y_score``: (N, C) model scores (sigmoid or logits: only the order per image matters).
    Images without any positive class score 1 (scikit-learn's convention).
    """
    positives, scores = _binary_targets(y_true, y_score, positive_threshold)
    return float(label_ranking_average_precision_score(positives, scores))


def per_class_average_precision(
    y_true: np.ndarray, y_score: np.ndarray, positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD
) -> tuple[np.ndarray, float]:
    """Average precision per class over images (scikit-learn), and its mean over classes with a positive.

    Returns (ap (C,) float64 with NaN for classes without a positive image, NaN-safe mean; NaN if none).
    """
    positives, scores = _binary_targets(y_true, y_score, positive_threshold)
    ap = np.full(positives.shape[1], np.nan)
    for column in range(positives.shape[1]):
        if positives[:, column].any():
            ap[column] = average_precision_score(positives[:, column], scores[:, column])
    return ap, float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
