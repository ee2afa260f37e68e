"""The study's statistics: a difference between two variants, its intervals, and the verdict they allow.

A comparison is "A minus B" per seed and per feature: ``diff[s, f] = AP_A(s, f) - AP_B(s, f)`` (NaN where a feature
has no positive, so no AP). Two 95% intervals are reported for its mean:

- **over seeds** (training noise): the per-seed mean differences ``d_s``, mean ± t(0.975, n-1) * sd / sqrt(n);
- **paired bootstrap over features** (which features the effect holds for): the per-feature differences
  averaged over seeds, resampled with replacement ``BOOTSTRAP_RESAMPLES`` times (percentile interval).

The verdict, for a claim that A beats B (thresholds in the constants below):

- ``reproduced``: the bootstrap interval lies above 0 and A beats B in every seed;
- ``not reproduced``: the bootstrap interval excludes any gain of ``MEANINGFUL_GAIN`` or more (its upper end is
  below it): A is no better, or worse;
- ``inconclusive at this size``: anything else (the interval holds both no effect and a real gain).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
MEANINGFUL_GAIN = 0.01
"""A difference of one mAP point: an interval entirely below it rules out a gain worth having."""

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive at this size"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def seed_interval(per_seed: np.ndarray) -> Interval:
    """95% Student-t interval of the mean of ``per_seed`` (n,) values; (nan, nan) for fewer than 2."""
    values = np.asarray(per_seed, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return Interval(float("nan"), float("nan"))
    half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return Interval(float(values.mean() - half), float(values.mean() + half))


def bootstrap_interval(per_feature: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Interval:
    """95% percentile interval of the mean of ``per_feature`` (F,) values (NaNs dropped), resampling features with
    replacement; (nan, nan) when none is finite."""
    values = np.asarray(per_feature, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return Interval(float("nan"), float("nan"))
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[draws].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(low), float(high))


@dataclass(frozen=True)
class Difference:
    """A minus B over seeds and features (module docstring)."""

    mean: float
    per_seed: tuple[float, ...]
    over_seeds: Interval
    over_features: Interval
    features: int
    """Features with an AP for both variants in at least one seed."""

    @property
    def verdict(self) -> str:
        low, high = self.over_features.low, self.over_features.high
        if not np.isfinite(low):
            return INCONCLUSIVE
        if low > 0 and all(d > 0 for d in self.per_seed):
            return REPRODUCED
        if high < MEANINGFUL_GAIN:
            return NOT_REPRODUCED
        return INCONCLUSIVE


def verdict_text(diff: Difference) -> str:
    """The verdict, with "(B better)" when the features interval lies wholly below 0."""
    return diff.verdict + (" (B better)" if diff.over_features.high < 0 else "")


def difference(a: np.ndarray, b: np.ndarray) -> Difference:
    """The difference of two (seeds, features) AP arrays (NaN where undefined), paired by seed and feature."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 2:
        raise ValueError(f"need (seeds, features) arrays, got shape {diff.shape}")  # calling-code contract
    with warnings.catch_warnings():  # all-NaN rows give NaN means, as intended: no 'empty slice' warning
        warnings.simplefilter("ignore", category=RuntimeWarning)
        per_seed = np.nanmean(diff, axis=1)
        per_feature = np.nanmean(diff, axis=0)
    finite = per_feature[np.isfinite(per_feature)]
    return Difference(float(finite.mean()) if len(finite) else float("nan"),
                      tuple(float(d) for d in per_seed), seed_interval(per_seed),
                      bootstrap_interval(per_feature), int(len(finite)))

