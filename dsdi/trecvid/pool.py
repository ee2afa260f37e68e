"""Simulated NIST pools: NIST sample qrels built from several runs and complete judgments (``dsdi pool``).

Per feature of the runs: each run's ranking in sample_eval's order (``dsdi.trecvid.inferred.nist_order``) is cut
at the pool depth (the last stratum's end); a pooled shot's pool rank is its best rank over the runs; the strata
are contiguous rank ranges from 1 (``1-100:1.0 101-1000:0.2``: stratum 1 = shots whose best rank is 1..100, all
judged; stratum 2 = 101..1000, a 20% sample). From each stratum of n shots, round(rate * n) (at least 1) are drawn
at random without replacement and judged from the complete judgments (rel > 0 -> 1, else 0: a shot the complete
qrels do not list counts as not relevant); the rest get -1. One numpy generator seeded with ``seed`` draws the
features in number order, the strata in order, each over its shots sorted by id, so a seed gives one file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.trecvid.inferred import nist_order
from dsdi.trecvid.submission import Rankings, Topic, topic_order

Stratum = tuple[int, int, float]
"""(first rank, last rank, sampling rate in (0, 1]) of a pool stratum."""


def parse_stratum(text: str) -> Stratum:
    """``'101-1000:0.2'`` -> (101, 1000, 0.2); InputError naming --stratum otherwise."""
    ranks, _, rate_text = text.partition(":")
    first_text, _, last_text = ranks.partition("-")
    try:
        first, last, rate = int(first_text), int(last_text), float(rate_text)
    except ValueError:
        first, last, rate = 0, 0, math.nan
    if not (1 <= first <= last and 0 < rate <= 1):
        raise InputError(f"--stratum {text!r}: write FIRST-LAST:RATE with 1 <= FIRST <= LAST and 0 < RATE <= 1, "
                         "e.g. 1-100:1.0")
    return first, last, rate


def check_strata(strata: Sequence[Stratum]) -> None:
    """InputError unless the strata run contiguously from rank 1 (each starting one after the previous end)."""
    if not strata:
        raise InputError("give the pool's strata: --stratum 1-100:1.0 --stratum 101-1000:0.2 (rank ranges from 1)")
    expected = 1
    for first, last, rate in strata:
        if first != expected:
            raise InputError(f"--stratum {first}-{last}:{rate:g}: starts at {first}, expected {expected} (strata are "
                             "contiguous rank ranges from 1, in order)")
        expected = last + 1


def _pool_ranks(runs: Sequence[Rankings], fnum: Topic, depth: int) -> dict[str, int]:
    """shot id -> its best rank over the runs' rankings of ``fnum`` cut at ``depth``."""
    best: dict[str, int] = {}
    for rankings in runs:
        for rank, shot_id in enumerate(nist_order(rankings.get(fnum, []))[:depth], start=1):
            best[shot_id] = min(rank, best.get(shot_id, rank))
    return best


def sample_pool(runs: Sequence[Rankings], qrels: Mapping[Topic, Mapping[str, int]], strata: Sequence[Stratum],
                seed: int = 0) -> dict[Topic, dict[str, tuple[int, int]]]:
    """{fNum: {shot_id: (stratum number from 1, judgment 1/0/-1)}} of the pooled runs (module docstring)."""
    check_strata(strata)
    depth = strata[-1][1]
    rng = np.random.default_rng(seed)
    sampled: dict[Topic, dict[str, tuple[int, int]]] = {}
    for fnum in sorted({fnum for rankings in runs for fnum in rankings}, key=topic_order):
        best = _pool_ranks(runs, fnum, depth)
        truth = qrels.get(fnum, {})
        judged: dict[str, tuple[int, int]] = {}
        for number, (first, last, rate) in enumerate(strata, start=1):
            members = sorted(shot_id for shot_id, rank in best.items() if first <= rank <= last)
            if not members:
                continue
            size = min(len(members), max(1, math.floor(rate * len(members) + 0.5)))
            chosen = set(rng.choice(len(members), size=size, replace=False).tolist())
            for index, shot_id in enumerate(members):
                judgment = int(truth.get(shot_id, 0) > 0) if index in chosen else -1
                judged[shot_id] = (number, judgment)
        sampled[fnum] = judged
    return sampled


def write_sample_qrels(path: str | Path, sampled: Mapping[Topic, Mapping[str, tuple[int, int]]]) -> None:
    """Atomically write NIST sample qrels ``fNum 0 shotId stratum judgment``, by feature, stratum, shot id."""
    lines = [f"{fnum} 0 {shot_id} {stratum} {judgment}\n"
             for fnum in sorted(sampled, key=topic_order)
             for shot_id, (stratum, judgment) in sorted(sampled[fnum].items(), key=lambda item: (item[1][0], item[0]))]
    write_text_atomic(path, "".join(lines))
