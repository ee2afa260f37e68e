"""LADI crowd answers -> per-image label table (paper 2.1, Fig. 1).

Input: LADI's human-annotation file, tab- or comma-separated (detected from the header line). One row is one
worker's answer for one category of one image. Columns (other columns are ignored):

- the image id: ``url``, ``img_url`` or ``image_uuid`` (the first of these present is used; names match
  case-insensitively; surrounding spaces are stripped from ids),
- ``WorkerId``,
- ``Answer``: a Python-list string of ``category:subcategory`` tokens, e.g. ``"['damage:flood/water']"``.

Tokens are mapped to the 37 classes with :func:`dsdi.labels.schema.load_token_map` (a user table extends it).
An answer row counts at most once per class, even when it names the class twice. An empty list ``[]`` is a
legal answer row that names nothing: it counts in "answers per image" but adds to no class and to no
category (so it changes neither the soft labels nor the majority denominators). An image whose answers
name nothing gets an all-zero row: every image in the file appears in the output, in order of first
appearance.

Modes, per image, with ``count[c]`` = number of answer rows naming class ``c``:

- ``soft`` (default): ``count[c] / max_c count[c]`` (Fig. 1: flood x4, smoke x1, damage:none x1 ->
  1.0, 0.25, 0.25, the rest 0).
- ``hard``: 1 where ``count[c] > 0``.
- ``majority``: 1 where ``count[c] > 0`` and ``2 * count[c] >= rows[category(c)]``, the number of the image's
  answer rows naming any class of that category.

Output CSV: ``image_id`` then the 37 float columns named exactly ``schema.CLASSES``, in order.
"""

from __future__ import annotations

import ast
import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from dsdi.errors import InputError
from dsdi.files import atomic_output
from dsdi.labels.delimited import lines_text, read_delimited
from dsdi.labels.schema import CATEGORIES, CLASSES, NUM_CLASSES, category_of, load_token_map, normalise_token

ID_COLUMNS = ("url", "img_url", "image_uuid")
"""Accepted names of the image id column, in order of preference."""
WORKER_COLUMN = "WorkerId"
ANSWER_COLUMN = "Answer"

_CATEGORY_OF_CLASS = np.array([CATEGORIES.index(category_of(name)) for name in CLASSES])
_CATEGORY_ONE_HOT = np.eye(len(CATEGORIES), dtype=np.int64)[_CATEGORY_OF_CLASS]
"""int64 (37, 5): 1 at each class's category."""
_CLASS_INDEX = {name: index for index, name in enumerate(CLASSES)}
_SINGLE_QUOTED_LIST = re.compile(r"\[\s*(?:'[^'\\]*'\s*(?:,\s*'[^'\\]*'\s*)*,?\s*)?\]")
_SINGLE_QUOTED_TOKEN = re.compile(r"'([^'\\]*)'")


class LabelMode(str, Enum):
    """How answer counts become label values (see the module docstring)."""

    soft = "soft"
    hard = "hard"
    majority = "majority"


@dataclass(frozen=True)
class AnswerCounts:
    """Answer rows counted per image.

    image_ids: (N,) ids in order of first appearance; class_counts: int64 (N, 37) answer rows naming each
    class; category_rows: int64 (N, 5) answer rows naming any class of each category (schema.CATEGORIES order);
    answer_rows: int64 (N,) all answer rows, empty lists included; empty_answer_rows: rows answering ``[]``;
    workers: distinct WorkerIds; unknown: skipped token -> occurrences.
    """

    image_ids: list[str]
    class_counts: np.ndarray
    category_rows: np.ndarray
    answer_rows: np.ndarray
    empty_answer_rows: int
    workers: int
    unknown: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelSummary:
    """What :func:`make_labels` read and wrote, for the printed summary."""

    source: str
    mode: str
    images: int
    answer_rows: int
    empty_answer_rows: int
    workers: int
    answers_per_image: tuple[int, float, int]
    """(min, median, max) answer rows per image."""
    positives: dict[str, int]
    """class -> number of images with a label value > 0, in schema order."""
    unknown_skipped: dict[str, int]
    """token -> occurrences skipped with ``skip_unknown`` (empty otherwise)."""


def _stripped(column: pd.Series) -> np.ndarray:
    """object (N,) the column's values as str without surrounding spaces (faster than ``.str.strip()``)."""
    return np.array([str(value).strip() for value in column.tolist()], dtype=object)


def read_annotations(path: str | Path) -> pd.DataFrame:
    """Read a LADI annotation file into columns ``image_id``, ``WorkerId``, ``Answer`` (str) and ``line``
    (int, the 1-based file line of the row, header = 1). ``df.attrs["source"]`` holds the path.

    Raises InputError for a missing or empty file, a malformed table (rows longer than the header, listed by
    line), a missing column (naming it and the columns found), or a header without rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such annotation file (give the LADI human-annotation .tsv or .csv)")
    table, lines = read_delimited(path, "a header line with url/WorkerId/Answer")
    by_lower = {str(name).strip().lower(): name for name in table.columns}
    found = ", ".join(str(name) for name in table.columns)
    id_column = next((by_lower[name] for name in ID_COLUMNS if name in by_lower), None)
    if id_column is None:
        raise InputError(f"{path}: missing image id column (one of {', '.join(ID_COLUMNS)}); columns found: {found}")
    for required in (WORKER_COLUMN, ANSWER_COLUMN):
        if required.lower() not in by_lower:
            raise InputError(f"{path}: missing column '{required}'; columns found: {found}")
    if table.empty:
        raise InputError(f"{path}: no answer rows after the header line (is this the right file?)")
    annotations = pd.DataFrame(
        {
            "image_id": _stripped(table[id_column]),
            WORKER_COLUMN: table[by_lower[WORKER_COLUMN.lower()]].astype(str),
            ANSWER_COLUMN: table[by_lower[ANSWER_COLUMN.lower()]].astype(str),
            "line": lines,
        }
    )
    annotations.attrs["source"] = str(path)
    return annotations


def parse_answer(text: str) -> list[str] | None:
    """The tokens of one ``Answer`` cell, or None when it is not a Python list of strings.

    ``"['damage:flood/water', 'damage:none']"`` -> ``['damage:flood/water', 'damage:none']``; ``"[]"`` -> ``[]``.
    Plain single-quoted lists take a regex fast path; anything else goes through ``ast.literal_eval``.
    """
    text = text.strip()
    if _SINGLE_QUOTED_LIST.fullmatch(text):
        return _SINGLE_QUOTED_TOKEN.findall(text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(token, str) for token in value):
        return list(value)
    return None


def count_answers(
    annotations: pd.DataFrame, token_map: dict[str, str] | None = None, skip_unknown: bool = False
) -> AnswerCounts:
    """Count answer rows per image and class.

    ``annotations`` needs ``image_id`` and ``Answer`` (``WorkerId`` and ``line`` are used when present).
    Identical Answer strings are parsed and mapped once (a LADI file repeats a few thousand distinct answers);
    the per-image sums are numpy bincounts over the rows. Raises InputError listing the lines of empty ids, of
    unparseable answers, and each unknown token with its count (unless ``skip_unknown``, which drops those
    tokens and reports them in ``AnswerCounts.unknown``).
    """
    source = annotations.attrs.get("source", "annotations")
    token_map = load_token_map() if token_map is None else token_map
    lines = annotations["line"].to_numpy() if "line" in annotations else np.arange(2, len(annotations) + 2)
    ids = _stripped(annotations["image_id"])

    _refuse_empty_ids(ids, lines, source)
    answer_codes, parsed = _parsed_answers(annotations[ANSWER_COLUMN], lines, source)
    answer_classes, unknown, unknown_first_line = _classes_of_answers(parsed, answer_codes, lines, token_map)
    if unknown and not skip_unknown:
        _refuse_unknown_tokens(unknown, unknown_first_line, source)
    answer_categories = (answer_classes.astype(np.int64) @ _CATEGORY_ONE_HOT) > 0

    image_codes, image_ids = pd.factorize(ids)
    n_images = len(image_ids)

    def rows_per_image(per_answer: np.ndarray) -> np.ndarray:
        """int64 (N, K): per image, how many of its rows have each of the K flags of their answer."""
        per_row = per_answer[answer_codes]
        sums = [np.bincount(image_codes, weights=per_row[:, k], minlength=n_images) for k in range(per_row.shape[1])]
        return np.stack(sums, axis=1).astype(np.int64)

    workers = annotations[WORKER_COLUMN].nunique() if WORKER_COLUMN in annotations else 0
    return AnswerCounts(
        image_ids=[str(i) for i in image_ids],
        class_counts=rows_per_image(answer_classes),
        category_rows=rows_per_image(answer_categories),
        answer_rows=np.bincount(image_codes, minlength=n_images),
        empty_answer_rows=int(np.array([len(tokens) == 0 for tokens in parsed], dtype=bool)[answer_codes].sum()),
        workers=int(workers),
        unknown=unknown,
    )


def _refuse_empty_ids(ids: np.ndarray, lines: np.ndarray, source: str) -> None:
    """InputError listing the lines whose image id is empty."""
    empty_ids = np.flatnonzero(ids == "")
    if len(empty_ids):
        raise InputError(
            f"{source}: {len(empty_ids)} row(s) with an empty image id, at line(s) "
            f"{lines_text(lines[empty_ids].tolist())}; fill in the id or delete those rows"
        )


def _parsed_answers(answers: pd.Series, lines: np.ndarray, source: str) -> tuple[np.ndarray, list[list[str]]]:
    """(code of each row's distinct Answer string, the token list of each distinct string): each distinct string
    is parsed once. InputError listing the lines whose Answer is not a Python list of strings."""
    answer_codes, distinct_answers = pd.factorize(answers.astype(str).to_numpy(dtype=object))
    parsed = [parse_answer(text) for text in distinct_answers]
    unparseable = np.array([tokens is None for tokens in parsed], dtype=bool)[answer_codes]
    if unparseable.any():
        bad_lines = lines[unparseable].tolist()
        raise InputError(
            f"{source}: {len(bad_lines)} Answer value(s) are not a Python list of strings like "
            f"\"['damage:flood/water']\", at line(s) {lines_text(bad_lines)}"
        )
    return answer_codes, parsed


def _refuse_unknown_tokens(unknown: dict[str, int], first_line: dict[str, int], source: str) -> None:
    """InputError naming each token missing from the token map, with its count and first line."""
    listing = "; ".join(f"{token!r} x{n} (first at line {first_line[token]})" for token, n in unknown.items())
    raise InputError(
        f"{source}: {sum(unknown.values())} answer token(s) are not in the token map: {listing}. "
        "Map them in a CSV with columns token,class and pass --token-map FILE, "
        "or pass --skip-unknown to ignore them"
    )


def _classes_of_answers(
    parsed: list[list[str]], answer_codes: np.ndarray, lines: np.ndarray, token_map: dict[str, str]
) -> tuple[np.ndarray, dict[str, int], dict[str, int]]:
    """Map the tokens of each distinct answer to classes.

    Returns bool (U, 37) classes named by each distinct answer (a class named twice counts once), unknown
    token -> occurrences over all rows (most frequent first), and unknown token -> first file line.
    """
    rows_with_answer = np.bincount(answer_codes, minlength=len(parsed))
    first_row_of_answer = np.unique(answer_codes, return_index=True)[1]
    class_of_token: dict[str, int] = {}
    answer_classes = np.zeros((len(parsed), NUM_CLASSES), dtype=bool)
    unknown: Counter[str] = Counter()
    unknown_first_row: dict[str, int] = {}
    for answer, tokens in enumerate(parsed):
        for token in tokens:
            if token not in class_of_token:
                class_of_token[token] = _CLASS_INDEX.get(token_map.get(normalise_token(token), ""), -1)
            if class_of_token[token] >= 0:
                answer_classes[answer, class_of_token[token]] = True
            else:
                unknown[token] += int(rows_with_answer[answer])
                first_row = int(first_row_of_answer[answer])
                unknown_first_row[token] = min(unknown_first_row.get(token, first_row), first_row)
    return (
        answer_classes,
        dict(unknown.most_common()),
        {token: int(lines[row]) for token, row in unknown_first_row.items()},
    )


def label_values(counts: AnswerCounts, mode: LabelMode | str = LabelMode.soft) -> np.ndarray:
    """float64 (N, 37) label values from answer counts, for ``soft``, ``hard`` or ``majority``."""
    mode = LabelMode(mode)
    class_counts = counts.class_counts.astype(np.float64)
    if mode is LabelMode.soft:
        largest = class_counts.max(axis=1, keepdims=True)
        return np.divide(class_counts, largest, out=np.zeros_like(class_counts), where=largest > 0)
    named = class_counts > 0
    if mode is LabelMode.hard:
        return named.astype(np.float64)
    category_rows = counts.category_rows[:, _CATEGORY_OF_CLASS]
    return (named & (2 * class_counts >= category_rows)).astype(np.float64)


def soft_labels(
    annotations: pd.DataFrame,
    mode: LabelMode | str = "soft",
    token_map: dict[str, str] | None = None,
    skip_unknown: bool = False,
) -> pd.DataFrame:
    """Label table from annotation rows: ``image_id`` then the 37 float columns ``schema.CLASSES``.

    ``annotations``: as returned by :func:`read_annotations`; ``token_map``: normalised token -> class
    (default: the shipped table). Raises InputError on bad rows (see :func:`count_answers`).
    """
    return _label_frame(count_answers(annotations, token_map, skip_unknown), mode)


def _label_frame(counts: AnswerCounts, mode: LabelMode | str) -> pd.DataFrame:
    values = pd.DataFrame(label_values(counts, mode), columns=list(CLASSES))
    values.insert(0, "image_id", counts.image_ids)
    return values


def summarise(counts: AnswerCounts, labels: pd.DataFrame, source: str, mode: LabelMode | str) -> LabelSummary:
    """The numbers the ``dsdi labels`` summary prints."""
    per_image = counts.answer_rows
    positives = (labels[list(CLASSES)].to_numpy() > 0).sum(axis=0)
    return LabelSummary(
        source=source,
        mode=LabelMode(mode).value,
        images=len(counts.image_ids),
        answer_rows=int(per_image.sum()),
        empty_answer_rows=counts.empty_answer_rows,
        workers=counts.workers,
        answers_per_image=(
            (int(per_image.min()), float(np.median(per_image)), int(per_image.max())) if len(per_image) else (0, 0.0, 0)
        ),
        positives={name: int(n) for name, n in zip(CLASSES, positives, strict=True)},
        unknown_skipped=dict(counts.unknown),
    )


def _exact_text(column: pd.Series) -> np.ndarray:
    """A column as CSV text: floats by their shortest exact repr (formatted once per distinct value), else str."""
    values = column.to_numpy()
    if not np.issubdtype(values.dtype, np.floating):
        return column.astype(str).to_numpy(dtype=object)
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    return np.array([repr(float(value)) for value in distinct], dtype=object)[codes]


def write_csv_atomic(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``table`` as CSV (header, no index; floats round-trip exactly) through a temp file in the same
    folder and ``os.replace``, so a kill never leaves half a file and a failed run keeps the old one."""
    columns = [_exact_text(table[name]) for name in table.columns]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([str(name) for name in table.columns])
        writer.writerows(zip(*columns, strict=True))


def make_labels(
    annotations_path: str | Path,
    out_path: str | Path,
    mode: LabelMode | str = LabelMode.soft,
    token_map_path: str | Path | None = None,
    skip_unknown: bool = False,
) -> LabelSummary:
    """``dsdi labels``: read the annotation file, build the label table, write it atomically to ``out_path``.

    Raises InputError for bad input (nothing is written then).
    """
    token_map = load_token_map(Path(token_map_path) if token_map_path else None)
    annotations = read_annotations(annotations_path)
    counts = count_answers(annotations, token_map, skip_unknown)
    labels = _label_frame(counts, mode)
    write_csv_atomic(labels, out_path)
    return summarise(counts, labels, str(annotations_path), mode)


def summary_tables(summary: LabelSummary) -> tuple[Table, Table]:
    """Two rich tables: the totals, and the positives per class."""
    low, median, high = summary.answers_per_image
    totals = Table(title=f"dsdi labels ({summary.mode}) from {summary.source}", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    totals.add_row("images", f"{summary.images:,}")
    totals.add_row("answer rows", f"{summary.answer_rows:,}")
    totals.add_row("empty answers []", f"{summary.empty_answer_rows:,}")
    totals.add_row("workers", f"{summary.workers:,}")
    totals.add_row("answers per image min / median / max", f"{low} / {median:g} / {high}")
    skipped = ", ".join(f"{token} x{n}" for token, n in summary.unknown_skipped.items())
    n_skipped = sum(summary.unknown_skipped.values())
    totals.add_row("unknown tokens skipped", f"{n_skipped:,}" + (f" ({skipped})" if skipped else ""))
    per_class = Table(title="images with a positive label, per class")
    per_class.add_column("class")
    per_class.add_column("category")
    per_class.add_column("images", justify="right")
    for name, n in summary.positives.items():
        per_class.add_row(name, category_of(name), f"{n:,}")
    return totals, per_class
