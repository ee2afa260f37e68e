"""Ensemble files: which trained runs a ranking combines, with which checkpoint and weight (paper Table 3).

An ensemble file (``runs/ensembles/NAME.toml``; the paper's Table 3 rows ship there) says::

    name = "VAS4"              # default --run-id (so the output lands in submissions/VAS4); one word
    description = "12 models ensemble"
    paper_map = 0.360          # optional: the paper's test mAP, for tables (holdout_map: dsdi select's)
    agg = "max"                # clip score over frames (max | mean | top3); --agg overrides it
    members = [                # run folders under --runs-dir (default runs/; absolute paths as they are)
      {run = "A01", checkpoint = "best", weight = 1.0},   # checkpoint: best | last | snapshot_K (default best)
      {run = "C10", checkpoint = "last"},                 # weight default 1.0
      {model = "MITLL/LADI-v2-classifier-small", weight = 2.0},  # or a model as --models takes it: a checkpoint
    ]                                                     # file, a Hugging Face folder or a cached hub name
    fuse = [{out_dir = "submissions/VAS3", weight = 1.0}] # optional: (1*this + W*other)/(1+W); --fuse replaces it

``load_ensemble`` reads and checks a file (InputError naming the file and key), ``member_checkpoints`` finds
each member's checkpoint file and refuses, in one message, every member that is missing or unfinished
(``dsdi.train.run_folder``), and
``write_ensemble`` writes one (``dsdi select`` does). ``dsdi rank --ensemble FILE`` ranks with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.index.scores import AGGREGATIONS
from dsdi.models.classifier import is_hf_folder, is_hub_name
from dsdi.options import read_toml
from dsdi.train.run_folder import RunFolder
from dsdi.workspace import RUNS_DIR

CHECKPOINT_STEM = re.compile(r"best|last|snapshot_[1-9][0-9]*")
_TOP_KEYS = ("name", "description", "paper_map", "holdout_map", "agg", "members", "fuse")
_MEMBER_KEYS = ("run", "checkpoint", "model", "weight")
_FUSE_KEYS = ("out_dir", "weight")


@dataclass(frozen=True)
class Member:
    """One model of an ensemble and its weight: a run folder and the checkpoint it contributes (``<stem>.pt``), or
    ``model``, a model as ``--models`` takes it (a checkpoint file, a Hugging Face folder or hub name; run None)."""

    run: Path | None
    checkpoint: str = "best"
    weight: float = 1.0
    model: str | None = None

    @property
    def label(self) -> str:
        """How messages name the member: the model, or the run plus the checkpoint when it is not ``best``."""
        if self.model is not None:
            return self.model
        return str(self.run) if self.checkpoint == "best" else f"{self.run} ({self.checkpoint})"


@dataclass
class Ensemble:
    """An ensemble file's contents (see the module docstring); ``path``: the file it was read from, if any."""

    name: str
    members: list[Member]
    agg: str = "max"
    fuse: list[tuple[Path, float]] = field(default_factory=list)
    description: str = ""
    paper_map: float | None = None
    holdout_map: float | None = None
    path: Path | None = None

    @property
    def weights(self) -> list[float]:
        return [member.weight for member in self.members]


def _number(value: Any, where: str, minimum: float, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value <= minimum):
        bound = f"above {minimum:g}" if strict else f"at least {minimum:g}"
        raise InputError(f"{where} must be a finite number {bound}, got {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} must be non-empty text, got {value!r}")
    return value


def _table(value: Any, where: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a table like {{{keys[0]} = ...}}, got {value!r}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(keys)}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list [...], got {value!r}")
    return value


def _member(value: Any, where: str) -> Member:
    table = _table(value, where, _MEMBER_KEYS)
    if ("run" in table) == ("model" in table):
        raise InputError(f"{where}: give run (a run folder, e.g. run = \"A01\") or model (a checkpoint file, Hugging "
                         "Face folder or hub name), one of the two")
    weight = _number(table.get("weight", 1.0), f"{where}.weight", 0.0)
    if "model" in table:
        if "checkpoint" in table:
            raise InputError(f"{where}: checkpoint goes with run, not with model")
        return Member(None, weight=weight, model=_text(table["model"], f"{where}.model"))
    checkpoint = table.get("checkpoint", "best")
    if not isinstance(checkpoint, str) or not CHECKPOINT_STEM.fullmatch(checkpoint):
        raise InputError(f"{where}.checkpoint {checkpoint!r}: choose best, last or snapshot_K (K = 1, 2, ...)")
    return Member(Path(_text(table["run"], f"{where}.run")), checkpoint, weight)


def ensemble_from_dict(data: dict, source: str, default_name: str) -> Ensemble:
    """An Ensemble from a parsed ensemble file; InputError naming ``source`` and the key of a bad value."""
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_TOP_KEYS)}")
    name = _text(data.get("name", default_name), f"{source}: name")
    if name.split() != [name]:
        raise InputError(f"{source}: name {name!r} must be one word (it is the default --run-id)")
    if "members" not in data:
        raise InputError(f"{source}: lacks members = [{{run = \"A01\"}}, ...]")
    items = _list(data["members"], f"{source}: members")
    members = [_member(item, f"{source}: members[{i}]") for i, item in enumerate(items)]
    if not members:
        raise InputError(f"{source}: members is empty; list at least one {{run = \"A01\"}}")
    seen: set[tuple[Path | None, str, str | None]] = set()
    for member in members:
        if (member.run, member.checkpoint, member.model) in seen:
            raise InputError(f"{source}: member {member.label} is listed twice; give it once with the summed weight")
        seen.add((member.run, member.checkpoint, member.model))
    if sum(member.weight for member in members) <= 0:
        raise InputError(f"{source}: members' weights sum to 0; give at least one a positive weight")
    agg = data.get("agg", "max")
    if agg not in AGGREGATIONS:
        raise InputError(f"{source}: agg {agg!r}: choose one of {', '.join(AGGREGATIONS)}")
    fuse = []
    for i, item in enumerate(_list(data.get("fuse", []), f"{source}: fuse")):
        table = _table(item, f"{source}: fuse[{i}]", _FUSE_KEYS)
        if "out_dir" not in table or "weight" not in table:
            raise InputError(f"{source}: fuse[{i}] needs out_dir and weight, e.g. "
                             "{out_dir = \"submissions/other\", weight = 0.5}")
        fuse.append((Path(_text(table["out_dir"], f"{source}: fuse[{i}].out_dir")),
                     _number(table["weight"], f"{source}: fuse[{i}].weight", 0.0, strict=True)))
    scores = {key: None if data.get(key) is None else _number(data[key], f"{source}: {key}", 0.0)
              for key in ("paper_map", "holdout_map")}
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InputError(f"{source}: description must be text, got {description!r}")
    return Ensemble(name, members, agg, fuse, description, **scores)


def load_ensemble(path: str | Path) -> Ensemble:
    """The ensemble file at ``path`` (name defaults to the file's stem); InputError naming the file and key."""
    path = Path(path)
    ensemble = ensemble_from_dict(read_toml(path), str(path), path.stem)
    ensemble.path = path
    return ensemble


def member_checkpoints(ensemble: Ensemble, runs_dir: str | Path = RUNS_DIR) -> list[Path]:
    """Each member's checkpoint file ``runs_dir/<run>/<checkpoint>.pt`` (an absolute run path as it is), or its
    ``model`` as written.

    One InputError lists every member that is not ready: its run folder is missing, its checkpoint file is
    missing, or the run is not finished (``RunFolder.is_finished``: a ``last`` or ``best`` of an unfinished run is
    not the model the ensemble means); a model that is no file, Hugging Face folder or hub name. Of the checkpoints
    it reads last.pt's epoch only (a hub name is looked up in the cache when the model is loaded)."""
    paths, problems = [], []
    for member in ensemble.members:
        if member.model is not None:
            paths.append(Path(member.model))
            if not (Path(member.model).is_file() or is_hf_folder(Path(member.model)) or is_hub_name(member.model)):
                problems.append(f"{member.label}: no such checkpoint file, Hugging Face model folder or hub name")
            continue
        run = RunFolder(Path(runs_dir) / member.run)
        checkpoint = run.checkpoint(member.checkpoint)
        paths.append(checkpoint)
        if not run.path.is_dir():
            problems.append(f"{member.label}: no run folder {run} (train it, e.g. dsdi train --config "
                            f"{Path(runs_dir) / member.run.name}.toml)")
        elif not checkpoint.is_file():
            problems.append(f"{member.label}: {checkpoint} not found (training unfinished, or no such checkpoint)")
        elif reason := run.unfinished_reason():
            problems.append(f"{member.label}: unfinished in {run}: {reason} (resume it with dsdi train --out {run} "
                            "--resume)")
    if problems:
        where = ensemble.path or ensemble.name
        raise InputError(f"{where}: {len(problems)} of {len(ensemble.members)} members not ready: "
                         + "; ".join(problems))
    return paths


def _toml_text(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_ensemble(path: str | Path, ensemble: Ensemble, comment: str = "") -> None:
    """Write ``ensemble`` as an ensemble file at ``path`` (atomically); ``comment``: lines put on top as # text."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"name = {_toml_text(ensemble.name)}"]
    if ensemble.description:
        lines.append(f"description = {_toml_text(ensemble.description)}")
    for key in ("paper_map", "holdout_map"):
        if getattr(ensemble, key) is not None:
            lines.append(f"{key} = {getattr(ensemble, key)!r}")
    lines += [f"agg = {_toml_text(ensemble.agg)}", "members = ["]
    lines += [f"  {{model = {_toml_text(m.model)}, weight = {float(m.weight)!r}}}," if m.model is not None else
              f"  {{run = {_toml_text(m.run.as_posix())}, checkpoint = {_toml_text(m.checkpoint)}, "
              f"weight = {float(m.weight)!r}}}," for m in ensemble.members]
    lines.append("]")
    if ensemble.fuse:
        items = ", ".join(f"{{out_dir = {_toml_text(p.as_posix())}, weight = {float(w)!r}}}" for p, w in ensemble.fuse)
        lines.append(f"fuse = [{items}]")
    text = "\n".join(lines) + "\n"
    ensemble_from_dict(_parse(text), str(path), Path(path).stem)  # never write a file load_ensemble refuses
    write_text_atomic(Path(path), text)


def _parse(text: str) -> dict:
    from dsdi.options import tomllib

    return tomllib.loads(text)
