"""The 37 LADI classes: names, categories, Table 1 counts, answer tokens and TRECVID feature numbers.

Everything here is read from the data tables in ``dsdi/data_files/`` so that a user can check and
extend them without touching code:

- ``classes.csv``         the 37 outputs in model order (paper Table 1), category, feature flag, count
- ``token_map.csv``       LADI answer token (``category:subcategory``) -> class name
- ``feature_numbers.csv`` retrieval feature -> TRECVID feature number (default: table order 1..32)
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from dsdi.errors import InputError

NUM_CLASSES = 37
NUM_FEATURES = 32
CATEGORIES = ("damage", "environment", "infrastructure", "vehicles", "water")


@dataclass(frozen=True)
class ClassInfo:
    """One model output: its position, display name, LADI category and Table 1 count."""

    index: int
    name: str
    category: str
    is_feature: bool
    table1_count: int


def shipped_data_file(name: str) -> Path:
    """The path of one of dsdi's shipped tables in ``dsdi/data_files/``."""
    return Path(str(resources.files("dsdi") / "data_files" / name))


def _read_table(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(file line number, row) of each row of a CSV data table; lines starting with '#' are comments."""
    with open(path, newline="", encoding="utf-8") as handle:
        kept = [(number, line) for number, line in enumerate(handle, start=1) if not line.startswith("#")]
    reader = csv.DictReader(line for _, line in kept)
    return [(kept[reader.line_num - 1][0], row) for row in reader]


def _read_user_table(path: Path, flag: str) -> list[tuple[int, dict[str, str]]]:
    """``_read_table`` of a file the user gave with ``flag``; InputError naming both when it cannot be read."""
    try:
        return _read_table(path)
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: cannot read it: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{flag} {path}: cannot read it as a UTF-8 CSV file ({error})") from None


def _shipped_table_broken(name: str, problem: str) -> RuntimeError:
    """The error for a broken data file shipped with dsdi (not the user's doing: reinstall dsdi)."""
    return RuntimeError(f"dsdi's shipped data file {shipped_data_file(name)} is broken: {problem}; reinstall dsdi")


@lru_cache(maxsize=1)
def class_infos() -> tuple[ClassInfo, ...]:
    """The 37 classes in model output order."""
    rows = _read_table(shipped_data_file("classes.csv"))
    infos = tuple(
        ClassInfo(int(r["index"]), r["name"], r["category"], r["is_feature"] == "1", int(r["table1_count"]))
        for _, r in rows
    )
    if [c.index for c in infos] != list(range(NUM_CLASSES)):
        raise _shipped_table_broken("classes.csv", f"it must list indices 0..{NUM_CLASSES - 1} in order")
    return infos


CLASSES: tuple[str, ...] = tuple(c.name for c in class_infos())
"""All 37 class names in model output order (32 features, then the 5 none-classes)."""
FEATURES: tuple[str, ...] = tuple(c.name for c in class_infos() if c.is_feature)
"""The 32 retrieval features (the first 32 classes)."""
NONE_CLASSES: tuple[str, ...] = tuple(c.name for c in class_infos() if not c.is_feature)
"""The 5 'none' classes: trained, never ranked."""
CLASS_COUNTS: tuple[int, ...] = tuple(c.table1_count for c in class_infos())
"""Paper Table 1 counts n_y, in class order (used by the class-balanced focal loss)."""
NONE_CLASS_MASK: tuple[bool, ...] = tuple(not c.is_feature for c in class_infos())
"""True at the 5 none-class positions."""

if len(FEATURES) != NUM_FEATURES or FEATURES != CLASSES[:NUM_FEATURES]:
    raise _shipped_table_broken("classes.csv", f"the first {NUM_FEATURES} classes, and only those, must be features")


def category_of(class_name: str) -> str:
    """The LADI category ('damage', 'environment', ...) of a class name."""
    return class_infos()[CLASSES.index(class_name)].category


_SEPARATORS = re.compile(r"[\s/_\-]+")


def _fold_separators(text: str) -> str:
    """'Lake / Pond' -> 'Lake-Pond': runs of spaces, slashes, underscores and dashes become one '-'."""
    return _SEPARATORS.sub("-", text.strip()).strip("-")


def normalise_token(token: str) -> str:
    """Canonical form of a LADI answer token: lower case, separators folded to '-'.

    'Water:Lake / Pond' -> 'water:lake-pond'; 'infrastructure:dam_levee' -> 'infrastructure:dam-levee'.
    """
    category, _, sub = token.strip().lower().partition(":")
    return f"{_fold_separators(category)}:{_fold_separators(sub)}"


def load_token_map(extra: Path | None = None) -> dict[str, str]:
    """Normalised answer token -> class name, from the shipped table plus an optional user table.

    A user table (``--token-map``) has the same ``token,class`` columns; its rows override the shipped ones.
    Raises InputError naming the file and line for an unreadable file, missing columns or a row that maps
    to a class that does not exist.
    """
    shipped = shipped_data_file("token_map.csv")
    sources = [(str(shipped), _read_table(shipped))]
    if extra:
        sources.append((f"--token-map {extra}", _read_user_table(Path(extra), "--token-map")))
    token_map: dict[str, str] = {}
    for source, rows in sources:
        for line_no, row in rows:
            if row.get("token") is None or row.get("class") is None:
                raise InputError(f"{source}, line {line_no}: needs columns 'token' and 'class' (found {list(row)}); "
                                 "start the file with the header line 'token,class'")
            if row["class"] not in CLASSES:
                raise InputError(
                    f"{source}, line {line_no}: class {row['class']!r} is not one of the 37 dsdi classes "
                    f"(see dsdi/data_files/classes.csv for the exact names)"
                )
            token_map[normalise_token(row["token"])] = row["class"]
    return token_map


def shipped_answer_tokens() -> list[tuple[str, str]]:
    """(raw LADI answer token, class name) rows of the shipped token table, in file order (spellings as
    LADI workers' answers have them, e.g. ``'damage:misc'``; the first row of a class is its usual one)."""
    return [(row["token"], row["class"]) for _, row in _read_table(shipped_data_file("token_map.csv"))]


def load_feature_numbers(path: Path | None = None) -> dict[str, int]:
    """Feature name -> TRECVID feature number (fNum). Default table order 1..32.

    A user file (``--feature-numbers``, columns ``feature,number``) must list all 32 features with distinct
    integer numbers; InputError naming the file (and line) otherwise.
    """
    shipped = shipped_data_file("feature_numbers.csv")
    source = f"--feature-numbers {path}" if path else str(shipped)
    rows = _read_user_table(Path(path), "--feature-numbers") if path else _read_table(shipped)
    numbers: dict[str, int] = {}
    line_of_number: dict[int, int] = {}
    for line_no, row in rows:
        if row.get("feature") is None or row.get("number") is None:
            raise InputError(f"{source}, line {line_no}: needs columns 'feature' and 'number' (found {list(row)}); "
                             "start the file with the header line 'feature,number'")
        try:
            number = int(row["number"])
        except ValueError:
            raise InputError(f"{source}, line {line_no}: feature number {row['number']!r} is not an integer") from None
        if number in line_of_number:
            raise InputError(f"{source}, line {line_no}: feature number {number} is used twice (first on line "
                             f"{line_of_number[number]}); feature numbers must be distinct")
        line_of_number[number] = line_no
        numbers[row["feature"]] = number
    unknown = sorted(set(numbers) - set(FEATURES))
    missing = [f for f in FEATURES if f not in numbers]
    if unknown or missing:
        raise InputError(f"{source}: unknown features {unknown}, missing features {missing}; list each of the "
                         f"{NUM_FEATURES} features once, named as in dsdi/data_files/feature_numbers.csv")
    return numbers
