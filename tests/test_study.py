"""The claims study (its statistics: test_study_stats.py): heads trained with dsdi's losses on cached features, clip
scores made as dsdi rank makes them, measurements against scikit-learn and trec_eval, the report's parameter sources,
and a tiny end-to-end `dsdi study` (trunk -> world -> features -> heads -> report) that resumes and grows by seeds."""

import re
import xml.etree.ElementTree as ET
from dataclasses import fields, replace

import numpy as np
import pandas as pd
import pytest
import pytrec_eval
import torch
from sklearn.metrics import average_precision_score

import dsdi.study.measure
from dsdi.cli.research import parse_seeds
from dsdi.errors import InputError
from dsdi.index.scores import AGGREGATIONS
from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import CLASSES, FEATURES
from dsdi.study.design import HEADLINES, StudySize, members, recipes
from dsdi.study.heads import HeadData, HeadRecipe, head_scores, member_split, train_head
from dsdi.study.measure import Arm, Measurements, scores_path
from dsdi.study.run import clip_aggregates
from dsdi.study.stats import VERDICTS
from dsdi.study.world_report import field_docs
from dsdi.synth.annotators import AnnotatorModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _separable_data(n: int = 240, dim: int = 16, views: int = 3, seed: int = 0) -> tuple[HeadData, np.ndarray]:
    """Features whose first dimensions carry the labels (plus noise), 5% outliers."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(CLASSES))) < 0.3).astype(np.float32)
    base = np.concatenate([labels[:, :dim] * 2.0, np.zeros((n, max(0, dim - len(CLASSES))))], axis=1)[:, :dim]
    noisy = base[:, None] + rng.normal(0, 0.5, (n, views, dim))
    outlier = np.arange(n) >= n - n // 20
    tiles = base[:, None] + rng.normal(0, 0.5, (n, 4, dim))
    return HeadData(noisy.astype(np.float16), outlier, tiles.astype(np.float16), {"ladi-soft": labels}), labels


def test_heads_pair_by_seed_and_member_and_learn():
    data, labels = _separable_data()
    base = HeadRecipe("focal", epochs=3)
    # the split follows seed and member, never the recipe (outliers join the candidates only when asked)
    assert np.array_equal(member_split(data, base, 0, 0), member_split(data, replace(base, loss="bce"), 0, 0))
    assert not np.array_equal(member_split(data, base, 0, 0), member_split(data, base, 0, 1))
    assert not data.outlier[member_split(data, base, 0, 0)].any()
    assert data.outlier[member_split(data, replace(base, outliers=True), 0, 0)].any()
    first, again = train_head(data, base, 3, 1), train_head(data, base, 3, 1)
    features = data.views[:, 0].astype(np.float32)
    assert np.array_equal(head_scores(first, features), head_scores(again, features))  # deterministic
    other = train_head(data, replace(base, loss="bce"), 3, 1)
    assert not np.array_equal(head_scores(first, features), head_scores(other, features))
    scores = head_scores(train_head(data, replace(base, epochs=40), 0, 0), features)
    learned = np.mean([average_precision_score(labels[:, j], scores[:, j]) for j in range(16)])
    chance = labels[:, :16].mean()
    assert learned > chance + 0.3  # the label-carrying dimensions are learned
    assert len(train_head(data, replace(base, epochs=6, snapshots=2), 0, 0)) == 2
    assert len(train_head(data, replace(base, tiles=True), 0, 0)) == 1


def test_head_recipes_reach_dsdis_losses():
    data, _ = _separable_data(n=80)
    with pytest.raises(InputError, match="does not take"):
        train_head(data, HeadRecipe("x", loss="bce", loss_settings={"beta": 0.9}), 0, 0)
    size = StudySize()
    by_name = recipes(size)
    assert by_name["snapshots"].epochs / by_name["snapshots"].snapshots >= 3  # cycles of at least 3 epochs
    assert by_name["long"].epochs == size.head_epochs * size.long_factor
    assert len(set(members(size))) == len(members(size))
    assert {name for name, _ in members(size)} == set(by_name)


def test_clip_aggregates_follow_rank_views_and_clip_scores():
    rng = np.random.default_rng(1)
    probs = rng.random((7, 2, 5, len(CLASSES))).astype(np.float32)  # frames, mirror, crop
    shots, times = np.array(["A"] * 4 + ["B"] * 3), np.arange(7) / 10.0
    out = clip_aggregates(probs, shots, times, ["B", "A"])
    a = slice(0, 4)
    plain, flip, tiles = probs[:, 0, 0], probs[:, :, 0].mean(axis=1), probs[:, 0].max(axis=1)
    for o, frames in enumerate((plain, flip, tiles)):
        np.testing.assert_allclose(out[o, AGGREGATIONS.index("max"), 1], frames[a].max(axis=0), rtol=1e-6)
        np.testing.assert_allclose(out[o, AGGREGATIONS.index("mean"), 1], frames[a].mean(axis=0), rtol=1e-6)
        top3 = np.sort(frames[a], axis=0)[-3:].mean(axis=0)
        np.testing.assert_allclose(out[o, AGGREGATIONS.index("top3"), 1], top3, rtol=1e-6)
        np.testing.assert_allclose(out[o, AGGREGATIONS.index("max"), 0], frames[4:].max(axis=0), rtol=1e-6)


def _tiny_world(tmp_path, seeds=(0, 1)):
    """A study folder by hand: 12 hold-out images, 4 clips, scores of two members for each seed."""
    rng = np.random.default_rng(2)
    world = tmp_path / "world"
    world.mkdir()
    truth = (rng.random((12, len(CLASSES))) < 0.4).astype(int)
    truth[0, :] = 1  # every class has a positive
    table = pd.DataFrame(truth, columns=list(CLASSES))
    table.insert(0, "image_id", [f"img_{i}" for i in range(12)])
    table.insert(1, "split", "holdout")
    table.to_csv(world / "true_labels.csv", index=False)
    fnums = LADI_V1.feature_numbers
    car, boat = fnums["car"], fnums["boat"]
    shots = ["S1", "S2", "S3", "S4"]
    qrels = {f: {s: 0 for s in shots} for f in fnums.values()}
    qrels[car].update({"S1": 1, "S2": 1, "S4": 1})
    qrels[boat].update({"S2": 1})
    (world / "qrels.txt").write_text("".join(f"{f} 0 {s} {r}\n" for f, judged in qrels.items()
                                             for s, r in judged.items()))
    pd.DataFrame([("S1", car, 0.0, 0.4), ("S1", car, 2.0, 2.5), ("S2", car, 0.0, 3.0), ("S4", car, 1.0, 1.5),
                  ("S2", boat, 0.0, 2.0)], columns=["shot_id", "fnum", "start_s", "end_s"]).to_csv(
        world / "clip_truth.csv", index=False)
    for seed in seeds:
        for member in (("focal", 0), ("bce", 0)):
            clips = rng.random((3, 3, 4, len(CLASSES))).astype(np.float32)
            clips[0, 0, :, FEATURES.index("car")] = [0.2, 0.9, 0.8, 0.1]  # plain max: S2 S3 S1 S4
            path = scores_path(tmp_path, member, seed)
            path.parent.mkdir(exist_ok=True)
            np.savez(path, holdout=rng.random((12, len(CLASSES))).astype(np.float32), clips=clips)
    return world, shots, qrels, table


def test_measurements_match_sklearn_and_trec_eval(tmp_path):
    world, shots, qrels, table = _tiny_world(tmp_path)
    m = Measurements(tmp_path, world, [0, 1], shots)
    truth = table[list(FEATURES)].to_numpy()
    image = m.ap(Arm.single("focal"), "holdout")
    scores = np.load(scores_path(tmp_path, ("focal", 0), 1))["holdout"]
    for j in (0, 5, 31):
        assert image[1, j] == pytest.approx(average_precision_score(truth[:, j], scores[:, j]), abs=1e-12)
    ensemble = m.scores(Arm((("focal", 0), ("bce", 0)), (1.0, 3.0)), 0, "judging")
    expected = (np.load(scores_path(tmp_path, ("focal", 0), 0))["holdout"]
                + 3 * np.load(scores_path(tmp_path, ("bce", 0), 0))["holdout"]) / 4
    np.testing.assert_allclose(ensemble, expected[1::2, :32], rtol=1e-6)
    clip = m.ap(Arm.single("focal"), "clips")
    car, boat = FEATURES.index("car"), FEATURES.index("boat")
    clip_scores = np.load(scores_path(tmp_path, ("focal", 0), 0))["clips"][0, 0]
    run = {str(LADI_V1.feature_numbers["boat"]): {s: float(clip_scores[i, boat]) for i, s in enumerate(shots)},
           str(LADI_V1.feature_numbers["car"]): {s: float(clip_scores[i, car]) for i, s in enumerate(shots)}}
    judged = {str(f): {s: int(r) for s, r in v.items()} for f, v in qrels.items() if str(f) in run}
    trec = pytrec_eval.RelevanceEvaluator(judged, {"map"}).evaluate(run)
    assert clip[0, car] == pytest.approx(trec[str(LADI_V1.feature_numbers["car"])]["map"], abs=1e-9)
    assert clip[0, boat] == pytest.approx(trec[str(LADI_V1.feature_numbers["boat"])]["map"], abs=1e-9)
    assert clip[0, car] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    brief = m.ap(Arm.single("focal"), "brief")  # S1 (0.9 s) and S4 (0.5 s) are brief; lasting S2 leaves the ranking
    assert brief[0, car] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(brief[0, boat])
    per_seed, resampled = m.maps(Arm.single("focal"), "holdout")
    assert per_seed.shape == (2,) and resampled.shape[1] == 2
    assert per_seed[1] == pytest.approx(np.nanmean(image[1]))


def test_every_annotator_parameter_says_where_its_value_comes_from():
    docs = field_docs(AnnotatorModel)
    assert [f.name for f in fields(AnnotatorModel)] == list(docs)
    assert all(len(text) > 20 for text in docs.values())


def test_seeds_are_a_range_or_a_list(cli):
    assert parse_seeds("0-9") == tuple(range(10)) and parse_seeds("10-19")[0] == 10
    assert parse_seeds("3,5,8") == (3, 5, 8)
    for bad in ("0", "5-3", "a-b", "1,1", ""):
        with pytest.raises(InputError, match="--seeds"):
            parse_seeds(bad)
    assert "--seeds" in cli("study", "--seeds", "7", expect=2).output


@pytest.mark.slow
def test_tiny_study_end_to_end_resumes_and_grows_by_seed(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(dsdi.study.measure, "BOOTSTRAP_RESAMPLES", 100)  # intervals are tested in test_study_stats
    root, report = tmp_path / "study", tmp_path / "docs" / "study.md"
    args = ["study", "--out", root, "--report", report, "--train-images", 40, "--holdout-images", 40, "--clips", 3,
            "--trunk-images", 30, "--trunk-epochs", 1, "--head-epochs", 2, "--img-size", 32]
    cli(*args, "--seeds", "0-1")
    text = report.read_text()
    assert re.findall(r"^## (\d+)\. ", text, flags=re.M) == [str(n) for n in range(1, 11)]
    verdicts = re.findall(r"^\*\*Verdict: (\w+)\*\* — ", text, flags=re.M)
    assert len(verdicts) == len(HEADLINES) and set(verdicts) <= set(VERDICTS)
    assert "| `cover_slope` |" in text and "Table 1: 2.97" in text
    svg = ET.parse(report.with_suffix(".svg")).getroot()
    rows = len(re.findall(r"^\| [^|]+ − [^|]+ \| (image|clip) mAP", text, flags=re.M))  # per-claim rows
    assert len(svg.findall("{http://www.w3.org/2000/svg}circle")) == rows
    assert len(list((root / "scores").glob("*-s1.npz"))) == len(members(StudySize()))
    kept = [root / "trunk" / "models" / "trunk-s0" / "metrics.csv", root / "features" / "images.npz",
            scores_path(root, ("focal", 0), 0)]
    first = [path.stat().st_mtime_ns for path in kept]
    cli(*args, "--seeds", "0-2")  # resumes: nothing made again but the new seed's members
    assert [path.stat().st_mtime_ns for path in kept] == first
    assert len(list((root / "scores").glob("*.npz"))) == 3 * len(members(StudySize()))
    assert "**Seeds**: 0-2 (3)" in report.read_text()
    assert torch.get_num_threads() == 1
