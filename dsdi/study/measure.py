"""The study's measurements: per arm (one member, or an ensemble of members with weights) and seed, mAP on a test set,
and the same on the item resamples of the two-level bootstrap (``dsdi.study.stats``).

Test sets:
- ``holdout``: the world's held-out images, against their **true** labels (never the crowd's), 32 features;
- ``choosing`` / ``judging``: the even / odd rows of the hold-out (selection picks on one half, is judged on the other);
- ``clips``: every clip of the world, AP over the full ranking of all clips (equal to trec_eval's AP of a ranking
  that lists every clip) against the qrels;
- ``brief``: the same, counting a relevant (feature, clip) pair only when the feature is on screen under
  BRIEF_SECONDS in all (``clip_truth.csv``); the feature's other relevant clips are ranked last (taken out).

A head's scores are stored per member and seed (``scores/<recipe>-m<split>-s<seed>.npz``: ``holdout`` (n, 37) and
``clips`` (options, aggregations, clips, 37)); an ensemble's are the weighted mean of its members' sigmoids (clip
aggregates fused as ``dsdi rank`` fuses them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.index.scores import AGGREGATIONS
from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import FEATURES
from dsdi.study.design import INFERENCE_OPTIONS, Member
from dsdi.study.resampling import image_resamples, resampled_map, weighted_average_precision
from dsdi.study.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from dsdi.trecvid.qrels import read_qrels

BRIEF_SECONDS = 1.0
TEST_SETS = ("holdout", "choosing", "judging", "clips", "brief")


def scores_path(root: Path, member: Member, seed: int) -> Path:
    return root / "scores" / f"{member[0]}-m{member[1]}-s{seed}.npz"


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, each read once (an NpzFile reads an array again on every access)."""
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def read_holdout_truth(world_dir: Path) -> pd.DataFrame:
    """The hold-out images' true labels: index image_id, the 32 FEATURES columns (0/1), in file order."""
    table = pd.read_csv(world_dir / "true_labels.csv", dtype={"image_id": str})
    return table[table["split"] == "holdout"].set_index("image_id")[list(FEATURES)]


def clip_truth(world_dir: Path, shots: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(relevant (clips, 32), brief (clips, 32), lasting (clips, 32)) bool for the clips ``shots`` in that order:
    relevant from the qrels; brief the relevant pairs on screen under BRIEF_SECONDS, lasting the others."""
    qrels, numbers = read_qrels(world_dir / "qrels.txt"), LADI_V1.feature_numbers
    relevant = np.array([[qrels.get(numbers[name], {}).get(shot, 0) > 0 for name in FEATURES] for shot in shots])
    truth = pd.read_csv(world_dir / "clip_truth.csv", dtype={"shot_id": str})
    seconds = (truth["end_s"] - truth["start_s"]).groupby([truth["shot_id"], truth["fnum"]]).sum()
    on_screen = np.array([[seconds.get((shot, numbers[name]), np.inf) for name in FEATURES] for shot in shots])
    brief = relevant & (on_screen < BRIEF_SECONDS)
    return relevant, brief, relevant & ~brief


@dataclass(frozen=True)
class Arm:
    """Members with weights; ``option`` and ``agg`` say how clip frames are scored and aggregated."""

    members: tuple[Member, ...]
    weights: tuple[float, ...] | None = None
    option: str = "plain"
    agg: str = "max"

    @classmethod
    def single(cls, recipe: str, split: int = 0, **how: str) -> Arm:
        return cls(((recipe, split),), **how)


class Measurements:
    """Reads the study's stored scores and measures arms on test sets, caching each (arm, seed) once."""

    def __init__(self, root: Path, world_dir: Path, seeds: list[int], shots: list[str]) -> None:
        self.root, self.seeds = root, seeds
        truth = read_holdout_truth(world_dir).to_numpy(np.int8)
        relevant, brief, lasting = clip_truth(world_dir, shots)
        self.truth = {"holdout": truth, "choosing": truth[0::2], "judging": truth[1::2],
                      "clips": relevant.astype(np.int8), "brief": brief.astype(np.int8)}
        self.lasting = lasting
        self.weights = {name: image_resamples(len(t), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
                        for name, t in self.truth.items()}
        self._stored: dict[tuple[Member, int], dict[str, np.ndarray]] = {}
        self._measured: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def stored(self, member: Member, seed: int) -> dict[str, np.ndarray]:
        if (member, seed) not in self._stored:
            self._stored[member, seed] = load_arrays(scores_path(self.root, member, seed))
        return self._stored[member, seed]

    def scores(self, arm: Arm, seed: int, test_set: str) -> np.ndarray:
        """(items, 32) float64 scores of the arm on a test set for one seed (brief: lasting pairs ranked last)."""
        weights = np.ones(len(arm.members)) if arm.weights is None else np.asarray(arm.weights, dtype=np.float64)
        if test_set in ("clips", "brief"):
            o, a = INFERENCE_OPTIONS.index(arm.option), AGGREGATIONS.index(arm.agg)
            parts = [self.stored(m, seed)["clips"][o, a] for m in arm.members]
        else:
            parts = [self.stored(m, seed)["holdout"] for m in arm.members]
        fused = sum(w * p.astype(np.float64) for w, p in zip(weights, parts, strict=True)) / weights.sum()
        fused = fused[:, : len(FEATURES)]
        if test_set == "brief":
            fused = np.where(self.lasting, -1.0, fused)
        return {"choosing": fused[0::2], "judging": fused[1::2]}.get(test_set, fused)

    def ap(self, arm: Arm | dict[int, Arm], test_set: str) -> np.ndarray:
        """(seeds, 32) AP per seed and feature (NaN without positives); ``arm`` may differ per seed (a dict)."""
        per_seed = [self._arm(arm, seed) for seed in self.seeds]
        ones = np.ones((1, len(self.truth[test_set])), np.int64)
        return np.stack([weighted_average_precision(self.scores(a, s, test_set), self.truth[test_set], ones)[0]
                         for a, s in zip(per_seed, self.seeds, strict=True)])

    def maps(self, arm: Arm | dict[int, Arm], test_set: str, features: tuple[str, ...] = FEATURES
             ) -> tuple[np.ndarray, np.ndarray]:
        """(mAP per seed (S,), mAP per item resample and seed (B, S)) over ``features``."""
        key = (repr(arm), test_set, features)
        if key not in self._measured:
            mask = np.isin(np.array(FEATURES), features)
            stacked = np.stack([self.scores(self._arm(arm, s), s, test_set) for s in self.seeds])
            ones = np.ones((1, len(self.truth[test_set])), np.int64)
            self._measured[key] = (resampled_map(stacked, self.truth[test_set], ones, mask)[0],
                                   resampled_map(stacked, self.truth[test_set], self.weights[test_set], mask))
        return self._measured[key]

    @staticmethod
    def _arm(arm: Arm | dict[int, Arm], seed: int) -> Arm:
        return arm[seed] if isinstance(arm, dict) else arm
