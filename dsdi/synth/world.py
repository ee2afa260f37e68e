"""The world builder: renders images, crowd answers (LADI v1) or voted labels (LADI v2a), clips and ground truth
into one folder (layout in the dsdi.synth docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import dsdi.synth.ladi_v2a as ladi_v2a
from dsdi.errors import InputError
from dsdi.files import atomic_output, write_text_atomic
from dsdi.labels import schema
from dsdi.progress import progress_bar
from dsdi.synth.clips import FEATURE_CLIPS, build_clips
from dsdi.synth.crowd import sample_labels, simulate_annotations, with_none_classes, worker_ids
from dsdi.synth.outliers import OUTLIER_KINDS, render_outlier
from dsdi.synth.scenes import render_image

URL_PREFIX = "https://ladi.s3.amazonaws.com/synth/"
ANNOTATIONS_NAME = "ladi_aggregated_responses_url.tsv"

_SEED_LABELS, _SEED_IMAGES, _SEED_CLIPS, _SEED_WORKERS = 0, 1, 2, 3  # default_rng([seed, part, ...]) streams
_SEED_OUTLIER_IMAGES, _SEED_OUTLIER_LABELS, _SEED_OUTLIER_WORKERS = 4, 5, 6
_SEED_SPLITS, _SEED_LATER_SCENES = 7, 8
MAX_OUTLIER_RATE = 0.9
LABELSETS = ("ladi-v1", "ladi-v2a")  # the label sets a world can be drawn for


@dataclass(frozen=True)
class World:
    """Paths of a built synthetic world: a LADI v1 world has crowd answers (annotations), a LADI v2a world the
    annotators' majority vote as a labels CSV (labels)."""

    root: Path
    images_dir: Path
    annotations: Path | None
    true_labels: Path
    clips_dir: Path
    qrels: Path
    clip_truth: Path
    clips_table: Path
    labels: Path | None = None


def build_world(out_dir: str | Path, n_images: int = 1000, n_clips: int = 60, seed: int = 0, *,
                labelset: str = "ladi-v1", image_size: tuple[int, int] = (640, 480),
                clip_size: tuple[int, int] = (640, 360), clip_seconds: tuple[float, float] = (3.0, 12.0),
                miss_rate: float = 0.2, false_rate: float = 0.02, workers_per_category: tuple[int, int] = (3, 6),
                min_per_feature: int = 3, outlier_rate: float = 0.0) -> World:
    """Render the synthetic world of a label set (LABELSETS) into out_dir (layout in the dsdi.synth docstring)
    and return its paths. Sizes are (width, height) in pixels; clip_seconds is the (min, max) clip duration;
    outlier_rate is the outliers' share of all images (outlier_count extra images after the n_images normal
    ones; LADI v1 only); workers_per_category is LADI v1's crowd (a v2a image has three annotators)."""
    _check_arguments(n_images, n_clips, image_size, clip_size, clip_seconds, miss_rate, false_rate,
                     workers_per_category, outlier_rate, labelset)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory: choose another OUT_DIR")
    v2a = labelset == "ladi-v2a"
    world = World(root, root / "images", None if v2a else root / ANNOTATIONS_NAME, root / "true_labels.csv",
                  root / "clips", root / "qrels.txt", root / "clip_truth.csv", root / "clips.csv",
                  root / "labels.csv" if v2a else None)
    world.images_dir.mkdir(parents=True, exist_ok=True)
    world.clips_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*world.images_dir.glob("img_*.jpg"), *world.clips_dir.glob("Shot*_*.mp4")]:
        stale.unlink()
    if v2a:
        _write_v2a_images(world, n_images, seed, image_size, miss_rate, false_rate, min_per_feature)
    else:
        _write_v1_images(world, n_images, seed, image_size, miss_rate, false_rate, workers_per_category,
                         min_per_feature, outlier_rate)
    clips = build_clips(world.clips_dir, n_clips, [seed, _SEED_CLIPS], clip_size, clip_seconds,
                        ladi_v2a.V2A_CLIPS if v2a else FEATURE_CLIPS)
    write_text_atomic(world.clips_table, clips.clips_csv)
    write_text_atomic(world.clip_truth, clips.truth_csv)
    write_text_atomic(world.qrels, clips.qrels)
    return world


def _write_v1_images(world: World, n_images: int, seed: int, image_size: tuple[int, int], miss_rate: float,
                     false_rate: float, workers_per_category: tuple[int, int], min_per_feature: int,
                     outlier_rate: float) -> None:
    """The LADI v1 world's images, outliers, true labels and crowd answers."""
    labels = sample_labels(n_images, np.random.default_rng([seed, _SEED_LABELS]), min_per_feature=min_per_feature)
    n_outliers = outlier_count(n_images, outlier_rate)
    names = [f"img_{i:06d}.jpg" for i in range(n_images + n_outliers)]
    image_ids = [URL_PREFIX + name for name in names]

    def render(i: int) -> np.ndarray:
        if i < n_images:
            return render_image(labels[i], np.random.default_rng([seed, _SEED_IMAGES, i]), *image_size)
        k = i - n_images
        kind = OUTLIER_KINDS[k % len(OUTLIER_KINDS)]
        return render_outlier(kind, np.random.default_rng([seed, _SEED_OUTLIER_IMAGES, k]), *image_size)

    write_images(world.images_dir, names, render)
    write_text_atomic(world.true_labels, _true_labels_csv(image_ids, labels, outlier_rate > 0))
    answers = _crowd_answers(image_ids, labels, seed, miss_rate, false_rate, workers_per_category)
    write_text_atomic(world.annotations, answers.to_csv(sep="\t", index=False))


def _write_v2a_images(world: World, n_images: int, seed: int, image_size: tuple[int, int], miss_rate: float,
                      false_rate: float, min_per_class: int) -> None:
    """The LADI v2a world's images (the test split from the later event), true labels and voted labels; image
    ids are the file names (paths relative to images/, as LADI v2's local_path)."""
    splits = ladi_v2a.assign_splits(n_images, np.random.default_rng([seed, _SEED_SPLITS]))
    later = splits == "test"
    scenes = np.zeros((n_images, len(ladi_v2a.ELEMENTS)), np.uint8)
    scenes[~later] = ladi_v2a.sample_scenes(int((~later).sum()), np.random.default_rng([seed, _SEED_LABELS]),
                                            ladi_v2a.EARLIER, min_per_class)
    scenes[later] = ladi_v2a.sample_scenes(int(later.sum()), np.random.default_rng([seed, _SEED_LATER_SCENES]),
                                           ladi_v2a.LATER, min(1, min_per_class))
    names = [f"img_{i:06d}.jpg" for i in range(n_images)]

    def render(i: int) -> np.ndarray:
        event = ladi_v2a.LATER if later[i] else ladi_v2a.EARLIER
        return ladi_v2a.render_picture(scenes[i], np.random.default_rng([seed, _SEED_IMAGES, i]), *image_size, event)

    write_images(world.images_dir, names, render)
    write_text_atomic(world.true_labels, ladi_v2a.labels_csv(names, splits, ladi_v2a.derive_labels(scenes)))
    voted = ladi_v2a.vote(scenes, np.random.default_rng([seed, _SEED_WORKERS]), miss_rate, false_rate)
    write_text_atomic(world.labels, ladi_v2a.labels_csv(names, splits, voted))


def _check_arguments(n_images: int, n_clips: int, image_size: tuple[int, int], clip_size: tuple[int, int],
                     clip_seconds: tuple[float, float], miss_rate: float, false_rate: float,
                     workers_per_category: tuple[int, int], outlier_rate: float, labelset: str) -> None:
    """InputError naming the first build_world argument no world can be built with."""
    if labelset not in LABELSETS:
        raise InputError(f"--labelset {labelset!r}: synthetic worlds are drawn for {', '.join(LABELSETS)}")
    if labelset != "ladi-v1" and outlier_rate:
        raise InputError(f"--outlier-rate is for ladi-v1 worlds (the {labelset} world has no outliers): leave it 0")
    if n_images < 0 or n_clips < 0:
        raise InputError(f"--images and --clips must be >= 0 (got {n_images} and {n_clips})")
    if not (0.0 <= miss_rate <= 1.0 and 0.0 <= false_rate <= 1.0):
        raise InputError(f"miss and false rates must lie in [0, 1] (got {miss_rate} and {false_rate})")
    if min(image_size) < 32 or min(clip_size) < 32 or any(v % 2 for v in clip_size):
        raise InputError(f"sizes must be >= 32 px and clip sizes even (got {image_size}, {clip_size})")
    if not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise InputError(f"clip durations must satisfy 0 < min <= max (got {clip_seconds})")
    if not 1 <= workers_per_category[0] <= workers_per_category[1]:
        raise InputError(f"workers per category must satisfy 1 <= min <= max (got {workers_per_category})")
    if not 0.0 <= outlier_rate <= MAX_OUTLIER_RATE:
        raise InputError(f"--outlier-rate must lie in [0, {MAX_OUTLIER_RATE}] (got {outlier_rate})")


def _crowd_answers(image_ids: list[str], labels: np.ndarray, seed: int, miss_rate: float, false_rate: float,
                   workers_per_category: tuple[int, int]) -> pd.DataFrame:
    """The answer rows of every image: the normal images' (labels (n, 37), one per image) first, then the
    outliers' (the ids after the first n). The crowd labels each outlier as if it showed a label vector drawn like
    a normal image's (min_per_feature forcing aside), so its answers are wrong; the same worker pool labels
    normal images and outliers."""
    n_images = len(labels)
    worker_rng = np.random.default_rng([seed, _SEED_WORKERS])
    pool = worker_ids(worker_rng)
    answers = simulate_annotations(image_ids[:n_images], labels, worker_rng, miss_rate, false_rate,
                                   workers_per_category, pool)
    claimed = sample_labels(len(image_ids) - n_images, np.random.default_rng([seed, _SEED_OUTLIER_LABELS]),
                            min_per_feature=0)
    fooled = simulate_annotations(image_ids[n_images:], claimed, np.random.default_rng([seed, _SEED_OUTLIER_WORKERS]),
                                  miss_rate, false_rate, workers_per_category, pool)
    return pd.concat([answers, fooled])


def outlier_count(n_images: int, outlier_rate: float) -> int:
    """Outliers added to n_images normal images so that they are outlier_rate of all images."""
    return int(round(outlier_rate * n_images / (1.0 - outlier_rate)))


def write_images(images_dir: Path, names: list[str], render) -> None:
    """Save render(i) (uint8 RGB) as JPEG quality 90 under images_dir / names[i], with a progress bar."""
    with progress_bar("images") as bar:
        task = bar.add_task("synth images", total=len(names), info="")
        for i, name in enumerate(names):
            with atomic_output(images_dir / name) as tmp:
                Image.fromarray(render(i)).save(tmp, format="JPEG", quality=90)
            bar.update(task, advance=1)


def _true_labels_csv(image_ids: list[str], labels: np.ndarray, mark_outliers: bool) -> str:
    """true_labels.csv: the normal images' labels, then the outliers' (no feature, every '<category>: none'),
    and with mark_outliers a last column `outlier` (0/1)."""
    n_outliers = len(image_ids) - len(labels)
    nothing = with_none_classes(np.zeros((n_outliers, schema.NUM_FEATURES), np.uint8))
    table = pd.DataFrame(np.concatenate([labels, nothing]), columns=list(schema.CLASSES))
    table.insert(0, "image_id", image_ids)
    if mark_outliers:
        table["outlier"] = (np.arange(len(image_ids)) >= len(labels)).astype(np.uint8)
    return table.to_csv(index=False)
