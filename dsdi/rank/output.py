"""The rank output folder that ``dsdi rank``, ``dsdi fuse`` and ``dsdi report`` share (``RankOutput``), the record
of its run.json (``RunFacts``) and what a rank or fuse call returns (``RankResult``).

A rank output folder holds:

- ``run.json``          the run's facts (``RunFacts``): schema_version, run_id, models (checkpoint paths), model_keys,
  backbones, weights, agg, fps, topk, labelset (the ranking's label set, ``LabelSet.to_dict``; absent: ladi-v1),
  fuse, pid, tr_type, priority, tta, tiles ("RxC" or null), tile_overlap (null
  without tiles; the three are left out after ``dsdi fuse --models`` chose a key of another rank call),
  embed_model and embed_model_key (the model whose clip embeddings the index holds, and its key; absent when
  none were stored),
  clips_ranked, clips_failed, clips_scored (this call), clips_reused (taken whole from the index), index_bytes (the
  score index on disk), elapsed_s, created (and scores_from, when ``dsdi fuse --out`` made it from another folder),
  working_dir (where dsdi rank ran: relative clip paths are relative to it)
- ``clip_scores.csv``   shot_id, clip_path, frames, status and the fused score of each class of the label set, one
  row per ranked clip
- ``peak_frames.csv``   shot_id and per feature the time (s, into clip_path) of the highest-weight model's best frame
- ``failures.csv``      clip_path, shot_id, reason of the clips that could not be decoded
- ``scores.sqlite``     the score index (``dsdi.index.store``) every output is fused from
- ``<run_id>.trec``     the ranking as a TREC run (topics: feature numbers, or class names for a label set without)
- ``<run_id>.xml``      the TRECVID submission, for a label set with feature numbers (ladi-v1)
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.index.store import INDEX_NAME
from dsdi.labels.labelset import LADI_V1, LabelSet, labelset_of
from dsdi.trecvid.submission import Rankings, rank_features, read_run, write_submission_xml, write_trec_run

RUN_JSON = "run.json"
CLIP_SCORES_CSV = "clip_scores.csv"
PEAK_FRAMES_CSV = "peak_frames.csv"
FAILURES_CSV = "failures.csv"
RUN_JSON_VERSION = 1
"""run.json's schema_version; a run.json without one (written before it was recorded) has version 1's keys."""
_CLIP_COLUMNS = ("clip_path", "frames", "status")
FAILURE_COLUMNS = ("clip_path", "shot_id", "reason")
_PER_MODEL = ("models", "model_keys", "backbones", "weights")


@dataclass(frozen=True)
class FusedRun:
    """Another rank output mixed in by ``--fuse OUT_DIR:WEIGHT``."""

    out_dir: str
    weight: float


@dataclass(frozen=True)
class ViewFacts:
    """The views of a frame every model was scored with: tta "none" or "flip"; tiles "RxC" or None; tile_overlap
    (a fraction of a tile) or None without tiles."""

    tta: str
    tiles: str | None = None
    tile_overlap: float | None = None


@dataclass(frozen=True)
class RunFacts:
    """run.json, one attribute per key (``views`` stands for its tta, tiles and tile_overlap keys). None: the key is
    not in the file (hand-made folders, or ``views`` after ``dsdi fuse --models`` mixed rank calls); ``dsdi fuse``
    needs every key of :data:`FUSION_KEYS`. Numbers keep the type run.json gave them (an int where a float is
    expected too)."""

    schema_version: int = RUN_JSON_VERSION
    run_id: str | None = None
    models: list[str] | None = None
    model_keys: list[str] | None = None
    backbones: list[str] | None = None
    weights: list[float] | None = None
    agg: str | None = None
    fps: float | None = None
    topk: int | None = None
    labelset: dict | None = None
    fuse: list[FusedRun] | None = None
    pid: str | None = None
    tr_type: str | None = None
    priority: int | None = None
    views: ViewFacts | None = None
    embed_model: str | None = None
    embed_model_key: str | None = None
    clips_ranked: int | None = None
    clips_failed: int | None = None
    clips_scored: int | None = None
    clips_reused: int | None = None
    index_bytes: int | None = None
    elapsed_s: float | None = None
    created: str | None = None
    scores_from: str | None = None
    working_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        """run.json's object: the keys in field order (views as its three keys), absent (None) ones left out."""
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, ViewFacts):
                data.update(dataclasses.asdict(value))
            elif value is not None:
                data[field.name] = [dataclasses.asdict(run) for run in value] if field.name == "fuse" else value
        return data

    @classmethod
    def from_json(cls, data: Any, path: Path) -> RunFacts:
        """The record of run.json's parsed object; one-line InputError naming ``path`` and the first wrong key."""
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a JSON object; re-run dsdi rank or dsdi fuse")
        version = data.get("schema_version", RUN_JSON_VERSION)
        if _fits(version, int) and version > RUN_JSON_VERSION:
            raise InputError(f"{path}: schema_version {version} is newer than this dsdi reads ({RUN_JSON_VERSION}); "
                             "upgrade dsdi")
        try:
            if not _fits(version, int) or version < 1:
                raise _MalformedError(f"schema_version {json.dumps(version)}: expected an integer >= 1")
            return cls._parsed(dict(data))
        except _MalformedError as error:
            raise InputError(f"{path}: {error}; correct it, or re-run dsdi rank to write it anew") from None

    @classmethod
    def _parsed(cls, data: dict[str, Any]) -> RunFacts:
        if "views" in data:
            raise _MalformedError("unknown key 'views'")
        view_keys = [field.name for field in dataclasses.fields(ViewFacts)]
        views = {key: data.pop(key) for key in view_keys if key in data}
        if views and "tta" not in views:
            raise _MalformedError(f"{', '.join(views)} without tta")
        facts = cls(**_checked_fields(cls, data, ""))
        if views:
            facts = dataclasses.replace(facts, views=ViewFacts(**_checked_fields(ViewFacts, views, "")))
        lengths = {key: len(getattr(facts, key)) for key in _PER_MODEL if getattr(facts, key) is not None}
        if len(set(lengths.values())) > 1:
            raise _MalformedError(f"{', '.join(f'{key} has {n}' for key, n in lengths.items())} entries; each needs "
                                  "one per model")
        return facts

    def label_set(self) -> LabelSet:
        """The ranking's label set (``ladi-v1`` for a run.json written before label sets were recorded)."""
        return labelset_of(self.labelset, "run.json's labelset")

    def missing(self, keys: tuple[str, ...]) -> list[str]:
        """Those of ``keys`` (attribute names) that run.json lacks."""
        return [key for key in keys if getattr(self, key) is None]


FUSION_KEYS = ("run_id", "models", "model_keys", "backbones", "weights", "agg", "fps", "topk", "fuse", "pid",
               "tr_type", "priority")
"""The run.json keys ``dsdi fuse`` re-fuses and re-ranks from (``dsdi rank`` writes every one)."""


class _MalformedError(ValueError):
    """A run.json value of the wrong type: what is wrong, without the file's name."""


_SCALARS = {str: "a string", int: "an integer", float: "a number"}


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value is a str, int or float (an int counts as a float; a bool as neither)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return f"a list (each {_describe(typing.get_args(kind)[0])})"
    if kind is dict:
        return "an object"
    if dataclasses.is_dataclass(kind):
        return f"an object with {', '.join(field.name for field in dataclasses.fields(kind))}"
    return _SCALARS[kind]


def _parsed_value(value: Any, hint: Any, where: str) -> Any:
    """A JSON value as the type hint says: str, int, float, list[...] or a dataclass (from an object); None where
    the hint allows it."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kind = next(k for k in kinds if k is not type(None))
    if value is None and type(None) in kinds:
        return None
    if typing.get_origin(kind) is list and isinstance(value, list):
        return [_parsed_value(item, typing.get_args(kind)[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):
        return kind(**_checked_fields(kind, value, f"{where}."))
    if kind is dict and isinstance(value, dict):
        return value
    if kind in _SCALARS and _fits(value, kind):
        return value
    raise _MalformedError(f"{where}: expected {_describe(kind)}, got {json.dumps(value)[:80]}")


def _checked_fields(cls: Any, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data``'s values checked against ``cls``'s fields: no unknown key, every field without a default there."""
    hints = typing.get_type_hints(cls)
    unknown = [key for key in data if key not in hints]
    if unknown:
        raise _MalformedError(f"unknown key {prefix}{unknown[0]!r}")
    needed = [field.name for field in dataclasses.fields(cls)
              if field.name not in data and field.default is dataclasses.MISSING]
    if needed:
        raise _MalformedError(f"{prefix.rstrip('.') or 'the object'} lacks {', '.join(needed)}")
    return {key: _parsed_value(value, hints[key], f"{prefix}{key}") for key, value in data.items()}


@dataclass
class RankResult:
    """What a rank or fuse call produced. clips_scored / frames_scored count this call's new work (over all
    torchrun processes); clips_reused the ranked clips whose every model's scores came from the index;
    index_bytes the score index's size on disk; output paths are None in torchrun processes other than 0 (xml_path
    also for a label set without feature numbers: ``note`` says so)."""

    out_dir: Path
    run_id: str
    clips_ranked: int
    clips_failed: int
    clips_scored: int
    frames_scored: int
    elapsed_s: float
    xml_path: Path | None = None
    trec_path: Path | None = None
    clips_reused: int = 0
    index_bytes: int = 0
    note: str = ""


@dataclass
class RankedRun:
    """A rank output's contents. facts: run.json (every key absent when there is none); clip_scores: shot_id index,
    clip_path, frames, status, one column per class of the label set (NaN where empty); peak_times: shot_id index,
    one column per feature, in seconds; failures: clip_path, shot_id, reason."""

    facts: RunFacts
    clip_scores: pd.DataFrame
    peak_times: pd.DataFrame
    failures: pd.DataFrame
    rankings: Rankings


@dataclass(frozen=True)
class RankOutput:
    """A ``dsdi rank`` output folder: where each of its files lies, how to read them and how to write them."""

    path: Path

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def clip_scores_csv(self) -> Path:
        return self.path / CLIP_SCORES_CSV

    @property
    def peak_frames_csv(self) -> Path:
        return self.path / PEAK_FRAMES_CSV

    @property
    def failures_csv(self) -> Path:
        return self.path / FAILURES_CSV

    @property
    def index_file(self) -> Path:
        return self.path / INDEX_NAME

    def xml(self, run_id: str) -> Path:
        return self.path / f"{run_id}.xml"

    def trec(self, run_id: str) -> Path:
        return self.path / f"{run_id}.trec"

    def clip_file(self, clip_path: str, facts: RunFacts) -> Path:
        """The file of a clip_scores.csv ``clip_path``: as written when absolute or found from here, else relative
        to the folder dsdi rank ran in (run.json's working_dir), else to this output folder."""
        path = Path(clip_path)
        if path.is_absolute() or path.exists():
            return path
        ran_in = Path(facts.working_dir) / path if facts.working_dir else None
        return ran_in if ran_in is not None and ran_in.exists() else self.path / path

    def read_facts(self, needed: tuple[str, ...] = ()) -> RunFacts:
        """run.json's record; InputError when it is missing, not a JSON object, has a value of the wrong type, or
        lacks one of the ``needed`` keys (e.g. :data:`FUSION_KEYS`)."""
        try:
            data = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reason = "not found" if isinstance(error, FileNotFoundError) else str(error).splitlines()[0][:160]
            raise InputError(f"{self.run_json}: cannot read ({reason}); point at a dsdi rank output folder") from None
        facts = RunFacts.from_json(data, self.run_json)
        missing = facts.missing(needed)
        if missing:
            raise InputError(f"{self.run_json}: lacks {', '.join(missing)}; re-run dsdi rank to write a complete one")
        return facts

    def read_clip_scores(self) -> pd.DataFrame:
        """clip_scores.csv (see RankedRun): the clip columns (present, empty where the file lacks them), then every
        other column of the file as a class column, unparseable or empty scores NaN."""
        if not self.clip_scores_csv.is_file():
            raise InputError(f"{self.clip_scores_csv}: not found; pass the output folder of `dsdi rank`")
        table = _read_per_shot_csv(self.clip_scores_csv, ("clip_path",), numeric=None, text=_CLIP_COLUMNS)
        classes = [column for column in table.columns if column not in _CLIP_COLUMNS]
        return table.reindex(columns=[*_CLIP_COLUMNS, *classes])

    def read_peak_times(self) -> pd.DataFrame:
        """peak_frames.csv (see RankedRun); no rows when the file is absent."""
        if not self.peak_frames_csv.is_file():
            return pd.DataFrame(index=pd.Index([], name="shot_id"), dtype=float)
        return _read_per_shot_csv(self.peak_frames_csv, (), numeric=None)

    def read_failures(self) -> pd.DataFrame:
        """failures.csv (see RankedRun); no rows when the file is absent."""
        if not self.failures_csv.is_file():
            return pd.DataFrame(columns=list(FAILURE_COLUMNS))
        return _read_csv(self.failures_csv, FAILURE_COLUMNS)

    def read(self) -> RankedRun:
        """Everything in the folder: clip_scores.csv is required, the other files are optional. The rankings are
        the submitted run (<run_id>.trec, else .xml) when present, else every clip with a finite score ranked."""
        facts = self.read_facts() if self.run_json.is_file() else RunFacts()
        clip_scores = self.read_clip_scores()
        run_id = facts.run_id
        submitted = [path for path in (self.trec(run_id), self.xml(run_id)) if path.is_file()] if run_id else []
        rankings = read_run(submitted[0]) if submitted else ranked_by_score(clip_scores, facts.label_set())
        return RankedRun(facts, clip_scores, self.read_peak_times(), self.read_failures(), rankings)

    def write(self, facts: RunFacts, clip_scores: pd.DataFrame, peak_times: pd.DataFrame, failures: pd.DataFrame,
              elapsed_s: float) -> tuple[Path | None, Path | None]:
        """Write every output from fused scores (see RankedRun; run.json last, with every key of FUSION_KEYS);
        returns the (xml, trec) paths, None when no clip was ranked (xml also for a label set without feature
        numbers). Each file is written atomically."""
        write_text_atomic(self.failures_csv, failures.to_csv(index=False))
        write_text_atomic(self.clip_scores_csv, clip_scores.to_csv())
        write_text_atomic(self.peak_frames_csv, peak_times.to_csv(float_format="%.3f"))
        xml_path = trec_path = None
        if len(clip_scores):
            labelset = facts.label_set()
            rankings = rank_features(clip_scores[list(labelset.class_names)], facts.topk, labelset.topics())
            trec_path = self.trec(facts.run_id)
            if labelset.feature_numbers:
                xml_path = self.xml(facts.run_id)
                write_submission_xml(xml_path, rankings, pid=facts.pid, run_desc=_run_description(facts),
                                     tr_type=facts.tr_type, priority=facts.priority, elapsed_s=elapsed_s)
            write_trec_run(trec_path, rankings, facts.run_id)
        write_text_atomic(self.run_json, json.dumps(facts.to_json(), indent=2) + "\n")
        return xml_path, trec_path


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV of text cells (nothing read as NaN); InputError naming the file when unreadable or lacking a column."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, ValueError) as error:  # pandas' ParserError and EmptyDataError too
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise InputError(f"{path}: not a readable CSV ({reason}); is this a `dsdi rank` output folder?") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; is this a `dsdi rank` output folder?")
    return table


def _read_per_shot_csv(path: Path, required: tuple[str, ...], numeric: tuple[str, ...] | None,
                       text: tuple[str, ...] = ()) -> pd.DataFrame:
    """clip_scores.csv or peak_frames.csv: one row per shot id, indexed by it; the ``numeric`` columns (None: every
    column but the ``text`` ones) as float64, empty or unparseable cells NaN."""
    table = _read_csv(path, ("shot_id", *required))
    repeated = table["shot_id"][table["shot_id"].duplicated()]
    if len(repeated):
        raise InputError(f"{path}: shot id {repeated.iloc[0]!r} appears twice; re-run dsdi rank or dsdi fuse")
    table = table.set_index("shot_id")
    for column in numeric if numeric is not None else [c for c in table.columns if c not in text]:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype(np.float64)
    return table


def ranked_by_score(clip_scores: pd.DataFrame, labelset: LabelSet = LADI_V1) -> Rankings:
    """Per feature of ``labelset`` every clip with a finite score in clip_scores (see RankedRun), best first, ties
    by shot id (the order of ``submission.rank_features``)."""
    features = clip_scores[list(labelset.features)].astype(np.float64)
    rankings = rank_features(features.where(np.isfinite(features), -np.inf), max(1, len(features)),
                             labelset.topics())
    return {fnum: [(shot, score) for shot, score in ranking if math.isfinite(score)]
            for fnum, ranking in rankings.items()}


def _run_description(facts: RunFacts) -> str:
    return (f"dsdi: {len(facts.models)} model(s), {facts.agg} over {facts.fps:g} fps frames"
            + "".join(f", fused with {run.out_dir} at weight {run.weight:g}" for run in facts.fuse))
