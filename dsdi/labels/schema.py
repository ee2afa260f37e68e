"""LADI v1's crowd vocabulary: its 37 classes (the ``ladi-v1`` label set, ``dsdi.labels.labelset.LADI_V1``) under
short names, and the answer tokens LADI workers used for them.

The token table is ``dsdi/data_files/token_map.csv``: LADI answer token (``category:subcategory``) -> class name. A
user can check and extend it without touching code (``--token-map``).
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path

from dsdi.errors import InputError
from dsdi.labels.labelset import LADI_V1

CLASSES: tuple[str, ...] = LADI_V1.class_names
"""All 37 class names in model output order (32 features, then the 5 none-classes)."""
FEATURES: tuple[str, ...] = LADI_V1.features
"""The 32 retrieval features (the first 32 classes)."""
NONE_CLASSES: tuple[str, ...] = LADI_V1.none_classes
"""The 5 'none' classes: trained, never ranked."""
CLASS_COUNTS: tuple[int, ...] = LADI_V1.counts
"""Paper Table 1 counts n_y, in class order (used by the class-balanced focal loss)."""
NONE_CLASS_MASK: tuple[bool, ...] = LADI_V1.none_mask
"""True at the 5 none-class positions."""
CATEGORIES: tuple[str, ...] = LADI_V1.categories
"""LADI's five answer categories: damage, environment, infrastructure, vehicles, water."""
NUM_CLASSES = len(CLASSES)
NUM_FEATURES = len(FEATURES)


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


def category_of(class_name: str) -> str:
    """The LADI category ('damage', 'environment', ...) of a class name."""
    return LADI_V1.category_of(class_name)


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
                    f"(see dsdi/data_files/labelsets/ladi-v1.toml for the exact names)"
                )
            token_map[normalise_token(row["token"])] = row["class"]
    return token_map


def shipped_answer_tokens() -> list[tuple[str, str]]:
    """(raw LADI answer token, class name) rows of the shipped token table, in file order (spellings as
    LADI workers' answers have them, e.g. ``'damage:misc'``; the first row of a class is its usual one)."""
    return [(row["token"], row["class"]) for _, row in _read_table(shipped_data_file("token_map.csv"))]
