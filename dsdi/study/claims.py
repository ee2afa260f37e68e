"""The study's claims, each a set of comparisons "A minus B" paired by seed (``dsdi.study.stats``) on image mAP against
the true labels or clip mAP against the qrels (``dsdi.study.measure``). Exactly one row per claim is its
pre-registered headline (``design.HEADLINES``); its verdict, Holm-corrected over all headlines, is the claim's. The
other rows are descriptive: an estimate, its interval and an unadjusted p.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dsdi.labels.schema import CLASS_COUNTS, FEATURES
from dsdi.rank.selection import forward_selection
from dsdi.study.design import (
    ADDED_MEMBER,
    HEADLINES,
    OUTLIER_ADDED,
    OUTLIER_TRIO,
    PAPER_POOL,
    SMALL_OBJECT_FEATURES,
    TRIO,
    Headline,
)
from dsdi.study.measure import Arm, Measurements
from dsdi.study.resampling import weighted_average_precision
from dsdi.study.stats import Comparison, Judged, compare, judge_headlines

RAREST_THIRD = tuple(name for _, name in sorted(zip(CLASS_COUNTS, FEATURES, strict=False))[: -(-len(FEATURES) // 3)])
"""The 11 features with the smallest paper Table 1 counts (the world's frequencies follow Table 1)."""


@dataclass
class Row:
    """One comparison; ``a`` and ``b`` are the arms' mAPs (mean over seeds); ``judged`` is set on headline rows."""

    comparison: str
    measure: str
    a: float
    b: float
    result: Comparison
    judged: Judged | None = None


@dataclass
class Claim:
    number: int
    title: str
    claim: str
    rows: list[Row]
    in_paper: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> Row:
        return next(row for row in self.rows if row.judged is not None)


class Comparer:
    """Builds rows from arms on test sets."""

    def __init__(self, m: Measurements) -> None:
        self.m = m

    @functools.cached_property
    def selections(self) -> tuple[dict[int, Arm], dict[int, Arm], list[str]]:
        """``_selections``, made once for the claims that share it."""
        return _selections(self)

    def row(self, comparison: str, measure: str, a: Arm | dict, b: Arm | dict, test_set: str,
            features: tuple[str, ...] = FEATURES) -> Row:
        map_a, resampled_a = self.m.maps(a, test_set, features)
        map_b, resampled_b = self.m.maps(b, test_set, features)
        return Row(comparison, measure, float(map_a.mean()), float(map_b.mean()),
                   compare(map_a, map_b, resampled_a, resampled_b))

    def image_and_clip(self, comparison: str, scope: str, a: Arm, b: Arm) -> list[Row]:
        where = f", {scope}" if scope else ""
        return [self.row(comparison, f"image mAP{where}", a, b, "holdout"),
                self.row(comparison, f"clip mAP{where}", a, b, "clips")]


def _ensemble(members: tuple, **how: str) -> Arm:
    return Arm(tuple(members), **how)


def labels_claim(c: Comparer) -> Claim:
    rows = [c.row("soft − majority", "image mAP, LADI-noise crowd", Arm.single("focal"), Arm.single("ladi-majority"),
                  "holdout"),
            c.row("soft − hard", "image mAP, LADI-noise crowd", Arm.single("focal"), Arm.single("ladi-hard"),
                  "holdout"),
            c.row("soft − majority", "image mAP, independent noise", Arm.single("independent-soft"),
                  Arm.single("independent-majority"), "holdout"),
            c.row("soft − hard", "image mAP, independent noise", Arm.single("independent-soft"),
                  Arm.single("independent-hard"), "holdout")]
    return Claim(1, "Soft labels vs hard and majority labels", "Soft labels (each class's share of the workers "
                 "naming it, scaled so the most named is 1) suppress annotation noise better than hard or majority "
                 "labels (paper 2.1).", rows)


def losses_claim(c: Comparer) -> Claim:
    rows = []
    for loss in ("focal", "cbfl", "rfl"):
        rows.append(c.row(f"{loss} − bce", "image mAP, rarest third", Arm.single(loss), Arm.single("bce"), "holdout",
                          RAREST_THIRD))
        rows.append(c.row(f"{loss} − bce", "image mAP, all features", Arm.single(loss), Arm.single("bce"), "holdout"))
    claim = Claim(2, "Focal-loss family vs BCE on the long tail", "Focal loss and its class-balanced and reduced "
                  "variants handle LADI's imbalance better than plain BCE, most of all on the rare classes (paper "
                  "2.2).", rows)
    claim.notes.append(f"Rarest third (smallest Table 1 counts): {', '.join(RAREST_THIRD)}.")
    return claim


def none_weight_claim(c: Comparer) -> Claim:
    trio = _ensemble(TRIO)
    rows = [c.row("trio with a none ×0.01 member − trio", "image mAP",
                  _ensemble((*TRIO[:2], ADDED_MEMBER["none0.01"])), trio, "holdout")]
    rows += [c.row(f"none ×{w} − none ×1 (single models)", "image mAP", Arm.single(f"none{w}"), Arm.single("focal"),
                   "holdout") for w in ("0.1", "0.01")]
    return Claim(3, "None-class weighting as a source of ensemble diversity", "A member trained with the five none "
                 "classes' losses ×0.01 (paper C09) adds to an ensemble of differently-split members.", rows)


def drop_max_claim(c: Comparer) -> Claim:
    rows = [c.row("outlier trio with a drop-max member − outlier trio", "image mAP, 10% outliers",
                  _ensemble((*OUTLIER_TRIO[:2], OUTLIER_ADDED)), _ensemble(OUTLIER_TRIO), "holdout"),
            c.row("drop max − keep (single models)", "image mAP, 10% outliers", Arm.single("outliers-dropmax"),
                  Arm.single("outliers-focal"), "holdout"),
            c.row("drop max − keep (single models)", "image mAP, no outliers", Arm.single("dropmax"),
                  Arm.single("focal"), "holdout"),
            c.row("with outliers − without (single models)", "image mAP", Arm.single("outliers-focal"),
                  Arm.single("focal"), "holdout")]
    return Claim(4, "Max-loss dropping with outliers in the training set", "A member trained dropping each batch's "
                 "largest loss (paper C11, Fig. 5) adds to an ensemble trained on images with outliers.", rows)


def long_run_claim(c: Comparer) -> Claim:
    rows = [c.row("trio with a long-run member − trio", "image mAP", _ensemble((*TRIO[:2], ADDED_MEMBER["long"])),
                  _ensemble(TRIO), "holdout"),
            c.row("long run − one run (single models)", "image mAP", Arm.single("long"), Arm.single("focal"),
                  "holdout")]
    return Claim(5, "The long run's last epoch as a member", "The last epoch of a much longer cosine run (paper C10: "
                 "300 epochs beside 40) adds to an ensemble of differently-split members.", rows)


def _map(truth: np.ndarray, scores: np.ndarray) -> float:
    """mAP over the features with a positive (``rank.selection.holdout_map``'s, vectorised: the same AP)."""
    return float(np.nanmean(weighted_average_precision(scores, truth, np.ones((1, len(truth)), np.int64))[0]))


def _selections(c: Comparer) -> tuple[dict[int, Arm], dict[int, Arm], list[str]]:
    """Per seed, the best single member of PAPER_POOL and the greedy ensemble, both chosen on the choosing half
    with the same features and true labels they are judged on; and notes naming the choices."""
    best, greedy, notes = {}, {}, []
    truth = c.m.truth["choosing"]
    for seed in c.m.seeds:
        chosen = np.stack([c.m.scores(Arm((member,)), seed, "choosing") for member in PAPER_POOL])
        pick = int(np.nanargmax([_map(truth, scores) for scores in chosen]))
        counts = forward_selection(chosen, truth, size=len(PAPER_POOL), metric=_map).counts
        used = np.flatnonzero(counts)
        best[seed] = Arm((PAPER_POOL[pick],))
        greedy[seed] = Arm(tuple(PAPER_POOL[i] for i in used), tuple(float(counts[i]) for i in used))
        picked = ", ".join(f"{PAPER_POOL[i][0]}×{counts[i]}" for i in used)
        notes.append(f"seed {seed}: best single {PAPER_POOL[pick][0]}; greedy {picked}")
    return best, greedy, notes


def ensemble_claim(c: Comparer) -> Claim:
    pool = _ensemble(PAPER_POOL)
    best, _, notes = c.selections
    rows = [c.row("paper ensemble − best single member", "image mAP, judging half", pool, best, "judging"),
            c.row("paper ensemble − baseline member", "image mAP", pool, Arm.single("focal"), "holdout"),
            c.row("paper ensemble − baseline member", "clip mAP", pool, Arm.single("focal"), "clips")]
    claim = Claim(6, "An equal-weight ensemble of differently trained members", "Ensembling members of different "
                  f"recipes and splits with equal weights beats the best single member (paper 2.5; here "
                  f"{len(PAPER_POOL)} members: " + ", ".join(name for name, _ in PAPER_POOL) + ").", rows)
    claim.notes += notes
    return claim


def snapshot_claim(c: Comparer) -> Claim:
    rows = c.image_and_clip("snapshot ensemble − one run", "", Arm.single("snapshots"), Arm.single("focal"))
    return Claim(7, "Snapshot ensemble vs one run of the same length", "The mean of the snapshots at the ends of "
                 "cosine cycles of at least 3 epochs each, from the pretrained start (Huang et al. 2017, the "
                 "technique the paper names), beats one cosine run of the same length.", rows)


def aggregation_claim(c: Comparer) -> Claim:
    rows = []
    for test_set, scope in (("brief", "features on screen < 1 s"), ("clips", "all features")):
        rows += [c.row(f"max − {agg}", f"clip mAP, {scope}", Arm.single("focal"), Arm.single("focal", agg=agg),
                       test_set) for agg in ("mean", "top3")]
    return Claim(8, "Clip score: max vs mean vs top-3 over frames", "The max over a clip's 10 fps frames finds brief "
                 "appearances that a mean dilutes (paper 2.5).", rows)


def greedy_claim(c: Comparer) -> Claim:
    _, greedy, notes = c.selections
    rows = [c.row("greedy selection − equal weights", "image mAP, judging half", greedy, _ensemble(PAPER_POOL),
                  "judging")]
    claim = Claim(9, "Greedy ensemble selection (beyond the paper)", "Forward selection with replacement on half of "
                  "the hold-out beats the paper's equal weights on the other half.", rows, in_paper=False)
    claim.notes += notes
    return claim


def tiles_claim(c: Comparer) -> Claim:
    rows = []
    for name, recipe in (("--tiles 2x2 − plain", "focal"), ("--tiles 2x2 − plain, head also trained on tiles",
                                                           "tiles")):
        for scope, features in (("small objects", SMALL_OBJECT_FEATURES), ("all features", FEATURES)):
            rows.append(c.row(name, f"clip mAP, {scope}", Arm.single(recipe, option="tiles"),
                              Arm.single("focal"), "clips", features))
    for scope, features in (("small objects", SMALL_OBJECT_FEATURES), ("all features", FEATURES)):
        rows.append(c.row("--tta flip − plain", f"clip mAP, {scope}", Arm.single("focal", option="flip"),
                          Arm.single("focal"), "clips", features))
    claim = Claim(10, "Tiles and flip at inference (beyond the paper)", "Scoring each frame's 2 x 2 tiles as well "
                  "(SAHI-style slicing) finds small objects; flip test-time augmentation helps overall.", rows,
                  in_paper=False)
    claim.notes.append(f"Small objects: {', '.join(SMALL_OBJECT_FEATURES)}.")
    return claim


CLAIMS: tuple[Callable[[Comparer], Claim], ...] = (labels_claim, losses_claim, none_weight_claim, drop_max_claim,
                                                   long_run_claim, ensemble_claim, snapshot_claim, aggregation_claim,
                                                   greedy_claim, tiles_claim)


def _headline_row(claim: Claim, headline: Headline) -> Row:
    matches = [row for row in claim.rows if (row.comparison, row.measure) == (headline.comparison, headline.measure)]
    if len(matches) != 1:
        raise ValueError(f"claim {claim.number} has {len(matches)} rows for its headline {headline}")  # design bug
    return matches[0]


def measure_claims(m: Measurements) -> list[Claim]:
    """Every claim, its headline rows judged together (Holm over HEADLINES)."""
    comparer = Comparer(m)
    claims = [claim(comparer) for claim in CLAIMS]
    by_number = {claim.number: claim for claim in claims}
    rows = [_headline_row(by_number[h.claim], h) for h in HEADLINES]
    for row, judged in zip(rows, judge_headlines([row.result for row in rows]), strict=True):
        row.judged = judged
    return claims
