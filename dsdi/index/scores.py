"""One model's scores of one clip (``ClipScores``: the max, mean and top-3 mean over its frames of every class's
sigmoid, and the peak frame's time) and their stored form in the score index (``dsdi.index.store``): a float32 (4, 37)
little-endian array, rows 0-2 the logits of the three aggregates (logits, so that float32 keeps scores near 1
apart where float32 sigmoids would saturate into ties), row 3 the peak times in seconds (SCORES_BYTES = 592 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdi.labels.schema import NUM_CLASSES

AGGREGATIONS = ("max", "mean", "top3")
_AGG_COLUMNS = {"max": "max_scores", "mean": "mean_scores", "top3": "top3_scores"}
PARTS = ("max", "mean", "top3", "peak")  # the rows of a stored scores array
SCORES_BYTES = len(PARTS) * NUM_CLASSES * 4


def logits(probs: np.ndarray) -> np.ndarray:
    """float32 logits of probabilities (0 and 1 become -inf and inf)."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.log(probs) - np.log1p(-probs)).astype(np.float32)


def sigmoids(logits: np.ndarray) -> np.ndarray:
    """float64 probabilities of stored float32 logits."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@dataclass
class ClipScores:
    """One model's aggregates for one clip: float64 (37,) each; peak_times in seconds into the clip file."""

    frames: int
    status: str  # "ok" or "truncated"
    note: str
    max_scores: np.ndarray
    mean_scores: np.ndarray
    top3_scores: np.ndarray
    peak_times: np.ndarray

    @classmethod
    def from_frame_scores(cls, probs: np.ndarray, times_s: np.ndarray, truncated: bool, note: str) -> ClipScores:
        """Aggregate frame sigmoids probs (N, 37) sampled at times_s (N,) seconds."""
        probs = np.asarray(probs, dtype=np.float64)
        top = np.sort(probs, axis=0)[::-1][: min(3, len(probs))]
        return cls(len(probs), "truncated" if truncated else "ok", note, probs.max(axis=0), probs.mean(axis=0),
                   top.mean(axis=0), np.asarray(times_s, dtype=np.float64)[probs.argmax(axis=0)])

    def aggregate(self, agg: str) -> np.ndarray:
        """The (37,) clip scores for agg in AGGREGATIONS."""
        return getattr(self, _AGG_COLUMNS[agg])

    def to_bytes(self) -> bytes:
        """The stored form: float32 (4, 37) little-endian, aggregates as logits, then the peak times."""
        return scores_bytes([self])


def scores_bytes(scores: list[ClipScores]) -> bytes:
    """The stored forms of several ClipScores, concatenated (one vectorised conversion)."""
    stored = np.empty((len(scores), len(PARTS), NUM_CLASSES), dtype="<f4")
    stored[:, :3] = logits([[s.max_scores, s.mean_scores, s.top3_scores] for s in scores])
    stored[:, 3] = [s.peak_times for s in scores]
    return stored.tobytes()
