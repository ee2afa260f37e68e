"""Label sets: which classes a model outputs, in which order, and which of them are ranked.

A label set is a TOML file (the built-in ones are ``dsdi/data_files/labelsets/<name>.toml``)::

    name = "wildfire"                        # required
    description = "our own wildfire classes" # optional
    classes = [                              # required, in model output order
      { name = "smoke", category = "fire", role = "feature", number = 101, count = 5400 },
      { name = "fire: none", category = "fire", role = "none" },
    ]

Per class: ``name`` and ``category`` (required), ``role`` (``feature``: ranked; ``none``: the "nothing of this
category" class, trained and never ranked; ``other``: trained and never ranked; default ``feature``), ``number``
(the TRECVID feature number, given for every feature or for none; only features have one) and ``count`` (a
published image count used by the class-balanced focal loss; given for every class or for none).

A feature's TREC topic is its number where the label set numbers its features, its name otherwise (names must
then be single words). Checkpoints and rank outputs keep the whole label set (``to_dict``), so a model is
readable without the file it was trained with.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

from dsdi.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_LABELSET = "ladi-v1"
ROLES = ("feature", "none", "other")
_CLASS_KEYS = {"name", "category", "role", "number", "count"}
_TOP_KEYS = {"name", "description", "classes"}


@dataclass(frozen=True)
class LabelClass:
    """One model output: its name, category, role and optional TRECVID feature number and published count."""

    name: str
    category: str
    role: str = "feature"
    number: int | None = None
    count: int | None = None


@dataclass(frozen=True)
class LabelSet:
    """The classes of a model in output order. Build with ``load_labelset`` or ``LabelSet.from_dict``."""

    name: str
    classes: tuple[LabelClass, ...]
    description: str = ""

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        """All class names in model output order."""
        return tuple(c.name for c in self.classes)

    @cached_property
    def features(self) -> tuple[str, ...]:
        """The ranked classes, in model output order."""
        return tuple(c.name for c in self.classes if c.role == "feature")

    @cached_property
    def none_classes(self) -> tuple[str, ...]:
        """The 'none' classes (trained, never ranked)."""
        return tuple(c.name for c in self.classes if c.role == "none")

    @cached_property
    def none_mask(self) -> tuple[bool, ...]:
        """True at the none-class positions, in class order."""
        return tuple(c.role == "none" for c in self.classes)

    @cached_property
    def counts(self) -> tuple[int, ...] | None:
        """Published image counts in class order, or None when the label set gives none."""
        return tuple(c.count for c in self.classes) if self.classes[0].count is not None else None

    @cached_property
    def categories(self) -> tuple[str, ...]:
        """The distinct categories in order of first appearance."""
        return tuple(dict.fromkeys(c.category for c in self.classes))

    @cached_property
    def feature_numbers(self) -> dict[str, int] | None:
        """Feature name -> TRECVID feature number, or None when the label set does not number its features."""
        numbered = {c.name: c.number for c in self.classes if c.role == "feature" and c.number is not None}
        return numbered or None

    def category_of(self, class_name: str) -> str:
        """The category of one class."""
        return self.classes[self.class_names.index(class_name)].category

    def topics(self) -> dict[str, int | str]:
        """Feature name -> its TREC topic: the feature number (int) where the label set has them, else the name."""
        numbers = self.feature_numbers
        return {name: numbers[name] if numbers else name for name in self.features}

    def with_feature_numbers(self, numbers: dict[str, int]) -> LabelSet:
        """This label set with its features renumbered (``--feature-numbers``); ``numbers`` covers every feature."""
        renumbered = tuple(LabelClass(c.name, c.category, c.role, numbers[c.name] if c.role == "feature" else None,
                                      c.count) for c in self.classes)
        return LabelSet(self.name, renumbered, self.description)

    def to_dict(self) -> dict:
        """Plain values (JSON and ``torch.load(weights_only=True)`` safe) that ``from_dict`` reads back."""
        classes = [{key: value for key, value in vars(c).items() if value is not None} for c in self.classes]
        return {"name": self.name, "description": self.description, "classes": classes}

    @cached_property
    def digest(self) -> str:
        """First 12 hex digits of the sha256 of the class list: equal label sets have equal digests."""
        return hashlib.sha256(json.dumps(self.to_dict()["classes"], sort_keys=True).encode()).hexdigest()[:12]

    def to_toml(self) -> str:
        """The label set as a TOML file ``load_labelset`` reads back."""
        lines = [f"name = {json.dumps(self.name)}", f"description = {json.dumps(self.description)}", "",
                 "classes = ["]
        for entry in self.to_dict()["classes"]:
            fields = ", ".join(f"{key} = {json.dumps(value)}" for key, value in entry.items())
            lines.append(f"  {{ {fields} }},")
        return "\n".join([*lines, "]"]) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str) -> LabelSet:
        """Validate a parsed label set; ``source`` names it in the one-line InputError for any fault."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: a label set is a table with 'name' and 'classes'")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise InputError(f"{source}: unknown keys {unknown}; a label set has only {sorted(_TOP_KEYS)}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{source}: needs a name, e.g. name = \"my-labels\"")
        entries = data.get("classes")
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{source}: needs a non-empty list 'classes' of {{ name = ..., category = ... }}")
        classes = tuple(_label_class(entry, number, source) for number, entry in enumerate(entries, start=1))
        labelset = cls(name.strip(), classes, str(data.get("description", "")))
        _check_consistent(labelset, source)
        return labelset


def _label_class(entry: object, position: int, source: str) -> LabelClass:
    """One validated class entry (``position``: 1-based, for the message)."""
    where = f"{source}: class {position}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not a table; write {{ name = \"...\", category = \"...\" }}")
    unknown = sorted(set(entry) - _CLASS_KEYS)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; a class has only {sorted(_CLASS_KEYS)}")
    for key in ("name", "category"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise InputError(f"{where} needs a non-empty text {key}")
    role = entry.get("role", "feature")
    if role not in ROLES:
        raise InputError(f"{where} ({entry['name']!r}): role {role!r} is not one of {', '.join(ROLES)}")
    for key in ("number", "count"):
        value = entry.get(key)
        if value is not None and (type(value) is not int or value < 0):
            raise InputError(f"{where} ({entry['name']!r}): {key} {value!r} is not a whole number >= 0")
    if entry.get("number") is not None and role != "feature":
        raise InputError(f"{where} ({entry['name']!r}): only features have a feature number, this one is {role}")
    return LabelClass(entry["name"].strip(), entry["category"].strip(), role, entry.get("number"),
                      entry.get("count"))


def _check_consistent(labelset: LabelSet, source: str) -> None:
    """Names distinct, at least one feature, numbers and counts all-or-none, numbers distinct, topics usable."""
    seen: set[str] = set()
    for c in labelset.classes:
        if c.name in seen:
            raise InputError(f"{source}: class {c.name!r} is listed twice; class names must be distinct")
        seen.add(c.name)
    if not labelset.features:
        raise InputError(f"{source}: no class has role = \"feature\"; at least one class must be ranked")
    features = [c for c in labelset.classes if c.role == "feature"]
    numbered = [c.name for c in features if c.number is not None]
    if numbered and len(numbered) != len(features):
        missing = [c.name for c in features if c.number is None]
        raise InputError(f"{source}: features {missing[:5]} have no number while others do; number every "
                         "feature or none")
    numbers = [c.number for c in features if c.number is not None]
    if len(set(numbers)) != len(numbers):
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        raise InputError(f"{source}: feature numbers {twice} are used twice; feature numbers must be distinct")
    counted = [c for c in labelset.classes if c.count is not None]
    if counted and len(counted) != len(labelset.classes):
        raise InputError(f"{source}: some classes have a count and some do not; give every class a count or none")
    if not numbered:
        spaced = [name for name in labelset.features if name.split() != [name]]
        if spaced:
            raise InputError(f"{source}: feature {spaced[0]!r} has a space, so it cannot be a TREC topic; "
                             "rename it or give every feature a number")


def builtin_labelset_names() -> tuple[str, ...]:
    """The names of the label sets shipped with dsdi, sorted."""
    folder = resources.files("dsdi") / "data_files" / "labelsets"
    return tuple(sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir()
                        if entry.name.endswith(".toml")))


@lru_cache(maxsize=32)
def _load_file(path: Path, source: str) -> LabelSet:
    """Parse and validate one label set file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{source}: no such file; pass a built-in label set name "
                         f"({', '.join(builtin_labelset_names())}) or a label set TOML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: cannot read it ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{source}: not valid TOML ({error})") from None
    return LabelSet.from_dict(data, source)


def load_labelset(spec: str | Path | None = None) -> LabelSet:
    """A built-in label set by name (``ladi-v1``, ``ladi-v2a``...) or a label set TOML file; None: ``ladi-v1``.

    A name that is neither built in nor an existing file, and any fault in the file, raise a one-line InputError.
    """
    spec = str(spec or DEFAULT_LABELSET)
    if spec in builtin_labelset_names():
        path = Path(str(resources.files("dsdi") / "data_files" / "labelsets" / f"{spec}.toml"))
        return _load_file(path, f"built-in label set {spec}")
    path = Path(spec)
    if not path.suffix and not path.exists():
        raise InputError(f"--labelset {spec}: no built-in label set has this name; choose one of "
                         f"{', '.join(builtin_labelset_names())} or pass a label set TOML file")
    return _load_file(path.resolve(), f"--labelset {spec}")


def labelset_of(stored: dict | None, source: str) -> LabelSet:
    """The label set a checkpoint or rank output recorded with ``to_dict``; ``ladi-v1`` for files written before
    label sets were recorded (``stored`` None)."""
    return load_labelset(DEFAULT_LABELSET) if stored is None else LabelSet.from_dict(stored, source)


def labelset_for_outputs(class_names: list[str] | tuple[str, ...], name: str) -> LabelSet:
    """The label set of a model that names its outputs (a Hugging Face ``id2label``): the built-in one with exactly
    these classes in this order, else one called ``name`` with every output a feature of its own category."""
    for builtin in builtin_labelset_names():
        labelset = load_labelset(builtin)
        if labelset.class_names == tuple(class_names):
            return labelset
    classes = [{"name": str(label), "category": str(label).split("_")[0] or str(label)} for label in class_names]
    return LabelSet.from_dict({"name": name, "classes": classes}, f"the outputs of {name}")


def read_feature_numbers(path: str | Path, labelset: LabelSet) -> dict[str, int]:
    """Feature name -> TRECVID feature number from a user's CSV (``--feature-numbers``, columns ``feature,number``)
    listing every feature of ``labelset`` once with distinct integer numbers; InputError naming the file (and
    line) otherwise."""
    import pandas as pd

    source = f"--feature-numbers {path}"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{source}: cannot read it as a CSV file ({error})") from None
    if not {"feature", "number"} <= set(table.columns):
        raise InputError(f"{source}: needs columns 'feature' and 'number' (found {list(table.columns)}); start the "
                         "file with the header line 'feature,number'")
    numbers: dict[str, int] = {}
    for row, (feature, text) in enumerate(zip(table["feature"], table["number"], strict=True)):
        if not text.strip().lstrip("-").isdigit():
            raise InputError(f"{source}, line {row + 2}: feature number {text!r} is not an integer")
        if int(text) in numbers.values():
            raise InputError(f"{source}, line {row + 2}: feature number {text} is used twice; feature numbers "
                             "must be distinct")
        numbers[feature] = int(text)
    unknown = sorted(set(numbers) - set(labelset.features))
    missing = [f for f in labelset.features if f not in numbers]
    if unknown or missing:
        raise InputError(f"{source}: unknown features {unknown}, missing features {missing}; list each of the "
                         f"{len(labelset.features)} features of label set {labelset.name} once")
    return numbers


LADI_V1 = load_labelset(DEFAULT_LABELSET)
"""LADI v1's 37 classes and 32 TRECVID features, numbered 1..32: the default label set."""
