"""Metrics against outside references: AP/mAP vs pytrec_eval (trec_eval) and scikit-learn on many random
runs, LRAP and per-class AP vs scikit-learn, and `dsdi eval` end to end through the real CLI on real files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

from dsdi.errors import InputError
from dsdi.train.metrics import lrap, per_class_average_precision
from dsdi.trecvid.evaluation import average_precision, evaluate_run
from dsdi.trecvid.submission import write_submission_xml, write_trec_run

CUTOFFS = (5, 10, 100, 1000)


def random_world(rng: np.random.Generator, n_features: int = 8, n_shots: int = 80):
    """A random run with distinct scores and qrels that include features with no relevant shot,
    relevant shots never retrieved, judged non-relevant shots and features the run does not rank."""
    pool = [f"Shot{i}_{i % 9:03d}" for i in range(n_shots)]
    rankings, qrels = {}, {}
    for fnum in range(1, n_features + 1):
        if rng.random() < 0.85:
            length = int(rng.integers(1, n_shots))
            shots = rng.permutation(pool)[:length]
            scores = np.sort(rng.choice(10_000, size=length, replace=False) / 10_000.0 + 1.0)[::-1]
            rankings[fnum] = [(str(s), float(v)) for s, v in zip(shots, scores, strict=True)]
        judged = rng.permutation(pool)[: int(rng.integers(0, n_shots))]
        relevant_rate = 0.0 if rng.random() < 0.15 else rng.random()
        qrels[fnum] = {str(s): int(rng.random() < relevant_rate) * int(rng.integers(1, 3)) for s in judged}
    return rankings, qrels


def pytrec_eval_ap(rankings, qrels, k, measure="map"):
    """Per-feature AP from trec_eval on the run cut at k (trec_eval re-sorts by score; scores are distinct)."""
    run = {str(f): {s: v for s, v in r[:k]} for f, r in rankings.items() if r}
    evaluator = pytrec_eval.RelevanceEvaluator({str(f): q for f, q in qrels.items() if q}, {measure})
    return {int(f): values[measure] for f, values in evaluator.evaluate(run).items()}


@pytest.mark.parametrize("seed", range(40))
def test_evaluate_run_matches_pytrec_eval(seed):
    rng = np.random.default_rng(seed)
    rankings, qrels = random_world(rng)
    k = int(rng.choice([1, 3, 10, 50, 1000]))
    table, mean_ap = evaluate_run(rankings, qrels, k=k)
    reference = pytrec_eval_ap(rankings, qrels, k)
    expected_aps = []
    for row in table.itertuples(index=False):
        relevant = sum(rel > 0 for rel in qrels.get(row.fnum, {}).values())
        assert row.relevant == relevant
        assert row.retrieved == min(k, len(rankings.get(row.fnum, [])))
        if relevant == 0:
            assert math.isnan(row.ap)
            continue
        expected = reference.get(row.fnum, 0.0)  # not ranked at all: AP 0 (trec_eval -c)
        assert row.ap == pytest.approx(expected, abs=1e-12)
        expected_aps.append(expected)
    assert mean_ap == pytest.approx(np.mean(expected_aps), abs=1e-12) if expected_aps else math.isnan(mean_ap)


@pytest.mark.parametrize("seed", range(10))
def test_cut_matches_trec_eval_map_cut(seed):
    """trec_eval's own cut (map_cut.k on the uncut run) agrees with dsdi's AP at k."""
    rankings, qrels = random_world(np.random.default_rng(100 + seed), n_shots=300)
    measure = "map_cut." + ",".join(str(c) for c in CUTOFFS)
    run = {str(f): dict(r) for f, r in rankings.items()}
    results = pytrec_eval.RelevanceEvaluator({str(f): q for f, q in qrels.items() if q}, {measure}).evaluate(run)
    for fnum, values in results.items():
        relevant = {s for s, rel in qrels[int(fnum)].items() if rel > 0}
        if not relevant:
            continue
        ranked = [s for s, _ in rankings[int(fnum)]]
        for cutoff in CUTOFFS:
            assert average_precision(ranked, relevant, k=cutoff) == pytest.approx(values[f"map_cut_{cutoff}"])


@pytest.mark.parametrize("seed", range(20))
def test_full_ranking_matches_sklearn_average_precision(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    scores = rng.permutation(n) / n  # distinct
    labels = rng.random(n) < rng.uniform(0.02, 0.6)
    labels[rng.integers(n)] = True
    shots = [f"s{i}" for i in range(n)]
    ranked = [shots[i] for i in np.argsort(-scores)]
    relevant = [s for s, is_relevant in zip(shots, labels, strict=True) if is_relevant]
    assert average_precision(ranked, relevant, k=None) == pytest.approx(average_precision_score(labels, scores))
    assert average_precision(ranked, relevant, k=n) == pytest.approx(average_precision_score(labels, scores))


def test_hand_computed_ap_and_edge_cases():
    # relevant a, c, z (z never retrieved): (1/1 + 2/3) / 3
    assert average_precision(["a", "b", "c", "d"], {"a", "c", "z"}) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision(["a", "b", "c", "d"], {"a", "c", "z"}, k=2) == pytest.approx(1 / 3)
    assert math.isnan(average_precision(["a"], set()))
    assert average_precision([], {"a"}) == 0.0
    with pytest.raises(InputError, match="'a'"):
        average_precision(["a", "b", "a"], {"a"})
    with pytest.raises(InputError, match="--topk 0: the cut-off depth must be >= 1"):
        average_precision(["a"], {"a"}, k=0)


def test_duplicate_shot_in_run_is_rejected_by_evaluate_run():
    with pytest.raises(InputError, match="more than once"):
        evaluate_run({1: [("a", 0.9), ("a", 0.5)]}, {1: {"a": 1}})


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.booleans(), min_size=1, max_size=40),
    k=st.integers(1, 50),
    data=st.data(),
)
def test_ap_properties(labels, k, data):
    """AP is in [0, 1]; it is 1 exactly when every relevant shot leads the cut list; moving a relevant
    shot up past a non-relevant one never lowers it."""
    shots = [f"s{i}" for i in range(len(labels))]
    relevant = {s for s, is_relevant in zip(shots, labels, strict=True) if is_relevant}
    ap = average_precision(shots, relevant, k=k)
    if not relevant:
        assert math.isnan(ap)
        return
    assert 0.0 <= ap <= 1.0 + 1e-12
    leading = all(labels[: len(relevant)]) and len(relevant) <= k
    assert (ap == pytest.approx(1.0)) == leading
    swaps = [i for i in range(len(labels) - 1) if not labels[i] and labels[i + 1]]
    if swaps:
        i = data.draw(st.sampled_from(swaps))
        improved = shots[:i] + [shots[i + 1], shots[i]] + shots[i + 2:]
        assert average_precision(improved, relevant, k=k) >= ap - 1e-12


# ---- validation metrics ----------------------------------------------------------------------


def lrap_float64(positives: np.ndarray, scores: np.ndarray) -> float:
    """LRAP re-derived from its definition (ties: rank = number of labels scoring >= this one)."""
    per_image = []
    for truth, score in zip(positives, scores, strict=True):
        relevant = np.flatnonzero(truth)
        if len(relevant) in (0, len(truth)):
            per_image.append(1.0)
            continue
        values = [np.sum(score[relevant] >= score[j]) / np.sum(score >= score[j]) for j in relevant]
        per_image.append(np.mean(values))
    return float(np.mean(per_image))


@pytest.mark.parametrize("seed", range(10))
def test_lrap_matches_sklearn_and_definition(seed):
    rng = np.random.default_rng(seed)
    soft = np.round(rng.random((50, 37)) ** 3, 2)  # soft labels, many zeros
    soft[np.arange(50), rng.integers(0, 37, 50)] = 1.0  # max-normalised: each image has a 1.0
    scores = rng.random((50, 37))
    scores[:, :5] = np.round(scores[:, :5], 1)  # some ties
    hard = (soft > 0.3).astype(int)
    assert lrap(hard, scores) == pytest.approx(label_ranking_average_precision_score(hard, scores))
    assert lrap(soft, scores) == pytest.approx(label_ranking_average_precision_score(soft >= 0.5, scores))
    assert lrap(soft, scores) == pytest.approx(lrap_float64(soft >= 0.5, scores))
    assert lrap(soft, scores, positive_threshold=1e-6) == pytest.approx(lrap_float64(soft > 0, scores))


def test_lrap_paper_figure_1_only_the_majority_class_is_positive():
    soft = np.zeros((1, 37))
    soft[0, [1, 5, 32]] = [1.0, 0.25, 0.25]  # flooding x4, smoke x1, damage: none x1
    scores = np.linspace(1, 0, 37)[None, :]  # class 0 outranks flooding
    assert lrap(soft, scores) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_images, n_classes"):
        lrap(soft[0], scores[0])


@pytest.mark.parametrize("seed", range(5))
def test_per_class_ap_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    soft = np.round(rng.random((60, 37)) ** 4, 2)
    soft[:, 8] = 0.2  # a class with no positive image
    scores = rng.random((60, 37))
    ap, mean_ap = per_class_average_precision(soft, scores)
    positives = soft >= 0.5
    assert math.isnan(ap[8])
    for column in range(37):
        if positives[:, column].any():
            assert ap[column] == pytest.approx(average_precision_score(positives[:, column], scores[:, column]))
    keep = positives.any(axis=0)
    assert mean_ap == pytest.approx(average_precision_score(positives[:, keep], scores[:, keep], average="macro"))


# ---- dsdi eval through the CLI ---------------------------------------------------------------


def write_qrels(path, qrels):
    path.write_text("".join(f"{f} 0 {s} {rel}\n" for f, judged in qrels.items() for s, rel in judged.items()))


@pytest.mark.parametrize("form", ["xml", "trec"])
def test_cli_eval_on_real_files_matches_pytrec_eval(tmp_path, form, cli):
    rankings, qrels = random_world(np.random.default_rng(7), n_features=32)
    run_path = tmp_path / f"run.{form}"
    if form == "xml":
        write_submission_xml(run_path, rankings, pid="T", run_desc="cli test")
    else:
        write_trec_run(run_path, rankings, "cli_test")
    qrels_path = tmp_path / "qrels.txt"
    write_qrels(qrels_path, qrels)
    out = tmp_path / "metrics.csv"
    result = cli("eval", "--run", str(run_path), "--qrels", str(qrels_path),
                 "--topk", "20", "--out", str(out), expect=None)
    assert result.exit_code == 0, result.output
    reference = pytrec_eval_ap(rankings, qrels, 20)
    judged = [f for f, q in qrels.items() if any(rel > 0 for rel in q.values())]
    expected_map = np.mean([reference.get(f, 0.0) for f in judged])
    assert f"mAP {expected_map:.4f} over {len(judged)} features" in result.output
    table = pd.read_csv(out, dtype={"fnum": str})
    assert list(table.columns) == ["feature", "fnum", "relevant", "retrieved", "relevant_retrieved", "ap"]
    per_feature, summary = table.iloc[:-1], table.iloc[-1]
    assert summary["feature"] == "all" and summary["ap"] == pytest.approx(expected_map, abs=1e-6)
    assert per_feature.loc[per_feature["fnum"] == "2", "feature"].item() == "flooding / water damage"
    for row in per_feature.itertuples(index=False):
        if int(row.fnum) in judged:
            assert row.ap == pytest.approx(reference.get(int(row.fnum), 0.0), abs=1e-6)


def test_cli_eval_bad_qrels_line_exits_2_naming_the_line(tmp_path, cli):
    run_path = tmp_path / "run.trec"
    write_trec_run(run_path, {1: [("Shot1_001", 0.9)]}, "r")
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("1 0 Shot1_001 1\n1 0 Shot2_001 1\n1 0 Shot3_001\n")
    result = cli("eval", "--run", str(run_path), "--qrels", str(qrels_path), expect=None)
    assert result.exit_code == 2
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "qrels.txt, line 3: expected 4 columns" in message and "Traceback" not in message


def test_cli_eval_missing_run_exits_2(tmp_path, cli):
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("1 0 a 1\n")
    result = cli("eval", "--run", str(tmp_path / "none.xml"), "--qrels", str(qrels_path), expect=None)
    assert result.exit_code == 2 and "none.xml: no such file" in " ".join(result.output.split())


def test_cli_eval_warns_when_nothing_relevant_is_retrieved(tmp_path, cli):
    run_path = tmp_path / "run.trec"
    write_trec_run(run_path, {1: [("Shot1_001", 0.9)], 2: [("Shot2_001", 0.8)]}, "r")
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("1 0 shot1_001 1\n2 0 shot2_001 1\n")  # ids differ in case only
    result = cli("eval", "--run", str(run_path), "--qrels", str(qrels_path), expect=None)
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "mAP 0.0000 over 2 features" in message and "warning: no relevant shot was retrieved" in message


def test_cli_eval_on_the_synthetic_world_qrels(tmp_path, cli):
    """Formats agree across parts: the qrels `dsdi synth` writes and the clip stems `dsdi.video.decode` finds are
    what `dsdi eval` reads; a truth-ordered run scores mAP 1, a reversed one matches pytrec_eval."""
    from dsdi.synth import build_world
    from dsdi.video.clip import discover_clips

    world = build_world(tmp_path / "world", n_images=0, n_clips=3, seed=3, clip_size=(96, 64),
                        clip_seconds=(1.0, 1.5))
    qrels_lines = world.qrels.read_text().split("\n")
    qrels = {}
    for line in filter(None, qrels_lines):
        fnum, _, shot, rel = line.split()
        qrels.setdefault(int(fnum), {})[shot] = int(rel)
    shot_ids = sorted(clip.shot_id for clip in discover_clips(world.clips_dir))
    assert all(sorted(judged) == shot_ids for judged in qrels.values())
    truth_first = {f: sorted(judged, key=lambda shot: (-judged[shot], shot)) for f, judged in qrels.items()}
    oracle = {f: [(s, float(len(order) - i)) for i, s in enumerate(order)] for f, order in truth_first.items()}
    worst = {f: [(s, float(len(order) - i)) for i, s in enumerate(reversed(order))] for f, order in truth_first.items()}
    for name, rankings in (("oracle", oracle), ("worst", worst)):
        write_submission_xml(tmp_path / f"{name}.xml", rankings, pid="T", run_desc=name)
        result = cli("eval", "--run", str(tmp_path / f"{name}.xml"),
                     "--qrels", str(world.qrels), expect=None)
        assert result.exit_code == 0, result.output
        reference = pytrec_eval_ap(rankings, qrels, 1000)
        judged = [f for f, j in qrels.items() if any(j.values())]
        expected = np.mean([reference[f] for f in judged])
        if name == "oracle":
            assert expected == pytest.approx(1.0)
        assert f"mAP {expected:.4f} over {len(judged)} features" in " ".join(result.output.split())


def test_cli_eval_feature_numbers_file_names_the_features(tmp_path, cli):
    from dsdi.labels.schema import FEATURES

    run_path = tmp_path / "run.trec"
    write_trec_run(run_path, {101: [("a", 0.9), ("b", 0.1)]}, "r")
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("101 0 b 1\n")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("feature,number\n" + "".join(f'"{f}",{101 + i}\n' for i, f in enumerate(FEATURES)))
    out = tmp_path / "m.csv"
    result = cli("eval", "--run", str(run_path), "--qrels", str(qrels_path),
                 "--feature-numbers", str(numbers), "--out", str(out), expect=None)
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out).iloc[0]
    assert (row["feature"], row["fnum"], row["ap"]) == (FEATURES[0], 101, pytest.approx(0.5))
    numbers.write_text("feature,number\nflooding,1\n")
    result = cli("eval", "--run", str(run_path), "--qrels", str(qrels_path),
                 "--feature-numbers", str(numbers), expect=None)
    assert result.exit_code == 2 and "missing features" in result.output
