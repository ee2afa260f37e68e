"""The score index: compact float32 rows that keep the ranking, bulk reads, per-process shards merged by one writer,
no WAL, corrupt rows refused with an InputError naming the file and the shot, and an index written by dsdi before
schema version 2 (JSON text scores in WAL mode) migrated in place without losing or re-scoring anything."""

import json
import re
import shutil
import sqlite3

import numpy as np
import pytest

from dsdi.errors import InputError
from dsdi.index.scores import ClipScores, stored_size
from dsdi.index.shard import read_shard
from dsdi.index.store import ScoreIndex, clip_signature
from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import CLASSES, FEATURES, NUM_CLASSES
from dsdi.rank.fusion import fused_scores
from dsdi.video.clip import Clip

# The schema and the row writes of the index before version 2 (dsdi.index.store at commit 820857f), as they were.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (shot_id TEXT PRIMARY KEY, clip_path TEXT NOT NULL, start REAL, "end" REAL,
    size INTEGER, mtime REAL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (model_key TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, backbone TEXT,
    img_size INTEGER, sha256 TEXT, fps REAL);
CREATE TABLE IF NOT EXISTS model_scores (model_key TEXT NOT NULL, shot_id TEXT NOT NULL, signature TEXT NOT NULL,
    frames INTEGER NOT NULL, status TEXT NOT NULL, note TEXT, max_scores TEXT NOT NULL, mean_scores TEXT NOT NULL,
    top3_scores TEXT NOT NULL, peak_times TEXT NOT NULL, PRIMARY KEY (model_key, shot_id));
CREATE TABLE IF NOT EXISTS failures (clip_path TEXT NOT NULL, shot_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""


def make_clips(tmp_path, count: int) -> list[Clip]:
    clips = []
    for i in range(count):
        path = tmp_path / "clips" / f"Shot{i}_001.mp4"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not really a video %d" % i)
        clips.append(Clip(path.stem, path))
    return clips


def random_scores(rng, frames: int = 8) -> ClipScores:
    return ClipScores.from_frame_scores(rng.random((frames, NUM_CLASSES)), np.arange(frames) / 10.0, False, "")


def write_v1_index(out, clips, scores: dict[str, dict[str, ClipScores]], failure: Clip | None) -> None:
    """An index as dsdi wrote it before version 2 (WAL; one JSON row per model and clip), left as a killed run
    leaves it: the last rows only in the -wal file."""
    out.mkdir(parents=True)
    db = sqlite3.connect(out / "scores.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.executescript(V1_SCHEMA)
    db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)", ("m1", "runs/A/best.pt", "lcnet_050", 64,
                                                                           "ab" * 32, 10.0))
    rows = []
    for clip in clips:
        stat = clip.path.stat()
        rows.append((clip.shot_id, str(clip.path), clip.start, clip.end, stat.st_size, stat.st_mtime,
                     clip_signature(clip)))
    db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    for shot, by_model in scores.items():
        clip = next(c for c in clips if c.shot_id == shot)
        for key, s in by_model.items():
            db.execute("INSERT OR REPLACE INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (key, clip.shot_id, clip_signature(clip), s.frames, s.status, s.note,
                        *(json.dumps(a.tolist()) for a in (s.max_scores, s.mean_scores, s.top3_scores,
                                                           s.peak_times))))
    if failure is not None:
        db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", (str(failure.path), failure.shot_id, "bad"))
    killed = out.parent / "killed"  # the files of a run killed now: database and WAL, no checkpoint
    killed.mkdir()
    for name in ("scores.sqlite", "scores.sqlite-wal"):
        shutil.copy(out / name, killed / name)
    db.close()
    shutil.rmtree(out)
    killed.rename(out)


def assert_same_scores(got: ClipScores, expected: ClipScores) -> None:
    assert (got.frames, got.status, got.note) == (expected.frames, expected.status, expected.note)
    for name in ("max_scores", "mean_scores", "top3_scores"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-7)
    np.testing.assert_allclose(got.peak_times, expected.peak_times, rtol=1e-6)


def test_stored_scores_keep_values_and_ranking_order(tmp_path):
    clips = make_clips(tmp_path, 4)
    index = ScoreIndex(tmp_path / "out")
    try:
        index.set_clips(clips)
        near_one = [1 - 1e-9, 1 - 2e-9, 1 - 4e-9, 1.0]  # float32 sigmoids would tie these at 1.0
        stored = {}
        for clip, top in zip(clips, near_one, strict=True):
            values = np.linspace(0.0, 1.0, NUM_CLASSES)
            values[0], values[1] = top, 0.0
            stored[clip.shot_id] = ClipScores(8, "ok", "", values, values * 0.5, values * 0.75,
                                              np.linspace(0.0, 3600.0, NUM_CLASSES))
            index.add_clip(clip, {"m1": stored[clip.shot_id]})
        read = index.model_scores("m1")
        for shot, expected in stored.items():
            assert_same_scores(read[shot], expected)
        firsts = [read[c.shot_id].max_scores[0] for c in clips]
        assert firsts[3] == 1.0 and firsts[0] > firsts[1] > firsts[2]  # the order of the float64 scores
        assert read[clips[0].shot_id].max_scores[1] == 0.0
        with sqlite3.connect(index.path) as db:
            assert {len(b) for (b,) in db.execute("SELECT scores FROM model_scores")} == {stored_size(37)}
    finally:
        index.close()
    assert not list((tmp_path / "out").glob("scores.sqlite-*")) and not list((tmp_path / "out").glob("*.shard"))
    with sqlite3.connect(tmp_path / "out" / "scores.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("stored", [b"\x01\x02", "not bytes", b"\x00" * (stored_size(37) + 4)])
def test_corrupt_stored_scores_raise_input_error(tmp_path, stored):
    clips = make_clips(tmp_path, 1)
    index = ScoreIndex(tmp_path / "out")
    try:
        index.set_clips(clips)
        values = np.linspace(0.0, 1.0, NUM_CLASSES)
        index.add_clip(clips[0], {"m1": ClipScores(8, "ok", "", values, values, values, np.zeros(NUM_CLASSES))})
        np.testing.assert_allclose(index.model_scores("m1")["Shot0_001"].max_scores, values, atol=1e-7)
        with sqlite3.connect(index.path) as db:
            db.execute("UPDATE model_scores SET scores = ? WHERE shot_id = 'Shot0_001'", (stored,))
        expected = (f"{re.escape(str(index.path))}: the stored scores of shot 'Shot0_001' \\(model m1\\) are corrupt; "
                    f"delete {re.escape(str(index.path))} and run dsdi rank again")
        with pytest.raises(InputError, match=expected):
            index.model_scores("m1")
    finally:
        index.close()


def test_shards_are_merged_by_process_zero_and_survive_a_torn_record(tmp_path):
    rng = np.random.default_rng(3)
    clips = make_clips(tmp_path, 6)
    out = tmp_path / "out"
    main, other = ScoreIndex(out), ScoreIndex(out, shard=1)
    try:
        main.set_clips(clips)
        scores = {c.shot_id: {"m1": random_scores(rng), "m2": random_scores(rng, 3)} for c in clips}
        for clip in clips[:3]:
            other.add_clip(clip, scores[clip.shot_id])
        other.add_failure(clips[3], "no video stream")
        with pytest.raises(RuntimeError, match="must not open"):
            other.scored_shots("m1")
        other.end_shard()
        assert len(list(read_shard(out / "scores.1.shard"))) == 4
        assert main.db.execute("SELECT COUNT(*) FROM model_scores").fetchone()[0] == 0  # nothing merged yet
        with open(out / "scores.1.shard", "ab") as shard:  # a process killed in the middle of a write
            shard.write(b"DSS1\xff\x00\x00\x00")
        main.add_clip(clips[4], scores[clips[4].shot_id])
        assert main.merge_shards() == 4 and not list(out.glob("*.shard"))
        for m in ("m1", "m2"):
            read = main.model_scores(m)
            assert sorted(read) == sorted(c.shot_id for c in clips[:3] + clips[4:5])
            for shot, got in read.items():
                assert_same_scores(got, scores[shot][m])
        assert main.failures() == [(str(clips[3].path), clips[3].shot_id, "no video stream")]
        other.add_clip(clips[3], scores[clips[3].shot_id])  # scored at last: its failure goes
        other.end_shard()
        main.merge_shards()
        assert main.failures() == [] and clips[3].shot_id in main.scored_shots("m1")
    finally:
        other.close()
        main.close()


def test_v1_index_is_migrated_in_place_without_losing_scores(tmp_path):
    rng = np.random.default_rng(5)
    clips = make_clips(tmp_path, 5)
    scores = {c.shot_id: {"m1": random_scores(rng), "m2": random_scores(rng, 2)} for c in clips[:4]}
    scores[clips[0].shot_id]["m1"].note, scores[clips[0].shot_id]["m1"].status = "decoding stopped: x", "truncated"
    out = tmp_path / "out"
    write_v1_index(out, clips, scores, failure=clips[4])
    assert (out / "scores.sqlite-wal").stat().st_size > 0
    index = ScoreIndex(out)
    try:
        for m in ("m1", "m2"):  # nothing lost: every row, with the rows only in the WAL of the killed run
            read = index.model_scores(m)
            assert sorted(read) == sorted(scores)
            for shot, got in read.items():
                assert_same_scores(got, scores[shot][m])
            assert index.scored_shots(m) == set(scores)  # the same clip files: none re-scored
        assert index.failures() == [(str(clips[4].path), clips[4].shot_id, "bad")]
        table, peaks = fused_scores(index, ["m1", "m2"], [3.0, 1.0], "mean", [], LADI_V1)
        expected = np.stack([(3 * scores[s]["m1"].mean_scores + scores[s]["m2"].mean_scores) / 4 for s in table.index])
        np.testing.assert_allclose(table[list(CLASSES)].to_numpy(), expected, atol=1e-7)
        np.testing.assert_allclose(peaks.to_numpy(), np.stack([scores[s]["m1"].peak_times[: len(FEATURES)]
                                                               for s in peaks.index]), rtol=1e-6)
        assert list(table["status"]) == ["truncated", "ok", "ok", "ok"]
        clips[1].path.write_bytes(b"replaced")  # a replaced clip file is re-scored, as before
        index.set_clips(clips)
        assert index.scored_shots("m1") == set(scores) - {clips[1].shot_id}
    finally:
        index.close()
    with sqlite3.connect(out / "scores.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
            "clips", "models", "model_scores", "failures", "embeddings"}
    assert not (out / "scores.sqlite-wal").exists()


def test_v1_index_with_a_corrupt_row_is_left_as_it_was(tmp_path):
    rng = np.random.default_rng(6)
    clips = make_clips(tmp_path, 2)
    out = tmp_path / "out"
    write_v1_index(out, clips, {c.shot_id: {"m1": random_scores(rng)} for c in clips}, failure=None)
    db = sqlite3.connect(out / "scores.sqlite", isolation_level=None)
    db.execute("UPDATE model_scores SET mean_scores = '[0.5, 0.25]' WHERE shot_id = 'Shot1_001'")
    db.close()
    index = ScoreIndex(out)
    try:
        with pytest.raises(InputError, match="stored scores of shot 'Shot1_001' \\(model m1\\) are corrupt"):
            index.model_scores("m1")
    finally:
        index.close()
    with sqlite3.connect(out / "scores.sqlite") as db:  # the migration rolled back: the version 1 rows are all there
        assert db.execute("SELECT COUNT(*) FROM model_scores WHERE max_scores LIKE '[%'").fetchone()[0] == 2
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
