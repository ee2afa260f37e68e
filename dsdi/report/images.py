"""``dsdi eval-images``: classifiers compared on a labelled image set (LADI v2's 2023 test split, say), class by
class: AP and F1 at 0.5 per class, and per model mAP, macro F1 and LRAP (``dsdi.train.image_eval``), optionally
with the mean of the models' sigmoids as one more model (an equal-weight ensemble).

The classes are those of ``--labelset``, else of the first model's label set; every model is scored by class name,
so models of other label sets take part when they have every class (one that lacks one is refused, naming both
label sets). The labels CSV is read with that label set (``dsdi.train.data.read_labels_csv``); ``--split`` picks its
rows (default: test where the file has a split column, else every row). Unreadable images are skipped, counted and
named, never silently dropped.

Printed as rich tables and, with ``--out PREFIX``, written as PREFIX.csv (raw numbers: a row per model and class,
then per model a row ``all`` holding the means) and PREFIX.md (the tables as shown).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels.labelset import LabelSet, load_labelset
from dsdi.models.classifier import is_hf_folder, is_hub_name, load_classifier
from dsdi.options import check_values, option
from dsdi.report.tables import markdown_table, rich_table
from dsdi.runtime import pick_device
from dsdi.train.data import SPLIT_COLUMN, SPLITS, BrokenImage, read_labels_csv
from dsdi.train.image_eval import ImageMeasures, image_measures, score_images
from dsdi.train.run_folder import model_checkpoint

ALL_ROWS = "all"
MEAN_OF_MODELS = "mean of models"
CSV_COLUMNS = ("model", "class", "images", "positives", "ap", "f1", "lrap")


@dataclasses.dataclass(kw_only=True)
class ImageEvalConfig:
    """``dsdi eval-images``: the models, the labelled images and which of them, the classes, where the tables go."""

    models: list[Path] = option(help="a model to score, repeated (--models runs/A --models MITLL/LADI-v2-classifier-"
                                     "small): a dsdi run folder (its best.pt, else last.pt) or checkpoint file, a "
                                     "Hugging Face image-classification folder, or a hub name in the Hugging Face "
                                     "cache")
    labels: Path = option(help="labels CSV: image_id, an optional split column (train/val/test), then one column "
                               "per class of the label set")
    images: Path = option(help="image root the labels' image ids are relative to")
    split: str | None = option(None, choices=(*SPLITS, ALL_ROWS), help="the labels' rows to score",
                               shown_default="test where the labels have a split column, else all")
    labelset: str | None = option(None, help="the classes scored: a built-in label set name or a TOML file; each "
                                             "model is scored by class name", shown_default="the first model's")
    batch_size: int = option(32, minimum=1, help="images per forward pass")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    mean_of_models: bool = option(True, help="with several models, score the mean of their sigmoids as one more "
                                             "model ('mean of models', an equal-weight ensemble)")
    out: Path | None = option(None, help="file prefix: write PREFIX.csv (raw numbers) and PREFIX.md (the tables "
                                         "as shown)")


@dataclasses.dataclass(frozen=True)
class ImageEvaluation:
    """The measures of each model (and of the mean of models) on the ``images`` readable images of ``split``, for
    the classes of ``labelset``; ``unreadable``: the images skipped."""

    labelset: LabelSet
    split: str
    images: int
    unreadable: tuple[BrokenImage, ...]
    measures: list[tuple[str, ImageMeasures]]


def _scored_labels(config: ImageEvalConfig, labelset: LabelSet) -> tuple[pd.DataFrame, str]:
    """(the labels' rows of the chosen split, the split's name); InputError for a split the file lacks."""
    labels = read_labels_csv(config.labels, labelset)
    split = config.split or ("test" if SPLIT_COLUMN in labels.columns else ALL_ROWS)
    if split == ALL_ROWS:
        return labels, split
    if SPLIT_COLUMN not in labels.columns:
        raise InputError(f"{config.labels}: no split column, so no {split} rows; drop --split or pass --split all")
    rows = labels[labels[SPLIT_COLUMN] == split]
    if rows.empty:
        raise InputError(f"{config.labels}: no row has split {split}; choose a split the file has "
                         f"({', '.join(sorted(set(labels[SPLIT_COLUMN])))}) or --split all")
    return rows, split


def _model_ref(ref: Path) -> Path:
    """A ``--models`` entry as ``load_classifier`` takes it: a dsdi run folder's checkpoint (best.pt, else
    last.pt); a checkpoint file, Hugging Face model folder or hub name as given."""
    return ref if is_hf_folder(ref) or is_hub_name(ref) or not ref.is_dir() else model_checkpoint(ref)


def _class_columns(name: str, model_labelset: LabelSet, scored: LabelSet) -> list[int]:
    """The model's output index of each class of ``scored``; InputError naming both label sets if one is lacking."""
    missing = [c for c in scored.class_names if c not in model_labelset.class_names]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise InputError(f"--models {name} (label set {model_labelset.name}) lacks {shown} of label set "
                         f"{scored.name}; score it with --labelset {model_labelset.name}, or pass a --labelset with "
                         "classes every model has")
    return [model_labelset.class_names.index(c) for c in scored.class_names]


def evaluate_images(config: ImageEvalConfig) -> ImageEvaluation:
    """Score every model of ``config`` on its labelled images (one decode per image) and measure each model, and
    the mean of models where asked, against the labels. InputError for a model that cannot be loaded or lacks a
    class, for bad labels, and when no image could be read."""
    check_values(config)
    device = pick_device(config.device)
    models = [load_classifier(_model_ref(ref), device) for ref in config.models]
    names = [str(ref) for ref in config.models]
    labelset = load_labelset(config.labelset) if config.labelset else models[0].labelset
    columns = [_class_columns(name, model.labelset, labelset) for name, model in zip(names, models, strict=True)]
    labels, split = _scored_labels(config, labelset)
    scores = score_images(models, labels["image_id"].tolist(), config.images, batch_size=config.batch_size,
                          device=device)
    if not scores.readable.any():
        first = scores.unreadable[0]
        raise InputError(f"{config.images}: none of the {len(labels)} images could be read (first: {first.path}: "
                         f"{first.reason}); check --images and the labels' image ids")
    targets = labels[list(labelset.class_names)].to_numpy(dtype=np.float64)[scores.readable]
    sigmoids = [(name, model_scores[scores.readable][:, own]) for name, model_scores, own
                in zip(names, scores.sigmoids, columns, strict=True)]
    if config.mean_of_models and len(sigmoids) > 1:
        sigmoids.append((MEAN_OF_MODELS, np.mean([s for _, s in sigmoids], axis=0)))
    measures = [(name, image_measures(targets, model_sigmoids)) for name, model_sigmoids in sigmoids]
    return ImageEvaluation(labelset, split, int(scores.readable.sum()), scores.unreadable, measures)


def measures_table(evaluation: ImageEvaluation) -> pd.DataFrame:
    """CSV_COLUMNS: per model a row per class (ap, f1; NaN without a positive), then its row ``all`` (ap = mAP,
    f1 = macro F1, lrap, positives summed)."""
    rows = []
    for name, measures in evaluation.measures:
        for k, class_name in enumerate(evaluation.labelset.class_names):
            rows.append((name, class_name, evaluation.images, int(measures.positives[k]), measures.ap[k],
                         measures.f1[k], np.nan))
        rows.append((name, ALL_ROWS, evaluation.images, int(measures.positives.sum()), measures.map,
                     measures.macro_f1, measures.lrap))
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def _fmt(value: float) -> str:
    """A measure to 4 decimals, '-' where undefined."""
    return "-" if np.isnan(value) else f"{value:.4f}"


def _class_cells(evaluation: ImageEvaluation) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the per-class table: class, positives, then AP and F1 of each model; last row the
    means (mAP, macro F1)."""
    headers = ["class", "positives"] + [f"{name} {measure}" for name, _ in evaluation.measures
                                        for measure in ("AP", "F1")]
    positives = evaluation.measures[0][1].positives
    cells = [[class_name, str(int(positives[k]))]
             + [_fmt(value) for _, m in evaluation.measures for value in (m.ap[k], m.f1[k])]
             for k, class_name in enumerate(evaluation.labelset.class_names)]
    cells.append(["mean", str(int(positives.sum()))]
                 + [_fmt(value) for _, m in evaluation.measures for value in (m.map, m.macro_f1)])
    return headers, cells


def _summary_cells(evaluation: ImageEvaluation) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the per-model table: mAP, LRAP, macro F1."""
    cells = [[name, _fmt(m.map), _fmt(m.lrap), _fmt(m.macro_f1)] for name, m in evaluation.measures]
    return ["model", "mAP", "LRAP", "F1 (macro, at 0.5)"], cells


def titles(evaluation: ImageEvaluation) -> tuple[str, str]:
    """The titles of the per-class and per-model tables (split, images scored, images skipped)."""
    skipped = f", {len(evaluation.unreadable)} unreadable skipped" if evaluation.unreadable else ""
    scope = f"split {evaluation.split}, {evaluation.images} images{skipped}, label set {evaluation.labelset.name}"
    return f"AP and F1 at 0.5 per class ({scope})", f"Per model ({scope})"


def shown_tables(evaluation: ImageEvaluation) -> list[Table]:
    """The per-class and per-model tables as rich prints them (names left, numbers right)."""
    tables = [rich_table(title, *cells) for title, cells
              in zip(titles(evaluation), (_class_cells(evaluation), _summary_cells(evaluation)), strict=True)]
    for table in tables:
        table.columns[0].justify = "left"
    return tables


def write_image_tables(prefix: str | Path, evaluation: ImageEvaluation) -> list[Path]:
    """PREFIX.csv (``measures_table``) and PREFIX.md (both tables as shown, then the unreadable images); returns
    the paths written."""
    prefix = Path(prefix)
    csv_path, markdown_path = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".md")
    write_text_atomic(csv_path, measures_table(evaluation).to_csv(index=False))
    sections = [f"## {title}\n\n{markdown_table(*cells)}" for title, cells
                in zip(titles(evaluation), (_class_cells(evaluation), _summary_cells(evaluation)), strict=True)]
    if evaluation.unreadable:
        listed = "\n".join(f"- {item.path}: {item.reason}" for item in evaluation.unreadable)
        sections.append(f"## Unreadable images, skipped ({len(evaluation.unreadable)})\n\n{listed}\n")
    write_text_atomic(markdown_path, "\n".join(sections))
    return [csv_path, markdown_path]
