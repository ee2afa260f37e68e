"""Clip embeddings of `dsdi rank`: their stored form, their values against plain timm features of the clip's frames,
and the index guarantees they share with the scores (resume after an interruption, an old index gaining them
without re-scoring, two torchrun processes killed and restarted), on real H.264 clips with tiny random models; then
`dsdi search --like` with a frame grab of a clip."""

import json
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rank_models import IMG, model_input_frames, reference_model, save_tiny_model
from test_rank import CLIP_SEGMENTS, count_decodes, finish, kill_tree, launch_two_nodes, make_clip

import dsdi.rank.passes
import dsdi.rank.scoring
from dsdi.index.embeddings import EMBEDDING_DIMS, Embeddings, clip_embedding, embedding_bytes, projection, unit_rows
from dsdi.index.shard import read_shard
from dsdi.index.store import ScoreIndex
from dsdi.models.preprocess import frames_to_tensor
from dsdi.rank.config import RankConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, ffmpeg_exe, cli):
    root = tmp_path_factory.mktemp("embed")
    clips = root / "clips"
    clips.mkdir()
    for shot, segments in CLIP_SEGMENTS.items():
        make_clip(ffmpeg_exe, clips / f"{shot}.mp4", segments)
    models = [save_tiny_model(root / "runs" / name, seed) for name, seed in (("A", 0), ("B", 1))]
    out = root / "out"
    cli("rank", "--clips", clips, *cli.repeated("--models", models), "--model-weights", 1, "--model-weights", 2,
        "--topk", 3, "--out", out, "--run-id", "t1", "--batch-size", 7, "--device", "cpu")
    return {"root": root, "clips": clips, "models": models, "out": out}


def stored_embeddings(out: Path) -> dict[str, tuple[str, bytes]]:
    """shot id -> (model key, stored bytes) of the embeddings table."""
    with sqlite3.connect(out / "scores.sqlite") as db:
        return {shot: (key, vector) for key, shot, vector in db.execute(
            "SELECT model_key, shot_id, vector FROM embeddings")}


def unit(vector: bytes) -> np.ndarray:
    return unit_rows(np.frombuffer(vector, dtype=np.int8).astype(np.float64))


def test_stored_form_keeps_the_direction():
    rng = np.random.default_rng(0)
    features = np.maximum(rng.standard_normal((300, 1280)), 0)  # post-ReLU-like pooled features
    matrix = projection(1280)
    np.testing.assert_allclose(matrix.T.astype(np.float64) @ matrix, np.eye(EMBEDDING_DIMS), atol=1e-5)
    assert projection(EMBEDDING_DIMS) is None and np.array_equal(projection(1280), matrix)
    vectors = np.stack([clip_embedding(f[None]) for f in features])
    stored = Embeddings.from_bytes(embedding_bytes(vectors), EMBEDDING_DIMS)
    assert len(embedding_bytes(vectors[0])) == EMBEDDING_DIMS <= 1024
    assert np.min(np.sum(stored.unit() * vectors, axis=1)) > 0.999
    plain = unit_rows(features)  # the projection keeps cosines between clips within a few hundredths
    assert np.abs((plain @ plain.T) - (vectors @ vectors.T)).mean() < 0.03


def test_embeddings_are_the_mean_of_the_frames_pooled_features(world):
    run = json.loads((world["out"] / "run.json").read_text())
    model_b = world["models"][1]
    assert run["embed_model"] == str(model_b / "best.pt") and run["embed_model_key"] == run["model_keys"][1]  # weight 2
    stored = stored_embeddings(world["out"])
    assert sorted(stored) == sorted(CLIP_SEGMENTS)
    timm_model = reference_model(model_b)
    for shot, (key, vector) in stored.items():
        assert key == run["embed_model_key"] and len(vector) == EMBEDDING_DIMS
        images = frames_to_tensor(model_input_frames(world["clips"] / f"{shot}.mp4"), IMG)
        with torch.no_grad():
            features = timm_model.forward_head(timm_model.forward_features(images), pre_logits=True).double().numpy()
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        expected = unit_rows(features.mean(axis=0) @ projection(features.shape[1]).astype(np.float64))
        assert float(unit(vector) @ expected) > 0.999


def test_features_of_passes_run_at_once_are_each_their_own():
    """Rank's CPU forward workers call one with_features function from several threads at once."""
    import threading

    import timm

    from dsdi.models.features import with_features

    torch.manual_seed(0)
    model = timm.create_model("lcnet_050", num_classes=5).eval()
    run = with_features(model)
    model.get_classifier().register_forward_hook(lambda *_: time.sleep(0.05))  # after the features are recorded
    images = [torch.rand(2, 3, 32, 32) for _ in range(4)]
    with torch.inference_mode():
        expected = [model.forward_head(model.forward_features(x), pre_logits=True) for x in images]
        got: dict[int, torch.Tensor] = {}
        threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, run(images[k])[1])) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for k in range(4):
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_embed_model_flag_and_its_refusals(world, tmp_path, cli):
    out = tmp_path / "out"
    cli("rank", "--clips", world["clips"], *cli.repeated("--models", world["models"]), "--embed-model",
        world["models"][0] / "best.pt", "--out", out, "--device", "cpu")
    run = json.loads((out / "run.json").read_text())
    assert {key for key, _ in stored_embeddings(out).values()} == {run["model_keys"][0]} == {run["embed_model_key"]}
    result = cli("rank", "--clips", world["clips"], "--models", world["models"][0], "--embed-model",
                 world["models"][1], "--out", tmp_path / "other", "--device", "cpu", expect=2)
    assert "not among the --models" in cli.said(result)


def test_interrupted_rank_resumes_embeddings(world, tmp_path, monkeypatch, cli):
    out, stored, real_add = tmp_path / "out", [], ScoreIndex.add_clip

    def add_then_die(self, clip, scores, embedding=None):
        if len(stored) == 2:
            raise KeyboardInterrupt("simulated kill after 2 clips")
        real_add(self, clip, scores, embedding)
        stored.append(clip.shot_id)

    args = ("rank", "--clips", world["clips"], *cli.repeated("--models", world["models"]), "--model-weights", 1,
            "--model-weights", 2, "--out", out, "--batch-size", 7, "--device", "cpu")
    monkeypatch.setattr(ScoreIndex, "add_clip", add_then_die)
    assert cli(*args, expect=None).exit_code != 0
    monkeypatch.setattr(ScoreIndex, "add_clip", real_add)
    assert sorted(stored_embeddings(out)) == sorted(stored)
    decodes = count_decodes(monkeypatch)
    cli(*args)
    assert sorted(decodes) == sorted(set(CLIP_SEGMENTS) - set(stored))
    assert stored_embeddings(out) == stored_embeddings(world["out"])  # byte for byte


def test_old_index_gains_embeddings_without_rescoring(world, tmp_path, monkeypatch, cli):
    out = tmp_path / "out"
    shutil.copytree(world["out"], out)
    with sqlite3.connect(out / "scores.sqlite") as db:  # as a version 3 index: no embeddings table
        db.execute("DROP TABLE embeddings")
        db.execute("PRAGMA user_version = 3")
        scores_before = db.execute("SELECT * FROM model_scores ORDER BY model_key, shot_id").fetchall()
    forwards = []
    forward = dsdi.rank.passes.BatchScorer._forward
    monkeypatch.setattr(dsdi.rank.passes.BatchScorer, "_forward",
                        lambda self, batch: forwards.append(self.model.key) or forward(self, batch))
    decodes = count_decodes(monkeypatch)
    result = cli("rank", "--clips", world["clips"], *cli.repeated("--models", world["models"]), "--model-weights", 1,
                 "--model-weights", 2, "--out", out, "--batch-size", 7, "--device", "cpu")
    assert "ranked 6, failed 0" in result.output
    run = json.loads((out / "run.json").read_text())
    assert sorted(decodes) == sorted(CLIP_SEGMENTS) and set(forwards) == {run["embed_model_key"]}  # B only
    with sqlite3.connect(out / "scores.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert db.execute("SELECT * FROM model_scores ORDER BY model_key, shot_id").fetchall() == scores_before
    assert stored_embeddings(out) == stored_embeddings(world["out"])
    decodes.clear()
    cli("rank", "--clips", world["clips"], *cli.repeated("--models", world["models"]), "--model-weights", 1,
        "--model-weights", 2, "--out", out, "--device", "cpu")
    assert decodes == []  # nothing lacking: nothing decoded


def test_like_a_frame_grab_finds_its_clip_first(world, tmp_path, cli):
    for shot in sorted(CLIP_SEGMENTS)[:3]:
        frames = model_input_frames(world["clips"] / f"{shot}.mp4", side=64)
        grab = tmp_path / f"{shot}.png"
        Image.fromarray(frames[len(frames) // 4]).save(grab)
        cli("search", world["out"], "--like", grab, "--topk", 3, "--out", tmp_path / "hits.csv")
        assert (tmp_path / "hits.csv").read_text().splitlines()[1].split(",")[1] == shot


@pytest.mark.slow
def test_two_processes_killed_then_restarted_store_the_embeddings_of_one(world, tmp_path):
    out = tmp_path / "ddp"
    launches = launch_two_nodes(world, out, sleep_s=2.0)  # equal weights: model A embeds
    shard = out / "scores.1.shard"
    deadline = time.monotonic() + 180
    while not (shard.is_file() and list(read_shard(shard))):  # process 1 stored its first clip, and sleeps
        assert time.monotonic() < deadline and launches[1].poll() is None, finish(launches, 1)
        time.sleep(0.05)
    assert "embedding" in next(iter(read_shard(shard)))[0]
    kill_tree(launches[1].pid)  # kill -9 of node 1: its agent and its process
    finish(launches, timeout=120)
    (code0, output0), (code1, output1) = finish(launch_two_nodes(world, out))
    assert code0 == 0 and code1 == 0, output0 + output1
    single = tmp_path / "single"
    dsdi.rank.scoring.rank(RankConfig(clips=world["clips"], models=world["models"], out=single,
                                      device="cpu", batch_size=5))
    two, one = stored_embeddings(out), stored_embeddings(single)
    assert sorted(two) == sorted(one) == sorted(CLIP_SEGMENTS)
    for shot, (key, vector) in two.items():
        assert key == one[shot][0] and float(unit(vector) @ unit(one[shot][1])) > 0.9999
