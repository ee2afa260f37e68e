"""LADI v2a end to end through the CLI: a v2a synthetic world -> train on its majority-vote labels and published
splits -> rank its clips -> eval against its class-name qrels, well above a random ranking of the same clips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dsdi.trecvid.evaluation import evaluate_run
from dsdi.trecvid.qrels import read_qrels
from dsdi.trecvid.submission import read_run


def random_map(qrels: dict, shots: list[str], draws: int = 200) -> float:
    """The mean over seeded draws of the mAP of a random ranking of ``shots`` for every topic."""
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(draws):
        rankings = {topic: [(shot, 1.0 - k / len(shots)) for k, shot in enumerate(rng.permutation(shots))]
                    for topic in qrels}
        maps.append(evaluate_run(rankings, qrels, k=None)[1])
    return float(np.mean(maps))


@pytest.mark.slow
def test_a_v2a_world_goes_labels_train_rank_eval_well_above_random(tmp_path, cli):
    world = tmp_path / "world"
    cli("synth", "--out", world, "--labelset", "ladi-v2a", "--images", "400", "--clips", "16", "--seed", "0",
        "--image-resolution", "160x120", "--clip-resolution", "160x90", "--clip-seconds", "1-2")
    run = tmp_path / "run"
    cli("train", "--labels", world / "labels.csv", "--images", world / "images", "--labelset", "ladi-v2a",
        "--out", run, "--backbone", "resnet10t", "--loss", "focal", "--img-size", "48", "--epochs", "4",
        "--batch-size", "32", "--optimizer", "adamw", "--lr", "3e-3", "--weight-decay", "0.05", "--workers", "0",
        "--device", "cpu", "--seed", "0")
    out = tmp_path / "ranked"
    cli("rank", "--clips", world / "clips", "--models", run, "--out", out, "--run-id", "v2a", "--device", "cpu")
    evaluated = cli("eval", "--run", out / "v2a.trec", "--qrels", world / "qrels.txt", "--labelset", "ladi-v2a",
                    "--out", tmp_path / "metrics.csv")
    table = pd.read_csv(tmp_path / "metrics.csv")
    model_map = float(table.loc[table["feature"] == "all", "ap"].iloc[0])
    qrels = read_qrels(world / "qrels.txt")
    assert set(read_run(out / "v2a.trec")) == set(qrels) and all(isinstance(t, str) for t in qrels)
    chance = random_map(qrels, sorted(pd.read_csv(out / "clip_scores.csv")["shot_id"]))
    assert model_map > chance + 0.15, (model_map, chance, cli.said(evaluated))
