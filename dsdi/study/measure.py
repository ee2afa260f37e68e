"""The study's two measurements, as average precision per feature (32,), NaN where a feature has no positive:

- **image AP** of a run's stored hold-out sigmoids (``predictions/<stem>.holdout.csv``) against the world's
  **true** labels (``true_labels.csv``, not the crowd's), on the held-out images that are not outliers;
- **clip AP** of fused clip scores from a score index (``dsdi.rank.fusion.fused_scores``), TREC AP against the qrels
  (``trecvid.evaluation.evaluate_run``); optionally only on the *brief* appearances: a relevant (feature, clip) pair
  counts only when the feature is on screen under ``BRIEF_SECONDS`` in all (``clip_truth.csv``), and the
  feature's other relevant clips are taken out of its ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.index.store import ScoreIndex
from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import CLASSES, FEATURES
from dsdi.rank.fusion import fused_scores
from dsdi.rank.output import ranked_by_score
from dsdi.train.metrics import per_class_average_precision
from dsdi.train.predictions import read_predictions
from dsdi.trecvid.evaluation import evaluate_run
from dsdi.trecvid.qrels import read_qrels

BRIEF_SECONDS = 1.0


def read_truth(world_dir: Path) -> pd.DataFrame:
    """true_labels.csv of a world: index image_id, the 32 FEATURES columns (0/1), outlier images left out."""
    table = pd.read_csv(world_dir / "true_labels.csv", dtype={"image_id": str}).set_index("image_id")
    if "outlier" in table.columns:
        table = table[table["outlier"] == 0]
    return table[list(FEATURES)]


def image_ap(scores: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """AP per feature (32,) of ``scores`` (index image_id, CLASSES columns) on the images of both tables."""
    ids = scores.index.intersection(truth.index)
    ap, _ = per_class_average_precision(truth.loc[ids].to_numpy(np.float64),
                                        scores.loc[ids, list(FEATURES)].to_numpy(np.float64))
    return ap


def holdout_scores(run_dir: Path, stem: str = "best") -> pd.DataFrame:
    """A run's stored hold-out sigmoids of checkpoint ``stem`` (index image_id, the 37 CLASSES columns)."""
    return read_predictions(run_dir, stem, "holdout")


def mean_scores(tables: list[pd.DataFrame], weights: list[float] | None = None) -> pd.DataFrame:
    """The weighted mean of several score tables over their common rows (the ensemble's sigmoids)."""
    ids = tables[0].index
    for table in tables[1:]:
        ids = ids.intersection(table.index)
    weight = np.ones(len(tables)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = sum(w * table.loc[ids, list(CLASSES)].to_numpy(np.float64) for w, table in zip(weight, tables, strict=True))
    return pd.DataFrame(total / weight.sum(), index=ids, columns=list(CLASSES))


class ClipJudge:
    """The default world's qrels and brief appearances; scores fused clip rankings per feature."""

    def __init__(self, world_dir: Path) -> None:
        self.qrels = read_qrels(world_dir / "qrels.txt")
        self.fnums = LADI_V1.feature_numbers
        truth = pd.read_csv(world_dir / "clip_truth.csv")
        seconds = (truth["end_s"] - truth["start_s"]).groupby([truth["fnum"], truth["shot_id"]]).sum()
        relevant = {(fnum, shot) for fnum, shots in self.qrels.items() for shot, rel in shots.items() if rel > 0}
        self.brief = {pair for pair, total in seconds.items() if total < BRIEF_SECONDS and pair in relevant}
        self.lasting = relevant - self.brief

    def ap(self, clip_scores: pd.DataFrame, brief_only: bool = False) -> np.ndarray:
        """TREC AP per feature (32,) of clip scores (index shot_id, FEATURES columns); NaN without relevant clips.
        ``brief_only``: judged on the brief appearances alone (module docstring)."""
        rankings, qrels = ranked_by_score(clip_scores), self.qrels
        if brief_only:
            rankings = {fnum: [(shot, s) for shot, s in ranking if (fnum, shot) not in self.lasting]
                        for fnum, ranking in rankings.items()}
            qrels = {fnum: {shot: int((fnum, shot) in self.brief) for shot in shots} for fnum, shots in qrels.items()}
        table, _ = evaluate_run(rankings, qrels, k=None)
        ap_by_fnum = dict(zip(table["fnum"], table["ap"], strict=True))
        return np.array([ap_by_fnum.get(self.fnums[name], np.nan) for name in FEATURES], dtype=np.float64)


def clip_scores(index: ScoreIndex, keys: list[str], weights: list[float] | None = None,
                agg: str = "max") -> pd.DataFrame:
    """Fused clip scores (index shot_id, 37 CLASSES columns) of the models ``keys`` in ``index``."""
    table, _ = fused_scores(index, keys, weights or [1.0] * len(keys), agg, [], LADI_V1)
    return table[list(CLASSES)]
