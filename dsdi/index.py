"""The persistent score index of ``dsdi rank``: OUT_DIR/scores.sqlite (SQLite, WAL, one transaction per clip).

Tables:

- ``clips(shot_id, clip_path, start, end, size, mtime, signature)``: the clip set of the latest rank run.
- ``models(model_key, checkpoint, backbone, img_size, sha256, fps)``: one row per scoring model.
- ``model_scores(model_key, shot_id, signature, frames, status, note, max_scores, mean_scores, top3_scores,
  peak_times)``: one row per (model, clip). The three score columns are JSON lists of 37 frame-sigmoid
  aggregates (max over frames, mean, mean of the top 3); ``peak_times`` lists, per class, the time in
  seconds into ``clip_path`` of the frame with the highest sigmoid. Any aggregation can be re-fused later.
- ``failures(clip_path, shot_id, reason)``: clips of the latest run that could not be decoded.

A model key is the checkpoint's SHA-256 plus the sampling rate, so a retrained checkpoint is re-scored; a clip
signature is its path, byte size, mtime and shot bounds, so a replaced clip file is re-scored too. A row is
written only when every frame of the clip is scored, so a killed run resumes at the first unfinished clip.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.schema import NUM_CLASSES
from dsdi.video import Clip

INDEX_NAME = "scores.sqlite"
AGGREGATIONS = ("max", "mean", "top3")
_AGG_COLUMNS = {"max": "max_scores", "mean": "mean_scores", "top3": "top3_scores"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (shot_id TEXT PRIMARY KEY, clip_path TEXT NOT NULL, start REAL, "end" REAL,
    size INTEGER, mtime REAL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (model_key TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, backbone TEXT,
    img_size INTEGER, sha256 TEXT, fps REAL);
CREATE TABLE IF NOT EXISTS model_scores (model_key TEXT NOT NULL, shot_id TEXT NOT NULL, signature TEXT NOT NULL,
    frames INTEGER NOT NULL, status TEXT NOT NULL, note TEXT, max_scores TEXT NOT NULL, mean_scores TEXT NOT NULL,
    top3_scores TEXT NOT NULL, peak_times TEXT NOT NULL, PRIMARY KEY (model_key, shot_id));
CREATE TABLE IF NOT EXISTS failures (clip_path TEXT NOT NULL, shot_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""


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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clip_signature(clip: Clip) -> str:
    """Identity of a clip's content: path, byte size, mtime (ns) and shot bounds."""
    stat = Path(clip.path).stat() if Path(clip.path).exists() else None
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
    return f"{Path(clip.path).resolve()}|{size}|{mtime}|{clip.start}|{clip.end}"


def _retry_while_locked(statement: Callable[[], object], seconds: float = 120.0) -> None:
    """Run ``statement``, retrying while another process holds the database.

    Switching a new file to WAL (and creating its tables) can fail with "database is locked" at once,
    without waiting on the busy timeout, when two torchrun processes open the index at the same moment.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ScoreIndex:
    """OUT_DIR/scores.sqlite; safe for several processes (torchrun processes) writing at once."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / INDEX_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 120000")
        _retry_while_locked(lambda: self.db.execute("PRAGMA journal_mode = WAL"))
        self.db.execute("PRAGMA synchronous = NORMAL")
        _retry_while_locked(lambda: self.db.executescript(_SCHEMA))

    def close(self) -> None:
        self.db.close()

    def register_model(self, model_key: str, checkpoint: Path, backbone: str, img_size: int, sha256: str,
                       fps: float) -> None:
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                            (model_key, str(checkpoint), backbone, img_size, sha256, fps))

    def set_clips(self, clips: list[Clip]) -> None:
        """Make ``clips`` the current clip set and forget the previous run's failures."""
        rows = []
        for clip in clips:
            stat = Path(clip.path).stat() if Path(clip.path).exists() else None
            rows.append((clip.shot_id, str(clip.path), clip.start, clip.end, stat.st_size if stat else None,
                         stat.st_mtime if stat else None, clip_signature(clip)))
        with self._transaction():
            self.db.execute("DELETE FROM clips")
            self.db.execute("DELETE FROM failures")
            self.db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def scored_shots(self, model_key: str) -> set[str]:
        """Shot ids of the current clip set whose scores by this model are stored for the same clip content."""
        rows = self.db.execute(
            "SELECT s.shot_id FROM model_scores s JOIN clips c ON c.shot_id = s.shot_id AND c.signature = s.signature"
            " WHERE s.model_key = ?", (model_key,))
        return {shot for (shot,) in rows}

    def add_clip(self, clip: Clip, scores_by_model: dict[str, ClipScores]) -> None:
        """Store all models' scores of one clip in one transaction (and clear an older failure of it)."""
        signature = clip_signature(clip)
        with self._transaction():
            self.db.execute("DELETE FROM failures WHERE shot_id = ?", (clip.shot_id,))
            for key, scores in scores_by_model.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, clip.shot_id, signature, scores.frames, scores.status, scores.note,
                     *(json.dumps(a.tolist()) for a in (scores.max_scores, scores.mean_scores, scores.top3_scores,
                                                        scores.peak_times))))

    def add_failure(self, clip: Clip, reason: str) -> None:
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", (str(clip.path), clip.shot_id, reason))

    def failures(self) -> list[tuple[str, str, str]]:
        """(clip_path, shot_id, reason) of the current clip set, by shot id."""
        return list(self.db.execute(
            "SELECT f.clip_path, f.shot_id, f.reason FROM failures f JOIN clips c ON c.shot_id = f.shot_id"
            " ORDER BY f.shot_id"))

    def current_clips(self) -> list[tuple[str, str]]:
        """(shot_id, clip_path) of the current clip set, by shot id."""
        return list(self.db.execute("SELECT shot_id, clip_path FROM clips ORDER BY shot_id"))

    def model_scores(self, model_key: str) -> dict[str, ClipScores]:
        """shot id -> this model's stored ClipScores, for the current clip set and clip contents.

        Raises InputError naming the index file and the shot when a stored row is not 37 numbers per column
        (a damaged or hand-edited index)."""
        rows = self.db.execute(
            "SELECT s.shot_id, s.frames, s.status, s.note, s.max_scores, s.mean_scores, s.top3_scores, s.peak_times"
            " FROM model_scores s JOIN clips c ON c.shot_id = s.shot_id AND c.signature = s.signature"
            " WHERE s.model_key = ?", (model_key,))
        result = {}
        for shot, frames, status, note, *arrays in rows:
            try:
                values = [np.asarray(json.loads(a), dtype=np.float64) for a in arrays]
            except (TypeError, ValueError):  # not JSON, or not a flat list of numbers
                values = []
            if len(values) != len(arrays) or any(v.shape != (NUM_CLASSES,) for v in values):
                raise InputError(f"{self.path}: the stored scores of shot {shot!r} (model {model_key}) are corrupt; "
                                 f"delete {self.path} and run dsdi rank again to rescore the clips")
            result[shot] = ClipScores(frames, status, note or "", *values)
        return result

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE) so concurrent writers queue instead of failing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
