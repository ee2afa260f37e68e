"""The crowd side of the world: which features an image or clip holds (the long tail of paper Table 1) and
the LADI-format answers of simulated workers who label images with some misses and false alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsdi.labels import schema


def feature_probabilities(p_top: float = 0.45, p_min: float = 0.008) -> np.ndarray:
    """Per-feature draw probability (32,): a power law of the Table 1 counts from p_top (most frequent) to p_min."""
    counts = np.asarray(schema.CLASS_COUNTS[: schema.NUM_FEATURES], dtype=np.float64)
    exponent = np.log(p_min / p_top) / np.log(counts.min() / counts.max())
    return p_top * (counts / counts.max()) ** exponent


def with_none_classes(features: np.ndarray) -> np.ndarray:
    """(N, 32) 0/1 features -> (N, 37) labels: '<category>: none' is 1 when no feature of the category is 1."""
    labels = np.zeros((features.shape[0], schema.NUM_CLASSES), dtype=np.uint8)
    labels[:, : schema.NUM_FEATURES] = features
    for none_name in schema.NONE_CLASSES:
        category = schema.category_of(none_name)
        members = [i for i, name in enumerate(schema.FEATURES) if schema.category_of(name) == category]
        labels[:, schema.CLASSES.index(none_name)] = features[:, members].max(axis=1) == 0
    return labels


def sample_labels(n: int, rng: np.random.Generator, probabilities: np.ndarray | None = None,
                  min_per_feature: int = 3) -> np.ndarray:
    """(n, 37) uint8 true labels: independent Bernoulli features, each forced into >= min_per_feature rows."""
    probabilities = feature_probabilities() if probabilities is None else probabilities
    features = (rng.random((n, schema.NUM_FEATURES)) < probabilities).astype(np.uint8)
    for j in range(schema.NUM_FEATURES):
        missing = min(min_per_feature, n) - int(features[:, j].sum())
        if missing > 0:
            candidates = np.flatnonzero(features[:, j] == 0)
            features[rng.choice(candidates, size=missing, replace=False), j] = 1
    return with_none_classes(features)


def answer_tokens() -> tuple[dict[str, str], dict[str, str]]:
    """(class name -> first LADI token mapped to it, category -> its ':none' token), from token_map.csv."""
    token_of: dict[str, str] = {}
    for token, class_name in schema.shipped_answer_tokens():
        token_of.setdefault(class_name, token)
    none_token = {schema.category_of(name): token_of[name] for name in schema.NONE_CLASSES}
    return token_of, none_token


def worker_ids(rng: np.random.Generator, n: int = 120) -> list[str]:
    """n MTurk-like worker ids ('A' + 13 of A-Z0-9): the crowd's pool."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    return ["A" + "".join(rng.choice(alphabet, size=13)) for _ in range(n)]


def simulate_annotations(image_ids: list[str], labels: np.ndarray, rng: np.random.Generator,
                         miss_rate: float = 0.2, false_rate: float = 0.02,
                         workers_per_category: tuple[int, int] = (3, 6),
                         workers: list[str] | None = None) -> pd.DataFrame:
    """LADI-format crowd answers (url, WorkerId, Answer): one row per image x category x simulated worker,
    the workers drawn from `workers` (default: a pool of worker_ids(rng), drawn first)."""
    token_of, none_token = answer_tokens()
    workers = worker_ids(rng) if workers is None else workers
    by_category = {c: [j for j, name in enumerate(schema.FEATURES) if schema.category_of(name) == c]
                   for c in schema.CATEGORIES}
    rows = []
    for image_id, truth in zip(image_ids, labels, strict=True):
        for category, members in by_category.items():
            n_workers = int(rng.integers(workers_per_category[0], workers_per_category[1] + 1))
            present = truth[members].astype(bool)
            named = rng.random((n_workers, len(members))) < np.where(present, 1.0 - miss_rate, false_rate)
            for worker, picks in zip(rng.choice(len(workers), size=n_workers, replace=False), named, strict=True):
                tokens = [token_of[schema.FEATURES[members[k]]] for k in np.flatnonzero(picks)]
                rows.append((image_id, workers[worker], str(tokens or [none_token[category]])))
    return pd.DataFrame(rows, columns=["url", "WorkerId", "Answer"])
