"""`dsdi rank` / `dsdi fuse` through the real CLI on real H.264 clips with tiny random models.

References are computed outside dsdi's ranking code: frames from the ffmpeg CLI's own `fps=10` extraction
(and from dsdi.video.decode for exact checks), forward passes of the models in float64-accumulated numpy, sorting
with pandas, XML validation with lxml against the shipped DTD.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import pytest
import torch
from colour_clips import bt601_rgb_at, ffmpeg_fps10, make_colour_clip, make_pattern_clip, make_tone_clip
from conftest import tiny_checkpoint
from lxml import etree
from rank_models import IMG, frame_sigmoids, model_input_frames, model_sigmoids, save_pattern_model, save_tiny_model

import dsdi.rank.passes
import dsdi.rank.scoring
import dsdi.runtime
from dsdi.index.shard import read_shard
from dsdi.index.store import ScoreIndex
from dsdi.labels.schema import CLASSES, FEATURES
from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, frames_to_tensor
from dsdi.rank.config import RankConfig
from dsdi.video.clip import Clip
from dsdi.video.decode import ClipChunks, decode_clip
from dsdi.video.ffmpeg import run

W, H = 64, 48
RNG = np.random.default_rng(7)
# shot id -> colour segments (hex colour, seconds) at 30 fps; every colour distinct so clip scores differ
CLIP_SEGMENTS = {
    f"Shot{i}_{j:03d}": [(f"0x{RNG.integers(0, 2**24):06X}", float(d)) for d in RNG.choice([0.4, 0.5, 0.7], 2)]
    for i, j in [(1, 1), (1, 2), (2, 1), (2, 7), (3, 3), (4, 1)]
}


def make_clip(ffmpeg: str, out: Path, segments: list[tuple[str, float]], extra: tuple = ()) -> Path:
    """A W x H clip of solid colours, changing at the segment boundaries."""
    return make_colour_clip(ffmpeg, out, segments, (W, H), gop=10, extra=extra)


def ffmpeg_frames(ffmpeg: str, path: Path) -> np.ndarray:
    """The ffmpeg CLI's own 10 fps sampling of a W x H clip: rgb24 (N, H, W, 3)."""
    return ffmpeg_fps10(ffmpeg, path, (W, H))


def count_decodes(monkeypatch) -> list[str]:
    """The shot ids `dsdi rank` starts decoding from now on (in this test)."""
    decodes = []

    class CountingChunks(ClipChunks):
        def __init__(self, clip, *args, **kwargs):
            decodes.append(clip.shot_id)
            super().__init__(clip, *args, **kwargs)

    monkeypatch.setattr(dsdi.rank.scoring, "ClipChunks", CountingChunks)
    return decodes


def read_trec(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=" ", header=None, names=["fnum", "q0", "shot_id", "rank", "score", "run_id"],
                       dtype={"shot_id": str})


def read_scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "clip_scores.csv", dtype={"shot_id": str}).set_index("shot_id")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, ffmpeg_exe, cli):
    root = tmp_path_factory.mktemp("rank")
    clips = root / "clips"
    (clips / "sub").mkdir(parents=True)
    for k, (shot, segments) in enumerate(CLIP_SEGMENTS.items()):
        make_clip(ffmpeg_exe, (clips / "sub" if k % 2 else clips) / f"{shot}.mp4", segments)
    models = [save_tiny_model(root / "runs" / name, seed) for name, seed in (("A", 0), ("B", 1))]
    reference = {}  # shot -> model -> (ffmpeg sigmoids (N,37), sigmoids of rank's model input (N,37))
    for path in sorted(clips.rglob("*.mp4")):
        decoded, from_cli = model_input_frames(path), ffmpeg_frames(ffmpeg_exe, path)
        reference[path.stem] = {m.name: (frame_sigmoids(m, from_cli), frame_sigmoids(m, decoded)) for m in models}
    out = root / "out"
    result = cli("rank", "--clips", clips, *cli.repeated("--models", models), "--topk", 3, "--out", out,
                 "--run-id", "t1", "--batch-size", 7, "--device", "cpu", expect=None)
    assert result.exit_code == 0, result.output
    return {"root": root, "clips": clips, "models": models, "reference": reference, "out": out,
            "output": result.output}


def test_max_aggregation_matches_frame_outputs(world):
    assert "ranked 6, failed 0" in world["output"]
    scores = read_scores(world["out"])
    assert sorted(scores.index) == sorted(CLIP_SEGMENTS)
    assert list(scores.columns) == ["clip_path", "frames", "status", *CLASSES]
    for shot, per_model in world["reference"].items():
        from_ffmpeg = np.mean([ref[0].max(axis=0) for ref in per_model.values()], axis=0)
        from_decoder = np.mean([ref[1].max(axis=0) for ref in per_model.values()], axis=0)
        np.testing.assert_allclose(scores.loc[shot, list(CLASSES)].to_numpy(float), from_decoder, atol=2e-6)
        np.testing.assert_allclose(scores.loc[shot, list(CLASSES)].to_numpy(float), from_ffmpeg, atol=2e-3)
        assert scores.loc[shot, "frames"] == len(per_model["A"][1]) and scores.loc[shot, "status"] == "ok"
        assert abs(len(per_model["A"][0]) - len(per_model["A"][1])) <= 1
    peaks = pd.read_csv(world["out"] / "peak_frames.csv", dtype={"shot_id": str}).set_index("shot_id")
    assert list(peaks.columns) == list(FEATURES)
    for shot, per_model in world["reference"].items():  # equal weights: the first model's peak frames
        sigmoids = per_model["A"][1][:, : len(FEATURES)]
        peak_value = sigmoids[(peaks.loc[shot].to_numpy() * 10).round().astype(int), np.arange(len(FEATURES))]
        np.testing.assert_allclose(peak_value, sigmoids.max(axis=0), atol=2e-6)


def test_topk_trec_and_xml(world):
    out = world["out"]
    scores, trec = read_scores(out), read_trec(out / "t1.trec")
    dtd = etree.DTD(str(Path(dsdi.__file__).parent / "data_files" / "videoFeatureExtractionResults.dtd"))
    xml = etree.parse(str(out / "t1.xml"))
    assert dtd.validate(xml), dtd.error_log
    assert sorted(trec["fnum"].unique()) == list(range(1, 33))  # none-classes never ranked
    for fnum, feature in enumerate(FEATURES, start=1):
        table = scores.reset_index()
        expected = table.assign(neg=-table[feature]).sort_values(["neg", "shot_id"])[["shot_id", feature]].head(3)
        got = trec[trec["fnum"] == fnum]
        assert got["shot_id"].tolist() == expected["shot_id"].tolist()
        assert got["rank"].tolist() == [1, 2, 3]
        np.testing.assert_allclose(got["score"], expected[feature], rtol=1e-7)
        items = xml.findall(f".//videoFeatureExtractionFeatureResult[@fNum='{fnum}']/item")
        assert [(i.get("seqNum"), i.get("shotId")) for i in items] == list(zip(
            got["rank"].astype(str), got["shot_id"], strict=True))
    run = json.loads((out / "run.json").read_text())
    assert run["run_id"] == "t1" and run["agg"] == "max" and run["fps"] == 10.0 and run["weights"] == [1.0, 1.0]
    assert run["clips_ranked"] == 6 and run["clips_failed"] == 0 and len(run["models"]) == 2


def test_fuse_weights_aggregations_and_other_run(world, tmp_path, monkeypatch, cli):
    out, ref = tmp_path / "out", world["reference"]
    shutil.copytree(world["out"], out)
    decodes = count_decodes(monkeypatch)
    shots = sorted(ref)

    def expected(agg: str, weights: tuple[float, float]) -> np.ndarray:
        top3 = lambda p: np.sort(p, axis=0)[-3:].mean(axis=0)  # noqa: E731
        reduce = {"max": lambda p: p.max(axis=0), "mean": lambda p: p.mean(axis=0), "top3": top3}[agg]
        per_model = [np.stack([reduce(ref[s][m][1]) for s in shots]) for m in ("A", "B")]
        return (weights[0] * per_model[0] + weights[1] * per_model[1]) / sum(weights)

    for agg, weights in (("mean", (3.0, 1.0)), ("top3", (0.0, 2.0)), ("max", (1.0, 1.0))):
        result = cli("fuse", out, *cli.repeated("--model-weights", weights), "--agg", agg, expect=None)
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(read_scores(out).loc[shots, list(CLASSES)], expected(agg, weights), atol=2e-6)
    other = tmp_path / "other"  # another rank output: model B only, mean aggregation
    assert cli("rank", "--clips", world["clips"], "--models", world["models"][1], "--agg", "mean",
               "--out", other, "--run-id", "other", expect=None).exit_code == 0
    assert len(decodes) == len(shots)  # the only decoding was the second rank run
    result = cli("fuse", out, "--fuse", f"{other}:0.5", expect=None)
    assert result.exit_code == 0, result.output
    mixed = (expected("max", (1, 1)) + 0.5 * expected("mean", (0, 1))) / 1.5  # paper 2:1
    np.testing.assert_allclose(read_scores(out).loc[shots, list(CLASSES)], mixed, atol=2e-6)
    assert json.loads((out / "run.json").read_text())["fuse"] == [{"out_dir": str(other), "weight": 0.5}]
    assert cli("fuse", out, "--topk", 2, expect=None).exit_code == 0
    assert read_trec(out / "t1.trec").groupby("fnum")["rank"].apply(list).tolist() == [[1, 2]] * 32
    assert cli("fuse", out, "--fuse", "", expect=None).exit_code == 2
    assert cli("fuse", out, *cli.repeated("--model-weights", (1, 2, 3)), expect=None).exit_code == 2
    assert cli("fuse", world["root"] / "nowhere", expect=None).exit_code == 2
    result = cli("fuse", out, "--fuse", f"{other}:0", expect=None)  # weight 0 is refused; the run's --fuse stays
    assert result.exit_code == 2 and "WEIGHT > 0" in result.output


def test_fuse_out_ranks_chosen_models_into_a_new_folder(world, tmp_path, monkeypatch, cli):
    source, alone, ref = tmp_path / "source", tmp_path / "alone", world["reference"]
    shutil.copytree(world["out"], source)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    decodes = count_decodes(monkeypatch)
    shots = sorted(ref)
    result = cli("fuse", source, "--out", alone, "--models", world["models"][1], "--run-id", "b_alone", expect=None)
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before and not decodes
    b_max = np.stack([ref[s]["B"][1].max(axis=0) for s in shots])  # model B alone, as dsdi rank would rank it
    np.testing.assert_allclose(read_scores(alone).loc[shots, list(CLASSES)], b_max, atol=2e-6)
    assert read_trec(alone / "b_alone.trec")["run_id"].eq("b_alone").all() and (alone / "b_alone.xml").is_file()
    run = json.loads((alone / "run.json").read_text())
    source_run = json.loads((source / "run.json").read_text())
    assert run["models"] == source_run["models"][1:] and run["model_keys"] == source_run["model_keys"][1:]
    assert run["weights"] == [1.0] and run["scores_from"] == str(source) and run["topk"] == 3
    shutil.rmtree(source)  # the new folder holds its own copy of the scores
    assert cli("fuse", alone, "--agg", "mean", expect=None).exit_code == 0
    assert cli("report", alone, expect=None).exit_code == 0 and (alone / "report.html").is_file()
    both = tmp_path / "both"  # by model key and by a copy of A's checkpoint (same content)
    shutil.copy(world["models"][0] / "best.pt", tmp_path / "a_copy.pt")
    result = cli("fuse", world["out"], "--out", both, "--models", source_run["model_keys"][1],
                 "--models", tmp_path / "a_copy.pt", "--model-weights", 1, "--model-weights", 3, expect=None)
    assert result.exit_code == 0, result.output
    assert json.loads((both / "run.json").read_text())["model_keys"] == source_run["model_keys"][::-1]
    for bad, says in ((["--out", both], "already holds a rank output"),
                      (["--out", tmp_path / "n1", "--models", tmp_path / "nope"], "is not among the models"),
                      (["--out", tmp_path / "n2", *cli.repeated("--models", [world["models"][0]] * 2)], "given twice"),
                      (["--out", tmp_path / "n3", "--models", world["models"][0],
                        *cli.repeated("--model-weights", (1, 1))], "need 1 non-negative")):
        result = cli("fuse", world["out"], *bad, expect=None)
        assert result.exit_code == 2 and says in " ".join(result.output.split()), (bad, result.output)


def test_chunked_decoding_gives_the_same_scores(world, tmp_path, monkeypatch):
    added, add = [], dsdi.rank.passes.BatchScorer.add
    monkeypatch.setattr(dsdi.rank.passes.BatchScorer, "add", lambda self, slot, frames: added.append(len(frames))
                        or add(self, slot, frames))
    rows = {}
    for chunk_frames in (5, 10_000):  # clips of 8 to 14 frames: 2 or 3 chunks each, one chunk each
        out = tmp_path / f"chunks{chunk_frames}"
        dsdi.rank.scoring.rank(RankConfig(clips=world["clips"], models=world["models"], out=out, batch_size=7,
                                            device="cpu", chunk_frames=chunk_frames))
        with sqlite3.connect(out / "scores.sqlite") as db:
            rows[chunk_frames] = db.execute("SELECT * FROM model_scores ORDER BY model_key, shot_id").fetchall()
        if chunk_frames == 5:
            assert max(added) == 5 and len(added) > 2 * len(CLIP_SEGMENTS)
    assert len(rows[5]) == 2 * len(CLIP_SEGMENTS) and rows[5] == rows[10_000]


class CountingEvent(threading.Event):
    """An Event that counts its clear() calls."""

    clears = 0

    def clear(self) -> None:
        self.clears += 1
        super().clear()


def test_decoding_and_the_model_take_turns_on_the_cpu(world, tmp_path, monkeypatch):
    scoring, passes, turns, events = dsdi.rank.scoring, dsdi.rank.passes, [], []
    init, forward, frame_tensors = passes.Turns.__init__, passes.BatchScorer._forward, passes.Views.frame_tensors

    def counting_init(self, frames):
        init(self, frames)
        self.decoding = CountingEvent()
        self.decoding.set()
        turns.append(self)

    def slow_forward(self, batch):  # long model turns: a decoder that did not wait would decode in them
        events.append("model" if not turns[-1].decoding.is_set() else "model while decoding")
        time.sleep(0.06)
        return forward(self, batch)

    monkeypatch.setattr(passes.Turns, "__init__", counting_init)
    monkeypatch.setattr(passes.BatchScorer, "_forward", slow_forward)
    monkeypatch.setattr(passes.Views, "frame_tensors", lambda self, *args: events.append(
        "decode" if turns[-1].decoding.is_set() else "decode in the model's turn") or frame_tensors(self, *args))
    monkeypatch.setattr(passes, "TURN_BYTES", 1)  # the shortest turns: two passes per forward worker
    out = tmp_path / "turns"
    scoring.rank(RankConfig(clips=world["clips"], models=world["models"], out=out, batch_size=7, device="cpu",
                            chunk_frames=4))
    assert turns[-1].frames == 2 * torch.get_num_threads() * 7
    model_turns = turns[-1].decoding.clears
    assert model_turns >= 3 and "model while decoding" not in events  # 6 clips of 8 to 14 frames
    decoders = dsdi.runtime.default_workers(scoring.RANK_DECODE_WORKERS_CAP)  # each may end the chunk it began
    assert events.count("decode in the model's turn") <= decoders * model_turns, events
    query = "SELECT * FROM model_scores ORDER BY model_key, shot_id"
    with sqlite3.connect(out / "scores.sqlite") as db, sqlite3.connect(world["out"] / "scores.sqlite") as one:
        assert db.execute(query).fetchall() == one.execute(query).fetchall()


def test_decoded_frames_travel_as_uint8_and_each_pass_makes_the_models_input():
    """The decoders hand over uint8 crops where the decoder's scaler already made the size (float32 only where
    a crop needed resizing); each pass converts them to the normalised input the float64 formula gives, the
    same float32 values as the preprocessing of images (frames_to_tensor)."""
    preprocessing = Preprocessing(32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    at_size = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    smaller = RNG.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    reference = torch.cat([frames_to_tensor(frames, preprocessing) for frames in (at_size, smaller)])
    views = dsdi.rank.passes.Views()
    whole, resized = (views.frame_tensors(frames, None, preprocessing.resize) for frames in (at_size, smaller))
    assert whole.dtype == torch.uint8 and whole.shape == (3, 1, 3, 32, 32) and resized.dtype == torch.float32
    at_size[:] = 0  # the decoder reusing its buffer changes nothing handed over
    batch = dsdi.rank.passes.model_input([whole, resized], preprocessing, torch.device("cpu"))
    pixels = torch.cat([whole.double() / 255, resized.double()]).flatten(0, 1)
    mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (preprocessing.mean, preprocessing.std))
    torch.testing.assert_close(batch.double(), (pixels - mean) / std, atol=1e-6, rtol=0)
    assert batch.dtype == torch.float32 and torch.equal(batch, reference)


def test_forward_passes_side_by_side_give_the_same_scores_and_embeddings(world, tmp_path, monkeypatch):
    """On the CPU with 2 torch threads, rank runs passes in 2 workers of one thread each, several in flight."""
    forward, passes = dsdi.rank.passes.BatchScorer._forward, []

    def recording(self, batch):
        passes.append((threading.current_thread().name, torch.get_num_threads()))
        time.sleep(0.01)  # passes overlap even when the machine is fast
        return forward(self, batch)

    monkeypatch.setattr(dsdi.rank.passes.BatchScorer, "_forward", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = tmp_path / "workers"
        dsdi.rank.scoring.rank(RankConfig(clips=world["clips"], models=world["models"], out=out, batch_size=7,
                                            device="cpu"))
        assert torch.get_num_threads() == 2  # restored for the caller and for threads started later
        later = []
        started = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        started.start()
        started.join()
        assert later == [2]
    finally:
        torch.set_num_threads(threads)
    assert {name.rsplit("_", 1)[0] for name, _ in passes} == {"forward"} and len({n for n, _ in passes}) == 2
    assert {count for _, count in passes} == {1}
    queries = ("SELECT * FROM model_scores ORDER BY model_key, shot_id",
               "SELECT model_key, shot_id, vector FROM embeddings ORDER BY shot_id")
    for query in queries:
        with sqlite3.connect(out / "scores.sqlite") as db, sqlite3.connect(world["out"] / "scores.sqlite") as one:
            rows = db.execute(query).fetchall()
            assert rows and rows == one.execute(query).fetchall()


@pytest.mark.slow
def test_resume_after_interruption_and_incremental_add(world, tmp_path, monkeypatch, ffmpeg_exe, cli):
    clips, out = tmp_path / "clips", tmp_path / "out"
    shutil.copytree(world["clips"], clips)
    models = [shutil.copytree(m, tmp_path / m.name) for m in world["models"]]
    stored, real_add = [], ScoreIndex.add_clip

    def add_then_die(self, clip, scores, embedding=None):
        if len(stored) == 2:
            raise KeyboardInterrupt("simulated kill after 2 clips")
        real_add(self, clip, scores, embedding)
        stored.append(clip.shot_id)

    args = ("rank", "--clips", clips, *cli.repeated("--models", models), "--topk", 3, "--out", out, "--run-id", "t1",
            "--batch-size", 7)
    monkeypatch.setattr(ScoreIndex, "add_clip", add_then_die)
    assert cli(*args, expect=None).exit_code != 0
    monkeypatch.setattr(ScoreIndex, "add_clip", real_add)
    with sqlite3.connect(out / "scores.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM model_scores").fetchone()[0] == 4  # 2 clips x 2 models
    decodes = count_decodes(monkeypatch)
    result = cli(*args, expect=None)
    assert result.exit_code == 0 and "ranked 6, failed 0" in result.output, result.output
    assert sorted(decodes) == sorted(set(CLIP_SEGMENTS) - set(stored))
    full = world["out"]  # the uninterrupted run
    pd.testing.assert_frame_equal(read_scores(out).drop(columns="clip_path"),
                                  read_scores(full).drop(columns="clip_path"), atol=1e-6)
    pd.testing.assert_frame_equal(read_trec(out / "t1.trec").drop(columns="score"),
                                  read_trec(full / "t1.trec").drop(columns="score"))

    decodes.clear()  # incremental add: two new clips, one replaced clip
    make_clip(ffmpeg_exe, clips / "Shot9_001.mp4", [("0x102030", 0.5)])
    make_clip(ffmpeg_exe, clips / "Shot9_002.mp4", [("0xF0E0D0", 0.3)])
    make_clip(ffmpeg_exe, clips / "Shot1_001.mp4", [("0x00FF00", 0.6)])
    result = cli(*args, expect=None)
    assert result.exit_code == 0 and "ranked 8, failed 0" in result.output, result.output
    assert sorted(decodes) == ["Shot1_001", "Shot9_001", "Shot9_002"]
    frames = model_input_frames(clips / "Shot9_002.mp4")
    expected = np.mean([frame_sigmoids(m, frames).max(axis=0) for m in world["models"]], axis=0)
    np.testing.assert_allclose(read_scores(out).loc["Shot9_002", list(CLASSES)].to_numpy(float), expected, atol=2e-6)
    assert read_scores(out).loc["Shot1_001", "frames"] == 6

    decodes.clear()  # a retrained checkpoint (same path, new weights): every clip re-scored by that model only
    save_tiny_model(models[1], seed=5)
    result = cli(*args, expect=None)
    assert result.exit_code == 0 and "scored 8 new clips" in result.output, result.output
    assert len(decodes) == 8
    with sqlite3.connect(out / "scores.sqlite") as db:  # old rows stay (keyed by checkpoint hash), unused
        assert db.execute("SELECT COUNT(DISTINCT model_key) FROM model_scores").fetchone()[0] == 3
    expected = np.mean([frame_sigmoids(m, frames).max(axis=0) for m in models], axis=0)  # first use of copies
    np.testing.assert_allclose(read_scores(out).loc["Shot9_002", list(CLASSES)].to_numpy(float), expected, atol=2e-6)


def test_broken_files_and_bad_input(world, tmp_path, ffmpeg_exe, monkeypatch, cli):
    clips = tmp_path / "clips"
    clips.mkdir()
    good = shutil.copy(next(world["clips"].glob("*.mp4")), clips)
    shutil.copy(good, clips / "my shot.mp4")  # a shot id TRECVID cannot carry
    shutil.copy(good, clips / "boom.mp4")  # its decoder crashes unexpectedly before the first chunk (below)
    shutil.copy(good, clips / "halfway.mp4")  # ... and this one's after its first chunk

    class CrashingChunks(ClipChunks):
        def __iter__(self):
            if self.clip.shot_id == "boom":
                raise RuntimeError("decoder crashed")
            chunks = super().__iter__()
            yield next(chunks)
            if self.clip.shot_id == "halfway":
                raise RuntimeError("decoder crashed later")
            yield from chunks

    monkeypatch.setattr(dsdi.rank.scoring, "ClipChunks", CrashingChunks)
    (clips / "zero.mp4").write_bytes(b"")
    (clips / "text.mp4").write_text("not a video\n" * 100)
    make_tone_clip(ffmpeg_exe, clips / "audio.mp4")
    whole = tmp_path / "whole.mp4"  # 2 s of a moving test pattern, index (moov) first
    make_pattern_clip(ffmpeg_exe, whole, (W, H), 2, gop=10, extra=("-movflags", "+faststart"))
    (clips / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # head -c: half the bytes
    no_index = make_clip(ffmpeg_exe, tmp_path / "noindex.mp4", [("red", 1.0)])  # index (moov) at the end
    (clips / "noindex.mp4").write_bytes(no_index.read_bytes()[: no_index.stat().st_size // 2])
    out = tmp_path / "out"
    result = cli("rank", "--clips", clips, "--models", world["models"][0], "--out", out, "--run-id", "bad", expect=None)
    assert result.exit_code == 0, result.output
    assert "ranked 3, failed 6" in result.output
    failures = pd.read_csv(out / "failures.csv", dtype=str)
    assert list(failures.columns) == ["clip_path", "shot_id", "reason"]
    assert sorted(failures["shot_id"]) == ["audio", "boom", "my shot", "noindex", "text", "zero"]
    assert failures.set_index("shot_id").loc["boom", "reason"] == "RuntimeError: decoder crashed"
    assert failures["reason"].str.len().min() > 5
    scores = read_scores(out)
    assert scores.loc["cut", "status"] == "truncated" and 1 <= scores.loc["cut", "frames"] < 20
    assert scores.loc["halfway", "status"] == "truncated"  # keeps its first chunk: all its frames by default
    assert scores.loc["halfway", "frames"] == scores.loc[Path(good).stem, "frames"]
    with sqlite3.connect(out / "scores.sqlite") as db:
        note = db.execute("SELECT note FROM model_scores WHERE shot_id = 'halfway'").fetchone()[0]
    assert note == "decoding stopped: RuntimeError: decoder crashed later"
    assert sorted(read_trec(out / "bad.trec")["shot_id"].unique()) == sorted(["cut", "halfway", Path(good).stem])

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "zero.mp4").write_bytes(b"")
    result = cli("rank", "--clips", only_bad, "--models", world["models"][0], "--out", tmp_path / "o2", expect=None)
    assert result.exit_code == 2 and "no clip could be ranked" in result.output
    assert len(pd.read_csv(tmp_path / "o2" / "failures.csv")) == 1
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        result = cli("rank", "--clips", folder, "--models", world["models"][0], "--out", tmp_path / "o3", expect=None)
        assert result.exit_code == 2 and str(folder.name) in result.output
    for bad in (["--models", tmp_path / "nope"], ["--models", world["models"][0], "--agg", "median"],
                ["--models", world["models"][0], *cli.repeated("--model-weights", (1, 1))],
                ["--runs-dir", tmp_path / "noruns"],
                ["--models", world["models"][0], "--bogus-flag"], ["--models", world["models"][0], "--tr-type", "X"],
                ["--models", world["models"][0], "--run-id", "two words"]):
        assert cli("rank", "--clips", clips, "--out", tmp_path / "o4", *bad, expect=None).exit_code == 2, bad
    tiny_checkpoint(tmp_path / "wrong.pt", classes=["a", "b"])
    result = cli("rank", "--clips", clips, "--models", tmp_path / "wrong.pt", "--out", tmp_path / "o5", expect=None)
    assert result.exit_code == 2 and "its2classesarenotthoseoflabelsetladi-v1" in "".join(result.output.split())


def test_default_models_shot_table_and_eval(world, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(world["root"])  # workspace defaults: runs/ -> both models, submissions/<run-id>
    one = sorted(world["clips"].glob("*.mp4"))[0]
    table = tmp_path / "shots.csv"
    table.write_text(f"video,shot_id,start,end\n{one},late,0.5,2.0\n{one},early,0.0,0.3\n")
    result = cli("rank", "--shots", table, "--run-id", "shots", "--topk", 1, expect=None)
    assert result.exit_code == 0 and "ranked 2, failed 0" in result.output, result.output
    out = Path("submissions/shots")
    assert json.loads((out / "run.json").read_text())["models"] == ["runs/A/best.pt", "runs/B/best.pt"]
    frames = model_input_frames(one)
    late = np.mean([frame_sigmoids(m, frames[5:]).max(axis=0) for m in world["models"]], axis=0)
    np.testing.assert_allclose(read_scores(out).loc["late", list(CLASSES)].to_numpy(float), late, atol=2e-6)
    peaks = pd.read_csv(out / "peak_frames.csv", dtype={"shot_id": str}).set_index("shot_id")
    assert (peaks.loc["late"] >= 0.5).all() and (peaks.loc["early"] < 0.3).all()  # seconds into the video file
    trec = read_trec(out / "shots.trec")
    winners = trec.set_index("fnum")["shot_id"]
    qrels = tmp_path / "qrels.txt"  # feature 1: its top shot relevant (AP 1); feature 2: the other shot (AP 0)
    qrels.write_text(f"1 0 {winners[1]} 1\n2 0 {({'late', 'early'} - {winners[2]}).pop()} 1\n")
    result = cli("eval", "--run", out / "shots.xml", "--qrels", qrels, "--topk", 1, expect=None)
    assert result.exit_code == 0, result.output
    assert "mAP 0.5000" in result.output


# `python slow_dsdi.py ARGS` = `dsdi ARGS`, each process sleeping DSDI_TEST_CLIP_SLEEP s after storing a clip
SLOW_DSDI = """
import os, time
from dsdi.index.store import ScoreIndex
from dsdi.index.shard import read_shard
store = ScoreIndex.add_clip
def store_then_sleep(self, clip, scores, embedding=None):
    store(self, clip, scores, embedding)
    time.sleep(float(os.environ.get("DSDI_TEST_CLIP_SLEEP", "0")))
ScoreIndex.add_clip = store_then_sleep
from dsdi.cli.app import app
app(prog_name="dsdi")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def launch_two_nodes(world, out: Path, sleep_s: float = 0.0) -> list[subprocess.Popen]:
    """`torchrun --nnodes 2` launched twice on this machine (node ranks 0 and 1, one process each), as on two
    hosts sharing the output folder; each launch in its own session so that it can be killed whole."""
    script = out.parent / "slow_dsdi.py"
    script.write_text(SLOW_DSDI)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSDI_TEST_CLIP_SLEEP": str(sleep_s)}
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                              "--node-rank", str(node), "--master-addr", "localhost", "--master-port", str(port),
                              str(script), "rank", "--clips", str(world["clips"]),
                              *[arg for model in world["models"] for arg in ("--models", str(model))],
                              "--topk", "3", "--out", str(out), "--run-id", "t1",
                              "--device", "cpu", "--batch-size", "5"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
            for node in (0, 1)]


def kill_tree(pid: int) -> None:
    """SIGKILL a launch and its descendants (torchrun starts each worker in a session of its own)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            children = task / "children"
            pids += [int(c) for c in (children.read_text().split() if children.is_file() else [])]
        i += 1
    for victim in reversed(pids):
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(launches: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    results = []
    for launch in launches:
        try:
            output, _ = launch.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(launch.pid)
            output, _ = launch.communicate()
        results.append((launch.returncode, output))
    return results


def assert_equals_one_process_ranking(world, out: Path) -> None:
    reference = world["out"]  # the single-process run
    pd.testing.assert_frame_equal(read_scores(out).drop(columns="clip_path"),
                                  read_scores(reference).drop(columns="clip_path"), atol=1e-6)
    pd.testing.assert_frame_equal(read_trec(out / "t1.trec").drop(columns="score"),
                                  read_trec(reference / "t1.trec").drop(columns="score"))
    assert not list(out.glob("*.shard")) and not list(out.glob("scores.sqlite-*"))  # merged; no WAL, no journal
    with sqlite3.connect(out / "scores.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.slow
def test_torchrun_two_nodes_equal_one_process(world, tmp_path):
    out = tmp_path / "ddp"
    (code0, output0), (code1, output1) = finish(launch_two_nodes(world, out))
    assert code0 == 0 and code1 == 0, output0 + output1
    assert "ranked 6, failed 0 (scored 6 new clips" in output0 and "reused 0 from the index" in output0, output0
    assert_equals_one_process_ranking(world, out)
    run = json.loads((out / "run.json").read_text())
    assert (run["clips_scored"], run["clips_reused"], run["clips_failed"]) == (6, 0, 0)
    assert run["index_bytes"] == (out / "scores.sqlite").stat().st_size


@pytest.mark.slow
def test_torchrun_process_killed_mid_run_then_restarted_equals_one_process(world, tmp_path):
    out = tmp_path / "ddp"
    launches = launch_two_nodes(world, out, sleep_s=2.0)
    shard = out / "scores.1.shard"
    deadline = time.monotonic() + 180
    while not (shard.is_file() and list(read_shard(shard))):  # process 1 stored its first clip, and sleeps
        assert time.monotonic() < deadline and launches[1].poll() is None, finish(launches, 1)
        time.sleep(0.05)
    kill_tree(launches[1].pid)  # node 1 dies: its agent and its process
    (code0, _), (code1, _) = finish(launches, timeout=120)
    assert code0 != 0 and code1 != 0
    stored = {meta["shot_id"] for path in out.glob("scores.*.shard") for meta, _ in read_shard(path)}
    if (out / "scores.sqlite").is_file():  # process 0 merged its own shard when the job failed
        with sqlite3.connect(out / "scores.sqlite") as db:
            stored |= {shot for (shot,) in db.execute("SELECT shot_id FROM model_scores")}
    assert 1 <= len(stored) < 6

    (code0, output0), (code1, output1) = finish(launch_two_nodes(world, out))
    assert code0 == 0 and code1 == 0, output0 + output1
    assert (f"ranked 6, failed 0 (scored {6 - len(stored)} new clips" in output0
            and f"reused {len(stored)} from the index" in output0), output0  # none stored is scored again
    assert_equals_one_process_ranking(world, out)


def test_synthetic_world_ranks_and_evaluates_like_trec_eval(world, tmp_path, cli):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from dsdi.synth import build_world

    synth = build_world(tmp_path / "world", n_images=0, n_clips=6, clip_size=(96, 64), clip_seconds=(1.0, 2.0))
    out = tmp_path / "out"
    result = cli("rank", "--clips", synth.clips_dir, *cli.repeated("--models", world["models"]), "--out", out,
                 "--run-id", "syn", expect=None)
    assert result.exit_code == 0 and "ranked 6, failed 0" in result.output, result.output
    table = pd.read_csv(synth.clips_table, dtype={"shot_id": str}).set_index("shot_id")
    frames = read_scores(out)["frames"]
    assert (frames == np.ceil(table.loc[frames.index, "duration_s"] * 10 - 1e-6).astype(int)).all()

    result = cli("eval", "--run", out / "syn.xml", "--qrels", synth.qrels, expect=None)
    assert result.exit_code == 0, result.output
    qrels: dict[str, dict[str, int]] = {}
    for line in synth.qrels.read_text().splitlines():
        fnum, _, shot, rel = line.split()
        qrels.setdefault(fnum, {})[shot] = int(rel)
    trec = read_trec(out / "syn.trec")
    run = {str(f): dict(zip(g["shot_id"], g["score"], strict=True)) for f, g in trec.groupby("fnum")}
    per_feature = pytrec_eval.RelevanceEvaluator(qrels, {"map"}).evaluate(run)
    judged = [f for f, shots in qrels.items() if any(r > 0 for r in shots.values())]
    expected = np.mean([per_feature[f]["map"] if f in per_feature else 0.0 for f in judged])
    assert f"mAP {expected:.4f}" in result.output


LADI_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ladi-sample"
LADI_IMAGE = next(LADI_SAMPLE.glob("*.jpg"), None) if LADI_SAMPLE.is_dir() else None


def assert_model_input_matches_bt601(clips: Path, tmp_path: Path) -> None:
    """dsdi rank on the clips with two sensitive models (64 and 96 px inputs, one decoded frame for both): each
    model's frame sigmoids on the decoder's one-pass model input stay within 0.02 of its sigmoids on the float64
    BT.601 reference, at most as far off as converting the full frame with swscale's unscaled converter and resizing
    in torch (the path before; ~1 level dark on limited-range video), and the stored clip scores are their max."""
    models = {save_pattern_model(tmp_path / "runs" / f"plain{side}", seed, side): side
              for seed, side in ((0, IMG), (1, 96))}
    out = tmp_path / "out"
    dsdi.rank.scoring.rank(RankConfig(clips=clips, models=list(models), out=out, batch_size=8, device="cpu"))
    scores = read_scores(out)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    for path in sorted(clips.glob("*.mp4")):
        full = decode_clip(Clip(path.stem, path)).frames
        chunks = ClipChunks(Clip(path.stem, path), shrink_to=[(side, side) for side in models.values()])
        fast = [np.concatenate(parts) for parts in zip(*(frames for frames, _ in chunks), strict=True)]
        references = bt601_rgb_at(path, [(side, side) for side in models.values()])
        clip_scores = []
        for (run_dir, side), at_size, at_side in zip(models.items(), fast, references, strict=True):
            reference = torch.from_numpy(at_side[:len(at_size)]).permute(0, 3, 1, 2)
            truth = model_sigmoids(run_dir, (reference / 255 - mean) / std)
            now = model_sigmoids(run_dir, frames_to_tensor(at_size, side))
            before = model_sigmoids(run_dir, frames_to_tensor(full, side))
            off_now, off_before = np.abs(now - truth).max(), np.abs(before - truth).max()
            assert off_now < 0.02 and off_now <= off_before + 0.002, (path.name, side, off_now, off_before)
            assert np.ptp(truth, axis=0).max() > 0.05  # the model does tell frames apart
            clip_scores.append(now.max(axis=0))
        np.testing.assert_allclose(scores.loc[path.stem, list(CLASSES)].to_numpy(float), np.mean(clip_scores, 0),
                                   atol=1e-5)


@pytest.mark.slow
def test_decoding_to_model_size_scores_like_the_bt601_reference(tmp_path):
    """Synthetic aerial clips at 320x180, 640x360 and 96x64 (under 96 px high: decoded at its own size, resized in
    torch for the 96 px model)."""
    from dsdi.synth import build_world

    clips = tmp_path / "clips"
    clips.mkdir()
    for size, n_clips in (((320, 180), 2), ((640, 360), 1), ((96, 64), 1)):
        world = build_world(tmp_path / f"world{size[0]}", n_images=0, n_clips=n_clips, clip_size=size,
                            clip_seconds=(1.0, 1.5))
        for path in sorted(world.clips_dir.glob("*.mp4")):
            path.rename(clips / f"W{size[0]}_{path.name}")
    assert_model_input_matches_bt601(clips, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(LADI_IMAGE is None, reason="the real LADI sample image (../shared/data) is absent")
def test_decoding_to_model_size_scores_like_the_bt601_reference_on_real_aerial_footage(tmp_path, ffmpeg_exe):
    """A 2 s 720p limited-range pan over the real 6000x4000 LADI photo."""
    clips = tmp_path / "clips"
    clips.mkdir()
    pan = ffmpeg.input(str(LADI_IMAGE), loop=1, t=2, framerate=30).filter("scale", 2560, -2, out_range="tv").filter(
        "crop", 1280, 720, x="t*200", y="t*80")
    command = pan.output(str(clips / "Ladi_pan.mp4"), vcodec="libx264", preset="veryfast", pix_fmt="yuv420p")
    run(command.global_args("-v", "error").overwrite_output(), "making the LADI pan", cmd=ffmpeg_exe)
    assert_model_input_matches_bt601(clips, tmp_path)
