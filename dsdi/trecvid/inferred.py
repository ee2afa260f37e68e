"""Inferred AP (xinfAP), inferred NDCG and inferred precision on NIST sample qrels, computed as NIST's
``sample_eval`` scorer does (Yilmaz, Kanoulas and Aslam, "A Simple and Efficient Sampling Method for Estimating AP
and NDCG", SIGIR 2008, with the changes NIST made for TRECVID).

Per feature, with the pool split into strata s of N_s shots, n_s of them judged (sampled), r_s judged relevant:

- Order: the run's shots sorted by score descending, ties by shot id *descending* (plain code-point order), cut at
  ``depth`` (NIST's maximum result size, 1000). XML runs carry the scores ``1 / seqNum``, so their order is kept.
- Estimated relevant count R = sum over strata with n_s > 0 of r_s N_s / n_s.
- Walking down the ranks, with (above rank k) P pooled shots, D_s of them in stratum s, J_s judged, Q_s judged
  relevant, the precision at a judged relevant shot at rank k is estimated as
  1/k + (P/k) * sum_s (D_s/P) (Q_s + e)/(J_s + 3e), e = 1e-5 (sample_eval's smoothing, so an all-unjudged stratum
  counts a third relevant); the estimated relevant retrieved at rank k is sum_s D_s (Q_s + e)/(J_s + 3e) (the
  shot at k included), and inferred precision at cut-off c is that count at rank c over c (past the end of the
  run: the last count over c).
- xinfAP = sum_s (R_s / R) * (mean of the estimated precisions over the r_s judged relevant shots of s, a shot
  not retrieved counting 0), R_s = r_s N_s / n_s; when R exceeds ``depth`` it is multiplied by R / depth (NIST,
  2012: a run cannot retrieve more than ``depth`` shots).
- infNDCG = P (sum_s (D_s/P) G_s / J_s) / ideal, G_s the gain 1/log2(k+1) of the relevant shots of s retrieved,
  P, D_s, J_s counted over the whole cut run, ideal = sum of 1/log2(r+1) for r = 1 .. min(floor(R), depth).

A feature without a judged relevant shot has no defined score here (NaN; sample_eval writes 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SMOOTHING = 1e-5
"""sample_eval's additive smoothing e of the within-stratum relevant rate (Q + e) / (J + 3e)."""
PRECISION_CUTOFFS = (10, 100, 1000)
"""Cut-offs of the inferred precision sample_eval reports, besides the run's depth."""


@dataclass
class InferredScores:
    """The inferred measures of one feature's ranking (measures NaN when no shot is judged relevant)."""

    judged_relevant: int
    retrieved: int
    relevant_retrieved: int
    est_relevant: float
    est_relevant_retrieved: float
    infap: float
    infndcg: float
    precision: dict[int, float] = field(default_factory=dict)
    """Cut-off -> inferred precision there (``PRECISION_CUTOFFS`` and the depth)."""


def nist_order(ranking: Sequence[tuple[str, float]]) -> list[str]:
    """Shot ids in sample_eval's order: score descending, ties by shot id descending."""
    by_id = sorted(ranking, key=lambda entry: entry[0], reverse=True)
    return [shot_id for shot_id, _ in sorted(by_id, key=lambda entry: -entry[1])]


@dataclass
class _Stratum:
    """One stratum's pool counts (size, judged, judged relevant) and the walk's running counts above a rank."""

    size: int = 0
    judged: int = 0
    relevant: int = 0
    docs: int = 0
    sampled: int = 0
    found: int = 0
    precision_sum: float = 0.0
    gain: float = 0.0

    def rate(self, smoothing: float) -> float:
        """D_s (Q_s + e) / (J_s + 3e): the estimated relevant shots of this stratum above the current rank."""
        return self.docs * (self.found + smoothing) / (self.sampled + 3 * smoothing) if self.docs else 0.0


def _strata(judged: Mapping[str, tuple[int, int]]) -> dict[int, _Stratum]:
    """Pool counts per stratum from {shot_id: (stratum, judgment)}, in sample_eval's order (stratum as text)."""
    strata: dict[int, _Stratum] = {}
    for stratum, judgment in judged.values():
        counts = strata.setdefault(stratum, _Stratum())
        counts.size += 1
        counts.judged += judgment >= 0
        counts.relevant += judgment > 0
    return {key: strata[key] for key in sorted(strata, key=str)}


def _walk(ranked: Sequence[str], judged: Mapping[str, tuple[int, int]], strata: dict[int, _Stratum],
          cutoffs: Sequence[int], smoothing: float) -> tuple[int, int, float, dict[int, float]]:
    """Go down ``ranked`` filling the strata's running counts; (pooled shots, relevant retrieved, estimated relevant
    retrieved, precision at the cut-offs reached)."""
    pooled = relevant_retrieved = 0
    estimate = 0.0
    precision: dict[int, float] = {}
    for rank, shot_id in enumerate(ranked, start=1):
        entry = judged.get(shot_id)
        if entry is not None and entry[1] > 0:
            above = 0.0
            if pooled:
                above = sum(counts.docs / pooled * (counts.found + smoothing) / (counts.sampled + 3 * smoothing)
                            for counts in strata.values() if counts.docs)
            counts = strata[entry[0]]
            counts.precision_sum += 1 / rank + (pooled / rank) * above
            counts.found += 1
            counts.gain += 1 / (math.log(rank + 1) / math.log(2))
            relevant_retrieved += 1
        if entry is not None:
            pooled += 1
            strata[entry[0]].docs += 1
            strata[entry[0]].sampled += entry[1] >= 0
        estimate = sum(counts.rate(smoothing) for counts in strata.values())
        if rank in cutoffs:
            precision[rank] = estimate / rank
    return pooled, relevant_retrieved, estimate, precision


def inferred_scores(ranked: Sequence[str], judged: Mapping[str, tuple[int, int]], depth: int = 1000,
                    smoothing: float = SMOOTHING) -> InferredScores:
    """xinfAP, infNDCG and inferred precision of one feature (module docstring).

    ``ranked``: shot ids best first (already in sample_eval's order, :func:`nist_order`), cut here at ``depth``.
    ``judged``: {shot_id: (stratum, judgment -1/0/1)}, the feature's sample qrels. ``smoothing``: e (0 is allowed
    when every pooled shot above any rank is judged, e.g. a pool judged in full)."""
    cut = list(ranked[:depth])
    strata = _strata(judged)
    cutoffs = (*PRECISION_CUTOFFS, depth)
    pooled, relevant_retrieved, estimate, precision = _walk(cut, judged, strata, cutoffs, smoothing)
    precision = {cutoff: precision.get(cutoff, estimate / cutoff) for cutoff in cutoffs}
    est_relevant = sum(s.relevant * s.size / s.judged for s in strata.values() if s.judged)
    judged_relevant = sum(s.relevant for s in strata.values())
    scores = InferredScores(judged_relevant, len(cut), relevant_retrieved, est_relevant, estimate,
                            math.nan, math.nan, precision)
    if judged_relevant == 0:
        scores.precision = {cutoff: math.nan for cutoff in cutoffs}
        return scores
    infap = 0.0
    for s in strata.values():
        if s.judged and s.relevant:
            infap += (s.relevant * s.size / s.judged) / est_relevant * (s.precision_sum / s.relevant)
    if est_relevant > depth:
        infap = infap * est_relevant / depth
    scores.infap = infap
    scores.infndcg = _infndcg(strata, pooled, est_relevant, depth)
    return scores


def _infndcg(strata: dict[int, _Stratum], pooled: int, est_relevant: float, depth: int) -> float:
    """Inferred NDCG from the strata's gains after the walk (module docstring); 0 when the ideal DCG is 0."""
    ideal = 0.0
    rank = 1
    while rank <= est_relevant:
        ideal += 1 / (math.log(rank + 1) / math.log(2))
        if rank >= depth:
            break
        rank += 1
    if ideal == 0 or pooled == 0:
        return 0.0
    dcg = sum(s.docs / pooled * s.gain / s.sampled for s in strata.values() if s.sampled)
    return pooled * dcg / ideal
