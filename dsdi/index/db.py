"""The SQLite file of the score index (``store.py``): its schema, opening it (created, or migrated in place from
version 1, 2 or 3), reading its models without writing, and the hash a clip signature is stored as.

Version 3 added ``models.classes``: the model's class names in output order as a JSON list (NULL, in rows of an
index written before: LADI v1's 37 classes). Version 4 added the ``embeddings`` table (one clip embedding per
model and clip, ``dsdi.index.embeddings``); an index of an earlier version gains it empty."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.index.scores import ClipScores
from dsdi.labels.labelset import LADI_V1

SCHEMA_VERSION = 4
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS clips (shot_id TEXT PRIMARY KEY, clip_path TEXT NOT NULL, start REAL, "end" REAL,
    size INTEGER, mtime REAL, signature INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS models (model_key TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, backbone TEXT,
    img_size INTEGER, sha256 TEXT, fps REAL, classes TEXT)""",
    """CREATE TABLE IF NOT EXISTS model_scores (model_key TEXT NOT NULL, shot_id TEXT NOT NULL,
    signature INTEGER NOT NULL, frames INTEGER NOT NULL, status TEXT NOT NULL, note TEXT, scores BLOB NOT NULL,
    PRIMARY KEY (model_key, shot_id))""",
    "CREATE TABLE IF NOT EXISTS failures (clip_path TEXT NOT NULL, shot_id TEXT PRIMARY KEY, reason TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS embeddings (model_key TEXT NOT NULL, shot_id TEXT NOT NULL,
    signature INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model_key, shot_id))""",
)
TABLES = {"clips", "models", "model_scores", "failures", "embeddings"}


def signature_hash(signature: str) -> int:
    """The stored form of a clip signature: a signed 64-bit hash (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(signature.encode(), digest_size=8).digest(), "little", signed=True)


def model_classes(stored: str | None) -> tuple[str, ...]:
    """The class names of a ``models.classes`` value (NULL: LADI v1's)."""
    return tuple(json.loads(stored)) if stored else LADI_V1.class_names


def registered_models(index_file: str | Path) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """model key -> (checkpoint, backbone, class names) of every model ever ranked into an index file (every
    --tta / --tiles variant too), read without writing anything (no migration, no journal); {} when there is no
    such file or table."""
    index_file = Path(index_file)
    if not index_file.is_file():
        return {}
    db = sqlite3.connect(f"{index_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(models)")}
        classes = "classes" if "classes" in columns else "NULL"
        rows = db.execute(f"SELECT model_key, checkpoint, backbone, {classes} FROM models").fetchall()
    except sqlite3.DatabaseError:  # not an index (or one being written in WAL mode by an old dsdi)
        rows = []
    finally:
        db.close()
    return {key: (checkpoint, backbone, model_classes(classes)) for key, checkpoint, backbone, classes in rows}


def retry_while_locked(statement: Callable[[], object], seconds: float = 120.0) -> object:
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


def corrupt_scores(path: Path, shot: str, model_key: str) -> InputError:
    return InputError(f"{path}: the stored scores of shot {shot!r} (model {model_key}) are corrupt; "
                      f"delete {path} and run dsdi rank again to rescore the clips")


def open_database(path: Path) -> sqlite3.Connection:
    """scores.sqlite at the current schema version in rollback-journal mode, created or migrated as needed."""
    db = sqlite3.connect(path, timeout=120.0, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 120000")
        if retry_while_locked(lambda: db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            # written by dsdi before version 2: back to a rollback journal (SQLite checkpoints the WAL first)
            retry_while_locked(lambda: db.execute("PRAGMA journal_mode = DELETE").fetchone())
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(f"{path}: written by a newer dsdi (score index version {version}); upgrade dsdi")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version < 2 and "model_scores" in tables:
            migrate_v1(db, path)
        if version < SCHEMA_VERSION and "model_scores" in tables:
            _upgrade_v2_v3(db)
        elif version < SCHEMA_VERSION or not TABLES <= tables:
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def _upgrade_v2_v3(db: sqlite3.Connection) -> None:
    """Version 2 or 3 to 4, in one transaction: the models table gains its classes column (NULL: LADI v1), the
    index its empty embeddings table."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if "classes" not in {row[1] for row in db.execute("PRAGMA table_info(models)")}:
            db.execute("ALTER TABLE models ADD COLUMN classes TEXT")
        db.execute(SCHEMA[-1])
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def migrate_v1(db: sqlite3.Connection, path: Path) -> None:
    """Version 1 (JSON text scores, text signatures) to version 2 in one transaction, then VACUUM to give the
    space back. InputError (and the index left as it was) when a stored row is not 37 numbers per column."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE clips RENAME TO clips_v1")
        db.execute("ALTER TABLE model_scores RENAME TO model_scores_v1")
        for statement in SCHEMA:
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
                if len(values) != len(columns) or any(v.shape != (len(LADI_V1.class_names),) for v in values):
                    raise corrupt_scores(path, shot, key)
                scores = ClipScores(frames, status, note or "", *values)
                converted.append((key, shot, signature_hash(signature), frames, status, note, scores.to_bytes()))
            db.executemany("INSERT INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?)", converted)
            last = rows[-1][0]
        db.execute("DROP TABLE model_scores_v1")
        db.execute("DROP TABLE clips_v1")
        db.execute("PRAGMA user_version = 2")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    db.execute("VACUUM")
