"""The claims study: its statistics against scipy and hand computations, its measurements against sklearn and hand-made
qrels, and a tiny end-to-end `dsdi study` (worlds -> sweep -> rank -> report) that resumes to the same tables."""

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import average_precision_score

from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import FEATURES
from dsdi.study.measure import ClipJudge, image_ap
from dsdi.study.stats import (
    INCONCLUSIVE,
    MEANINGFUL_GAIN,
    NOT_REPRODUCED,
    REPRODUCED,
    Difference,
    Interval,
    bootstrap_interval,
    difference,
    seed_interval,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_seed_interval_is_scipys_student_t_interval():
    values = np.array([0.012, -0.004, 0.031])
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    got = seed_interval(values)
    assert got.low == pytest.approx(low, abs=1e-12) and got.high == pytest.approx(high, abs=1e-12)
    assert math.isnan(seed_interval(np.array([0.1])).low)  # one seed: no interval


def test_bootstrap_interval_matches_the_normal_approximation_for_many_features():
    values = np.random.default_rng(5).normal(0.02, 0.05, size=400)
    got = bootstrap_interval(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert got.low == pytest.approx(values.mean() - half, abs=0.0015)
    assert got.high == pytest.approx(values.mean() + half, abs=0.0015)
    constant = bootstrap_interval(np.array([0.03, 0.03, np.nan, 0.03]))  # NaNs dropped
    assert constant.low == pytest.approx(0.03) and constant.high == pytest.approx(0.03)


def test_difference_pairs_seeds_and_features_and_skips_missing_aps():
    a = np.array([[0.5, 0.6, np.nan], [0.4, 0.7, 0.9]])
    b = np.array([[0.4, 0.6, 0.2], [0.5, 0.5, np.nan]])
    got = difference(a, b)
    assert got.per_seed == pytest.approx((0.05, 0.05))  # seed 0: (0.1 + 0) / 2; seed 1: (-0.1 + 0.2) / 2
    assert got.features == 2  # the third feature has no AP pair in either seed
    assert got.mean == pytest.approx(((0.1 - 0.1) / 2 + (0.0 + 0.2) / 2) / 2)


@pytest.mark.parametrize(("interval", "per_seed", "verdict"), [
    ((0.004, 0.03), (0.01, 0.02, 0.01), REPRODUCED),
    ((0.004, 0.03), (0.01, -0.002, 0.01), INCONCLUSIVE),  # one seed disagrees
    ((-0.02, MEANINGFUL_GAIN * 0.9), (0.0, 0.01, -0.01), NOT_REPRODUCED),  # any gain worth having is ruled out
    ((-0.05, -0.01), (-0.02, -0.03, -0.01), NOT_REPRODUCED),  # worse
    ((-0.01, 0.04), (0.02, 0.01, 0.03), INCONCLUSIVE),
])
def test_verdicts(interval, per_seed, verdict):
    diff = Difference(float(np.mean(per_seed)), per_seed, Interval(-1, 1), Interval(*interval), 10)
    assert diff.verdict == verdict


def test_image_ap_is_sklearns_on_the_common_images():
    rng = np.random.default_rng(0)
    ids = [f"img_{i}" for i in range(30)]
    truth = pd.DataFrame((rng.random((30, len(FEATURES))) < 0.3).astype(int), index=ids, columns=list(FEATURES))
    truth.iloc[:, 0] = 0  # no positive: NaN
    from dsdi.labels.schema import CLASSES

    scores = pd.DataFrame(rng.random((25, len(CLASSES))), index=ids[5:], columns=list(CLASSES))
    got = image_ap(scores, truth)
    assert math.isnan(got[0])
    for j in (1, 7, 31):
        expected = average_precision_score(truth.iloc[5:, j], scores.iloc[:, j])
        assert got[j] == pytest.approx(expected, abs=1e-12)


def test_clip_judge_brief_appearances(tmp_path):
    """Brief: a relevant pair whose runs last under a second in all; brief-only AP drops the lasting clips."""
    fnums = dict(LADI_V1.feature_numbers)
    car, boat = fnums["car"], fnums["boat"]
    shots = ["S1", "S2", "S3", "S4"]
    qrels = {car: {"S1": 1, "S2": 1, "S3": 0, "S4": 1}, boat: {"S1": 0, "S2": 1, "S3": 0, "S4": 0}}
    (tmp_path / "qrels.txt").write_text("".join(f"{f} 0 {s} {r}\n" for f, judged in qrels.items()
                                                for s, r in judged.items()))
    truth = pd.DataFrame([("S1", "car", car, 0.0, 0.4, 12, 1), ("S1", "car", car, 2.0, 2.5, 15, 1),  # 0.9 s: brief
                          ("S2", "car", car, 0.0, 3.0, 90, 1), ("S4", "car", car, 1.0, 1.5, 15, 1),
                          ("S2", "boat", boat, 0.0, 2.0, 60, 1)],
                         columns=["shot_id", "feature", "fnum", "start_s", "end_s", "frames", "sampled"])
    truth.to_csv(tmp_path / "clip_truth.csv", index=False)
    judge = ClipJudge(tmp_path)
    assert judge.brief == {(car, "S1"), (car, "S4")}
    scores = pd.DataFrame(0.0, index=pd.Index(shots, name="shot_id"), columns=list(FEATURES))
    scores["car"] = [0.2, 0.9, 0.8, 0.1]  # ranking S2 S3 S1 S4
    scores["boat"] = [0.5, 0.4, 0.3, 0.2]
    every = judge.ap(scores)
    assert every[FEATURES.index("car")] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    assert every[FEATURES.index("boat")] == pytest.approx(1 / 2)
    brief = judge.ap(scores, brief_only=True)  # S2 leaves the ranking: S3 S1 S4
    assert brief[FEATURES.index("car")] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(brief[FEATURES.index("boat")])  # boat is never brief
    assert math.isnan(every[FEATURES.index("truck")])


@pytest.mark.slow
def test_tiny_study_end_to_end_writes_every_claim_and_resumes(tmp_path, cli):
    root, report = tmp_path / "study", tmp_path / "docs" / "study.md"
    args = ["study", "--out", root, "--report", report, "--images", 40, "--clips", 3, "--seeds", 0, "--seeds", 1,
            "--epochs", 2, "--backbone", "test_convnext", "--img-size", 32]
    cli(*args)
    text = report.read_text()
    sections = re.findall(r"^## (\d)\. ", text, flags=re.M)
    assert sections == [str(n) for n in range(1, 9)]
    verdict = r"\*\*Verdict: (reproduced|not reproduced|inconclusive at this size)( \(B better\))?\*\* — .*95% CI"
    verdicts = re.findall(verdict, text)
    assert len(verdicts) == 8
    assert "--tiles 2x2 − plain" in text and "2 snapshots − one run" in text and "× plain" in text
    svg = ET.parse(report.with_suffix(".svg")).getroot()
    rows = len(re.findall(r"^\| [^|]+ − ", text, flags=re.M)) - 8  # comparison rows, less the summary's 8
    assert len(svg.findall("{http://www.w3.org/2000/svg}circle")) == rows
    assert len(list((root / "models").glob("*-s1/last.pt"))) == 15
    kept = [root / "models" / "default-focal-s0" / "metrics.csv", root / "labels" / "default-soft.csv"]
    first = [path.stat().st_mtime_ns for path in kept]
    cli(*args)  # resumes: no world, label table or run made again, the same tables
    assert [path.stat().st_mtime_ns for path in kept] == first
    assert _tables(report.read_text()) == _tables(text)


def _tables(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]
