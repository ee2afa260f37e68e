"""The LADI-shaped world of the claims study: images whose features follow Table 1's long tail and LADI's
co-occurrence (ladi_shape), each feature's cover of the image, and the answers of workers with LADI's kind of
noise (annotators), beside the old independent noise for contrast.

``build_ladi_world(out_dir, ...)`` writes::

    OUT/images/img_000123.jpg               quality 90 JPEGs: the train pool, then the hold-out, then the outliers
    OUT/true_labels.csv                     image_id (https://ladi.s3.amazonaws.com/synth/img_000123.jpg), split
                                            (train / holdout / outlier), the 37 schema.CLASSES (0/1)
    OUT/cover.csv                           image_id + the 32 features: the fraction of the image each covers
    OUT/ladi_aggregated_responses_url.tsv   annotators.simulate_workers' answers for every image
    OUT/independent_responses.tsv           crowd.simulate_annotations' answers (miss 0.2, false 0.02)
    OUT/workers.csv                         the pool: WorkerId, kind, sensitivity, false_alarm

Outliers show no feature (true labels: every '<category>: none'), yet both crowds label each as if it showed a
label vector drawn like a normal image's, each claimed feature at its median cover among the normal images.
Everything is deterministic per seed: each part has its own generator default_rng([seed, part(, index)]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels import schema
from dsdi.synth.annotators import AnnotatorModel, draw_worker_pool, simulate_workers
from dsdi.synth.crowd import simulate_annotations, with_none_classes
from dsdi.synth.ladi_shape import force_positives, sample_ladi_features
from dsdi.synth.outliers import OUTLIER_KINDS, render_outlier
from dsdi.synth.scenes import render_still_with_cover
from dsdi.synth.world import ANNOTATIONS_NAME, URL_PREFIX, write_images

INDEPENDENT_NAME = "independent_responses.tsv"
INDEPENDENT_MISS, INDEPENDENT_FALSE = 0.2, 0.02  # the old world's independent noise, for contrast
_TRAIN, _HOLDOUT, _HOLDOUT_TOP_UP, _CLAIMED, _IMAGES, _OUTLIERS, _WORKERS, _INDEPENDENT = range(20, 28)


@dataclass(frozen=True)
class LadiWorld:
    """Paths of a built LADI-shaped world (layout in the module docstring)."""

    root: Path
    images_dir: Path
    true_labels: Path
    cover: Path
    annotations: Path
    independent_annotations: Path
    workers: Path


def build_ladi_world(out_dir: str | Path, n_train: int, n_holdout: int, n_outliers: int, seed: int, *,
                     image_size: tuple[int, int] = (192, 144), model: AnnotatorModel = AnnotatorModel(),
                     holdout_min_positives: int = 20) -> LadiWorld:
    """Render the LADI-shaped world into out_dir and return its paths. image_size is (width, height) pixels;
    every feature is in >= holdout_min_positives hold-out images (topped up after the copula draw)."""
    _check_arguments(out_dir, n_train, n_holdout, n_outliers, image_size, holdout_min_positives)
    root = Path(out_dir)
    world = LadiWorld(root, root / "images", root / "true_labels.csv", root / "cover.csv", root / ANNOTATIONS_NAME,
                      root / INDEPENDENT_NAME, root / "workers.csv")
    world.images_dir.mkdir(parents=True, exist_ok=True)
    for stale in world.images_dir.glob("img_*.jpg"):
        stale.unlink()
    holdout = sample_ladi_features(n_holdout, np.random.default_rng([seed, _HOLDOUT]))
    features = np.concatenate([
        sample_ladi_features(n_train, np.random.default_rng([seed, _TRAIN])),
        force_positives(holdout, holdout_min_positives, np.random.default_rng([seed, _HOLDOUT_TOP_UP]))])
    n_normal = len(features)
    names = [f"img_{i:06d}.jpg" for i in range(n_normal + n_outliers)]
    image_ids = [URL_PREFIX + name for name in names]
    cover = np.zeros((len(names), schema.NUM_FEATURES))

    def render(i: int) -> np.ndarray:
        if i < n_normal:
            picture, cover[i] = render_still_with_cover(list(np.flatnonzero(features[i])),
                                                        np.random.default_rng([seed, _IMAGES, i]), *image_size)
            return picture
        k = i - n_normal
        return render_outlier(OUTLIER_KINDS[k % len(OUTLIER_KINDS)], np.random.default_rng([seed, _OUTLIERS, k]),
                              *image_size)

    write_images(world.images_dir, names, render)
    split = ["train"] * n_train + ["holdout"] * n_holdout + ["outlier"] * n_outliers
    truth = with_none_classes(np.concatenate([features, np.zeros((n_outliers, schema.NUM_FEATURES), np.uint8)]))
    write_text_atomic(world.true_labels, _table(image_ids, truth, schema.CLASSES, split=split).to_csv(index=False))
    write_text_atomic(world.cover, _table(image_ids, cover, schema.FEATURES).to_csv(index=False, float_format="%.6g"))
    claimed = with_none_classes(np.concatenate([features, sample_ladi_features(
        n_outliers, np.random.default_rng([seed, _CLAIMED]))]))
    claimed_cover = cover.copy()
    claimed_cover[n_normal:] = claimed[n_normal:, : schema.NUM_FEATURES] * _median_cover(features, cover, model)
    _write_answers(world, image_ids, claimed, claimed_cover, seed, model)
    return world


def _write_answers(world: LadiWorld, image_ids: list[str], labels: np.ndarray, cover: np.ndarray, seed: int,
                   model: AnnotatorModel) -> None:
    """The worker pool, the modelled crowd's answers and the independent crowd's answers of labels (n, 37)."""
    worker_rng = np.random.default_rng([seed, _WORKERS])
    pool = draw_worker_pool(worker_rng, model)
    write_text_atomic(world.workers, pool.table().to_csv(index=False, float_format="%.6g"))
    answers = simulate_workers(image_ids, labels, cover, worker_rng, model, pool)
    write_text_atomic(world.annotations, answers.to_csv(sep="\t", index=False))
    independent = simulate_annotations(image_ids, labels, np.random.default_rng([seed, _INDEPENDENT]),
                                       INDEPENDENT_MISS, INDEPENDENT_FALSE, model.workers_per_category)
    write_text_atomic(world.independent_annotations, independent.to_csv(sep="\t", index=False))


def _median_cover(features: np.ndarray, cover: np.ndarray, model: AnnotatorModel) -> np.ndarray:
    """float64 (32,) each feature's median cover over the normal images showing it (reference_cover if none)."""
    medians = np.full(schema.NUM_FEATURES, model.reference_cover)
    for j in range(schema.NUM_FEATURES):
        shown = features[:, j] == 1
        if shown.any():
            medians[j] = np.median(cover[: len(features)][shown, j])
    return medians


def _table(image_ids: list[str], values: np.ndarray, columns: tuple[str, ...], **extra: list) -> pd.DataFrame:
    """image_id, the extra columns, then values (n, len(columns)) under the given column names."""
    table = pd.DataFrame(values, columns=list(columns))
    for position, (name, column) in enumerate({"image_id": image_ids, **extra}.items()):
        table.insert(position, name, column)
    return table


def _check_arguments(out_dir: str | Path, n_train: int, n_holdout: int, n_outliers: int,
                     image_size: tuple[int, int], holdout_min_positives: int) -> None:
    """InputError naming the first build_ladi_world argument no world can be built with."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(f"{out_dir} exists and is not a directory: choose another output folder")
    if min(n_train, n_holdout, n_outliers) < 0 or n_train + n_holdout == 0:
        raise InputError(f"image counts must be >= 0 with some train or hold-out images "
                         f"(got train {n_train}, hold-out {n_holdout}, outliers {n_outliers})")
    if min(image_size) < 32:
        raise InputError(f"image sides must be >= 32 px (got {image_size})")
    if not 0 <= holdout_min_positives <= n_holdout:
        raise InputError(f"holdout_min_positives must lie in [0, n_holdout = {n_holdout}] "
                         f"(got {holdout_min_positives}): make the hold-out larger or ask for fewer positives")
