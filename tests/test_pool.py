"""Simulated NIST pools (`dsdi pool`): strata from the runs' best ranks, sample sizes, judgments copied from the
complete qrels, one file per seed, and the pooled qrels scored by `dsdi eval` through the real CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsdi.errors import InputError
from dsdi.trecvid.pool import check_strata, parse_stratum, sample_pool
from dsdi.trecvid.qrels import read_judgments
from dsdi.trecvid.submission import write_trec_run


def random_runs(rng, n_runs=3, n_shots=400, length=250):
    shots = [f"shot{i}_1" for i in range(n_shots)]
    runs = []
    for _ in range(n_runs):
        rankings = {}
        for fnum in (1, 2):
            order = rng.permutation(shots)[:length]
            rankings[fnum] = [(str(s), float(length - i)) for i, s in enumerate(order)]
        runs.append(rankings)
    qrels = {fnum: {s: int(rng.random() < 0.2) for s in shots} for fnum in (1, 2)}
    return runs, qrels


def test_pool_strata_samples_and_judgments():
    rng = np.random.default_rng(0)
    runs, qrels = random_runs(rng)
    strata = [parse_stratum("1-20:1.0"), parse_stratum("21-200:0.3")]
    sampled = sample_pool(runs, qrels, strata, seed=5)
    for fnum, judged in sampled.items():
        best = {}
        for rankings in runs:
            for rank, (shot, _) in enumerate(rankings[fnum][:200], start=1):
                best[shot] = min(rank, best.get(shot, rank))
        assert set(judged) == set(best)
        for shot, (stratum, judgment) in judged.items():
            assert stratum == (1 if best[shot] <= 20 else 2)
            assert judgment in (-1, qrels[fnum][shot])
        for number, rate in ((1, 1.0), (2, 0.3)):
            members = [j for s, j in judged.values() if s == number]
            assert sum(j >= 0 for j in members) == max(1, math.floor(rate * len(members) + 0.5))
    assert sample_pool(runs, qrels, strata, seed=5) == sampled
    assert sample_pool(runs, qrels, strata, seed=6) != sampled


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["1-100"], "--stratum '1-100': write FIRST-LAST:RATE"),
        (["1-100:0"], "0 < RATE <= 1"),
        (["1-100:1.5"], "0 < RATE <= 1"),
        (["10-1:1"], "1 <= FIRST <= LAST"),
        (["a-b:1"], "write FIRST-LAST:RATE"),
        (["2-100:1"], "starts at 2, expected 1"),
        (["1-100:1", "150-200:0.5"], "starts at 150, expected 101"),
    ],
)
def test_bad_strata(texts, message):
    with pytest.raises(InputError) as error:
        check_strata([parse_stratum(text) for text in texts])
    assert message in str(error.value)


def test_pool_command_then_eval(cli, tmp_path):
    rng = np.random.default_rng(1)
    runs, qrels = random_runs(rng, n_runs=2)
    paths = []
    for index, rankings in enumerate(runs):
        paths.append(tmp_path / f"run{index}.txt")
        write_trec_run(paths[-1], rankings, f"r{index}")
    complete = tmp_path / "qrels.txt"
    complete.write_text("".join(f"{f} 0 {s} {r}\n" for f, shots in qrels.items() for s, r in shots.items()))
    out = tmp_path / "sample.txt"
    cli("pool", *paths, "--qrels", complete, *cli.repeated("--stratum", ["1-50:1", "51-250:0.5"]), "--seed", 3,
        "--out", out)
    judgments = read_judgments(out)
    assert judgments.sampled and set(judgments.relevance) == {1, 2}
    result = cli("eval", "--run", paths[0], "--qrels", out, terminal_width=250)
    assert "mean xinfAP" in cli.said(result)
    bad = cli("pool", paths[0], "--qrels", complete, "--stratum", "1-50:2", "--out", out, expect=2)
    assert "--stratum '1-50:2'" in cli.said(bad)
    sample_as_complete = cli("pool", paths[0], "--qrels", out, "--stratum", "1-50:1", "--out", out, expect=2)
    assert "needs complete judgments" in cli.said(sample_as_complete)
