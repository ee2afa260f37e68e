"""Which features an image holds, as in LADI: each feature's prevalence in proportion to its paper Table 1 count,
and LADI's co-occurrence (flood scenes, wreckage, roads with traffic, vegetation...) through a Gaussian copula
whose thresholds keep every marginal at exactly its Table 1 prevalence.

Copula: one latent standard normal per feature, Z = F @ LOADINGS.T + sqrt(1 - rowsum(LOADINGS**2)) * noise,
with one standard normal factor F_g per group of CO_OCCURRENCE_GROUPS and noise independent per feature; feature j
is present when Z_j > Phi^-1(1 - p_j). Two features' latent correlation is the sum over the groups they share of
their loadings' product (``latent_correlation()``), e.g. flooding / water damage and flooding 0.8 * 0.7 = 0.56,
road and car 0.8 * 0.6 + 0.4 * 0.4 = 0.64. Features in no group (lava, snow/ice, pipes, railway, wireless /
radio communication towers, aircraft, smoke / fire) are drawn independently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from dsdi.errors import InputError
from dsdi.labels import schema
from dsdi.synth.crowd import with_none_classes

TOP_FEATURE = int(np.argmax(schema.CLASS_COUNTS[: schema.NUM_FEATURES]))
"""Index of Table 1's most frequent feature (flooding / water damage, 33120)."""

DEFAULT_P_TOP = 0.25
"""Default true prevalence of flooding / water damage. Table 1 counts crowd answers over LADI's ~40K labelled
images (paper section 2): the damage category's answers, 'damage: none' included, sum to 181,333, i.e. 4.5 per
image, the mean of 3-6 workers per category with about one token per answer. 33120 of them (18.3 %) name
flooding / water damage; a worker names a present feature with probability about 0.75 (annotators.AnnotatorModel's
mean sensitivity), so the share of images showing it is about 0.183 / 0.75 = 0.245, rounded to 0.25."""

CO_OCCURRENCE_GROUPS: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("flood scene", (("flooding / water damage", 0.8), ("flooding", 0.7), ("puddle", 0.5), ("lake / pond", 0.4),
                     ("river / stream", 0.4), ("boat", 0.4), ("ocean", 0.3))),
    ("wreckage", (("rubble / debris", 0.8), ("damage (misc)", 0.7), ("building", 0.5))),
    ("roads", (("road", 0.8), ("car", 0.6), ("truck", 0.5), ("bridge", 0.5), ("road washout", 0.5))),
    ("vegetation", (("trees", 0.8), ("shrubs", 0.7), ("grass", 0.6))),
    ("waterfront", (("boat", 0.6), ("ocean", 0.5), ("river / stream", 0.4), ("dam / levee", 0.4), ("bridge", 0.4))),
    ("bare ground", (("dirt", 0.6), ("sand", 0.5), ("rocks", 0.5), ("landslide", 0.5))),
    ("built-up", (("building", 0.6), ("utility or power lines / electric towers", 0.6), ("road", 0.4),
                  ("car", 0.4), ("water tower", 0.3))),
)
"""(group, ((feature, loading), ...)): the features that LADI's disaster scenes show together, each feature's
loading on the group's latent factor. The groups follow what the scenes are (a flood brings water of every kind
and boats; collapsed buildings bring rubble; roads carry cars and trucks and cross bridges; vegetation grows
together); the loadings are chosen, not measured (LADI publishes no co-occurrence table)."""


def _loadings() -> np.ndarray:
    """float64 (32, n_groups) loadings of each feature on each group's factor."""
    loadings = np.zeros((schema.NUM_FEATURES, len(CO_OCCURRENCE_GROUPS)))
    for g, (_, members) in enumerate(CO_OCCURRENCE_GROUPS):
        for name, loading in members:
            loadings[schema.FEATURES.index(name), g] = loading
    if (loadings**2).sum(axis=1).max() >= 1.0:
        raise RuntimeError("CO_OCCURRENCE_GROUPS: a feature's squared loadings must sum to < 1")
    return loadings


LOADINGS = _loadings()


def latent_correlation() -> np.ndarray:
    """float64 (32, 32) correlation of the features' latent normals (1 on the diagonal)."""
    correlation = LOADINGS @ LOADINGS.T
    np.fill_diagonal(correlation, 1.0)
    return correlation


def table1_prevalence(p_top: float = DEFAULT_P_TOP) -> np.ndarray:
    """float64 (32,) true prevalence of each feature: p_top * n_j / n_top with n_j its Table 1 count, so the
    494:1 range (flooding / water damage 33120 : lava 67) is kept exactly (DEFAULT_P_TOP says why 0.25)."""
    if not 0.0 < p_top <= 1.0:
        raise InputError(f"p_top must lie in (0, 1] (got {p_top}): it is the top feature's share of images")
    counts = np.asarray(schema.CLASS_COUNTS[: schema.NUM_FEATURES], dtype=np.float64)
    return p_top * counts / counts[TOP_FEATURE]


def sample_ladi_features(n: int, rng: np.random.Generator, prevalence: np.ndarray | None = None) -> np.ndarray:
    """uint8 (n, 32) features of n images from the Gaussian copula (module docstring); feature j's marginal is
    exactly prevalence[j] (default table1_prevalence())."""
    prevalence = table1_prevalence() if prevalence is None else np.asarray(prevalence, dtype=np.float64)
    if prevalence.shape != (schema.NUM_FEATURES,) or not ((prevalence >= 0) & (prevalence <= 1)).all():
        raise InputError(f"prevalence must be {schema.NUM_FEATURES} values in [0, 1] (got shape {prevalence.shape})")
    if n < 0:
        raise InputError(f"the number of images must be >= 0 (got {n})")
    factors = rng.standard_normal((n, LOADINGS.shape[1]))
    noise = rng.standard_normal((n, schema.NUM_FEATURES))
    latent = factors @ LOADINGS.T + noise * np.sqrt(1.0 - (LOADINGS**2).sum(axis=1))
    return (latent > norm.isf(prevalence)).astype(np.uint8)


def force_positives(features: np.ndarray, minimum: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of uint8 (n, 32) features where every feature is in >= minimum rows: a feature short of it is
    added to rows drawn uniformly from those without it."""
    n = features.shape[0]
    if not 0 <= minimum <= n:
        raise InputError(f"minimum positives per feature must lie in [0, {n}] for {n} images (got {minimum})")
    topped = features.copy()
    for j in range(topped.shape[1]):
        missing = minimum - int(topped[:, j].sum())
        if missing > 0:
            topped[rng.choice(np.flatnonzero(topped[:, j] == 0), size=missing, replace=False), j] = 1
    return topped


def world_frequencies(labels: np.ndarray) -> pd.DataFrame:
    """Per class (index: the 37 schema.CLASSES) of uint8 (n, 37) labels: category, role, positives, prevalence,
    share_of_top (prevalence / the top feature's) and table1_share (Table 1 count / 33120). The 'damage: none'
    row's shares compare the world's ratio of damage: none to its top damage feature with Table 1's 2.97."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != schema.NUM_CLASSES or len(labels) == 0:
        raise InputError(f"labels must be (n >= 1, {schema.NUM_CLASSES}) (got shape {labels.shape})")
    positives = (labels > 0).sum(axis=0)
    prevalence = positives / len(labels)
    counts = np.asarray(schema.CLASS_COUNTS, dtype=np.float64)
    top = prevalence[TOP_FEATURE]
    return pd.DataFrame({
        "category": [schema.category_of(name) for name in schema.CLASSES],
        "role": ["none" if none else "feature" for none in schema.NONE_CLASS_MASK],
        "positives": positives,
        "prevalence": prevalence,
        "share_of_top": prevalence / top if top > 0 else np.nan,
        "table1_share": counts / counts[TOP_FEATURE],
    }, index=pd.Index(schema.CLASSES, name="class"))


def sample_ladi_labels(n: int, rng: np.random.Generator, prevalence: np.ndarray | None = None) -> np.ndarray:
    """uint8 (n, 37) labels: sample_ladi_features plus the '<category>: none' classes they imply."""
    return with_none_classes(sample_ladi_features(n, rng, prevalence))
