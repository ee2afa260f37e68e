"""How far xinfAP on NIST-style sampled judgments sits from AP on complete judgments, on a synthetic world.

    dsdi synth --out /tmp/w --images 300 --clips 200
    .venv/bin/python scripts/xinfap_vs_ap.py /tmp/w/qrels.txt

Runs: one per noise level, every clip scored ``rel + noise * N(0, 1)`` per feature (rel from the world's complete
qrels; numpy seed 100 + run index). Pool: all runs, strata ``--stratum`` (default 1-20:1.0 and 21-200:0.2, the
world's 200 clips standing in for NIST's 1-100:1.0 and 101-1000:0.2), 20 sampling seeds. Prints, per run, the mAP
on the complete qrels, and the mean and standard deviation over the seeds of the mean xinfAP (depth 1000) and of
its difference from the mAP.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dsdi.trecvid.evaluation import evaluate_judgments, evaluate_run
from dsdi.trecvid.pool import check_strata, parse_stratum, sample_pool
from dsdi.trecvid.qrels import SAMPLE_FORMAT, Judgments, read_qrels


def noisy_runs(qrels: dict[int, dict[str, int]], noises: list[float]) -> list[dict[int, list[tuple[str, float]]]]:
    """One ranking of every judged clip per feature and noise level, best first."""
    runs = []
    for index, noise in enumerate(noises):
        rng = np.random.default_rng(100 + index)
        rankings = {}
        for fnum, judged in sorted(qrels.items()):
            shots = sorted(judged)
            relevant = np.array([judged[s] > 0 for s in shots], dtype=np.float64)
            scores = relevant + noise * rng.standard_normal(len(shots))
            rankings[fnum] = sorted(zip(shots, scores.tolist(), strict=True), key=lambda entry: -entry[1])
        runs.append(rankings)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qrels", type=Path, help="complete qrels of the world (dsdi synth's qrels.txt)")
    parser.add_argument("--stratum", action="append", help="FIRST-LAST:RATE (repeat)")
    parser.add_argument("--seeds", type=int, default=20, help="sampling seeds")
    parser.add_argument("--noises", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0], help="one run per noise")
    args = parser.parse_args()
    strata = [parse_stratum(text) for text in (args.stratum or ["1-20:1.0", "21-200:0.2"])]
    check_strata(strata)
    qrels = read_qrels(args.qrels)
    runs = noisy_runs(qrels, args.noises)
    complete = [evaluate_run(rankings, qrels, 1000)[1] for rankings in runs]
    inferred = np.zeros((args.seeds, len(runs)))
    for seed in range(args.seeds):
        sampled = sample_pool(runs, qrels, strata, seed)
        judgments = Judgments(args.qrels, SAMPLE_FORMAT,
                              {f: {s: j for s, (_, j) in shots.items()} for f, shots in sampled.items()},
                              {f: {s: k for s, (k, _) in shots.items()} for f, shots in sampled.items()})
        judged = sum(j >= 0 for shots in sampled.values() for _, j in shots.values())
        pooled = sum(len(shots) for shots in sampled.values())
        inferred[seed] = [evaluate_judgments(rankings, judgments, 1000).mean for rankings in runs]
    print(f"strata {' '.join(f'{a}-{b}:{r:g}' for a, b, r in strata)}; {args.seeds} seeds; last pool: "
          f"{judged} of {pooled} pooled shots judged")
    print("noise   mAP(complete)  mean xinfAP  sd      mean diff  sd diff  max |diff|")
    for index, noise in enumerate(args.noises):
        diff = inferred[:, index] - complete[index]
        print(f"{noise:<7g} {complete[index]:<14.4f} {inferred[:, index].mean():<12.4f} {inferred[:, index].std():.4f}"
              f"  {diff.mean():+.4f}    {diff.std():.4f}   {np.abs(diff).max():.4f}")


if __name__ == "__main__":
    main()
