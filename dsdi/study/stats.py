"""The study's statistics: a comparison of two arms with the training seed as the unit, and its verdict.

**Measure.** Each arm (a variant, or an ensemble) is trained with the same ``S`` seeds (``S >= 10`` in the study) and
scored on one fixed test set of ``n`` items (hold-out images, or clips) and ``F`` features (32, or a subset named by a
boolean mask). Per seed, the measure is mAP: the mean, over the features with at least one positive, of average
precision (scikit-learn's, ties as one threshold; ``dsdi.study.resampling``).

**Unit.** A comparison is "arm A minus arm B" paired by seed: ``delta_s = mAP_A(s) - mAP_B(s)``, ``s = 1..S``. Its
estimate is the mean of the ``S`` per-seed deltas. Seeds are the replicates; features and items are not.

**Difference test.** ``p_difference``: a two-sided paired sign-flip permutation test of the mean delta (under no
effect each ``delta_s`` is as likely to have either sign): the share of sign vectors ``e`` in ``{-1, +1}^S``
(identity included) with ``|mean(e * delta)| >= |mean(delta)|``. Exact (all ``2^S`` vectors) for ``S <= 16``, else
``SIGN_FLIP_RESAMPLES`` seeded random vectors with ``p = (1 + hits) / (1 + draws)``. With ``S`` seeds no p falls
below ``2 / 2^S`` (two-sided), so ``S >= 6`` is needed to reach 0.05 at all.

**Equivalence test.** ``p_equivalence``: TOST with the margin ``EQUIVALENCE_MARGIN`` (one mAP point): a one-sided
sign-flip test that the mean delta exceeds ``-margin`` (on ``delta + margin``) and one that it is below ``+margin``
(on ``delta - margin``); ``p`` is the larger. A small p says the effect lies within ``+-margin``: none worth having.

**Multiplicity.** Over the pre-registered headline comparisons, the difference p-values form one family and the
equivalence p-values another; each family is adjusted with Holm's step-down correction on its own (adjusted
``p_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))`` over the sorted p-values). Other rows are descriptive: estimate
and interval, no verdict.

**Interval.** The 95% two-level percentile bootstrap interval of the mean delta, ``BOOTSTRAP_RESAMPLES`` draws from
``BOOTSTRAP_SEED``: each draw resamples the test items once (multinomial multiplicities, the same resample for both
arms and every seed) and the ``S`` seeds with replacement, and takes the mean delta over the drawn seeds of the mAPs
on the resampled items. It holds both training noise (seeds) and test-set noise (items).

**Verdict** (headline rows, from the Holm-adjusted p-values at ``ALPHA``); the four outcomes partition every case:

- ``equivalent``: ``p_equivalence_adjusted < ALPHA``. Checked first, so an effect that is significant but within the
  margin is "equivalent", never also "reproduced";
- ``reproduced``: not equivalent, ``p_difference_adjusted < ALPHA`` and the mean delta > 0;
- ``reversed``: not equivalent, ``p_difference_adjusted < ALPHA`` and the mean delta < 0;
- ``inconclusive``: anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsdi.errors import InputError

ALPHA = 0.05
EQUIVALENCE_MARGIN = 0.01
"""One mAP point: an effect within +-margin is no effect worth having."""
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
EXACT_SIGN_FLIP_SEEDS = 16
"""Up to this many seeds the sign-flip test enumerates all 2^S sign vectors."""
SIGN_FLIP_RESAMPLES = 100_000
ALTERNATIVES = ("two-sided", "greater", "less")
EQUIVALENT, REPRODUCED, REVERSED, INCONCLUSIVE = "equivalent", "reproduced", "reversed", "inconclusive"
VERDICTS = (EQUIVALENT, REPRODUCED, REVERSED, INCONCLUSIVE)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _per_seed_values(per_seed: np.ndarray) -> np.ndarray:
    values = np.asarray(per_seed, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all():
        raise InputError(f"need one finite delta per seed for at least 2 seeds; got {values.tolist()}: "
                         "check that every seed has an mAP on the chosen features")
    return values


def _sign_vectors(seeds: int, seed: int) -> np.ndarray:
    """(V, seeds) of +-1: all 2^seeds vectors (identity last) up to EXACT_SIGN_FLIP_SEEDS, else random ones."""
    if seeds <= EXACT_SIGN_FLIP_SEEDS:
        bits = (np.arange(2 ** seeds)[:, None] >> np.arange(seeds)) & 1
    else:
        bits = np.random.default_rng(seed).integers(0, 2, size=(SIGN_FLIP_RESAMPLES, seeds))
    return bits * 2.0 - 1.0


def sign_flip_test(per_seed: np.ndarray, alternative: str = "two-sided", seed: int = BOOTSTRAP_SEED) -> float:
    """p of the paired sign-flip permutation test of the mean of ``per_seed`` (S,) deltas (module docstring).

    ``alternative``: "greater" (mean > 0), "less" (mean < 0) or "two-sided". ``seed`` matters only for S > 16.
    """
    if alternative not in ALTERNATIVES:
        raise InputError(f"alternative {alternative!r} is not one of {', '.join(ALTERNATIVES)}")
    values = _per_seed_values(per_seed)
    signs = _sign_vectors(len(values), seed)
    null = signs @ values / len(values)
    observed = np.ones(len(values)) @ values / len(values)
    tolerance = 100 * np.finfo(np.float64).eps * abs(observed)  # equal in theory, apart by rounding: a tie
    if alternative == "greater":
        hits = null >= observed - tolerance
    elif alternative == "less":
        hits = null <= observed + tolerance
    else:
        hits = np.abs(null) >= abs(observed) - tolerance
    exact = len(values) <= EXACT_SIGN_FLIP_SEEDS
    return float(hits.mean()) if exact else float((1 + hits.sum()) / (1 + len(hits)))


def tost(per_seed: np.ndarray, margin: float = EQUIVALENCE_MARGIN, seed: int = BOOTSTRAP_SEED) -> float:
    """p of the equivalence test (two one-sided sign-flip tests) that the mean delta lies within ``+-margin``."""
    if not margin > 0:
        raise InputError(f"the equivalence margin must be positive; got {margin}")
    values = _per_seed_values(per_seed)
    return max(sign_flip_test(values + margin, "greater", seed), sign_flip_test(values - margin, "less", seed))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (m,), in the given order: monotone in the sorted p's, capped at 1."""
    values = np.asarray(pvalues, dtype=np.float64)
    if values.ndim != 1 or not ((values >= 0) & (values <= 1)).all():
        raise InputError(f"p-values must be a list of numbers in [0, 1]; got {values.tolist()}")
    order = np.argsort(values, kind="stable")
    scaled = (len(values) - np.arange(len(values))) * values[order]
    adjusted = np.empty_like(values)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def two_level_draws(map_a: np.ndarray, map_b: np.ndarray, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(B,) bootstrap draws of the mean delta: draw ``b`` takes row ``b`` of ``map_a`` and ``map_b`` (B, S) (each
    arm's mAP per seed on item resample ``b``), resamples the S seeds with replacement and averages the deltas."""
    map_a, map_b = np.asarray(map_a, dtype=np.float64), np.asarray(map_b, dtype=np.float64)
    if map_a.ndim != 2 or map_a.shape != map_b.shape or map_a.shape[1] < 2:
        raise InputError(f"resampled mAPs must be two (resamples, seeds) arrays of one shape with at least 2 seeds; "
                         f"got {map_a.shape} and {map_b.shape}")
    delta = map_a - map_b
    if not np.isfinite(delta).all():
        raise InputError("resampled mAPs hold NaN: every resample needs an mAP for every seed of both arms")
    drawn_seeds = np.random.default_rng(seed).integers(0, delta.shape[1], size=delta.shape)
    return np.take_along_axis(delta, drawn_seeds, axis=1).mean(axis=1)


def two_level_interval(map_a: np.ndarray, map_b: np.ndarray, seed: int = BOOTSTRAP_SEED) -> Interval:
    """95% percentile interval of ``two_level_draws`` (module docstring, "Interval")."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(two_level_draws(map_a, map_b, seed), [tail, 100 - tail])
    return Interval(float(low), float(high))


def verdict(mean_delta: float, p_difference_adjusted: float, p_equivalence_adjusted: float,
            alpha: float = ALPHA) -> str:
    """One of ``VERDICTS`` (module docstring, "Verdict")."""
    if not all(np.isfinite((mean_delta, p_difference_adjusted, p_equivalence_adjusted))):
        raise InputError(f"a verdict needs a finite mean and p-values; got {mean_delta}, {p_difference_adjusted}, "
                         f"{p_equivalence_adjusted}")
    if p_equivalence_adjusted < alpha:
        return EQUIVALENT
    if p_difference_adjusted < alpha and mean_delta > 0:
        return REPRODUCED
    if p_difference_adjusted < alpha and mean_delta < 0:
        return REVERSED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Comparison:
    """Arm A minus arm B over seeds (module docstring); p-values before any multiplicity correction."""

    mean: float
    per_seed: tuple[float, ...]
    interval: Interval
    p_difference: float
    p_equivalence: float
    margin: float = EQUIVALENCE_MARGIN


def compare(map_a: np.ndarray, map_b: np.ndarray, resampled_a: np.ndarray, resampled_b: np.ndarray,
            margin: float = EQUIVALENCE_MARGIN, seed: int = BOOTSTRAP_SEED) -> Comparison:
    """The comparison of two arms from their per-seed mAPs on the test set (S,) and on the item resamples
    (B, S) (``resampling.resampled_map``, the same resamples for both arms)."""
    delta = _per_seed_values(np.asarray(map_a, dtype=np.float64) - np.asarray(map_b, dtype=np.float64))
    if np.shape(resampled_a)[1:] != delta.shape:
        raise InputError(f"resampled mAPs need one column per seed ({len(delta)}); got {np.shape(resampled_a)}")
    return Comparison(float(delta.mean()), tuple(float(d) for d in delta),
                      two_level_interval(resampled_a, resampled_b, seed),
                      sign_flip_test(delta, "two-sided", seed), tost(delta, margin, seed), margin)


@dataclass(frozen=True)
class Judged:
    """A headline comparison with its Holm-adjusted p-values and its verdict."""

    comparison: Comparison
    p_difference_adjusted: float
    p_equivalence_adjusted: float
    verdict: str


def judge_headlines(headlines: Sequence[Comparison], alpha: float = ALPHA) -> list[Judged]:
    """Verdicts of the headline comparisons, in their order: Holm over the difference p's and, separately, over the
    equivalence p's of exactly these comparisons."""
    if not headlines:
        return []
    p_difference = holm([c.p_difference for c in headlines])
    p_equivalence = holm([c.p_equivalence for c in headlines])
    return [Judged(c, float(pd), float(pe), verdict(c.mean, pd, pe, alpha))
            for c, pd, pe in zip(headlines, p_difference, p_equivalence, strict=True)]
