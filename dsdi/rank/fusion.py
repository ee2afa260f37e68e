"""Fusion (paper 2.5) of the per-model clip scores in a score index into one ranked run, and the rank output folder
that ``dsdi rank``, ``dsdi fuse`` and ``dsdi report`` share (``RankOutput``).

The ensemble score is the weighted mean over models of their aggregated clip scores; ``--fuse OTHER:W`` then mixes
in another rank output's fused scores: ``(1 * this + W * other) / (1 + W)``, so the paper's 2:1 fusion (this run 2,
other 1) is ``OTHER:0.5`` and 5:1 is ``OTHER:0.2``.

A rank output folder holds:

- ``run.json``          the run's facts: run_id, models (checkpoint paths), model_keys, backbones, weights, agg, fps,
  topk, fuse, pid, tr_type, priority, tta, tiles ("RxC" or null), tile_overlap (null without tiles; the three
  are left out after ``dsdi fuse --models`` chose a key of another rank call), clips_ranked, clips_failed,
  clips_scored (this call), clips_reused (taken whole from the index), index_bytes (the score index on disk),
  elapsed_s, created (and scores_from, when ``dsdi fuse --out`` made it from another folder)
- ``clip_scores.csv``   shot_id, clip_path, frames, status and the 37 fused class scores, one row per ranked clip
- ``peak_frames.csv``   shot_id and per feature the time (s, into clip_path) of the highest-weight model's best frame
- ``failures.csv``      clip_path, shot_id, reason of the clips that could not be decoded
- ``scores.sqlite``     the score index (``dsdi.index.store``) every output is fused from
- ``<run_id>.xml``, ``<run_id>.trec``  the TRECVID submission and the same ranking as a TREC run
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.errors import InputError
from dsdi.files import atomic_output, file_sha256, write_text_atomic
from dsdi.index.db import registered_models
from dsdi.index.store import INDEX_NAME, ScoreIndex
from dsdi.labels.schema import CLASSES, FEATURES, load_feature_numbers
from dsdi.models.checkpoint import resolve_checkpoint
from dsdi.options import check_field_value
from dsdi.rank.config import RankConfig, check_model_weights
from dsdi.trecvid.submission import Rankings, rank_features, read_run, write_submission_xml, write_trec_run

RUN_JSON = "run.json"
CLIP_SCORES_CSV = "clip_scores.csv"
PEAK_FRAMES_CSV = "peak_frames.csv"
FAILURES_CSV = "failures.csv"
_CLIP_COLUMNS = ("clip_path", "frames", "status")
_FAILURE_COLUMNS = ("clip_path", "shot_id", "reason")


@dataclass
class RankResult:
    """What a rank or fuse call produced. clips_scored / frames_scored count this call's new work (over all
    torchrun processes); clips_reused the ranked clips whose every model's scores came from the index;
    index_bytes the score index's size on disk; output paths are None in torchrun processes other than 0."""

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


@dataclass
class RankedRun:
    """A rank output's contents. clip_scores: shot_id index, clip_path, frames, status, 37 class columns (NaN where
    empty); peak_times: shot_id index, 32 feature columns in seconds; failures: clip_path, shot_id, reason."""

    facts: dict
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

    def read_facts(self) -> dict:
        """run.json as a dict; InputError when it is missing or not a JSON object."""
        try:
            facts = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reason = "not found" if isinstance(error, FileNotFoundError) else str(error).splitlines()[0][:160]
            raise InputError(f"{self.run_json}: cannot read ({reason}); point at a dsdi rank output folder") from None
        if not isinstance(facts, dict):
            raise InputError(f"{self.run_json}: not a JSON object; re-run dsdi rank or dsdi fuse")
        return facts

    def read_clip_scores(self) -> pd.DataFrame:
        """clip_scores.csv (see RankedRun): every class column present, unparseable or empty scores NaN."""
        if not self.clip_scores_csv.is_file():
            raise InputError(f"{self.clip_scores_csv}: not found; pass the output folder of `dsdi rank`")
        table = _read_shot_table(self.clip_scores_csv, ("clip_path",), numeric=CLASSES)
        return table.reindex(columns=[*_CLIP_COLUMNS, *CLASSES])

    def read_peak_times(self) -> pd.DataFrame:
        """peak_frames.csv (see RankedRun); no rows when the file is absent."""
        if not self.peak_frames_csv.is_file():
            return pd.DataFrame(columns=list(FEATURES), index=pd.Index([], name="shot_id"), dtype=float)
        return _read_shot_table(self.peak_frames_csv, (), numeric=FEATURES).reindex(columns=list(FEATURES))

    def read_failures(self) -> pd.DataFrame:
        """failures.csv (see RankedRun); no rows when the file is absent."""
        if not self.failures_csv.is_file():
            return pd.DataFrame(columns=list(_FAILURE_COLUMNS))
        return _read_csv(self.failures_csv, _FAILURE_COLUMNS)

    def read(self) -> RankedRun:
        """Everything in the folder: clip_scores.csv is required, the other files are optional. The rankings are
        the submitted run (<run_id>.trec, else .xml) when present, else every clip with a finite score ranked."""
        facts = self.read_facts() if self.run_json.is_file() else {}
        clip_scores = self.read_clip_scores()
        run_id = facts.get("run_id")
        submitted = [path for path in (self.trec(run_id), self.xml(run_id)) if path.is_file()] if run_id else []
        rankings = read_run(submitted[0]) if submitted else ranked_by_score(clip_scores)
        return RankedRun(facts, clip_scores, self.read_peak_times(), self.read_failures(), rankings)

    def write(self, facts: dict, clip_scores: pd.DataFrame, peak_times: pd.DataFrame, failures: pd.DataFrame,
              elapsed_s: float) -> tuple[Path | None, Path | None]:
        """Write every output from fused scores (see RankedRun; run.json last); returns the (xml, trec) paths, None
        when no clip was ranked. Each file is written atomically."""
        write_text_atomic(self.failures_csv, failures.to_csv(index=False))
        write_text_atomic(self.clip_scores_csv, clip_scores.to_csv())
        write_text_atomic(self.peak_frames_csv, peak_times.to_csv(float_format="%.3f"))
        xml_path = trec_path = None
        if len(clip_scores):
            run_id = facts["run_id"]
            rankings = rank_features(clip_scores[list(CLASSES)], facts["topk"], load_feature_numbers())
            xml_path, trec_path = self.xml(run_id), self.trec(run_id)
            write_submission_xml(xml_path, rankings, pid=facts["pid"], run_desc=_run_description(facts),
                                 tr_type=facts["tr_type"], priority=facts["priority"], elapsed_s=elapsed_s)
            write_trec_run(trec_path, rankings, run_id)
        write_text_atomic(self.run_json, json.dumps(facts, indent=2) + "\n")
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


def _read_shot_table(path: Path, required: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    """A CSV indexed by unique shot ids; the ``numeric`` columns as float64, empty or unparseable cells NaN."""
    table = _read_csv(path, ("shot_id", *required))
    repeated = table["shot_id"][table["shot_id"].duplicated()]
    if len(repeated):
        raise InputError(f"{path}: shot id {repeated.iloc[0]!r} appears twice; re-run dsdi rank or dsdi fuse")
    table = table.set_index("shot_id")
    for column in numeric:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype(np.float64)
    return table


def ranked_by_score(clip_scores: pd.DataFrame) -> Rankings:
    """Per feature every clip with a finite score in clip_scores (see RankedRun), best first, ties by shot id (the
    order of ``submission.rank_features``)."""
    features = clip_scores[list(FEATURES)].astype(np.float64)
    rankings = rank_features(features.where(np.isfinite(features), -np.inf), max(1, len(features)))
    return {fnum: [(shot, score) for shot, score in ranking if math.isfinite(score)]
            for fnum, ranking in rankings.items()}


def _run_description(facts: dict) -> str:
    return (f"dsdi: {len(facts['models'])} model(s), {facts['agg']} over {facts['fps']:g} fps frames"
            + "".join(f", fused with {f['out_dir']} at weight {f['weight']:g}" for f in facts["fuse"]))


def fused_scores(index: ScoreIndex, model_keys: list[str], weights: list[float], agg: str,
                 other: list[tuple[Path, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clip table: shot_id index, clip_path, frames, status, 37 fused class columns; peak frame times of the
    highest-weight model: shot_id index, 32 feature columns in seconds). Clips lacking any model's scores
    are left out. weights: one per model, non-negative, positive sum.

    Vectorised: each model's stored scores are read in bulk (``ScoreIndex.stored_scores``: only the aggregation
    used, and the peak times of the highest-weight model) and summed into one (clips, 37) array."""
    clips = index.clip_set()
    weight = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    leader = int(np.argmax(weight))
    fused = np.zeros((len(clips.shots), len(CLASSES)))
    present = np.ones(len(clips.shots), dtype=bool)
    frames, status = np.zeros(len(clips.shots), dtype=np.int64), np.empty(len(clips.shots), dtype=object)
    peaks = np.full((len(clips.shots), len(FEATURES)), np.nan)
    for k, (key, w) in enumerate(zip(model_keys, weight, strict=True)):
        stored = index.stored_scores(key, (agg, "peak") if k == leader else (agg,), details=k == 0)
        here = np.zeros(len(clips.shots), dtype=bool)
        here[stored.positions] = True
        present &= here
        fused[stored.positions] += w * stored.values[agg]
        if k == 0:
            frames[stored.positions], status[stored.positions] = stored.frames, stored.status
        if k == leader:
            peaks[stored.positions] = stored.values["peak"][:, : len(FEATURES)]
    keep = np.flatnonzero(present)
    shots = pd.Index(clips.shots[keep].tolist(), name="shot_id", dtype=object)
    fused = _mix_other_runs(pd.DataFrame(fused[keep], index=shots, columns=list(CLASSES)), other)
    table = pd.DataFrame({"clip_path": clips.paths[keep], "frames": frames[keep], "status": status[keep]},
                         index=shots)
    return table.join(fused), pd.DataFrame(peaks[keep], index=shots, columns=list(FEATURES))


def _mix_other_runs(fused: pd.DataFrame, other: list[tuple[Path, float]]) -> pd.DataFrame:
    """(1 * this + sum W * other) / (1 + sum W) per clip, over the runs that scored that clip."""
    if not other:
        return fused
    total, norm = fused.copy(), pd.Series(1.0, index=fused.index)
    for folder, weight in other:
        theirs = RankOutput(Path(folder)).read_clip_scores()[list(CLASSES)].reindex(fused.index)
        present = theirs.notna().all(axis=1)
        total[present] += weight * theirs[present]
        norm[present] += weight
    return total.div(norm, axis=0)


def fuse_and_write(index: ScoreIndex, output: RankOutput, facts: dict, started: float, clips_scored: int,
                   frames_scored: int, scoring_elapsed_s: float | None = None,
                   clips_reused: int | None = None) -> RankResult:
    """Fuse the index as ``facts`` (run.json's keys) say, rank top-k per feature and write every output of
    ``output``. clips_reused: clips taken whole from the index (None: every ranked clip, as in dsdi fuse).
    Raises InputError when no clip could be ranked (failures.csv and run.json are written first)."""
    other = [(Path(f["out_dir"]), float(f["weight"])) for f in facts["fuse"]]
    table, peaks = fused_scores(index, facts["model_keys"], facts["weights"], facts["agg"], other)
    failures = pd.DataFrame(index.failures(), columns=list(_FAILURE_COLUMNS))
    elapsed = time.perf_counter() - started if scoring_elapsed_s is None else scoring_elapsed_s
    reused = len(table) if clips_reused is None else clips_reused
    index_bytes = index.size_bytes()
    facts.update(clips_ranked=len(table), clips_failed=len(failures), clips_scored=clips_scored,
                 clips_reused=reused, index_bytes=index_bytes, elapsed_s=round(elapsed, 3),
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    xml_path, trec_path = output.write(facts, table, peaks, failures, elapsed)
    if not len(table):
        raise InputError(f"no clip could be ranked ({len(failures)} failed; see {output.failures_csv})")
    return RankResult(output.path, facts["run_id"], len(table), len(failures), clips_scored, frames_scored, elapsed,
                      xml_path, trec_path, reused, index_bytes)


def _run_models_named(models: list[tuple[str, str, str]], ref: str | Path) -> list[int]:
    """Positions in models (checkpoint, key, backbone) of run.json named by ref: its key, the run directory or
    checkpoint path the rank was given, or else a checkpoint file with the same content."""
    def same(a: Path, b: Path) -> bool:
        return a == b or a.resolve() == b.resolve()

    hits = [i for i, (_, key, _) in enumerate(models) if key == str(ref)]
    hits = hits or [i for i, (path, _, _) in enumerate(models) if same(Path(ref), Path(path))
                    or same(Path(ref), Path(path).parent)]
    if not hits and Path(ref).exists():
        digest = file_sha256(resolve_checkpoint(ref))[:16]
        hits = [i for i, (_, key, _) in enumerate(models) if key.startswith(f"{digest}@")]
    return hits


def select_models(facts: dict, refs: list[str | Path], run_json: Path,
                  stored: dict[str, tuple[str, str]] | None = None) -> list[tuple[str, str, str]]:
    """(checkpoint, model key, backbone) of each ref: one of run.json's models, named by its model key, the run
    directory or checkpoint path the rank was given (as recorded in run.json) or a checkpoint file with the same
    content; else a model key of ``stored`` (key -> (checkpoint, backbone): every model ranked into the folder's
    index, e.g. the same checkpoint ranked with other --tta / --tiles). InputError when a ref matches none,
    several or an already chosen model."""
    models = list(zip(facts["models"], facts["model_keys"], facts["backbones"], strict=True))
    chosen: list[tuple[str, str, str]] = []
    for ref in refs:
        hits = [models[i] for i in _run_models_named(models, ref)]
        hits = hits or [(path, key, backbone) for key, (path, backbone) in (stored or {}).items() if key == str(ref)]
        if len(hits) != 1 or hits[0] in chosen:
            problem = "is not" if not hits else ("was given twice" if hits[0] in chosen else "matches several")
            raise InputError(f"--models {ref}: {problem} among the models of {run_json} "
                             f"({', '.join(facts['models'])}) or the model keys of its score index; pass a run "
                             "directory, checkpoint or model key listed there, once")
        chosen.append(hits[0])
    return chosen


def _copy_index(source: RankOutput, target: RankOutput) -> None:
    """A consistent copy of source's score index as target's (SQLite's online backup: source is only read, and
    its connection is a plain one so that closing it leaves no -wal/-shm file behind)."""
    if not source.index_file.is_file():
        raise InputError(f"{source.index_file}: not found; dsdi fuse re-ranks the scores dsdi rank stored there")
    target.path.mkdir(parents=True, exist_ok=True)
    reader = sqlite3.connect(source.index_file)
    try:
        with atomic_output(target.index_file) as tmp:
            writer = sqlite3.connect(tmp)
            try:
                reader.backup(writer)
            finally:
                writer.close()
    finally:
        reader.close()


def fuse(out_dir: str | Path, model_weights: list[float] | None = None, agg: str | None = None,
         other: list[tuple[Path, float]] | None = None, topk: int | None = None, *,
         models: list[str | Path] | None = None, new_out: str | Path | None = None,
         run_id: str | None = None) -> RankResult:
    """Re-fuse and re-rank a rank output from its score index (no decoding).

    ``models``: rank only these of the run's models (see ``select_models``), equally weighted unless
    ``model_weights`` (one per chosen model) are given. ``agg``, ``other`` (fused runs), ``topk``, ``run_id``:
    None keeps run.json's. ``new_out``: write every output (and a copy of the score index, so the new folder
    can be re-fused, reported or resumed by itself) into this folder, which must not hold a rank output yet, and
    leave ``out_dir`` untouched; None rewrites ``out_dir``'s outputs.
    """
    started = time.perf_counter()
    source = RankOutput(Path(out_dir))
    facts = source.read_facts()
    target = RankOutput(Path(new_out)) if new_out is not None else source
    check_field_value(RankConfig, "agg", agg)
    if run_id is not None and run_id.split() != [run_id]:
        raise InputError(f"--run-id {run_id!r}: give a run name without whitespace")
    if models:
        chosen = select_models(facts, list(models), source.run_json, registered_models(source.index_file))
        if not {key for _, key, _ in chosen} <= set(facts["model_keys"]):  # each key names its own --tta / --tiles
            for name in ("tta", "tiles", "tile_overlap"):
                facts.pop(name, None)
        facts["models"], facts["model_keys"], facts["backbones"] = (list(c) for c in zip(*chosen, strict=True))
        facts["weights"] = [1.0] * len(chosen)
    if model_weights is not None:
        facts["weights"] = check_model_weights(list(model_weights), len(facts["model_keys"]))
    facts.update(agg=agg or facts["agg"], topk=topk or facts["topk"], run_id=run_id or facts["run_id"])
    if other is not None:
        facts["fuse"] = [{"out_dir": str(p), "weight": w} for p, w in other]
    if target.path.resolve() != source.path.resolve():
        if target.run_json.exists() or target.index_file.exists():
            raise InputError(f"--out {target.path}: already holds a rank output; choose a new folder, or re-fuse "
                             f"it in place with: dsdi fuse {target.path}")
        _copy_index(source, target)
        facts["scores_from"] = str(source.path)
    index = ScoreIndex(target.path)
    try:
        return fuse_and_write(index, target, facts, started, 0, 0, scoring_elapsed_s=facts.get("elapsed_s"))
    finally:
        index.close()
