"""`dsdi export` and `dsdi rank --engine onnxruntime` through the real CLI: tiny timm checkpoints exported to ONNX,
checked against the plain timm model run by onnxruntime itself, ranked on real H.264 clips next to PyTorch."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from colour_clips import make_pattern_clip
from conftest import finish_run, tiny_checkpoint
from PIL import Image
from rank_models import reference_model, save_pattern_model
from sklearn.metrics import average_precision_score

from dsdi.files import file_sha256
from dsdi.labels.schema import CLASSES
from dsdi.models.preprocess import frames_to_tensor
from dsdi.rank.scoring import model_key
from dsdi.train.config import TrainConfig
from dsdi.train.predictions import write_predictions, write_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIDE = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory, ffmpeg_exe):
    root = tmp_path_factory.mktemp("export")
    clips = root / "clips"
    clips.mkdir()
    for k, seconds in enumerate((0.8, 1.2)):
        make_pattern_clip(ffmpeg_exe, clips / f"Shot{k + 1}_001.mp4", (96, 64), seconds, gop=10)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(16):
        Image.fromarray(rng.integers(0, 256, (72, 90, 3), dtype=np.uint8)).save(images / f"img{k:02d}.png")
    return {"root": root, "clips": clips, "images": images, "run": save_pattern_model(root / "runs" / "A", 0, SIDE)}


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_export_matches_the_timm_model_and_records_its_input(world, cli):
    result = cli("export", world["run"])
    path = world["run"] / "export" / "best.onnx"
    assert f"-> {path} (fp32;" in cli.said(result)
    images = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = reference_model(world["run"])(images).numpy()
    assert np.abs(onnx_logits(path, images.numpy()) - expected).max() < 1e-4
    info = json.loads((world["run"] / "export" / "best.onnx.json").read_text())
    assert info["checkpoint_sha256"] == file_sha256(world["run"] / "best.pt")
    assert info["classes"] == list(CLASSES) and info["precision"] == "fp32" and info["max_abs_diff"] < 1e-4
    assert info["preprocessing"] == {"img_size": SIDE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                     "interpolation": "bilinear", "resize_mode": "square", "resize_size": 0}


def test_bad_export_inputs_exit_2_with_one_line(world, tmp_path, cli):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    cases = [(tmp_path / "missing.pt",), (broken,), (world["run"], "--tolerance", "1e-12"),
             (world["run"], "--precision", "int8", "--images", tmp_path)]
    for args in cases:
        result = cli("export", *args, expect=2, env={"COLUMNS": "400"}, terminal_width=400)
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:"), result.output
    assert "more than --tolerance 1e-12" in cli.said(cli("export", world["run"], "--tolerance", "1e-12", expect=2))
    assert "--engine onnxruntime" in cli.said(cli("rank", "--clips", world["clips"], "--models", world["run"],
                                                   "--precision", "int8", expect=2))


def rank(cli, world, out: Path, *args) -> pd.DataFrame:
    cli("rank", "--clips", world["clips"], "--out", out, "--device", "cpu", "--batch-size", 5, *args)
    return pd.read_csv(out / "clip_scores.csv", dtype={"shot_id": str}).set_index("shot_id")[list(CLASSES)]


@pytest.mark.slow
def test_onnxruntime_ranks_like_torch_under_keys_of_its_own(world, tmp_path, cli):
    loose = tmp_path / "loose" / "model.pt"  # a checkpoint outside a run: exported next to it on first use
    tiny_checkpoint(loose, backbone="resnet10t", img_size=SIDE, seed=3, head_std=(3.0, None))
    models = cli.repeated("--models", [world["run"], loose])
    out = tmp_path / "out"
    torch_scores = rank(cli, world, out, *models)
    assert not (loose.parent / "export").exists()
    ort_scores = rank(cli, world, tmp_path / "ort", *models, "--engine", "onnxruntime")
    assert (loose.parent / "export" / "model.onnx").is_file()
    assert ort_scores.shape == torch_scores.shape and torch_scores.to_numpy().std() > 0.01
    assert np.abs(ort_scores.to_numpy() - torch_scores.to_numpy()).max() < 1e-4
    # the same index takes both engines' scores, each under its own key; torch's keys are the plain ones
    rank(cli, world, out, *models, "--engine", "onnxruntime")
    keys = json.loads((tmp_path / "ort" / "run.json").read_text())["model_keys"]
    plain = [model_key(file_sha256(file), 10.0) for file in (world["run"] / "best.pt", loose)]
    assert keys == [key + "+ort" for key in plain]
    with sqlite3.connect(out / "scores.sqlite") as db:
        stored = {row[0] for row in db.execute("SELECT DISTINCT model_key FROM model_scores")}
    assert stored == set(plain) | set(keys)


@pytest.mark.slow
def test_int8_export_measures_its_holdout_cost_and_ranks(world, tmp_path, cli):
    run = tmp_path / "run"
    model = tiny_checkpoint(run, backbone="resnet10t", img_size=SIDE, seed=1, head_std=(3.0, None))
    finish_run(run)
    ids = sorted(path.name for path in world["images"].iterdir())
    rng = np.random.default_rng(1)
    targets = (rng.random((len(ids), len(CLASSES))) < 0.3).astype(float)
    labels = pd.DataFrame(targets, columns=list(CLASSES)).assign(image_id=ids)[["image_id", *CLASSES]]
    labels.to_csv(tmp_path / "labels.csv", index=False)
    TrainConfig(labels=tmp_path / "labels.csv", images=world["images"], backbone="resnet10t", img_size=SIDE,
                epochs=1, holdout_fraction=0.5).to_toml(run / "config.toml")
    holdout = ids[::2]
    pixels = np.stack([np.asarray(Image.open(world["images"] / i).convert("RGB")) for i in holdout])
    with torch.no_grad():
        stored = torch.sigmoid(model(frames_to_tensor(pixels, SIDE)).double()).numpy()
    write_predictions(run, "best", "holdout", holdout, stored, CLASSES)
    write_targets(run, "holdout", holdout, targets[::2], CLASSES)
    result = cli.said(cli("export", run, "--precision", "int8", env={"COLUMNS": "400"}, terminal_width=400))
    assert "(int8, static: " in result and str(run / "export" / "best.int8.onnx") in result
    torch_map = np.mean([average_precision_score(targets[::2][:, c], stored[:, c])
                         for c in range(len(CLASSES)) if targets[::2][:, c].any()])
    assert f"hold-out mAP ({len(holdout)} images): PyTorch {torch_map:.4f}, int8 " in result
    scores = rank(cli, world, tmp_path / "out", "--models", run, "--engine", "onnxruntime", "--precision", "int8")
    keys = json.loads((tmp_path / "out" / "run.json").read_text())["model_keys"]
    int8_digest = file_sha256(run / "export" / "best.int8.onnx")[:8]
    assert keys == [model_key(file_sha256(run / "best.pt"), 10.0) + f"+ort-int8-{int8_digest}"]
    assert scores.notna().all().all() and ((scores >= 0) & (scores <= 1)).all().all()
