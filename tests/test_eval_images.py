"""dsdi eval-images: classifiers scored per class on real JPEGs, every number checked against scikit-learn's
average_precision_score, label_ranking_average_precision_score and f1_score on the models' own sigmoids (a forward
pass in the test: dsdi's load_image and the model, or transformers' model for a Hugging Face folder)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_checkpoint
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score, label_ranking_average_precision_score

from dsdi.labels.labelset import load_labelset
from dsdi.models.checkpoint import load_model
from dsdi.train.data import load_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V2A = load_labelset("ladi-v2a")
SIDE = 64
TRAIN_IMAGES, TEST_IMAGES = 4, 10


def v2a_checkpoint(path: Path, seed: int) -> Path:
    """A real dsdi checkpoint (a .pt file, or a run folder's best.pt) of a random lcnet_050 with a ladi-v2a head
    whose sigmoids follow the image colours."""
    tiny_checkpoint(path, img_size=SIDE, seed=seed, head_std=(1.0, 0.3), colour_calibrated=True, labelset=V2A)
    return path


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """(labels CSV with a split column and the 12 v2a classes, image root, the labels): real JPEGs of noisy
    colours and stripes, every class positive in 2..8 of the test images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(TRAIN_IMAGES + TEST_IMAGES):
        pixels = rng.integers(0, 256, size=3) * np.ones((48 + 4 * i, 80, 3)) + rng.normal(0, 40, (48 + 4 * i, 80, 3))
        pixels[:, ::(i % 5) + 3] = rng.integers(0, 256, size=3)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"img{i:02d}.jpg", quality=90)
        rows.append({"image_id": f"img{i:02d}.jpg", "split": "train" if i < TRAIN_IMAGES else "test"})
    labels = pd.DataFrame(rows)
    test = np.arange(TEST_IMAGES)
    for k, name in enumerate(V2A.class_names):
        positive = np.isin(test, rng.choice(test, size=2 + k % 7, replace=False))
        labels[name] = np.concatenate([rng.integers(0, 2, TRAIN_IMAGES), positive]).astype(float)
    labels_csv = root / "labels.csv"
    labels.to_csv(labels_csv, index=False)
    return labels_csv, root, labels


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("models")
    return [v2a_checkpoint(folder / "run_a", seed=0), v2a_checkpoint(folder / "b.pt", seed=1)]


def own_sigmoids(checkpoint: Path, image_paths: list[Path]) -> np.ndarray:
    """float32 (N, C): the checkpoint's model (a run folder's: its best.pt) on each image as dsdi's validation reads
    it (load_image)."""
    module, info = load_model(checkpoint / "best.pt" if checkpoint.is_dir() else checkpoint)
    with torch.no_grad():
        batch = torch.stack([load_image(path, info.preprocessing) for path in image_paths])
        return torch.sigmoid(module(batch)).numpy()


def sklearn_measures(targets: np.ndarray, sigmoids: np.ndarray) -> dict:
    """Per class AP and F1 at 0.5 (classes with a positive), their means, and LRAP, from scikit-learn."""
    ap = [average_precision_score(targets[:, k], sigmoids[:, k]) for k in range(targets.shape[1])]
    f1 = f1_score(targets, sigmoids >= 0.5, average=None, zero_division=0.0)
    return {"ap": np.array(ap), "f1": f1, "map": np.mean(ap), "macro_f1": np.mean(f1),
            "lrap": label_ranking_average_precision_score(targets, sigmoids)}


def check_csv(table: pd.DataFrame, model: str, classes: tuple[str, ...], expected: dict, images: int) -> None:
    rows = table[table["model"] == model].set_index("class")
    assert list(rows.index) == [*classes, "all"] and (rows["images"] == images).all()
    np.testing.assert_allclose(rows.loc[list(classes), "ap"], expected["ap"], atol=1e-6)
    np.testing.assert_allclose(rows.loc[list(classes), "f1"], expected["f1"], atol=1e-9)
    np.testing.assert_allclose(rows.loc["all", ["ap", "f1", "lrap"]].astype(float),
                               [expected["map"], expected["macro_f1"], expected["lrap"]], atol=1e-6)


def test_every_number_is_scikit_learns_on_the_models_own_sigmoids(image_set, models, tmp_path, cli):
    labels_csv, root, labels = image_set
    test = labels[labels["split"] == "test"]
    targets = test[list(V2A.class_names)].to_numpy()
    sigmoids = [own_sigmoids(model, [root / image for image in test["image_id"]]) for model in models]
    assert 0.2 < np.mean(sigmoids[0] >= 0.5) < 0.8  # F1 at 0.5 is not trivially 0 or all-positive
    expected = [sklearn_measures(targets, s) for s in (*sigmoids, np.mean(sigmoids, axis=0))]
    result = cli("eval-images", *cli.repeated("--models", models), "--labels", labels_csv, "--images", root,
                 "--out", tmp_path / "v2a", "--batch-size", 3, "--device", "cpu", env={"COLUMNS": "250"})
    table = pd.read_csv(tmp_path / "v2a.csv")
    for name, measures in zip([*map(str, models), "mean of models"], expected, strict=True):
        check_csv(table, name, V2A.class_names, measures, TEST_IMAGES)
    markdown = (tmp_path / "v2a.md").read_text()
    assert f"split test, {TEST_IMAGES} images, label set ladi-v2a" in markdown
    for k, name in enumerate(V2A.class_names):  # the per-class rows as shown: AP and F1 of each model
        cells = [f"{value:.4f}" for measures in expected for value in (measures["ap"][k], measures["f1"][k])]
        assert f"| {name} | {int(targets[:, k].sum())} | {' | '.join(cells)} |" in markdown
    printed = cli.said(result)
    for measures in expected:  # the per-model table on the terminal: mAP, LRAP, macro F1
        assert f"{measures['map']:.4f} │ {measures['lrap']:.4f} │ {measures['macro_f1']:.4f}" in printed


def test_split_chooses_the_rows_and_all_takes_every_row(image_set, models, tmp_path, cli):
    labels_csv, root, labels = image_set
    for split, rows in (("test", labels[labels["split"] == "test"]), ("all", labels)):
        cli("eval-images", "--models", models[0], "--labels", labels_csv, "--images", root, "--split", split,
            "--out", tmp_path / split)
        sigmoids = own_sigmoids(models[0], [root / image for image in rows["image_id"]])
        expected = sklearn_measures(rows[list(V2A.class_names)].to_numpy(), sigmoids)
        check_csv(pd.read_csv(tmp_path / f"{split}.csv"), str(models[0]), V2A.class_names, expected, len(rows))
    no_split = tmp_path / "no_split.csv"
    labels.drop(columns="split").to_csv(no_split, index=False)
    refused = cli("eval-images", "--models", models[0], "--labels", no_split, "--images", root, "--split", "val",
                  expect=2)
    assert "no split column, so no val rows" in cli.said(refused)


def test_a_model_of_another_label_set_is_scored_by_class_name(image_set, models, tmp_path, cli):
    labels_csv, root, labels = image_set
    own = ("water_any", "roads_any", "trees_damage")  # three v2a classes, in another order
    labelset = tmp_path / "three.toml"
    labelset.write_text('name = "three"\nclasses = [\n' + "".join(
        f'  {{ name = "{name}", category = "{name.split("_")[0]}" }},\n' for name in own) + "]\n")
    three = tmp_path / "three.csv"
    labels[["image_id", "split", *own]].to_csv(three, index=False)
    cli("eval-images", "--models", models[1], "--labels", three, "--images", root, "--labelset", labelset,
        "--out", tmp_path / "three")
    test = labels[labels["split"] == "test"]
    sigmoids = own_sigmoids(models[1], [root / image for image in test["image_id"]])
    columns = [V2A.class_names.index(name) for name in own]
    expected = sklearn_measures(test[list(own)].to_numpy(), sigmoids[:, columns])
    check_csv(pd.read_csv(tmp_path / "three.csv"), str(models[1]), own, expected, TEST_IMAGES)


def test_a_model_lacking_a_class_is_refused_naming_both_label_sets(image_set, models, tmp_path, cli):
    labels_csv, root, _ = image_set
    ladi_v1 = tmp_path / "v1.pt"
    tiny_checkpoint(ladi_v1)
    refused = cli("eval-images", "--models", models[0], "--models", ladi_v1, "--labels", labels_csv, "--images",
                  root, expect=2, env={"COLUMNS": "400"}, terminal_width=400)
    said = cli.said(refused)
    assert re.search(r"--models \S*v1\.pt \(label set ladi-v1\) lacks bridges_any, buildings_any, "
                     r"buildings_affected_or_greater, buildings_minor_or_greater and 8 more of label set ladi-v2a",
                     said), said
    assert len(refused.output.strip().splitlines()) == 1 and refused.output.startswith("error:"), refused.output
    wider = cli("eval-images", "--models", models[0], "--labels", labels_csv, "--images", root, "--labelset",
                "ladi-v2", expect=2)
    assert "(label set ladi-v2a) lacks bridges_damage, buildings_affected, buildings_destroyed, buildings_major " \
           "and 1 more of label set ladi-v2;" in cli.said(wider)


def test_unreadable_images_are_skipped_counted_and_named(image_set, models, tmp_path, cli):
    labels_csv, root, labels = image_set
    broken = labels[labels["split"] == "test"].head(2).copy()
    broken["image_id"] = ["corrupt.jpg", "missing.jpg"]
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8 not a JPEG at all")
    with_broken = tmp_path / "labels.csv"
    pd.concat([labels, broken]).to_csv(with_broken, index=False)
    result = cli("eval-images", "--models", models[0], "--labels", with_broken, "--images", root, "--out",
                 tmp_path / "broken", env={"COLUMNS": "250"})
    said = cli.said(result)
    assert f"skipped unreadable image {root / 'corrupt.jpg'}" in said and "missing.jpg" in said
    assert f"split test, {TEST_IMAGES} images, 2 unreadable skipped" in said
    markdown = (tmp_path / "broken.md").read_text()
    assert "## Unreadable images, skipped (2)" in markdown and f"- {root / 'missing.jpg'}: " in markdown
    test = labels[labels["split"] == "test"]  # the readable rows only
    expected = sklearn_measures(test[list(V2A.class_names)].to_numpy(),
                                own_sigmoids(models[0], [root / image for image in test["image_id"]]))
    check_csv(pd.read_csv(tmp_path / "broken.csv"), str(models[0]), V2A.class_names, expected, TEST_IMAGES)


def test_a_hugging_face_classifier_folder_is_scored_through_transformers(image_set, tmp_path, cli):
    from transformers import AutoModelForImageClassification, BitConfig, BitForImageClassification, BitImageProcessor

    from dsdi.models.classifier import hf_preprocessing

    labels_csv, root, labels = image_set
    folder = tmp_path / "bit"
    torch.manual_seed(0)
    config = BitConfig(num_labels=12, id2label=dict(enumerate(V2A.class_names)), hidden_sizes=[8, 16],
                       depths=[1, 1], embedding_size=8, num_groups=2)
    BitForImageClassification(config).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(folder)
    cli("eval-images", "--models", folder, "--labels", labels_csv, "--images", root, "--out", tmp_path / "hf")
    test = labels[labels["split"] == "test"]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    preprocessing = hf_preprocessing(folder)
    with torch.no_grad():
        pixels = torch.stack([load_image(root / image, preprocessing) for image in test["image_id"]])
        sigmoids = torch.sigmoid(model(pixel_values=pixels).logits).numpy()
    expected = sklearn_measures(test[list(V2A.class_names)].to_numpy(), sigmoids)
    check_csv(pd.read_csv(tmp_path / "hf.csv"), str(folder), V2A.class_names, expected, TEST_IMAGES)
