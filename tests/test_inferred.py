"""Inferred AP on NIST sample qrels: a float64 re-derivation from the SIGIR 2008 formulas (as sample_eval applies
them) on random stratified cases, equality with TREC AP when the whole pool is judged, the sample qrels reader's
errors and `dsdi eval` on sample qrels through the real CLI."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest

from dsdi.errors import InputError
from dsdi.trecvid.evaluation import average_precision, evaluate_judgments
from dsdi.trecvid.inferred import SMOOTHING, inferred_scores, nist_order
from dsdi.trecvid.qrels import read_judgments
from dsdi.trecvid.submission import write_trec_run


def reference_order(ranking):
    """Score descending, ties by shot id descending, by explicit comparison."""
    def compare(a, b):
        if a[1] != b[1]:
            return -1 if a[1] > b[1] else 1
        return -1 if a[0] > b[0] else (1 if a[0] < b[0] else 0)

    return [shot for shot, _ in sorted(ranking, key=functools.cmp_to_key(compare))]


def reference_scores(ranked, judged, depth, e=SMOOTHING):
    """(xinfAP, infNDCG, {cutoff: iP}, estimated R) in float64 arrays: strata x ranks running counts."""
    ranked = ranked[:depth]
    strata = sorted({s for s, _ in judged.values()})
    if not ranked:
        ranked_stratum, ranked_judgment = np.zeros(0, int), np.zeros(0, int)
    else:
        ranked_stratum = np.array([judged.get(shot, (None, -2))[0] if shot in judged else -99 for shot in ranked])
        ranked_judgment = np.array([judged[shot][1] if shot in judged else -2 for shot in ranked])
    member = np.array([ranked_stratum == s for s in strata], dtype=np.float64).reshape(len(strata), len(ranked))
    judged_here = member * (ranked_judgment >= 0)
    relevant_here = member * (ranked_judgment > 0)
    # counts strictly above each rank (exclusive cumulative sums) and up to it (inclusive)
    d_in, j_in, q_in = (np.cumsum(m, axis=1) for m in (member, judged_here, relevant_here))
    d_ex, j_ex, q_ex = (c - m for c, m in ((d_in, member), (j_in, judged_here), (q_in, relevant_here)))
    ranks = np.arange(1, len(ranked) + 1, dtype=np.float64)
    p_ex = d_ex.sum(axis=0)
    rate_ex = (q_ex + e) / (j_ex + 3 * e)
    above = np.where(p_ex > 0, (np.where(d_ex > 0, d_ex, 0) * rate_ex).sum(axis=0) / np.maximum(p_ex, 1), 0.0)
    precision_at_relevant = 1 / ranks + p_ex / ranks * above
    est_at = (np.where(d_in > 0, d_in * (q_in + e) / (j_in + 3 * e), 0.0)).sum(axis=0)
    size = np.array([sum(1 for s, _ in judged.values() if s == t) for t in strata], dtype=np.float64)
    n = np.array([sum(1 for s, j in judged.values() if s == t and j >= 0) for t in strata], dtype=np.float64)
    r = np.array([sum(1 for s, j in judged.values() if s == t and j > 0) for t in strata], dtype=np.float64)
    r_s = np.where(n > 0, r * size / np.maximum(n, 1), 0.0)
    big_r = r_s.sum()
    if r.sum() == 0:
        return math.nan, math.nan, None, big_r
    sap = (relevant_here * precision_at_relevant).sum(axis=1)
    ap = float((r_s / big_r * np.where(r > 0, sap / np.maximum(r, 1), 0.0)).sum())
    if big_r > depth:
        ap *= big_r / depth
    last = est_at[-1] if len(ranked) else 0.0
    cutoffs = (10, 100, 1000, depth)
    ip = {c: (est_at[c - 1] if c <= len(ranked) else last) / c for c in cutoffs}
    gains = (relevant_here / np.log2(ranks + 1)).sum(axis=1)
    pooled = member.sum()
    docs, sampled = member.sum(axis=1), judged_here.sum(axis=1)
    dcg = float((np.where(sampled > 0, docs / max(pooled, 1) * gains / np.maximum(sampled, 1), 0.0)).sum())
    ideal = float((1 / np.log2(np.arange(2, min(math.floor(big_r), depth) + 2))).sum())
    ndcg = pooled * dcg / ideal if ideal > 0 and pooled > 0 else 0.0
    return ap, ndcg, ip, big_r


def random_case(rng):
    """A pool over several strata sampled at random rates (some judgments -1), a run with tied scores, shots outside
    the pool, sometimes longer than the depth, sometimes without a judged relevant shot."""
    n_shots = int(rng.integers(5, 160))
    shots = [f"s{i:03d}" if rng.random() < 0.5 else f"v{i}" for i in range(n_shots)]
    n_strata = int(rng.integers(1, 4))
    rates = rng.uniform(0.05, 1.0, n_strata)
    relevant_rate = 0.0 if rng.random() < 0.1 else rng.uniform(0.05, 0.6)
    judged = {}
    for shot in rng.permutation(shots)[: int(rng.integers(1, n_shots + 1))]:
        stratum = int(rng.integers(1, n_strata + 1))
        sampled = rng.random() < rates[stratum - 1]
        judged[str(shot)] = (stratum, int(rng.random() < relevant_rate) if sampled else -1)
    length = int(rng.integers(0, n_shots + 1))
    scores = rng.integers(0, max(2, length // 3), size=length) / 7.0  # many ties
    ranking = [(str(s), float(v)) for s, v in zip(rng.permutation(shots)[:length], scores, strict=True)]
    depth = int(rng.choice([5, 10, 30, 100, 1000]))
    return ranking, judged, depth


def test_nist_order_breaks_ties_by_shot_id_descending():
    ranking = [("a", 0.5), ("ab", 0.5), ("b", 0.9), ("B", 0.5)]
    assert nist_order(ranking) == ["b", "ab", "a", "B"] == reference_order(ranking)


@pytest.mark.parametrize("seed", range(200))
def test_xinfap_matches_float64_rederivation(seed):
    rng = np.random.default_rng(seed)
    ranking, judged, depth = random_case(rng)
    ranked = reference_order(ranking)
    assert nist_order(ranking) == ranked
    scores = inferred_scores(ranked, judged, depth)
    ap, ndcg, ip, big_r = reference_scores(ranked, judged, depth)
    assert scores.est_relevant == pytest.approx(big_r, abs=1e-9)
    if ip is None:
        assert math.isnan(scores.infap) and math.isnan(scores.infndcg)
        return
    assert scores.infap == pytest.approx(ap, abs=1e-9)
    assert scores.infndcg == pytest.approx(ndcg, abs=1e-9)
    for cutoff, value in ip.items():
        assert scores.precision[cutoff] == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("seed", range(50))
def test_fully_judged_pool_gives_trec_ap_over_the_pool(seed):
    """One stratum at rate 1: xinfAP = AP with the pool's relevant shots (no smoothing: exactly; sample_eval's
    smoothing e = 1e-5 moves it by less than e)."""
    rng = np.random.default_rng(1000 + seed)
    shots = [f"shot{i}" for i in range(int(rng.integers(2, 300)))]
    pool = rng.permutation(shots)[: int(rng.integers(1, len(shots) + 1))]
    judged = {str(s): (1, int(rng.random() < 0.3)) for s in pool}
    ranked = [str(s) for s in rng.permutation(shots)[: int(rng.integers(1, len(shots) + 1))]]
    relevant = {s for s, (_, j) in judged.items() if j > 0}
    depth = max(int(rng.integers(1, 400)), len(relevant))  # no adjustment: R <= depth
    expected = average_precision(ranked, relevant, depth)
    if not relevant:
        assert math.isnan(inferred_scores(ranked, judged, depth).infap)
        return
    assert inferred_scores(ranked, judged, depth, smoothing=0.0).infap == pytest.approx(expected, abs=1e-9)
    assert abs(inferred_scores(ranked, judged, depth).infap - expected) < SMOOTHING


def test_adjustment_when_estimated_relevant_exceeds_depth():
    judged = {f"r{i}": (1, 1) for i in range(20)}
    ranked = [f"r{i}" for i in range(10)]
    scores = inferred_scores(ranked, judged, depth=10, smoothing=0.0)
    assert scores.infap == pytest.approx(10 / 20 * 20 / 10)  # AP 0.5 before, times R / depth


# ---- sample qrels files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 0 a 1 1\n1 0 b 1\n", "line 2: mixed formats: 4 columns (trec_eval qrels)"),
        ("1 0 a 1\n1 0 b 2 0\n", "line 2: mixed formats: 5 columns (NIST sample qrels)"),
        ("1 0 a 1 1\n1 0 b 2 0 7\n", "line 2: expected 5 columns 'fNum 0 shotId stratum judgment'"),
        ("1 0 a\n", "line 1: expected 4 columns"),
        ("1 0 a 1 2\n", "line 1: judgment 2 is not one of -1"),
        ("1 0 a 1 -2\n", "line 1: judgment -2 is not one of -1"),
        ("1 0 a top 1\n", "line 1: stratum 'top' is not an integer"),
        ("1 0 a 1 x\n", "line 1: judgment 'x' is not an integer"),
        ("1 0 a 1 1\n1 0 a 2 0\n", "line 2: shot 'a' is judged twice for feature 1"),
    ],
)
def test_bad_sample_qrels_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "sq.txt"
    path.write_text(text)
    with pytest.raises(InputError, match="sq.txt") as error:
        read_judgments(path)
    assert message in str(error.value)


def test_bad_sample_qrels_exit_2_with_one_line(cli, tmp_path):
    run = tmp_path / "run.txt"
    write_trec_run(run, {1: [("a", 0.9)]}, "r1")
    qrels = tmp_path / "sq.txt"
    qrels.write_text("1 0 a 1 1\n1 0 b 1 5\n")
    result = cli("eval", "--run", run, "--qrels", qrels, expect=2)
    assert "sq.txt, line 2: judgment 5 is not one of -1" in cli.said(result)
    assert result.output.count("error:") == 1 and result.output.startswith("error:")


def test_eval_on_sample_qrels_reports_inferred_measures(cli, tmp_path):
    rng = np.random.default_rng(7)
    rankings, lines, by_feature = {}, [], {}
    for fnum in (1, 2, 3):
        ranking, judged, _ = random_case(rng)
        rankings[fnum] = sorted(ranking, key=lambda entry: -entry[1]) or [("s000", 1.0)]
        by_feature[fnum] = judged
        lines += [f"{fnum} 0 {shot} {stratum} {judgment}" for shot, (stratum, judgment) in judged.items()]
    run, qrels, out = tmp_path / "run.txt", tmp_path / "sq.txt", tmp_path / "m.csv"
    write_trec_run(run, rankings, "r1")
    qrels.write_text("\n".join(lines) + "\n")
    result = cli("eval", "--run", run, "--qrels", qrels, "--topk", 100, "--out", out, terminal_width=250)
    said = cli.said(result)
    assert "NIST sample qrels" in said and "xinfAP at depth 100" in said
    table = pd.read_csv(out)
    expected = evaluate_judgments(rankings, read_judgments(qrels), 100)
    for fnum, judged in by_feature.items():
        row = table[pd.to_numeric(table["fnum"], errors="coerce") == fnum].iloc[0]
        ap, ndcg, ip, _ = reference_scores(reference_order(rankings[fnum]), judged, 100)
        if ip is not None:
            assert row["infap"] == pytest.approx(ap, abs=1e-6) and row["ip_depth"] == pytest.approx(ip[100], abs=1e-6)
    assert table.iloc[-1]["infap"] == pytest.approx(expected.mean, abs=1e-6)
    assert f"mean xinfAP {expected.mean:.4f}" in said


@pytest.mark.parametrize("line", ["1 0 a 1\n", "1 0 a 1 1\n"], ids=["trec_eval qrels", "sample qrels"])
def test_depth_below_one_is_refused_on_either_qrels_form(tmp_path, line):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(line)
    with pytest.raises(InputError, match="--topk 0: the cut-off depth must be >= 1"):
        evaluate_judgments({1: [("a", 1.0)]}, read_judgments(qrels), 0)
