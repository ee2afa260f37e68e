"""Image-level evaluation of classifiers on labelled images: their sigmoids on every readable image
(``score_images``) and the measures compared per class (``image_measures``): AP per class and its mean, LRAP, and
F1 at threshold 0.5.

Targets are binarised as in training's validation (``dsdi.train.metrics``: positive where the label >= 0.5); a
prediction is positive where the sigmoid >= 0.5 (logit >= 0). AP and F1 are NaN for a class without a positive
image, and their means (mAP, macro F1) are over the classes with one; LRAP is over all images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from dsdi.models.classifier import Classifier
from dsdi.models.preprocess import Preprocessing, frames_to_tensor
from dsdi.progress import progress_bar
from dsdi.runtime import default_workers
from dsdi.train.data import DECODE_ERRORS, DECODE_THREADS_CAP, BrokenImage, decode_image, resolve_image_path
from dsdi.train.metrics import DEFAULT_POSITIVE_THRESHOLD, lrap, per_class_average_precision

PREDICTION_THRESHOLD = 0.5
"""A class is predicted where its sigmoid is at least this (F1)."""


@dataclass(frozen=True)
class ImageScores:
    """Each model's sigmoids, float32 (N, C_model) in the order of the image ids, NaN on the rows of the
    ``unreadable`` images; ``readable`` bool (N,)."""

    sigmoids: list[np.ndarray]
    readable: np.ndarray
    unreadable: tuple[BrokenImage, ...]


def _decoded(image_id: str, image_root: Path, min_sides: Sequence[int]) -> dict[int, np.ndarray] | BrokenImage:
    """One image's uint8 (H, W, 3) pixels decoded for each draft size of ``min_sides`` (both sides >= it where the
    file allows: ``decode_image``, as ``load_image`` decodes for one model), or why it cannot be read."""
    path = resolve_image_path(image_id, image_root)
    try:
        return {side: decode_image(path, side) for side in min_sides}
    except DECODE_ERRORS as error:
        return BrokenImage(image_id, str(path), f"{type(error).__name__}: {error}")


def _decoded_batches(image_ids: Sequence[str], image_root: Path, min_sides: Sequence[int], batch_size: int
                     ) -> Iterator[list[dict[int, np.ndarray] | BrokenImage]]:
    """The images in batches of ``batch_size``, in order, decoded on threads (PIL releases the GIL); the next batch
    decodes while the caller scores the current one."""
    with ThreadPoolExecutor(default_workers(DECODE_THREADS_CAP)) as pool:
        def submit(start: int) -> list:
            return [pool.submit(_decoded, image_id, image_root, min_sides)
                    for image_id in image_ids[start:start + batch_size]]

        pending = submit(0)
        for start in range(0, len(image_ids), batch_size):
            current, pending = pending, submit(start + batch_size)
            yield [future.result() for future in current]


def _model_input(decoded: list[dict[int, np.ndarray]], preprocessing: Preprocessing, device: torch.device
                 ) -> torch.Tensor:
    """Decoded images (draft size -> uint8 (H, W, 3)) -> float32 (B, 3, S, S), the model's input on ``device``."""
    side = preprocessing.resize.target
    return torch.cat([frames_to_tensor(image[side][None], preprocessing) for image in decoded]).to(device)


@torch.inference_mode()
def score_images(models: Sequence[Classifier], image_ids: Sequence[str], image_root: str | Path, *,
                 batch_size: int, device: torch.device) -> ImageScores:
    """The sigmoids of every model (on ``device``) on every readable image, each model's input made exactly as
    ``load_image`` makes it (an image is decoded once per distinct draft size: the models' resize sizes).
    Unreadable images (missing, corrupt) are skipped and returned."""
    image_ids = list(image_ids)
    min_sides = sorted({model.preprocessing.resize.target for model in models})
    sigmoids = [np.full((len(image_ids), len(model.labelset.class_names)), np.nan, dtype=np.float32)
                for model in models]
    readable = np.zeros(len(image_ids), dtype=bool)
    unreadable: list[BrokenImage] = []
    with progress_bar("images") as bar:
        task = bar.add_task(f"score {len(models)} model{'s' * (len(models) > 1)}", total=len(image_ids), info="")
        for start, batch in zip(range(0, len(image_ids), batch_size),
                                _decoded_batches(image_ids, Path(image_root), min_sides, batch_size), strict=True):
            unreadable.extend(item for item in batch if isinstance(item, BrokenImage))
            rows = [start + offset for offset, item in enumerate(batch) if not isinstance(item, BrokenImage)]
            decoded = [item for item in batch if not isinstance(item, BrokenImage)]
            for k, model in enumerate(models if decoded else ()):
                logits = model.module(_model_input(decoded, model.preprocessing, device))
                sigmoids[k][rows] = torch.sigmoid(logits.float()).cpu().numpy()
            readable[rows] = True
            bar.update(task, advance=len(batch), info=f"{len(unreadable)} unreadable" if unreadable else "")
    return ImageScores(sigmoids, readable, tuple(unreadable))


@dataclass(frozen=True)
class ImageMeasures:
    """One model's measures on N images and C classes: per class ``positives`` int (C,), ``ap`` and ``f1`` float64
    (C,), NaN without a positive; ``map`` and ``macro_f1`` their means over the classes with a positive (NaN if
    none), ``lrap`` over the images."""

    positives: np.ndarray
    ap: np.ndarray
    f1: np.ndarray
    map: float
    macro_f1: float
    lrap: float


def image_measures(targets: np.ndarray, sigmoids: np.ndarray) -> ImageMeasures:
    """AP, F1 at PREDICTION_THRESHOLD, their means and LRAP of ``sigmoids`` (N, C) against soft or hard
    ``targets`` (N, C), positive where >= 0.5."""
    ap, mean_ap = per_class_average_precision(targets, sigmoids)
    positive = np.asarray(targets) >= DEFAULT_POSITIVE_THRESHOLD
    present = positive.any(axis=0)
    f1 = np.full(positive.shape[1], np.nan)
    if present.any():
        f1[present] = f1_score(positive[:, present], np.asarray(sigmoids)[:, present] >= PREDICTION_THRESHOLD,
                               average=None, zero_division=0.0)
    macro_f1 = float(np.mean(f1[present])) if present.any() else float("nan")
    return ImageMeasures(positive.sum(axis=0), ap, f1, mean_ap, macro_f1, lrap(targets, sigmoids))
