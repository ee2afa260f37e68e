"""A label set other than LADI v1, end to end: a user's label set file through train, rank, eval and report; the
published splits of a labels CSV; fusion by class name across label sets; the index holding any class count."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from colour_clips import make_colour_clip
from PIL import Image

from dsdi.index.scores import ClipScores
from dsdi.index.store import ScoreIndex
from dsdi.labels.labelset import LADI_V1, load_labelset
from dsdi.models.backbones import create_backbone
from dsdi.models.checkpoint import checkpoint_payload, load_model, save_checkpoint
from dsdi.rank.output import RankOutput
from dsdi.train.loop import training_counts
from dsdi.trecvid.submission import read_run
from dsdi.video.clip import Clip

SIDE = 32
COLOURS = {"smoke": (200, 40, 40), "burn_scar": (40, 200, 40)}
LABELSET = """name = "wildfire"
description = "a team's own classes"
classes = [
  { name = "smoke", category = "fire" },
  { name = "burn_scar", category = "fire" },
  { name = "fire: none", category = "fire", role = "none" },
]
"""


def says(output: str, text: str) -> bool:
    """``text`` is in the command's output, whitespace ignored (rich wraps long lines)."""
    return "".join(text.split()) in "".join(output.split())


def write_wildfire(root: Path, n_images: int = 24) -> tuple[Path, Path, Path]:
    """(label set file, labels.csv with a split column, image folder): red squares are smoke, green burn scars,
    grey noise is neither (the none class)."""
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    for index in range(n_images):
        kind = index % 3
        pixels = rng.normal(128, 20, (SIDE, SIDE, 3))
        if kind < 2:
            pixels[8:24, 8:24] = list(COLOURS.values())[kind]
        name = f"img_{index:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / name, quality=90)
        split = "test" if index >= n_images - 6 else ("val" if index >= n_images - 12 else "train")
        rows.append([name, split, float(kind == 0), float(kind == 1), float(kind == 2)])
    labels = root / "labels.csv"
    pd.DataFrame(rows, columns=["image_id", "split", "smoke", "burn_scar", "fire: none"]).to_csv(labels, index=False)
    labelset = root / "wildfire.toml"
    labelset.write_text(LABELSET)
    return labelset, labels, images


def write_checkpoint(path: Path, labelset_name: str, seed: int = 0) -> Path:
    """A random tiny model of a built-in label set, saved as a dsdi checkpoint."""
    labelset = load_labelset(labelset_name)
    torch.manual_seed(seed)
    model = create_backbone("lcnet_050", num_classes=len(labelset.class_names))
    with torch.no_grad():
        torch.nn.init.normal_(model.get_classifier().weight, std=0.5)
    save_checkpoint(path, checkpoint_payload(model, backbone="lcnet_050", img_size=SIDE, labelset=labelset))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ffmpeg_exe) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for k, colour in enumerate(("0xC82828", "0x28C828", "0x808080")):
        make_colour_clip(ffmpeg_exe, folder / f"shot{k}_1.mp4", [(colour, 0.6)], (48, 32))
    return folder


def test_a_users_label_set_goes_through_train_rank_eval_and_report(tmp_path, clips, cli):
    labelset, labels, images = write_wildfire(tmp_path / "world")
    run = tmp_path / "run"
    cli("train", "--labels", labels, "--images", images, "--labelset", labelset, "--out", run, "--epochs", "2",
        "--backbone", "test_convnext", "--loss", "cbfl", "--img-size", SIDE, "--batch-size", "4",
        "--optimizer", "adamw", "--lr", "0.003", "--workers", "0", "--device", "cpu")
    model, info = load_model(run / "best.pt")
    assert info.labelset.name == "wildfire" and info.labelset.class_names == ("smoke", "burn_scar", "fire: none")
    assert model.get_classifier().out_features == 3
    targets = pd.read_csv(run / "predictions" / "targets.holdout.csv")
    assert list(targets.columns) == ["image_id", "smoke", "burn_scar", "fire: none"]
    assert len(targets) == 6  # the split column's test rows are the hold-out
    assert len(pd.read_csv(run / "predictions" / "targets.val.csv")) == 6

    out = tmp_path / "ranked"
    result = cli("rank", "--clips", clips, "--models", run, "--out", out, "--device", "cpu", "--run-id", "fire")
    assert says(cli.said(result), "no TRECVID XML: label set wildfire has no TRECVID feature numbers")
    assert not (out / "fire.xml").exists()
    facts = RankOutput(out).read_facts()
    assert facts.label_set().name == "wildfire" and facts.working_dir == str(Path.cwd())
    scores = pd.read_csv(out / "clip_scores.csv")
    assert list(scores.columns)[4:] == ["smoke", "burn_scar", "fire: none"]
    rankings = read_run(out / "fire.trec")
    assert set(rankings) == {"smoke", "burn_scar"}  # class names as topics; the none class is never ranked
    best = scores.set_index("shot_id")["smoke"].sort_values(ascending=False, kind="stable")
    assert [shot for shot, _ in rankings["smoke"]] == sorted(best.index, key=lambda s: (-best[s], s))

    qrels = tmp_path / "qrels.txt"
    qrels.write_text("smoke 0 shot0_1 1\nsmoke 0 shot1_1 0\nburn_scar 0 shot1_1 1\n")
    evaluated = cli("eval", "--run", out / "fire.trec", "--qrels", qrels, "--labelset", labelset, "--out",
                    tmp_path / "metrics.csv")
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert list(table["feature"]) == ["burn_scar", "smoke", "all"] and says(cli.said(evaluated), "smoke")
    report = cli("report", out, "--qrels", qrels)
    page = (out / "report.html").read_text()
    assert "smoke" in page and "burn_scar" in page and report.exit_code == 0


def test_the_split_column_decides_train_validation_and_hold_out(tmp_path, cli):
    labelset, labels, images = write_wildfire(tmp_path / "world")
    table = pd.read_csv(labels)
    table.loc[table["split"] == "val", "split"] = "train"  # no validation rows: --val-fraction splits the train rows
    table.to_csv(labels, index=False)
    run = tmp_path / "run"
    cli("train", "--labels", labels, "--images", images, "--labelset", labelset, "--out", run, "--epochs", "1",
        "--backbone", "test_convnext", "--loss", "focal", "--img-size", SIDE, "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--val-fraction", "0.25")
    held = set(pd.read_csv(run / "predictions" / "targets.holdout.csv")["image_id"])
    assert held == set(table.loc[table["split"] == "test", "image_id"])
    assert len(pd.read_csv(run / "predictions" / "targets.val.csv")) == round(18 * 0.25)
    table.loc[0, "split"] = "validation"
    table.to_csv(labels, index=False)
    bad = cli("train", "--labels", labels, "--images", images, "--labelset", labelset, "--out", tmp_path / "r2",
              "--device", "cpu", expect=2)
    assert says(cli.said(bad), "line 2: image_id empty, a class value that is not a number in [0, 1] or a split")


def test_labels_of_another_label_set_are_refused_naming_the_one_that_fits(tmp_path, cli):
    _, labels, images = write_wildfire(tmp_path / "world")
    table = pd.read_csv(labels).drop(columns=["fire: none"])
    table.columns = ["image_id", "split", "building", "road"]
    table.to_csv(labels, index=False)
    result = cli("train", "--labels", labels, "--images", images, "--out", tmp_path / "run", "--device", "cpu",
                 expect=2)
    assert says(cli.said(result), "for label set ladi-v1 (37 classes); its columns are label set "
                                  "ladi-v1-infrastructure's: pass --labelset ladi-v1-infrastructure")
    weighted = cli("train", "--labels", labels, "--images", images, "--out", tmp_path / "run", "--device", "cpu",
                   "--labelset", "ladi-v1-infrastructure", "--none-weight", "0.1", expect=2)
    assert says(cli.said(weighted), "--none-weight 0.1: label set ladi-v1-infrastructure has no none classes")


def test_class_balanced_counts_come_from_the_training_labels_without_published_counts():
    targets = torch.tensor([[1.0, 0.0, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert training_counts(targets) == (2, 0, 2)


def test_models_of_different_label_sets_fuse_by_class_name(tmp_path, clips, cli):
    v2a = write_checkpoint(tmp_path / "v2a.pt", "ladi-v2a", seed=1)
    shuffled = load_labelset("ladi-v2a").to_dict()
    shuffled["name"] = "ladi-v2a-reordered"
    shuffled["classes"] = [*reversed(shuffled["classes"]), {"name": "hail", "category": "hail"}]
    own = tmp_path / "reordered.toml"
    own.write_text(load_labelset("ladi-v2a").from_dict(shuffled, "test").to_toml())
    other_labelset = load_labelset(own)
    torch.manual_seed(2)
    model = create_backbone("lcnet_050", num_classes=13)
    other = tmp_path / "other.pt"
    save_checkpoint(other, checkpoint_payload(model, backbone="lcnet_050", img_size=SIDE, labelset=other_labelset))
    alone = {}
    for name, checkpoint in (("a", v2a), ("b", other)):
        cli("rank", "--clips", clips, "--models", checkpoint, "--out", tmp_path / name, "--device", "cpu",
            "--labelset", "ladi-v2a")
        alone[name] = pd.read_csv(tmp_path / name / "clip_scores.csv").set_index("shot_id")
    cli("rank", "--clips", clips, "--models", v2a, "--models", other, "--model-weights", "3", "--model-weights",
        "1", "--out", tmp_path / "both", "--device", "cpu")
    both = pd.read_csv(tmp_path / "both" / "clip_scores.csv").set_index("shot_id")
    classes = list(load_labelset("ladi-v2a").class_names)
    assert list(both.columns)[3:] == classes  # the first model's label set, in its order
    expected = (3 * alone["a"][classes] + alone["b"][classes]) / 4
    np.testing.assert_allclose(both[classes].to_numpy(), expected.to_numpy(), atol=1e-6)

    damage = write_checkpoint(tmp_path / "damage.pt", "ladi-v1-damage")
    refused = cli("rank", "--clips", clips, "--models", v2a, "--models", damage, "--out", tmp_path / "no",
                  "--device", "cpu", expect=2)
    assert says(cli.said(refused), f"--models {damage} (label set ladi-v1-damage) lacks bridges_any, "
                                   "buildings_any, buildings_affected_or_greater, buildings_minor_or_greater and 8 "
                                   "more of label set ladi-v2a")


def clip_scores(classes: int, seed: int) -> ClipScores:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.01, 0.99, (5, classes))
    return ClipScores.from_frame_scores(probs, np.arange(5) / 10, False, "")


def test_the_index_holds_models_of_any_class_count_and_upgrades_version_2(tmp_path):
    clip_file = tmp_path / "s_1.mp4"
    clip_file.write_bytes(b"not decoded here")
    clip = Clip("s_1", clip_file)
    index = ScoreIndex(tmp_path / "out")
    try:
        index.register_model("v1", clip_file, "b", 32, "0" * 64, 10.0, LADI_V1.class_names)
        index.register_model("v2a", clip_file, "b", 32, "1" * 64, 10.0, load_labelset("ladi-v2a").class_names)
        index.set_clips([clip])
        written = {"v1": clip_scores(37, 0), "v2a": clip_scores(12, 1)}
        index.add_clip(clip, written)
        for key, scores in written.items():
            read = index.model_scores(key)["s_1"]
            np.testing.assert_allclose(read.max_scores, scores.max_scores, rtol=1e-6)
            np.testing.assert_allclose(read.peak_times, scores.peak_times, rtol=1e-6)
        assert index.model_classes("v2a") == load_labelset("ladi-v2a").class_names
    finally:
        index.close()
    with sqlite3.connect(tmp_path / "out" / "scores.sqlite") as db:  # as a version 2 index stored its models
        db.execute("CREATE TABLE m AS SELECT model_key, checkpoint, backbone, img_size, sha256, fps FROM models")
        db.execute("DROP TABLE models")
        db.execute("ALTER TABLE m RENAME TO models")
        db.execute("PRAGMA user_version = 2")
    index = ScoreIndex(tmp_path / "out")
    try:
        assert index.model_classes("v1") == LADI_V1.class_names  # rows of version 2 are LADI v1 models
        np.testing.assert_allclose(index.model_scores("v1")["s_1"].max_scores, written["v1"].max_scores, rtol=1e-6)
    finally:
        index.close()
    with sqlite3.connect(tmp_path / "out" / "scores.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert json.loads(db.execute("SELECT classes FROM models").fetchone()[0] or "[]") == []
