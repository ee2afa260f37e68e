"""Delimited label tables (LADI's crowd answers, LADI v2's label files): tab or comma detected from the header
line, read as text with pandas, each row's file line number kept for error messages."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.errors import InputError

MAX_LINES_SHOWN = 10
"""How many offending line numbers an error message lists before '...'."""


def lines_text(lines: list[int]) -> str:
    """'3, 5, 9' for the first MAX_LINES_SHOWN line numbers, then ', ...'."""
    shown = ", ".join(str(n) for n in lines[:MAX_LINES_SHOWN])
    return shown + (", ..." if len(lines) > MAX_LINES_SHOWN else "")


def header_delimiter(path: Path) -> str:
    """Tab when the header line holds a tab, else comma."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    return "\t" if "\t" in header else ","


def header_columns(path: Path) -> list[str]:
    """The column names of the header line (delimiter detected), stripped; [] for an empty file."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=header_delimiter(path)), [])
    return [name.strip() for name in header]


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based first line, fields) of each non-blank record of a delimited file, read with the csv module."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        previous_end = 0
        for record in reader:
            if record:
                yield previous_end + 1, record
            previous_end = reader.line_num


def _file_line_numbers(path: Path, delimiter: str, n_rows: int) -> np.ndarray:
    """1-based file line number (header = line 1) of each of the ``n_rows`` data records.

    Fast path: one record per line. Otherwise (blank lines, quoted newlines) the csv module finds where each
    record starts.
    """
    data = path.read_bytes()
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if n_lines == n_rows + 1:
        return np.arange(2, n_rows + 2)
    starts = [line for line, _ in _records(path, delimiter)][1:]
    return np.array(starts[:n_rows]) if len(starts) >= n_rows else np.arange(2, n_rows + 2)


def _too_many_fields_message(path: Path, delimiter: str, parser_message: str) -> str:
    """Explain a table pandas refused: which lines have more fields than the header."""
    records = _records(path, delimiter)
    _, header = next(records)
    bad_lines = [line for line, fields in records if len(fields) > len(header)]
    kind = "tab" if delimiter == "\t" else "comma"
    if not bad_lines:
        return f"{path}: not a well-formed {kind}-separated table ({parser_message})"
    return (
        f"{path}: {len(bad_lines)} row(s) have more fields than the header ({len(header)}), at line(s) "
        f"{lines_text(bad_lines)}; in a {kind}-separated file quote any value that holds a "
        f"{'tab' if kind == 'tab' else 'comma'} (e.g. the Answer list)"
    )


def read_delimited(path: Path, expected_header: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(every column as str, no NA parsing; int (N,) the 1-based file line of each row, header = 1) of a tab- or
    comma-separated file. InputError for an empty file (saying ``expected_header`` is expected) or a malformed
    table (rows longer than the header, listed by line)."""
    delimiter = header_delimiter(path)
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops fields) when the first data row is longer than the header
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, sep=delimiter, dtype=str, na_filter=False, index_col=False,
                                encoding="utf-8-sig", encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty (expected {expected_header})") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        raise InputError(_too_many_fields_message(path, delimiter, str(error).strip())) from None
    return table, _file_line_numbers(path, delimiter, len(table))
