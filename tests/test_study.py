"""The claims study: its measurements against sklearn and hand-made qrels (its statistics: test_study_stats.py), and
a tiny end-to-end `dsdi study` (worlds -> sweep -> rank -> report) that resumes to the same tables."""

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import FEATURES
from dsdi.study.measure import ClipJudge, image_ap

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
