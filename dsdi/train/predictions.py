"""A run's stored image predictions: the sigmoids (image id x C classes) of each kept checkpoint on the
validation and hold-out images, and the soft targets of those images, so that ensembles and model selection
are scored without running any model again.

Layout inside a run directory::

    predictions/targets.val.csv          image_id + C soft targets (the label set's classes, in model order),
                                         the run's validation images
    predictions/targets.holdout.csv      the same for the common hold-out (images no recipe trains or validates on)
    predictions/<stem>.val.csv           image_id + C sigmoids of checkpoint <stem>.pt (best, last, snapshot_K)
    predictions/<stem>.holdout.csv

Written atomically next to each checkpoint; rows sorted by image id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.train.run_folder import RunFolder

PARTS = ("val", "holdout")


def _path(run_dir: str | Path, name: str, part: str) -> Path:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")  # a calling-code contract, never a user value
    return RunFolder(run_dir).predictions / f"{name}.{part}.csv"


def _write(path: Path, image_ids: list[str], values: np.ndarray, class_names: tuple[str, ...]) -> None:
    table = pd.DataFrame(np.asarray(values, dtype=np.float64), index=pd.Index(image_ids, name="image_id"),
                         columns=list(class_names)).sort_index()
    write_text_atomic(path, table.to_csv(float_format="%.7g"))


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: not found; the run predates stored predictions or did not finish an epoch "
                         "(retrain it, or resume it for one more epoch)")
    try:
        table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path}: not a predictions table ({error}); delete it and resume the run") from None
    if table.empty and not len(table.columns):
        raise InputError(f"{path}: has no class columns; delete it and resume the run")
    return table


def write_predictions(run_dir: str | Path, checkpoint_stem: str, part: str, image_ids: list[str],
                      sigmoids: np.ndarray, class_names: tuple[str, ...]) -> None:
    """Store checkpoint ``checkpoint_stem``'s sigmoids (N, C) on the ``part`` images ``image_ids`` (N);
    ``class_names`` (C) head the columns."""
    _write(_path(run_dir, checkpoint_stem, part), image_ids, sigmoids, class_names)


def read_predictions(run_dir: str | Path, checkpoint_stem: str, part: str) -> pd.DataFrame:
    """The stored sigmoids: index image_id, one column per class in model order. InputError when absent or
    malformed."""
    return _read(_path(run_dir, checkpoint_stem, part))


def write_targets(run_dir: str | Path, part: str, image_ids: list[str], targets: np.ndarray,
                  class_names: tuple[str, ...]) -> None:
    """Store the soft targets (N, C) of the ``part`` images ``image_ids`` (N); ``class_names`` (C) head the
    columns."""
    _write(_path(run_dir, "targets", part), image_ids, targets, class_names)


def read_targets(run_dir: str | Path, part: str) -> pd.DataFrame:
    """The stored soft targets: index image_id, one column per class. InputError when absent or malformed."""
    return _read(_path(run_dir, "targets", part))
