"""The persistent score index of ``dsdi rank``: OUT_DIR/scores.sqlite and the shard files its processes append to.

``scores.sqlite`` (SQLite with a rollback journal, never WAL, so it works on a network filesystem; schema version 4
in ``PRAGMA user_version``) is written by one process only: a lone ``dsdi rank`` / ``dsdi fuse``, or torchrun's
process 0. Tables:

- ``clips(shot_id, clip_path, start, end, size, mtime, signature)``: the clip set of the latest rank run.
- ``models(model_key, checkpoint, backbone, img_size, sha256, fps, classes)``: one row per scoring model;
  classes: its class names in output order, a JSON list (``dsdi.index.db``).
- ``model_scores(model_key, shot_id, signature, frames, status, note, scores)``: one row per (model, clip).
  ``scores`` is a float32 (4, C) array for a model of C classes (592 bytes for LADI v1's 37, little-endian):
  rows 0-2 the logits of the max over frames, the mean and the mean of the top 3 of the frame sigmoids (logits,
  so that float32 keeps scores near 1 apart where float32 sigmoids would saturate into ties), row 3 per class
  the time in seconds into ``clip_path`` of the frame with the highest sigmoid. Any aggregation can be re-fused
  later.
- ``failures(clip_path, shot_id, reason)``: clips of the latest run that could not be decoded.
- ``embeddings(model_key, shot_id, signature, vector)``: one clip embedding per (model, clip), d int8 codes
  (``dsdi.index.embeddings``: at most 512 bytes), made from the same frames and forward passes as the scores.

A model key is the checkpoint's SHA-256 plus the sampling rate (plus the ``--tta`` / ``--tiles`` views, each
variant a key of its own: ``dsdi.rank.scoring.model_key``), so a retrained checkpoint is re-scored; a clip
signature (a 64-bit hash of the clip's path, byte size, mtime and shot bounds) changes when a clip file is
replaced, so a replaced clip is re-scored too.

Shards: ``add_clip`` (a clip's scores and its embedding) and ``add_failure`` append one checksummed record per clip
to this process's own shard, OUT_DIR/scores.<shard>.shard (one ``write`` each: a killed process loses nothing it
finished; a torn last record is ignored). No two processes ever write one file. ``merge_shards`` moves every
shard into scores.sqlite in one transaction and then deletes them; ``dsdi rank`` merges at its start (what a
killed run left) and at its end (under torchrun process 0, after every process finished). A lone process also
merges its own shard on ``close`` and before it reads.

An index written before version 2 (JSON text scores, WAL journal) is migrated in place on first open, in one
transaction (a killed migration leaves the old index as it was): every stored score is kept.

Modules: ``dsdi.index.scores`` (a clip's aggregates and their stored bytes), ``dsdi.index.db`` (the SQLite file:
schema, opening, migration), ``dsdi.index.shard`` (the shard record format), this one (``ScoreIndex``).
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.index.db import corrupt_scores, model_classes, open_database, signature_hash
from dsdi.index.embeddings import Embeddings, embedding_bytes
from dsdi.index.scores import PARTS, ClipScores, scores_bytes, sigmoids, stored_size
from dsdi.index.shard import read_shard, shard_record, valid_shard_length
from dsdi.labels.labelset import LADI_V1
from dsdi.video.clip import Clip

INDEX_NAME = "scores.sqlite"
SHARD_PATTERN = "scores.*.shard"
_MERGE_BATCH_ROWS = 50_000

@dataclass
class StoredScores:
    """One model's stored scores of the current clip set, in bulk: row i is the clip at ``positions[i]`` of the
    index's ``clip_set()``; ``values[part]`` float64 (n, 37) for each part read (an aggregation's probabilities,
    or "peak": peak times in seconds)."""

    positions: np.ndarray
    frames: np.ndarray
    status: np.ndarray
    notes: np.ndarray
    values: dict[str, np.ndarray]


@dataclass
class ClipSet:
    """The current clip set sorted by shot id: shot ids (numpy str), signatures int64, clip paths (object)."""

    shots: np.ndarray
    signatures: np.ndarray
    paths: np.ndarray


def clip_signature(clip: Clip) -> str:
    """Identity of a clip's content: path, byte size, mtime (ns) and shot bounds."""
    stat = Path(clip.path).stat() if Path(clip.path).exists() else None
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
    return f"{Path(clip.path).resolve()}|{size}|{mtime}|{clip.start}|{clip.end}"


class ScoreIndex:
    """OUT_DIR/scores.sqlite and this process's shard. ``shard``: this process's number (torchrun's world_rank);
    only shard 0 (a lone process, or process 0) opens scores.sqlite, to read, merge or write it."""

    def __init__(self, out_dir: str | Path, shard: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / INDEX_NAME
        self.shard = shard
        self.shard_path = self.out_dir / f"scores.{shard}.shard"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        self._fd: int | None = None
        self._pending = False  # records appended to this process's shard since it was last merged
        self._clip_set: ClipSet | None = None
        self._clip_position = np.zeros(0, dtype=np.int64)

    @property
    def db(self) -> sqlite3.Connection:
        if self.shard != 0:
            raise RuntimeError(f"process {self.shard} of a torchrun job must not open {self.path}; process 0 owns it")
        if self._db is None:
            self._db = open_database(self.path)
        return self._db

    def close(self) -> None:
        """Close the shard (shard 0 first merges it: a lone run's clips are in scores.sqlite when it stops, even
        when it stops on an error) and the database."""
        self.end_shard()
        try:
            if self._pending and self.shard == 0:
                self.merge_shards([self.shard_path])
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ---- writing: clips and failures to this process's shard

    def add_clip(self, clip: Clip, scores_by_model: dict[str, ClipScores],
                 embedding: tuple[str, np.ndarray] | None = None) -> None:
        """Append all models' scores of one clip and its embedding (model key, float (d,) vector) to this
        process's shard in one write (and clear an older failure of it when merged)."""
        items = list(scores_by_model.items())
        meta = {"kind": "clip", "shot_id": clip.shot_id, "signature": signature_hash(clip_signature(clip)),
                "models": [[key, int(s.frames), s.status, s.note, len(s.max_scores)] for key, s in items]}
        blobs = scores_bytes([s for _, s in items]) if items else b""
        if embedding is not None:
            meta["embedding"] = [embedding[0], len(embedding[1])]
            blobs += embedding_bytes(embedding[1])
        self._append(shard_record(meta, blobs))

    def add_failure(self, clip: Clip, reason: str) -> None:
        self._append(shard_record({"kind": "failure", "shot_id": clip.shot_id, "clip_path": str(clip.path),
                              "reason": reason}))

    def end_shard(self) -> None:
        """Close this process's shard file: what it holds is on the filesystem for process 0 to merge."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, record: bytes) -> None:
        if self._fd is None:
            if self.shard_path.exists():  # left by a killed process: drop a torn last record before appending
                valid = valid_shard_length(self.shard_path)
                if valid < self.shard_path.stat().st_size:
                    os.truncate(self.shard_path, valid)
            self._fd = os.open(self.shard_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view):]
        self._pending = True

    def merge_shards(self, shards: list[Path] | None = None) -> int:
        """Move the records of ``shards`` (default: every scores.*.shard in OUT_DIR) into scores.sqlite in one
        transaction, then delete those files; returns the clips merged. Only process 0 calls this, and only
        while no other process writes those shards."""
        self.end_shard()
        paths = sorted(self.out_dir.glob(SHARD_PATTERN)) if shards is None else [p for p in shards if p.exists()]
        merged = 0
        if paths:
            with _bulk(), self._transaction() as db:
                for path in paths:
                    merged += _merge_shard(db, path)
            for path in paths:
                path.unlink(missing_ok=True)
        if shards is None or self.shard_path in paths:
            self._pending = False
        return merged

    def _sync(self) -> None:
        """Before reading: this process's own appended records into scores.sqlite."""
        if self._pending:
            self.merge_shards([self.shard_path])

    # ---- scores.sqlite

    def register_model(self, model_key: str, checkpoint: Path, backbone: str, img_size: int, sha256: str,
                       fps: float, classes: tuple[str, ...]) -> None:
        """Record a scoring model and its class names (output order) under its key."""
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (model_key, str(checkpoint), backbone, img_size, sha256, fps, json.dumps(classes)))

    def model_classes(self, model_key: str) -> tuple[str, ...]:
        """The class names (output order) of a model: as registered (LADI v1's for one registered before they were
        recorded, or stored unregistered with LADI v1's 37 scores); InputError naming the index otherwise."""
        self._sync()
        row = self.db.execute("SELECT classes FROM models WHERE model_key = ?", (model_key,)).fetchone()
        if row is not None:
            return model_classes(row[0])
        if self._class_count(model_key) == len(LADI_V1.class_names):
            return LADI_V1.class_names
        raise InputError(f"{self.path}: model {model_key} is not registered in this score index; rank it again")

    def set_clips(self, clips: list[Clip]) -> None:
        """Make ``clips`` the current clip set and forget the previous run's failures."""
        rows = []
        for clip in sorted(clips, key=lambda c: c.shot_id):  # rowids in shot order: clip_set reads them in order
            stat = Path(clip.path).stat() if Path(clip.path).exists() else None
            rows.append((clip.shot_id, str(clip.path), clip.start, clip.end, stat.st_size if stat else None,
                         stat.st_mtime if stat else None, signature_hash(clip_signature(clip))))
        self._sync()
        with self._transaction():
            self.db.execute("DELETE FROM clips")
            self.db.execute("DELETE FROM failures")
            self.db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._clip_set = None

    def clip_set(self) -> ClipSet:
        """The current clip set (see ClipSet)."""
        if self._clip_set is None:
            rows = self.db.execute("SELECT rowid, shot_id, signature, clip_path FROM clips").fetchall()
            rowids, shots, signatures, paths = _columns(rows, 4)
            shots = np.array(shots, dtype=str)
            order = np.argsort(shots, kind="stable")
            rowids = np.array(rowids, dtype=np.int64)
            position = np.full(int(rowids.max(initial=0)) + 1, -1, dtype=np.int64)  # clips rowid -> position
            position[rowids[order]] = np.arange(len(order))
            self._clip_set = ClipSet(shots[order], np.array(signatures, dtype=np.int64)[order],
                                     np.array(paths, dtype=object)[order])
            self._clip_position = position
        return self._clip_set

    def stored_scores(self, model_key: str, parts: tuple[str, ...] = PARTS, details: bool = True) -> StoredScores:
        """This model's stored scores of the current clip set and clip contents, read in bulk (see StoredScores;
        details=False leaves frames, status and notes empty).

        Raises InputError naming the index file and the shot when a stored row is not a (4, C) float32 array for
        the model's C classes (a damaged or hand-edited index)."""
        self._sync()
        with _bulk():
            return self._stored_scores(model_key, self._class_count(model_key), parts, details)

    def _class_count(self, model_key: str) -> int:
        """The model's class count: from its registered classes, else from its first stored row (scores written
        without registering the model), else LADI v1's."""
        row = self.db.execute("SELECT classes FROM models WHERE model_key = ?", (model_key,)).fetchone()
        if row is not None:
            return len(model_classes(row[0]))
        row = self.db.execute("SELECT length(scores) FROM model_scores WHERE model_key = ? LIMIT 1",
                              (model_key,)).fetchone()
        return row[0] // stored_size(1) if row is not None and row[0] else len(LADI_V1.class_names)

    def _stored_scores(self, model_key: str, n_classes: int, parts: tuple[str, ...], details: bool) -> StoredScores:
        self.clip_set()  # and the clips rowid -> position map
        columns = "".join(f", substr(s.scores, {PARTS.index(p) * n_classes * 4 + 1}, {n_classes * 4})"
                          for p in parts)
        rows = self.db.execute(
            f"SELECT c.rowid, typeof(s.scores) = 'blob' AND length(s.scores) = ?"
            f"{', s.frames, s.status, s.note' if details else ''}{columns} FROM model_scores s"
            " JOIN clips c ON c.shot_id = s.shot_id AND c.signature = s.signature WHERE s.model_key = ?",
            (stored_size(n_classes), model_key)).fetchall()
        rowids, sound, *rest = _columns(rows, 2 + 3 * details + len(parts))
        positions = self._clip_position[np.array(rowids, dtype=np.int64)]
        sound = np.array(sound, dtype=bool)
        if not sound.all():
            raise corrupt_scores(self.path, str(self._clip_set.shots[positions[~sound][0]]), model_key)
        frames, status, notes = rest[:3] if details else ((), (), ())
        values = {}
        for part, column in zip(parts, rest[3 * details:], strict=True):
            raw = np.frombuffer(b"".join(column), dtype="<f4").reshape(len(rows), n_classes)
            values[part] = raw.astype(np.float64) if part == "peak" else sigmoids(raw)
        return StoredScores(positions, np.array(frames, dtype=np.int64), np.array(status, dtype=object),
                            np.array(notes, dtype=object), values)

    def scored_shots(self, model_key: str) -> set[str]:
        """Shot ids of the current clip set whose scores by this model are stored for the same clip content."""
        stored = self.stored_scores(model_key, parts=(), details=False)
        return set(self.clip_set().shots[stored.positions].tolist())

    def model_scores(self, model_key: str) -> dict[str, ClipScores]:
        """shot id -> this model's stored ClipScores, for the current clip set and clip contents (one object per
        clip: for a few clips; fusion reads ``stored_scores``). InputError for a damaged row, as stored_scores."""
        stored = self.stored_scores(model_key)
        shots = self.clip_set().shots[stored.positions].tolist()
        return {shot: ClipScores(int(stored.frames[i]), stored.status[i], stored.notes[i] or "",
                                 *(stored.values[p][i] for p in PARTS)) for i, shot in enumerate(shots)}

    def embedded_shots(self, model_key: str) -> set[str]:
        """Shot ids of the current clip set with an embedding by this model for the same clip content."""
        return set(self.clip_set().shots[self.stored_embeddings(model_key)[0]].tolist())

    def stored_embeddings(self, model_key: str) -> tuple[np.ndarray, Embeddings]:
        """(positions in clip_set of the clips with an embedding by this model for their current content, int64
        (n,); their Embeddings). InputError naming the index for vectors of unequal lengths (a damaged index)."""
        self._sync()
        self.clip_set()  # and the clips rowid -> position map
        with _bulk():
            rows = self.db.execute("SELECT c.rowid, e.vector FROM embeddings e JOIN clips c ON c.shot_id = e.shot_id"
                                   " AND c.signature = e.signature WHERE e.model_key = ?", (model_key,)).fetchall()
        rowids, vectors = _columns(rows, 2)
        if len({len(vector) for vector in vectors}) > 1 or (vectors and not isinstance(vectors[0], bytes)):
            raise InputError(f"{self.path}: the stored embeddings of model {model_key} are corrupt; delete {self.path}"
                             " and run dsdi rank again")
        dims = len(vectors[0]) if vectors else 0
        return self._clip_position[np.array(rowids, dtype=np.int64)], Embeddings.from_bytes(b"".join(vectors), dims)

    def failures(self) -> list[tuple[str, str, str]]:
        """(clip_path, shot_id, reason) of the current clip set, by shot id."""
        self._sync()
        return list(self.db.execute(
            "SELECT f.clip_path, f.shot_id, f.reason FROM failures f JOIN clips c ON c.shot_id = f.shot_id"
            " ORDER BY f.shot_id"))

    def current_clips(self) -> list[tuple[str, str]]:
        """(shot_id, clip_path) of the current clip set, by shot id."""
        return list(self.db.execute("SELECT shot_id, clip_path FROM clips ORDER BY shot_id"))

    def size_bytes(self) -> int:
        """Bytes on disk: scores.sqlite and any shard not merged yet."""
        files = [self.path, *self.out_dir.glob(SHARD_PATTERN)]
        return sum(p.stat().st_size for p in files if p.is_file())

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so that a concurrent reader is waited for."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


@contextmanager
def _bulk() -> Iterator[None]:
    """No cyclic garbage collection while a bulk read or merge makes a million small tuples: each collection
    would walk every object of the process (torch's too), for nothing (tuples of str, int and bytes hold no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _columns(rows: list[tuple], count: int) -> list[tuple]:
    """The columns of query rows (``count`` empty ones when there are no rows)."""
    return list(zip(*rows, strict=True)) if rows else [()] * count


def _merge_shard(db: sqlite3.Connection, path: Path) -> int:
    """Insert one shard's records (in order: a later record of a shot wins) inside the caller's transaction, in
    batches sorted by (model, shot) so that each model's rows lie together; returns the clips merged."""
    rows: list[tuple] = []
    embedded: list[tuple] = []
    fates: dict[str, tuple | None] = {}  # shot id -> its failure row, or None once scored

    def flush() -> None:
        rows.sort(key=lambda row: (row[0], row[1]))
        db.executemany("INSERT OR REPLACE INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", embedded)
        db.executemany("DELETE FROM failures WHERE shot_id = ?", [(s,) for s, f in fates.items() if f is None])
        db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", [f for f in fates.values() if f])
        rows.clear()
        embedded.clear()
        fates.clear()

    clips = 0
    for meta, blobs in read_shard(path):
        shot = meta["shot_id"]
        if meta["kind"] == "failure":
            fates[shot] = (meta["clip_path"], shot, meta["reason"])
            continue
        clips += 1
        fates[shot] = None
        offset = 0
        for key, frames, status, note, *classes in meta["models"]:  # records before label sets: LADI v1's 37
            size = stored_size(classes[0] if classes else len(LADI_V1.class_names))
            rows.append((key, shot, meta["signature"], frames, status, note, blobs[offset:offset + size]))
            offset += size
        if "embedding" in meta:  # records before embeddings: none
            key, dims = meta["embedding"]
            embedded.append((key, shot, meta["signature"], blobs[offset:offset + dims]))
        if len(rows) >= _MERGE_BATCH_ROWS:
            flush()
    flush()
    return clips
