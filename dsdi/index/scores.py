"""One model's scores of one clip (``ClipScores``: the max, mean and top-3 mean over its frames of every class's
sigmoid, and the peak frame's time) and their stored form in the score index (``dsdi.index.store``): a float32 (4, C)
little-endian array for a model of C classes, rows 0-2 the logits of the three aggregates (logits, so that float32
keeps scores near 1 apart where float32 sigmoids would saturate into ties), row 3 the peak times in seconds
(``stored_size(C)`` bytes: 592 for LADI v1's 37 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("max", "mean", "top3")
_AGG_COLUMNS = {"max": "max_scores", "mean": "mean_scores", "top3": "top3_scores"}
PARTS = ("max", "mean", "top3", "peak")  # the rows of a stored scores array


def stored_size(n_classes: int) -> int:
    """Bytes of one stored scores array of a model with ``n_classes`` outputs."""
    return len(PARTS) * n_classes * 4


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
    """One model's aggregates for one clip: float64 (C,) each; peak_times in seconds into the clip file."""

    frames: int
    status: str  # "ok" or "truncated"
    note: str
    max_scores: np.ndarray
    mean_scores: np.ndarray
    top3_scores: np.ndarray
    peak_times: np.ndarray

    @classmethod
    def from_frame_scores(cls, probs: np.ndarray, times_s: np.ndarray, truncated: bool, note: str) -> ClipScores:
        """Aggregate frame sigmoids probs (N, C) sampled at times_s (N,) seconds."""
        probs = np.asarray(probs, dtype=np.float64)
        top = np.sort(probs, axis=0)[::-1][: min(3, len(probs))]
        return cls(len(probs), "truncated" if truncated else "ok", note, probs.max(axis=0), probs.mean(axis=0),
                   top.mean(axis=0), np.asarray(times_s, dtype=np.float64)[probs.argmax(axis=0)])

    def aggregate(self, agg: str) -> np.ndarray:
        """The (C,) clip scores for agg in AGGREGATIONS."""
        return getattr(self, _AGG_COLUMNS[agg])

    def to_bytes(self) -> bytes:
        """The stored form: float32 (4, C) little-endian, aggregates as logits, then the peak times."""
        return scores_bytes([self])


def scores_bytes(scores: list[ClipScores]) -> bytes:
    """The stored forms of several ClipScores (each of its own class count), concatenated (one vectorised
    conversion where they have one class count)."""
    if len({len(s.max_scores) for s in scores}) > 1:
        return b"".join(scores_bytes([s]) for s in scores)
    stored = np.empty((len(scores), len(PARTS), len(scores[0].max_scores) if scores else 0), dtype="<f4")
    stored[:, :3] = logits([[s.max_scores, s.mean_scores, s.top3_scores] for s in scores])
    stored[:, 3] = [s.peak_times for s in scores]
    return stored.tobytes()
