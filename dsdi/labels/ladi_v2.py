"""LADI v2 as distributed -> the labels CSV: ``image_id``, ``split``, then one float column (0/1) per class of the
label set, in label set order.

Two inputs, as MIT Lincoln Laboratory publishes them:

- **label files of the full download**: ``v2/ladi_v2_labels_{train,val,test,train_full}.csv`` and
  ``v2/ladi_v2a_labels_*.csv`` (each also ``_resized``), comma-separated, and LADI v1's subsets
  ``v1/damage_dataset/damage_df_{train,test}.csv`` and ``v1/infra_dataset/infra_df_*.csv``, tab-separated
  despite the name (the delimiter is read from the header). Columns: ``local_path`` (the image path relative to the
  download folder: the image id), ``url`` (not a label), then one boolean per label (True/False, true/false, 1/0).
  The split comes from the file name: ``_train``, ``_val``, ``_test``; ``_train_full`` (train + val of the
  publication) is train and holds the same images as ``_train`` and ``_val``. A file without a split in its
  name gives no split: given alone, it writes no ``split`` column and training splits it itself.
- **the Hugging Face ``save_to_disk`` folder** of the hosted dataset (``data/`` of its repository):
  ``dataset_dict.json`` (the splits), per split ``state.json`` (its shards, in order) and
  ``data-000NN-of-000MM.arrow`` (Arrow IPC streams) with ``image`` (a struct of the encoded ``bytes`` and a
  ``path``) and one bool column per label. Each image's bytes are written unchanged to
  ``IMAGES/<split>/<row>.<ext>`` (row: 0-based within the split; ext from the bytes' format), one record batch at
  a time; ``image_id`` is that path relative to ``IMAGES``, the image root to train with.

The label set is the built-in one whose classes are exactly the label columns, or the one given.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image, UnidentifiedImageError
from rich.table import Table

from dsdi.errors import InputError
from dsdi.files import atomic_output
from dsdi.labels.crowd import ANSWER_COLUMN, WORKER_COLUMN, write_csv_atomic
from dsdi.labels.delimited import header_columns, lines_text, read_delimited
from dsdi.labels.labelset import LabelSet, builtin_labelset_names, load_labelset
from dsdi.progress import progress_bar

PATH_COLUMN = "local_path"
NOT_LABELS = (PATH_COLUMN, "url")
"""Columns of a label file that are not labels."""
FILE_SPLITS = {"train_full": "train", "train": "train", "val": "val", "test": "test"}
"""File name ending (before ``_resized``) -> split; ``train_full`` is tested before ``train``."""
ARROW_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
"""Split name in dataset_dict.json -> split."""
SPLITS = ("train", "val", "test")
IMAGE_COLUMN = "image"
_BOOLEANS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "TIFF": "tif"}
"""PIL format -> file extension where it is not the format's name in lower case."""


class InputKind(str, Enum):
    """What ``dsdi labels`` was given."""

    crowd = "LADI v1 crowd answers"
    label_files = "LADI v2 label files"
    arrow = "LADI v2 Arrow folder (datasets save_to_disk)"


@dataclass(frozen=True)
class LabelsSummary:
    """What :func:`make_labels_v2` read and wrote, for the printed summary."""

    kind: InputKind
    sources: tuple[str, ...]
    labelset: LabelSet
    images_per_split: dict[str, int]
    """split -> images, in SPLITS order; ``{"": N}`` when the input has no splits."""
    positives: dict[str, int]
    """class -> images with the label, in label set order."""

    @property
    def images(self) -> int:
        """All images written."""
        return sum(self.images_per_split.values())


def input_kind(sources: list[Path]) -> InputKind:
    """The kind of input: a folder is an Arrow folder; a file with ``local_path`` a label file; one with
    ``WorkerId`` or ``Answer`` (or empty) crowd answers. InputError for a missing path, mixed kinds, several crowd
    files or several folders, and a file of none of these kinds (listing its columns)."""
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such annotation file or folder (give LADI crowd answers, LADI v2 label "
                             "files or a LADI v2 Arrow folder)")
    if any(source.is_dir() for source in sources):
        if len(sources) > 1:
            raise InputError(f"{', '.join(map(str, sources))}: give one Arrow folder (the one holding "
                             "dataset_dict.json, or its parent), alone")
        return InputKind.arrow
    kinds = {source: _file_kind(source) for source in sources}
    if len(set(kinds.values())) > 1:
        listing = "; ".join(f"{source}: {kind.value}" for source, kind in kinds.items())
        raise InputError(f"give files of one kind at a time ({listing})")
    kind = kinds[sources[0]]
    if kind is InputKind.crowd and len(sources) > 1:
        raise InputError(f"{', '.join(map(str, sources))}: crowd answers are read from one file; give one")
    return kind


def _file_kind(path: Path) -> InputKind:
    columns = header_columns(path)
    lower = {name.lower() for name in columns}
    if PATH_COLUMN in columns:
        return InputKind.label_files
    if not columns or WORKER_COLUMN.lower() in lower or ANSWER_COLUMN.lower() in lower:
        return InputKind.crowd
    raise InputError(f"{path}: neither crowd answers (url, WorkerId, Answer) nor a LADI v2 label file (no "
                     f"{PATH_COLUMN} column; expected {PATH_COLUMN}, url, then one column per label); columns "
                     f"found: {', '.join(columns)}")


# ---- label files --------------------------------------------------------------------------------------------------


def file_split(path: Path) -> str | None:
    """The publication split a label file's name ends with: ``train_full``, ``train``, ``val``, ``test`` (before
    ``_resized``), or None."""
    stem = path.stem.removesuffix("_resized")
    return next((name for name in FILE_SPLITS if stem.endswith(f"_{name}")), None)


def _check_file_splits(paths: list[Path]) -> list[str | None]:
    """Each file's publication split; InputError for a split given twice, train_full with train or val, and files
    with and without a split mixed."""
    names = [file_split(path) for path in paths]
    given = [(name, path) for name, path in zip(names, paths, strict=True) if name is not None]
    if given and len(given) < len(paths):
        unsplit = [str(path) for name, path in zip(names, paths, strict=True) if name is None]
        raise InputError(f"{', '.join(unsplit)}: no split in the file name (_train, _val, _test, _train_full) while "
                         "other files have one; rename it or give it alone")
    seen: dict[str, Path] = {}
    for name, path in given:
        if name in seen:
            raise InputError(f"{seen[name]} and {path} are both split {name} (the same images); give one of them")
        seen[name] = path
    if "train_full" in seen and ({"train", "val"} & set(seen)):
        other = seen.get("train") or seen["val"]
        raise InputError(f"{seen['train_full']} (train_full: train + val of the publication) holds the images of "
                         f"{other}; give train_full alone or train and val")
    return names


def read_label_file(path: Path, split: str | None) -> pd.DataFrame:
    """One label file as ``image_id``, ``place`` ("FILE line N"), ``split`` (None when not known), then its label
    columns as float 0/1. InputError naming the file, line and column for an empty path, a value that is not a
    boolean or a file without rows."""
    table, lines = read_delimited(path, f"a header line with {PATH_COLUMN}, url and the label columns")
    table.columns = [str(name).strip() for name in table.columns]
    if PATH_COLUMN not in table.columns:
        raise InputError(f"{path}: no {PATH_COLUMN} column; a LADI v2 label file has {PATH_COLUMN}, url, then one "
                         f"column per label (columns found: {', '.join(table.columns)})")
    if table.empty:
        raise InputError(f"{path}: no image rows after the header line (is this the right file?)")
    image_ids = table[PATH_COLUMN].str.strip()
    empty = np.flatnonzero((image_ids == "").to_numpy())
    if len(empty):
        raise InputError(f"{path}: {len(empty)} row(s) with an empty {PATH_COLUMN}, at line(s) "
                         f"{lines_text(lines[empty].tolist())}; fill it in or delete those rows")
    labels = [name for name in table.columns if name not in NOT_LABELS]
    frame = pd.DataFrame({"image_id": image_ids, "place": [f"{path} line {line}" for line in lines],
                          "split": split})
    for name in labels:
        frame[name] = _booleans(table[name], lines, path, name)
    return frame


def _booleans(column: pd.Series, lines: np.ndarray, path: Path, name: str) -> np.ndarray:
    """float64 (N,) 1.0 / 0.0 of a column of True/False, true/false or 1/0; InputError at the first other value."""
    values = column.str.strip().str.lower().map(_BOOLEANS)
    bad = np.flatnonzero(values.isna().to_numpy())
    if len(bad):
        raise InputError(f"{path}, line {lines[bad[0]]}, column {name!r}: {column.iloc[bad[0]]!r} is not a boolean "
                         f"({len(bad)} such value(s) in the column); write True/False, true/false or 1/0")
    return values.to_numpy(dtype=np.float64)


def read_label_files(paths: list[Path]) -> pd.DataFrame:
    """Label files (e.g. train, val and test) as one table: ``image_id``, ``place``, ``split``, label columns in the
    first file's order. InputError when the files' label columns differ or an image is listed twice (naming both
    places)."""
    names = _check_file_splits(paths)
    frames = [read_label_file(path, FILE_SPLITS.get(name)) for path, name in zip(paths, names, strict=True)]
    first = list(frames[0].columns)
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        if set(frame.columns) != set(first):
            raise InputError(f"{path}: its label columns {_labels_of(frame)} differ from those of {paths[0]} "
                             f"{_labels_of(frames[0])}; give files of one label set")
    table = pd.concat([frame[first] for frame in frames], ignore_index=True)
    repeated = table["image_id"].duplicated(keep=False)
    if repeated.any():
        image_id = table.loc[repeated, "image_id"].iloc[0]
        places = table.loc[table["image_id"] == image_id, "place"].tolist()
        raise InputError(f"image {image_id!r} is listed twice: {places[0]} and {places[1]} "
                         f"({int(table['image_id'].duplicated().sum())} repeated image(s) in all); each image must "
                         "appear once")
    return table


def _labels_of(frame: pd.DataFrame) -> list[str]:
    return [name for name in frame.columns if name not in ("image_id", "place", "split")]


# ---- the label set ------------------------------------------------------------------------------------------------


def labelset_of_columns(columns: list[str], spec: str | Path | None, source: str) -> LabelSet:
    """The label set of an input's label columns: ``spec`` (a name or TOML file, ``load_labelset``) when given,
    else the built-in label set whose class names are exactly these columns. InputError naming the unknown and
    missing columns, or, with no match, listing the columns."""
    if spec is None:
        builtins = [load_labelset(name) for name in builtin_labelset_names()]
        matching = [labelset for labelset in builtins if set(labelset.class_names) == set(columns)]
        if not matching:
            raise InputError(f"{source}: no built-in label set has exactly the label columns {columns}; write a "
                             "label set TOML file with these classes and pass --labelset FILE")
        return matching[0]
    labelset = load_labelset(spec)
    unknown = [name for name in columns if name not in labelset.class_names]
    missing = [name for name in labelset.class_names if name not in columns]
    faults = ([f"columns not in the label set: {unknown}"] if unknown else []) + (
        [f"classes without a column: {missing}"] if missing else [])
    if faults:
        raise InputError(f"{source}: the label columns do not match label set {labelset.name} ({'; '.join(faults)}); "
                         "pass the label set of these labels with --labelset NAME|FILE")
    return labelset


# ---- the Arrow folder ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrowSplit:
    """One split of a ``save_to_disk`` folder: its name there, its split (train/val/test), its shards in order."""

    name: str
    split: str
    shards: tuple[Path, ...]


def find_dataset_dict(folder: Path) -> Path:
    """``folder/dataset_dict.json`` or ``folder/data/dataset_dict.json``; InputError when neither exists."""
    for candidate in (folder / "dataset_dict.json", folder / "data" / "dataset_dict.json"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder / 'dataset_dict.json'}: not found (nor under data/); give the folder datasets' "
                     "save_to_disk wrote, e.g. data/ of the hosted LADI v2 dataset, or its parent")


def _read_json(path: Path, expected: str) -> dict:
    """A JSON object; InputError naming the file when it is missing, not JSON or not an object with ``expected``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found; a datasets save_to_disk folder has it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get(expected), list):
        raise InputError(f"{path}: no list {expected!r}; not a datasets save_to_disk file")
    return data


def arrow_splits(dataset_dict: Path) -> list[ArrowSplit]:
    """The splits dataset_dict.json lists, with their shards from each split's state.json. InputError for a split
    name that is not train/validation/val/test, a split given twice, and a missing split folder, state.json or
    shard."""
    splits: list[ArrowSplit] = []
    for name in _read_json(dataset_dict, "splits")["splits"]:
        if name not in ARROW_SPLITS:
            raise InputError(f"{dataset_dict}: split {name!r} is not one of {', '.join(ARROW_SPLITS)}")
        if any(ARROW_SPLITS[name] == split.split for split in splits):
            raise InputError(f"{dataset_dict}: two splits are {ARROW_SPLITS[name]} ({name!r} and another)")
        folder = dataset_dict.parent / name
        if not folder.is_dir():
            raise InputError(f"{folder}: missing; {dataset_dict} lists split {name!r}")
        state = folder / "state.json"
        entries = _read_json(state, "_data_files")["_data_files"]
        shards = tuple(folder / str(entry.get("filename", "")) for entry in entries if isinstance(entry, dict))
        if len(shards) != len(entries) or not shards:
            raise InputError(f"{state}: '_data_files' must list the split's shards as {{\"filename\": ...}}")
        for shard in shards:
            if not shard.is_file():
                raise InputError(f"{shard}: missing; {state} lists it")
        splits.append(ArrowSplit(name, ARROW_SPLITS[name], shards))
    return splits


def _shard_labels(schema: pa.Schema, shard: Path) -> list[str]:
    """The label columns of a shard; InputError without an ``image`` struct of ``bytes`` or with a non-bool label."""
    if IMAGE_COLUMN not in schema.names:
        raise InputError(f"{shard}: no {IMAGE_COLUMN!r} column (columns: {', '.join(schema.names)}); a LADI v2 "
                         "shard has image plus one bool column per label")
    image_type = schema.field(IMAGE_COLUMN).type
    if not pa.types.is_struct(image_type) or image_type.get_field_index("bytes") < 0:
        raise InputError(f"{shard}: column {IMAGE_COLUMN!r} is {image_type}, not a struct of encoded image bytes")
    for field in schema:
        if field.name != IMAGE_COLUMN and not pa.types.is_boolean(field.type):
            raise InputError(f"{shard}: label column {field.name!r} is {field.type}, not bool")
    return [name for name in schema.names if name != IMAGE_COLUMN]


def _batches(shard: Path) -> Iterator[pa.RecordBatch]:
    """The record batches of one shard, read from a memory map one at a time."""
    try:
        with pa.memory_map(str(shard)) as source:
            yield from pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(_not_arrow(shard, error)) from None


def _not_arrow(shard: Path, error: Exception) -> str:
    """The message for a shard pyarrow cannot read as a stream; a Git LFS pointer (a clone without LFS) says so."""
    with open(shard, "rb") as handle:
        if handle.read(len(_LFS_POINTER)) == _LFS_POINTER:
            return f"{shard}: a Git LFS pointer, not the Arrow file; fetch the data (git lfs pull) and run again"
    return f"{shard}: not an Arrow stream file ({error})"


def arrow_label_columns(splits: list[ArrowSplit]) -> list[str]:
    """The label columns every shard has (read from the schemas only, before any image is written); InputError
    naming the first shard that is not an Arrow stream, lacks the image column, has a non-bool label or other
    labels than the first shard."""
    columns: list[str] | None = None
    for shard in (shard for split in splits for shard in split.shards):
        try:
            with pa.memory_map(str(shard)) as source:
                labels = _shard_labels(pa.ipc.open_stream(source).schema, shard)
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(_not_arrow(shard, error)) from None
        if columns is not None and labels != columns:
            raise InputError(f"{shard}: label columns {labels} differ from the first shard's {columns}")
        columns = labels
    return columns or []


def image_extension(data: bytes, where: str) -> str:
    """The file extension of encoded image bytes (``jpg``, ``png``...), from the format PIL reads in them."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{where}: the image bytes are not an image ({error})") from None
    return _EXTENSIONS.get(image_format, image_format.lower())


def _export_batch(batch: pa.RecordBatch, split: str, first_row: int, images_dir: Path, shard: Path,
                  columns: list[str]) -> pd.DataFrame:
    """Write one batch's images to ``images_dir/split/<row>.<ext>`` and return its rows: ``image_id``, ``split``,
    the label columns as float 0/1. InputError naming the shard and row for an image without bytes or a null
    label."""
    for name in columns:
        values = batch.column(name)
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{shard}, row {row} of its batch: label {name!r} is null; every label must be true or "
                             "false")
    images = batch.column(IMAGE_COLUMN)
    image_bytes = images.field("bytes")
    image_ids = []
    for index in range(batch.num_rows):
        data = image_bytes[index].as_py() if images[index].is_valid else None
        if data is None:
            raise InputError(f"{shard}, row {index} of its batch: the image has no bytes; export the dataset with "
                             "the images embedded")
        image_id = f"{split}/{first_row + index}.{image_extension(data, f'{shard}, row {index} of its batch')}"
        with atomic_output(images_dir / image_id) as tmp:
            tmp.write_bytes(data)
        image_ids.append(image_id)
    frame = pd.DataFrame({"image_id": image_ids, "split": split})
    for name in columns:
        frame[name] = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    return frame


def export_arrow(folder: Path, images_dir: Path, labelset_spec: str | Path | None) -> tuple[pd.DataFrame, LabelSet]:
    """(rows ``image_id``, ``split``, label columns; the label set) of a ``save_to_disk`` folder, writing its
    images under ``images_dir``. The whole folder is checked (splits, shards, schemas, label set) before the first
    image is written; a progress bar counts shards."""
    dataset_dict = find_dataset_dict(folder)
    splits = arrow_splits(dataset_dict)
    columns = arrow_label_columns(splits)
    labelset = labelset_of_columns(columns, labelset_spec, str(dataset_dict.parent))
    frames = []
    with progress_bar("shards") as bar:
        task = bar.add_task("export images", total=sum(len(split.shards) for split in splits), info="")
        for split in splits:
            row = 0
            for shard in split.shards:
                for batch in _batches(shard):
                    frames.append(_export_batch(batch, split.split, row, images_dir, shard, columns))
                    row += batch.num_rows
                bar.update(task, advance=1, info=f"{split.name}: {row:,} images")
    return pd.concat(frames, ignore_index=True), labelset


# ---- dsdi labels --------------------------------------------------------------------------------------------------


def make_labels_v2(kind: InputKind, sources: list[Path], out: Path, labelset_spec: str | Path | None = None,
                   images_dir: Path | None = None) -> LabelsSummary:
    """``dsdi labels`` for LADI v2 inputs: read label files or export an Arrow folder's images to ``images_dir``,
    then write the labels CSV atomically to ``out`` (``image_id``, ``split`` when known, the label set's
    classes). InputError for bad input; nothing is written then (for an Arrow folder: no labels CSV, and no
    image when the fault is in a file's layout)."""
    if kind is InputKind.arrow:
        if images_dir is None:
            raise InputError("an Arrow folder needs an image folder to write its images to (--images)")
        table, labelset = export_arrow(sources[0], images_dir, labelset_spec)
    else:
        table = read_label_files(sources)
        labelset = labelset_of_columns(_labels_of(table), labelset_spec, ", ".join(map(str, sources)))
    has_split = table["split"].notna().all()
    labels = table[["image_id", *(["split"] if has_split else []), *labelset.class_names]]
    write_csv_atomic(labels, out)
    per_split = table["split"].value_counts() if has_split else pd.Series({"": len(table)})
    return LabelsSummary(
        kind=kind, sources=tuple(map(str, sources)), labelset=labelset,
        images_per_split={split: int(per_split[split]) for split in (*SPLITS, "") if split in per_split},
        positives={name: int((table[name] > 0).sum()) for name in labelset.class_names})


def summary_tables(summary: LabelsSummary) -> tuple[Table, Table]:
    """Two rich tables: what was read with the images per split, and the positives per class."""
    totals = Table(title=f"dsdi labels: {summary.kind.value}", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    totals.add_row("read", "\n".join(summary.sources))
    totals.add_row("label set", f"{summary.labelset.name} ({len(summary.labelset.class_names)} classes)")
    for split, images in summary.images_per_split.items():
        totals.add_row(f"images, {split}" if split else "images (no split given)", f"{images:,}")
    per_class = Table(title="images with a positive label, per class")
    per_class.add_column("class")
    per_class.add_column("category")
    per_class.add_column("images", justify="right")
    for name, n in summary.positives.items():
        per_class.add_row(name, summary.labelset.category_of(name), f"{n:,}")
    return totals, per_class
