"""Test-item resampling for the study's bootstrap: multinomial item multiplicities and average precision under them.

A resample of ``n`` test items (hold-out images or clips) is a row of multiplicities ``weights[b, i]`` (how many
times item ``i`` was drawn; the row sums to ``n``). Average precision under a resample is scikit-learn's
``average_precision_score(truth, scores, sample_weight=weights[b])``, which equals AP on the items repeated that
many times: items are ranked by descending score, tied scores form one threshold (one step of the precision-recall
curve), and ``AP = sum_k (TP_k - TP_{k-1}) / TP_total * TP_k / (TP_k + FP_k)`` over the thresholds ``k``, with
weighted counts. A feature with no positive weight in a resample has no AP (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdi.errors import InputError

CHUNK_ELEMENTS = 8_000_000
"""Items x resamples held at once per gathered weight array (16-64 MB), so memory stays bounded for any B."""


@dataclass(frozen=True)
class _RankingPlan:
    """One feature's ranking, computed once and reused for every resample."""

    order: np.ndarray
    """(n,) item indices by descending score."""
    positive_thresholds: np.ndarray
    """(G,) positions in ``order`` of the last item of each tie group that holds a positive."""
    positives: np.ndarray
    """(P,) positive item indices in ranked order."""
    last_positive_of_group: np.ndarray
    """(P,) bool: the positive is the last positive of its tie group."""


def _ranking_plan(score: np.ndarray, truth: np.ndarray) -> _RankingPlan:
    """The plan of one feature from its (n,) scores and (n,) bool truth."""
    order = np.argsort(-score, kind="stable")
    ranked_score, ranked_truth = score[order], truth[order]
    group_ends = np.append(ranked_score[1:] != ranked_score[:-1], True)
    group = np.concatenate(([0], np.cumsum(group_ends[:-1])))
    positive_group = group[ranked_truth]
    return _RankingPlan(order, np.flatnonzero(group_ends)[np.unique(positive_group)], order[ranked_truth],
                        np.append(positive_group[1:] != positive_group[:-1], True))


def _plan_ap(plan: _RankingPlan, weights_by_item: np.ndarray) -> np.ndarray:
    """AP (b,) of one feature under ``weights_by_item`` (n, b) integer multiplicities; NaN without positive weight."""
    if not len(plan.positives):
        return np.full(weights_by_item.shape[1], np.nan)
    dtype = weights_by_item.dtype
    ranked_at_threshold = np.cumsum(weights_by_item[plan.order], axis=0, dtype=dtype)[plan.positive_thresholds]
    true_at_threshold = np.cumsum(weights_by_item[plan.positives], axis=0, dtype=dtype)[plan.last_positive_of_group]
    true_at_threshold = true_at_threshold.astype(np.float64)
    new_true = np.diff(true_at_threshold, axis=0, prepend=0.0)
    precision = true_at_threshold / np.maximum(ranked_at_threshold, 1)  # 0 / 0 only where nothing new is true
    total_true = true_at_threshold[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total_true > 0, (new_true * precision).sum(axis=0) / total_true, np.nan)


def _check_inputs(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> None:
    if scores.ndim != 2 or truth.shape != scores.shape:
        raise InputError(f"scores and truth must both be (items, features); got {scores.shape} and {truth.shape}")
    if weights.ndim != 2 or weights.shape[1] != scores.shape[0]:
        raise InputError(f"weights must be (resamples, {scores.shape[0]} items); got {weights.shape}: "
                         "draw them with image_resamples(items, ...)")
    if not np.isfinite(scores).all():
        raise InputError("scores hold NaN or infinite values: score every test item before resampling")
    if not np.isin(truth, (0, 1)).all():
        raise InputError("truth must hold only 0 and 1: binarise the labels first")
    if not (np.issubdtype(weights.dtype, np.integer) or np.array_equal(weights, np.round(weights))) \
            or (weights < 0).any():
        raise InputError("weights must be non-negative whole multiplicities (how often each item was drawn)")


def weighted_average_precision(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AP (B, F) of each feature when item ``i`` counts ``weights[b, i]`` times (module docstring).

    ``scores``: (n, F) float; ``truth``: (n, F) 0/1; ``weights``: (B, n) non-negative integers. NaN where a
    feature has no positive weight. Each feature is sorted once; resamples go through in chunks.
    """
    scores, truth, weights = np.asarray(scores, dtype=np.float64), np.asarray(truth), np.asarray(weights)
    _check_inputs(scores, truth, weights)
    largest_sum = int(weights.sum(axis=1).max(initial=0))
    dtype = next(kind for kind in (np.int16, np.int32, np.int64) if largest_sum <= np.iinfo(kind).max)
    plans = [_ranking_plan(scores[:, f], truth[:, f].astype(bool)) for f in range(scores.shape[1])]
    ap = np.empty((weights.shape[0], scores.shape[1]))
    step = max(1, CHUNK_ELEMENTS // max(1, scores.shape[0]))
    for start in range(0, weights.shape[0], step):
        weights_by_item = np.ascontiguousarray(weights[start:start + step].T, dtype=dtype)  # (n, chunk)
        for feature, plan in enumerate(plans):
            ap[start:start + step, feature] = _plan_ap(plan, weights_by_item)
    return ap


def image_resamples(items: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, items) int64 multinomial multiplicities, each row a draw of ``items`` items with replacement
    (rows sum to ``items``); the same ``seed`` gives the same rows."""
    if items < 1 or resamples < 1:
        raise InputError(f"need at least one item and one resample; got {items} items, {resamples} resamples")
    return np.random.default_rng(seed).multinomial(items, np.full(items, 1.0 / items), size=resamples)


def resampled_map(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray,
                  feature_mask: np.ndarray | None = None) -> np.ndarray:
    """mAP (B, S) of each seed's scores under each item resample: the mean AP over the features in
    ``feature_mask`` (F,) bool (all when None) that have a positive in that resample.

    ``scores``: (S, n, F) float, one score matrix per training seed; ``truth``: (n, F) 0/1; ``weights``: (B, n).
    Identity weights ``np.ones((1, n), int)`` give each seed's mAP on the test set as it is.
    """
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth)
    if scores.ndim != 3:
        raise InputError(f"scores must be (seeds, items, features); got shape {scores.shape}")
    mask = np.ones(scores.shape[2], bool) if feature_mask is None else np.asarray(feature_mask, dtype=bool)
    if mask.shape != (scores.shape[2],) or not mask.any():
        raise InputError(f"feature_mask must be ({scores.shape[2]},) bool with at least one feature; "
                         f"got shape {mask.shape} with {int(mask.sum())} set")
    if truth.ndim != 2 or truth.shape[1] != scores.shape[2]:
        raise InputError(f"truth must be (items, {scores.shape[2]} features); got {truth.shape}")
    per_seed = [weighted_average_precision(seed_scores[:, mask], truth[:, mask], weights) for seed_scores in scores]
    ap = np.stack(per_seed, axis=1)  # (B, S, F')
    undefined = int((~np.isfinite(ap).any(axis=2)).any(axis=1).sum())
    if undefined:
        raise InputError(f"{undefined} of {ap.shape[0]} item resamples hold no positive of any feature in the mask: "
                         "choose features with more positives in the test set")
    return np.nanmean(ap, axis=2)
