"""The persistent score index of ``dsdi rank``: OUT_DIR/scores.sqlite and the shard files its processes append to.

``scores.sqlite`` (SQLite with a rollback journal, never WAL, so it works on a network filesystem; schema version 2
in ``PRAGMA user_version``) is written by one process only: a lone ``dsdi rank`` / ``dsdi fuse``, or torchrun's
process 0. Tables:

- ``clips(shot_id, clip_path, start, end, size, mtime, signature)``: the clip set of the latest rank run.
- ``models(model_key, checkpoint, backbone, img_size, sha256, fps)``: one row per scoring model.
- ``model_scores(model_key, shot_id, signature, frames, status, note, scores)``: one row per (model, clip).
  ``scores`` is a float32 (4, 37) array (592 bytes, little-endian): rows 0-2 the logits of the max over frames,
  the mean and the mean of the top 3 of the frame sigmoids (logits, so that float32 keeps scores near 1 apart
  where float32 sigmoids would saturate into ties), row 3 per class the time in seconds into ``clip_path`` of
  the frame with the highest sigmoid. Any aggregation can be re-fused later.
- ``failures(clip_path, shot_id, reason)``: clips of the latest run that could not be decoded.

A model key is the checkpoint's SHA-256 plus the sampling rate (plus the ``--tta`` / ``--tiles`` views, each
variant a key of its own: ``dsdi.rank.model_key``), so a retrained checkpoint is re-scored; a clip
signature (a 64-bit hash of the clip's path, byte size, mtime and shot bounds) changes when a clip file is
replaced, so a replaced clip is re-scored too.

Shards: ``add_clip`` and ``add_failure`` append one checksummed record per clip to this process's own shard,
OUT_DIR/scores.<shard>.shard (one ``write`` each: a killed process loses nothing it finished; a torn last record
is ignored). No two processes ever write one file. ``merge_shards`` moves every shard into scores.sqlite in one
transaction and then deletes them; ``dsdi rank`` merges at its start (what a killed run left) and at its end
(under torchrun process 0, after every process finished). A lone process also merges its own shard on ``close``
and before it reads.

An index written before version 2 (JSON text scores, WAL journal) is migrated in place on first open, in one
transaction (a killed migration leaves the old index as it was): every stored score is kept.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.index_shard import read_shard, shard_record, valid_shard_length
from dsdi.schema import NUM_CLASSES
from dsdi.video import Clip

INDEX_NAME = "scores.sqlite"
SHARD_PATTERN = "scores.*.shard"
SCHEMA_VERSION = 2
AGGREGATIONS = ("max", "mean", "top3")
_AGG_COLUMNS = {"max": "max_scores", "mean": "mean_scores", "top3": "top3_scores"}
_PARTS = ("max", "mean", "top3", "peak")  # the rows of a stored scores array
SCORES_BYTES = len(_PARTS) * NUM_CLASSES * 4
_MERGE_BATCH_ROWS = 50_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS clips (shot_id TEXT PRIMARY KEY, clip_path TEXT NOT NULL, start REAL, "end" REAL,
    size INTEGER, mtime REAL, signature INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS models (model_key TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, backbone TEXT,
    img_size INTEGER, sha256 TEXT, fps REAL)""",
    """CREATE TABLE IF NOT EXISTS model_scores (model_key TEXT NOT NULL, shot_id TEXT NOT NULL,
    signature INTEGER NOT NULL, frames INTEGER NOT NULL, status TEXT NOT NULL, note TEXT, scores BLOB NOT NULL,
    PRIMARY KEY (model_key, shot_id))""",
    "CREATE TABLE IF NOT EXISTS failures (clip_path TEXT NOT NULL, shot_id TEXT PRIMARY KEY, reason TEXT NOT NULL)",
)


def _logits(probs: np.ndarray) -> np.ndarray:
    """float32 logits of probabilities (0 and 1 become -inf and inf)."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.log(probs) - np.log1p(-probs)).astype(np.float32)


def _sigmoids(logits: np.ndarray) -> np.ndarray:
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
        return _scores_bytes([self])


def _scores_bytes(scores: list[ClipScores]) -> bytes:
    """The stored forms of several ClipScores, concatenated (one vectorised conversion)."""
    stored = np.empty((len(scores), len(_PARTS), NUM_CLASSES), dtype="<f4")
    stored[:, :3] = _logits([[s.max_scores, s.mean_scores, s.top3_scores] for s in scores])
    stored[:, 3] = [s.peak_times for s in scores]
    return stored.tobytes()


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


def signature_hash(signature: str) -> int:
    """The stored form of a clip signature: a signed 64-bit hash (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(signature.encode(), digest_size=8).digest(), "little", signed=True)


def registered_models(index_file: str | Path) -> dict[str, tuple[str, str]]:
    """model key -> (checkpoint, backbone) of every model ever ranked into an index file (every --tta / --tiles
    variant too), read without writing anything (no migration, no journal); {} when there is no such file or
    table."""
    index_file = Path(index_file)
    if not index_file.is_file():
        return {}
    db = sqlite3.connect(f"{index_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT model_key, checkpoint, backbone FROM models").fetchall()
    except sqlite3.DatabaseError:  # not an index (or one being written in WAL mode by an old dsdi)
        rows = []
    finally:
        db.close()
    return {key: (checkpoint, backbone) for key, checkpoint, backbone in rows}


# ---- the SQLite file

def _retry_while_locked(statement: Callable[[], object], seconds: float = 120.0) -> object:
    """Run ``statement``, retrying while another connection (a concurrent reader) holds the database: changing
    the journal mode fails at once with "database is locked" instead of waiting on the busy timeout."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _corrupt(path: Path, shot: str, model_key: str) -> InputError:
    return InputError(f"{path}: the stored scores of shot {shot!r} (model {model_key}) are corrupt; "
                      f"delete {path} and run dsdi rank again to rescore the clips")


def _open_database(path: Path) -> sqlite3.Connection:
    """scores.sqlite at schema version 2 in rollback-journal mode, created or migrated as needed."""
    db = sqlite3.connect(path, timeout=120.0, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 120000")
        if _retry_while_locked(lambda: db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            # written by dsdi before version 2: back to a rollback journal (SQLite checkpoints the WAL first)
            _retry_while_locked(lambda: db.execute("PRAGMA journal_mode = DELETE").fetchone())
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(f"{path}: written by a newer dsdi (score index version {version}); upgrade dsdi")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version < SCHEMA_VERSION and "model_scores" in tables:
            _migrate_v1(db, path)
        elif version < SCHEMA_VERSION or not {"clips", "models", "model_scores", "failures"} <= tables:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def _migrate_v1(db: sqlite3.Connection, path: Path) -> None:
    """Version 1 (JSON text scores, text signatures) to version 2 in one transaction, then VACUUM to give the
    space back. InputError (and the index left as it was) when a stored row is not 37 numbers per column."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE clips RENAME TO clips_v1")
        db.execute("ALTER TABLE model_scores RENAME TO model_scores_v1")
        for statement in _SCHEMA:
            db.execute(statement)
        clips = db.execute('SELECT shot_id, clip_path, start, "end", size, mtime, signature FROM clips_v1').fetchall()
        db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(*row[:6], signature_hash(row[6])) for row in clips])
        last = -1
        while rows := db.execute(
                "SELECT rowid, model_key, shot_id, signature, frames, status, note, max_scores, mean_scores,"
                " top3_scores, peak_times FROM model_scores_v1 WHERE rowid > ? ORDER BY rowid LIMIT 20000",
                (last,)).fetchall():
            converted = []
            for _, key, shot, signature, frames, status, note, *columns in rows:
                try:
                    values = [np.asarray(json.loads(c), dtype=np.float64) for c in columns]
                except (TypeError, ValueError):  # not JSON, or not a flat list of numbers
                    values = []
                if len(values) != len(columns) or any(v.shape != (NUM_CLASSES,) for v in values):
                    raise _corrupt(path, shot, key)
                scores = ClipScores(frames, status, note or "", *values)
                converted.append((key, shot, signature_hash(signature), frames, status, note, scores.to_bytes()))
            db.executemany("INSERT INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?)", converted)
            last = rows[-1][0]
        db.execute("DROP TABLE model_scores_v1")
        db.execute("DROP TABLE clips_v1")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    db.execute("VACUUM")


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
            self._db = _open_database(self.path)
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

    def add_clip(self, clip: Clip, scores_by_model: dict[str, ClipScores]) -> None:
        """Append all models' scores of one clip to this process's shard in one write (and clear an older failure
        of it when merged)."""
        items = list(scores_by_model.items())
        meta = {"kind": "clip", "shot_id": clip.shot_id, "signature": signature_hash(clip_signature(clip)),
                "models": [[key, int(s.frames), s.status, s.note] for key, s in items]}
        self._append(shard_record(meta, _scores_bytes([s for _, s in items])))

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
                       fps: float) -> None:
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                            (model_key, str(checkpoint), backbone, img_size, sha256, fps))

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

    def stored_scores(self, model_key: str, parts: tuple[str, ...] = _PARTS, details: bool = True) -> StoredScores:
        """This model's stored scores of the current clip set and clip contents, read in bulk (see StoredScores;
        details=False leaves frames, status and notes empty).

        Raises InputError naming the index file and the shot when a stored row is not a (4, 37) float32 array (a
        damaged or hand-edited index)."""
        self._sync()
        with _bulk():
            return self._stored_scores(model_key, parts, details)

    def _stored_scores(self, model_key: str, parts: tuple[str, ...], details: bool) -> StoredScores:
        self.clip_set()  # and the clips rowid -> position map
        columns = "".join(f", substr(s.scores, {_PARTS.index(p) * NUM_CLASSES * 4 + 1}, {NUM_CLASSES * 4})"
                          for p in parts)
        rows = self.db.execute(
            f"SELECT c.rowid, typeof(s.scores) = 'blob' AND length(s.scores) = ?"
            f"{', s.frames, s.status, s.note' if details else ''}{columns} FROM model_scores s"
            " JOIN clips c ON c.shot_id = s.shot_id AND c.signature = s.signature WHERE s.model_key = ?",
            (SCORES_BYTES, model_key)).fetchall()
        rowids, sound, *rest = _columns(rows, 2 + 3 * details + len(parts))
        positions = self._clip_position[np.array(rowids, dtype=np.int64)]
        sound = np.array(sound, dtype=bool)
        if not sound.all():
            raise _corrupt(self.path, str(self._clip_set.shots[positions[~sound][0]]), model_key)
        frames, status, notes = rest[:3] if details else ((), (), ())
        values = {}
        for part, column in zip(parts, rest[3 * details:], strict=True):
            raw = np.frombuffer(b"".join(column), dtype="<f4").reshape(len(rows), NUM_CLASSES)
            values[part] = raw.astype(np.float64) if part == "peak" else _sigmoids(raw)
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
                                 *(stored.values[p][i] for p in _PARTS)) for i, shot in enumerate(shots)}

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
    fates: dict[str, tuple | None] = {}  # shot id -> its failure row, or None once scored

    def flush() -> None:
        rows.sort(key=lambda row: (row[0], row[1]))
        db.executemany("INSERT OR REPLACE INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("DELETE FROM failures WHERE shot_id = ?", [(s,) for s, f in fates.items() if f is None])
        db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", [f for f in fates.values() if f])
        rows.clear()
        fates.clear()

    clips = 0
    for meta, blobs in read_shard(path):
        shot = meta["shot_id"]
        if meta["kind"] == "failure":
            fates[shot] = (meta["clip_path"], shot, meta["reason"])
            continue
        clips += 1
        fates[shot] = None
        for k, (key, frames, status, note) in enumerate(meta["models"]):
            rows.append((key, shot, meta["signature"], frames, status, note,
                         blobs[k * SCORES_BYTES:(k + 1) * SCORES_BYTES]))
        if len(rows) >= _MERGE_BATCH_ROWS:
            flush()
    flush()
    return clips
