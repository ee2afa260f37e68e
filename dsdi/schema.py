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


def _data_file(name: str) -> Path:
    return Path(str(resources.files("dsdi") / "data_files" / name))


def _read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV data table; lines starting with '#' are comments."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


@lru_cache(maxsize=1)
def class_infos() -> tuple[ClassInfo, ...]:
    """The 37 classes in model output order."""
    rows = _read_table(_data_file("classes.csv"))
    infos = tuple(
        ClassInfo(int(r["index"]), r["name"], r["category"], r["is_feature"] == "1", int(r["table1_count"]))
        for r in rows
    )
    assert [c.index for c in infos] == list(range(NUM_CLASSES)), "classes.csv must list indices 0..36 in order"
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

assert len(FEATURES) == NUM_FEATURES and FEATURES == CLASSES[:NUM_FEATURES]


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

    A user table has the same ``token,class`` columns; its rows override the shipped ones.
    Raises ValueError naming the file and line when a row maps to a class that does not exist.
    """
    token_map: dict[str, str] = {}
    for path in [_data_file("token_map.csv")] + ([Path(extra)] if extra else []):
        for line_no, row in enumerate(_read_table(path), start=2):
            if row.get("token") is None or row.get("class") is None:
                raise ValueError(f"{path}: needs columns 'token' and 'class' (found {list(row)})")
            if row["class"] not in CLASSES:
                raise ValueError(
                    f"{path}, row {line_no}: class {row['class']!r} is not one of the 37 dsdi classes "
                    f"(see dsdi/data_files/classes.csv for the exact names)"
                )
            token_map[normalise_token(row["token"])] = row["class"]
    return token_map


def shipped_answer_tokens() -> list[tuple[str, str]]:
    """(raw LADI answer token, class name) rows of the shipped token table, in file order (spellings as
    LADI workers' answers have them, e.g. ``'damage:misc'``; the first row of a class is its usual one)."""
    return [(row["token"], row["class"]) for row in _read_table(_data_file("token_map.csv"))]


def load_feature_numbers(path: Path | None = None) -> dict[str, int]:
    """Feature name -> TRECVID feature number (fNum). Default table order 1..32.

    A user file (``feature,number``) must list all 32 features with distinct numbers.
    """
    source = Path(path) if path else _data_file("feature_numbers.csv")
    rows = _read_table(source)
    numbers = {r["feature"]: int(r["number"]) for r in rows}
    unknown = sorted(set(numbers) - set(FEATURES))
    missing = [f for f in FEATURES if f not in numbers]
    if unknown or missing:
        raise ValueError(f"{source}: unknown features {unknown}, missing features {missing}")
    if len(set(numbers.values())) != len(numbers):
        raise ValueError(f"{source}: feature numbers must be distinct")
    return numbers
