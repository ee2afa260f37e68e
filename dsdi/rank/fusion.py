"""Fusion (paper 2.5) of the per-model clip scores in a score index into one ranked run, written as a rank output
folder, and ``dsdi fuse``: re-fusing and re-ranking a rank output (or some of its models) from its score index.

The ensemble score is the weighted mean over models of their aggregated clip scores, class by class: the ranking's
label set (``--labelset``, else the first model's) names the classes, and each model contributes its output of the
same name (``fusion_labelset``), so that models of different label sets fuse when each has every ranked class; ``--fuse
OTHER:W`` then mixes in another rank output's fused scores: ``(1 * this + W * other) / (1 + W)``, so the paper's 2:1
fusion (this run 2, other 1) is ``OTHER:0.5`` and 5:1 is ``OTHER:0.2``.

The rank output folder it reads and writes, and its run.json, are ``dsdi.rank.output``'s.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.errors import InputError
from dsdi.files import atomic_output, file_sha256
from dsdi.index.db import registered_models
from dsdi.index.store import ScoreIndex
from dsdi.labels.labelset import LabelSet
from dsdi.options import check_field_value
from dsdi.rank.config import RankConfig, check_model_weights
from dsdi.rank.output import FAILURE_COLUMNS, FUSION_KEYS, FusedRun, RankOutput, RankResult, RunFacts
from dsdi.train.run_folder import model_checkpoint


def fusion_labelset(ranked: LabelSet, members: list[tuple[str, tuple[str, ...]]]) -> LabelSet:
    """The label set a fusion of ``members`` (a description naming the model and its label set, its class names
    in output order) writes: ``ranked``'s classes that every member has (all of them when the members share its
    classes). InputError naming both label sets when a member lacks one of ``ranked``'s features."""
    for description, classes in members:
        missing = [feature for feature in ranked.features if feature not in classes]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise InputError(f"{description} lacks {shown} of label set {ranked.name}, so it cannot be fused into a "
                             f"{ranked.name} ranking; rank the models of each label set separately, or pass "
                             "--labelset with classes every model has")
    common = [c for c in ranked.classes if all(c.name in classes for _, classes in members)]
    return ranked if len(common) == len(ranked.classes) else LabelSet(ranked.name, tuple(common), ranked.description)


def fused_scores(index: ScoreIndex, model_keys: list[str], weights: list[float], agg: str,
                 other: list[tuple[Path, float]], labelset: LabelSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clip table: shot_id index, clip_path, frames, status, one fused column per class of ``labelset``; peak
    frame times of the highest-weight model: shot_id index, one column per feature, in seconds). Each model's
    scores are taken by class name (its classes as registered in the index); clips lacking any model's scores
    are left out. weights: one per model, non-negative, positive sum.

    Vectorised: each model's stored scores are read in bulk (``ScoreIndex.stored_scores``: only the aggregation
    used, and the peak times of the highest-weight model) and summed into one (clips, C) array."""
    clips = index.clip_set()
    weight = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    leader = int(np.argmax(weight))
    fused = np.zeros((len(clips.shots), len(labelset.class_names)))
    present = np.ones(len(clips.shots), dtype=bool)
    frames, status = np.zeros(len(clips.shots), dtype=np.int64), np.empty(len(clips.shots), dtype=object)
    peaks = np.full((len(clips.shots), len(labelset.features)), np.nan)
    for k, (key, w) in enumerate(zip(model_keys, weight, strict=True)):
        own = index.model_classes(key)
        columns = [own.index(name) for name in labelset.class_names]
        stored = index.stored_scores(key, (agg, "peak") if k == leader else (agg,), details=k == 0)
        here = np.zeros(len(clips.shots), dtype=bool)
        here[stored.positions] = True
        present &= here
        fused[stored.positions] += w * stored.values[agg][:, columns]
        if k == 0:
            frames[stored.positions], status[stored.positions] = stored.frames, stored.status
        if k == leader:
            peaks[stored.positions] = stored.values["peak"][:, [own.index(name) for name in labelset.features]]
    keep = np.flatnonzero(present)
    shots = pd.Index(clips.shots[keep].tolist(), name="shot_id", dtype=object)
    fused = _mix_other_runs(pd.DataFrame(fused[keep], index=shots, columns=list(labelset.class_names)), other)
    table = pd.DataFrame({"clip_path": clips.paths[keep], "frames": frames[keep], "status": status[keep]},
                         index=shots)
    return table.join(fused), pd.DataFrame(peaks[keep], index=shots, columns=list(labelset.features))


def _mix_other_runs(fused: pd.DataFrame, other: list[tuple[Path, float]]) -> pd.DataFrame:
    """(1 * this + sum W * other) / (1 + sum W) per clip, over the runs that scored that clip."""
    if not other:
        return fused
    total, norm = fused.copy(), pd.Series(1.0, index=fused.index)
    for folder, weight in other:
        scores = RankOutput(Path(folder)).read_clip_scores()
        missing = [name for name in fused.columns if name not in scores.columns]
        if missing:
            raise InputError(f"--fuse {folder}: its clip scores lack the classes {missing[:4]} of this ranking; fuse "
                             "rank outputs of the same label set")
        theirs = scores[list(fused.columns)].reindex(fused.index)
        present = theirs.notna().all(axis=1)
        total[present] += weight * theirs[present]
        norm[present] += weight
    return total.div(norm, axis=0)


def fuse_and_write(index: ScoreIndex, output: RankOutput, facts: RunFacts, started: float, clips_scored: int,
                   frames_scored: int, scoring_elapsed_s: float | None = None,
                   clips_reused: int | None = None) -> RankResult:
    """Fuse the index as ``facts`` (run.json, every key of FUSION_KEYS) say, rank top-k per feature and write every
    output of ``output``, run.json with this call's counts. clips_reused: clips taken whole from the index (None:
    every ranked clip, as in dsdi fuse). Raises InputError when no clip could be ranked (failures.csv and run.json
    are written first)."""
    other = [(Path(run.out_dir), float(run.weight)) for run in facts.fuse]
    table, peaks = fused_scores(index, facts.model_keys, facts.weights, facts.agg, other, facts.label_set())
    failures = pd.DataFrame(index.failures(), columns=list(FAILURE_COLUMNS))
    elapsed = time.perf_counter() - started if scoring_elapsed_s is None else scoring_elapsed_s
    reused = len(table) if clips_reused is None else clips_reused
    index_bytes = index.size_bytes()
    facts = dataclasses.replace(facts, clips_ranked=len(table), clips_failed=len(failures), clips_scored=clips_scored,
                                clips_reused=reused, index_bytes=index_bytes, elapsed_s=round(elapsed, 3),
                                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    xml_path, trec_path = output.write(facts, table, peaks, failures, elapsed)
    if not len(table):
        raise InputError(f"no clip could be ranked ({len(failures)} failed; see {output.failures_csv})")
    labelset = facts.label_set()
    note = "" if labelset.feature_numbers else (f"no TRECVID XML: label set {labelset.name} has no TRECVID feature "
                                                "numbers; the TREC run ranks its classes by name")
    return RankResult(output.path, facts.run_id, len(table), len(failures), clips_scored, frames_scored, elapsed,
                      xml_path, trec_path, reused, index_bytes, note)


def _run_models_named(models: list[tuple[str, str, str]], ref: str | Path) -> list[int]:
    """Positions in models (checkpoint, key, backbone) of run.json named by ref: its key, the run directory or
    checkpoint path the rank was given, or else a checkpoint file with the same content."""
    def same(a: Path, b: Path) -> bool:
        return a == b or a.resolve() == b.resolve()

    hits = [i for i, (_, key, _) in enumerate(models) if key == str(ref)]
    hits = hits or [i for i, (path, _, _) in enumerate(models) if same(Path(ref), Path(path))
                    or same(Path(ref), Path(path).parent)]
    if not hits and Path(ref).exists():
        digest = file_sha256(model_checkpoint(ref))[:16]
        hits = [i for i, (_, key, _) in enumerate(models) if key.startswith(f"{digest}@")]
    return hits


def select_models(facts: RunFacts, refs: list[str | Path], run_json: Path,
                  stored: dict[str, tuple[str, str, tuple[str, ...]]] | None = None) -> list[tuple[str, str, str]]:
    """(checkpoint, model key, backbone) of each ref: one of run.json's models, named by its model key, the run
    directory or checkpoint path the rank was given (as recorded in run.json) or a checkpoint file with the same
    content; else a model key of ``stored`` (key -> (checkpoint, backbone, classes): every model ranked into the
    folder's index, e.g. the same checkpoint ranked with other --tta / --tiles). InputError when a ref matches none,
    several or an already chosen model."""
    models = list(zip(facts.models, facts.model_keys, facts.backbones, strict=True))
    chosen: list[tuple[str, str, str]] = []
    for ref in refs:
        hits = [models[i] for i in _run_models_named(models, ref)]
        hits = hits or [(path, key, backbone) for key, (path, backbone, _) in (stored or {}).items()
                        if key == str(ref)]
        if len(hits) != 1 or hits[0] in chosen:
            problem = "is not" if not hits else ("was given twice" if hits[0] in chosen else "matches several")
            raise InputError(f"--models {ref}: {problem} among the models of {run_json} "
                             f"({', '.join(facts.models)}) or the model keys of its score index; pass a run "
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
    facts = source.read_facts(needed=FUSION_KEYS)
    target = RankOutput(Path(new_out)) if new_out is not None else source
    check_field_value(RankConfig, "agg", agg)
    if run_id is not None and run_id.split() != [run_id]:
        raise InputError(f"--run-id {run_id!r}: give a run name without whitespace")
    stored = registered_models(source.index_file)
    if models:
        chosen = select_models(facts, list(models), source.run_json, stored)
        paths, keys, backbones = (list(column) for column in zip(*chosen, strict=True))
        views = facts.views if set(keys) <= set(facts.model_keys) else None  # each key names its own --tta / --tiles
        facts = dataclasses.replace(facts, models=paths, model_keys=keys, backbones=backbones,
                                    weights=[1.0] * len(chosen), views=views)
    if models:
        members = [(f"model {key} ({path})", stored[key][2])
                   for path, key in zip(facts.models, facts.model_keys, strict=True)]
        labelset = fusion_labelset(facts.label_set(), members)
        facts = dataclasses.replace(facts, labelset=labelset.to_dict())
    if model_weights is not None:
        facts = dataclasses.replace(facts, weights=check_model_weights(list(model_weights), len(facts.model_keys)))
    facts = dataclasses.replace(facts, agg=agg or facts.agg, topk=topk or facts.topk, run_id=run_id or facts.run_id)
    if other is not None:
        facts = dataclasses.replace(facts, fuse=[FusedRun(str(path), weight) for path, weight in other])
    if target.path.resolve() != source.path.resolve():
        if target.run_json.exists() or target.index_file.exists():
            raise InputError(f"--out {target.path}: already holds a rank output; choose a new folder, or re-fuse "
                             f"it in place with: dsdi fuse {target.path}")
        _copy_index(source, target)
        facts = dataclasses.replace(facts, scores_from=str(source.path))
    index = ScoreIndex(target.path)
    try:
        return fuse_and_write(index, target, facts, started, 0, 0, scoring_elapsed_s=facts.elapsed_s)
    finally:
        index.close()
