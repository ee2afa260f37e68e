"""Which labelled images train, validate and are held out: the labels file's split column where it has one (its
train, val and test rows), else a common hold-out drawn by ``holdout_seed`` and a train/validation split drawn by
``split_seed`` from the rest, both by hashing image ids (so they depend on the set of ids and the seeds only)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd

from dsdi.errors import InputError
from dsdi.progress import stderr_console
from dsdi.train.config import TrainConfig
from dsdi.train.data import SPLIT_COLUMN, SPLITS, find_unreadable_images, read_labels_csv


def _split_key(image_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{image_id}".encode(), digest_size=8).digest()


def _holdout_key(image_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"holdout\0{seed}\0{image_id}".encode(), digest_size=8).digest()


def holdout_split(image_ids: Iterable[str], fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """(rest_ids, holdout_ids), each in input order: the ``round(n * fraction)`` distinct ids with the smallest
    hash of ("holdout", seed, id) form the common hold-out (none when ``fraction`` is 0). It depends only on the
    set of ids and the seed: every run on the same labels file holds out the same images, whatever its
    train/validation split seed (the hash is salted apart from :func:`train_val_split`'s). Take it first and
    split the rest."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"--holdout-fraction must be at least 0 and below 1 (got {fraction})")
    ids = [str(image_id) for image_id in image_ids]
    distinct = sorted(set(ids), key=lambda image_id: _holdout_key(image_id, seed))
    holdout = set(distinct[: round(len(distinct) * fraction)])
    return [i for i in ids if i not in holdout], [i for i in ids if i in holdout]


def train_val_split(image_ids: Iterable[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train_ids, val_ids), each in input order: the ``round(n * val_fraction)`` ids with the smallest
    hash of (seed, id) go to validation (at least one when there are two ids or more). Depends only on the
    set of ids and the seed, not on row order."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
    ids = [str(image_id) for image_id in image_ids]
    n_val = min(max(round(len(ids) * val_fraction), 1 if len(ids) >= 2 else 0), len(ids))
    val_set = set(sorted(set(ids), key=lambda image_id: _split_key(image_id, seed))[:n_val])
    return [i for i in ids if i not in val_set], [i for i in ids if i in val_set]


def _labelled_images(config: TrainConfig) -> tuple[pd.DataFrame, list[str]]:
    """(the labels table with unreadable images refused (InputError) or dropped (``skip_missing``), every image
    id of the labels file)."""
    labels = read_labels_csv(config.labels, config.label_set())
    all_ids = labels["image_id"].astype(str).tolist()
    unreadable = find_unreadable_images(labels, config.images)
    if unreadable and not config.skip_missing:
        shown = "\n".join(f"  {image_id}: {path} ({reason})" for image_id, path, reason in unreadable[:20])
        more = f"\n  ... and {len(unreadable) - 20} more" if len(unreadable) > 20 else ""
        raise InputError(
            f"{len(unreadable)} of {len(labels)} images in {config.labels} are missing or unreadable under "
            f"{config.images}:\n{shown}{more}\nfix the files or pass --skip-missing to train without them"
        )
    if unreadable:
        bad_ids = {image_id for image_id, _, _ in unreadable}
        stderr_console.print(f"skipping {len(bad_ids)} missing/unreadable images (--skip-missing)", highlight=False,
                      soft_wrap=True)
        labels = labels[~labels["image_id"].isin(bad_ids)].reset_index(drop=True)
    if len(labels) < 2:
        raise InputError(f"{config.labels}: at least 2 readable labelled images are needed to train and validate")
    return labels, all_ids


def _published_split(labels: pd.DataFrame, config: TrainConfig) -> tuple[list[str], list[str], list[str]]:
    """(train, val, hold-out) ids of a labels table with a split column: its train, val and test rows; without val
    rows, the train rows are split by --val-fraction and --split-seed."""
    ids = {split: labels.loc[labels[SPLIT_COLUMN] == split, "image_id"].tolist() for split in SPLITS}
    if not ids["val"]:
        ids["train"], ids["val"] = train_val_split(ids["train"], val_fraction=config.val_fraction,
                                                   seed=config.split_seed)
    return ids["train"], ids["val"], ids["test"]


def split_labels(config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, hold-out) rows of the labels table. Where the table has a split column, its splits
    (``_published_split``). Otherwise the hold-out is drawn from every id of the labels file (``holdout_seed``),
    so unreadable images never shift it, and the readable rest is split by ``split_seed``."""
    labels, all_ids = _labelled_images(config)
    if SPLIT_COLUMN in labels.columns:
        train_ids, val_ids, holdout_ids = _published_split(labels, config)
    else:
        _, holdout_ids = holdout_split(all_ids, fraction=config.holdout_fraction, seed=config.holdout_seed)
        held = labels["image_id"].isin(set(holdout_ids))
        train_ids, val_ids = train_val_split(labels.loc[~held, "image_id"].tolist(),
                                             val_fraction=config.val_fraction, seed=config.split_seed)
    train_rows, val_rows, holdout_rows = (labels[labels["image_id"].isin(set(ids))].reset_index(drop=True)
                                          for ids in (train_ids, val_ids, holdout_ids))
    if len(train_rows) == 0 or len(val_rows) == 0:
        how = ("split column" if SPLIT_COLUMN in labels.columns
               else f"{config.holdout_fraction} hold-out and {config.val_fraction} validation split")
        raise InputError(f"{config.labels}: the {how} of {len(labels)} readable images left an empty train or "
                         "validation set")
    return train_rows, val_rows, holdout_rows
