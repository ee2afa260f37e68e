"""Ensemble selection (``dsdi select``): greedy forward selection with replacement on the common hold-out.

Caruana, Niculescu-Mizil, Crew & Ksikes, "Ensemble selection from libraries of models" (ICML 2004): start from
the empty ensemble and, ``size`` times, add the model (repetitions allowed) whose addition gives the equal-weight
mean of the selected multiset the highest hold-out score; a model's weight is how often it was picked. The first
pick is therefore the best single model. Ties go to the model listed first.

The score is the hold-out mAP of ``dsdi.train.metrics`` (mean per-class average precision, a class positive where its
soft target is >= 0.5, as training's validation); the inputs are the sigmoids each run stored for its
checkpoint on the common hold-out images (``dsdi.train.predictions``), so no model runs here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.rank.ensemble import CHECKPOINT_STEM, Ensemble, Member, write_ensemble
from dsdi.train.metrics import lrap, per_class_average_precision
from dsdi.train.predictions import read_predictions, read_targets
from dsdi.train.run_folder import RunFolder
from dsdi.workspace import RUNS_DIR

Metric = Callable[[np.ndarray, np.ndarray], float]  # (targets (N, C), scores (N, C)) -> higher is better


def holdout_map(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-class AP over the classes with a positive (soft target >= 0.5) hold-out image."""
    return per_class_average_precision(targets, scores)[1]


@dataclass
class Selection:
    """picks: the model index added at each step; scores: the metric of the ensemble after each step; counts:
    how often each model was picked (its weight)."""

    picks: list[int]
    scores: list[float]
    counts: np.ndarray


def forward_selection(predictions: np.ndarray, targets: np.ndarray, size: int,
                      metric: Metric = holdout_map) -> Selection:
    """Greedy forward selection with replacement (module docstring) of ``size`` picks.

    ``predictions``: (M models, N images, C classes) hold-out sigmoids; ``targets``: (N, C) soft targets. A
    candidate whose ensemble scores NaN (e.g. no class has a positive) never beats a finite one."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim != 3 or predictions.shape[1:] != np.shape(targets) or len(predictions) == 0 or size < 1:
        raise ValueError(f"need (M>0, N, C) predictions, (N, C) targets and size >= 1; got {predictions.shape}, "
                         f"{np.shape(targets)}, {size}")
    total = np.zeros(predictions.shape[1:])
    picks, scores = [], []
    for step in range(1, size + 1):
        values = [metric(targets, (total + candidate) / step) for candidate in predictions]
        best = max(range(len(values)), key=lambda m: (not math.isnan(values[m]), values[m], -m))
        total += predictions[best]
        picks.append(best)
        scores.append(values[best])
    return Selection(picks, scores, np.bincount(picks, minlength=len(predictions)))


@dataclass
class Candidate:
    """A run and the checkpoint whose stored hold-out sigmoids are a selection candidate."""

    run_dir: Path
    checkpoint: str

    @property
    def label(self) -> str:
        return self.run_dir.name if self.checkpoint == "best" else f"{self.run_dir.name}:{self.checkpoint}"


def parse_candidate(text: str, checkpoint: str) -> Candidate:
    """'runs/C10' -> that run's ``checkpoint``; 'runs/C10:last' or 'runs/C10:snapshot_3' -> that checkpoint."""
    folder, sep, stem = text.rpartition(":")
    if sep and folder and CHECKPOINT_STEM.fullmatch(stem):
        return Candidate(Path(folder), stem)
    return Candidate(Path(text), checkpoint)


@dataclass
class SelectionReport:
    """What ``select_ensemble`` found and wrote: the ensemble (weights = counts), the per-step hold-out mAP and
    the (mAP, LRAP) of the selection, of all candidates equally weighted and of the best single candidate."""

    ensemble: Ensemble
    candidates: list[Candidate]
    selection: Selection
    images: int
    selected: tuple[float, float]
    all_equal: tuple[float, float]
    best_single: tuple[float, float]
    best_single_label: str


def load_holdout(candidates: list[Candidate]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image ids, targets (N, 37), predictions (M, N, 37)) of the candidates' stored hold-out files.

    InputError when a file is missing or malformed, or when the runs' hold-out image ids or targets differ
    (naming the runs that differ from the first)."""
    first_targets = read_targets(candidates[0].run_dir, "holdout")
    ids = list(first_targets.index)
    differ, stacked = [], []
    for candidate in candidates:
        targets = read_targets(candidate.run_dir, "holdout")
        sigmoids = read_predictions(candidate.run_dir, candidate.checkpoint, "holdout")
        if list(targets.index) != ids or not np.allclose(targets.to_numpy(), first_targets.to_numpy(), atol=1e-6):
            differ.append(str(candidate.run_dir))
        elif list(sigmoids.index) != ids:
            raise InputError(f"{candidate.run_dir}: predictions/{candidate.checkpoint}.holdout.csv covers other "
                             "images than its targets.holdout.csv; delete both and resume the run")
        else:
            stacked.append(sigmoids.to_numpy(np.float64))
    if differ:
        raise InputError(f"runs {', '.join(differ)} have other hold-out images or targets than "
                         f"{candidates[0].run_dir}; ensemble selection needs one common hold-out (train every run "
                         "with the same labels and hold-out)")
    if not ids:
        raise InputError(f"{candidates[0].run_dir}: the hold-out is empty; nothing to select on")
    return ids, first_targets.to_numpy(np.float64), np.stack(stacked)


def _member_run(run_dir: Path, runs_dir: Path) -> Path:
    """The member's run as an ensemble file names it: relative to runs_dir when inside it, else absolute."""
    try:
        return run_dir.resolve().relative_to(Path(runs_dir).resolve())
    except ValueError:
        return run_dir.resolve()


def select_ensemble(runs: list[str], size: int, out: str | Path, checkpoint: str = "best",
                    runs_dir: str | Path = RUNS_DIR, agg: str = "max") -> SelectionReport:
    """Select ``size`` picks among ``runs`` (RUN_DIR or RUN_DIR:CHECKPOINT) on their stored hold-out sigmoids,
    write the ensemble file ``out`` (name = its stem; weights = counts) and return the report."""
    if size < 1:
        raise InputError(f"--size must be at least 1, got {size}")
    if not CHECKPOINT_STEM.fullmatch(checkpoint):
        raise InputError(f"--checkpoint {checkpoint!r}: choose best, last or snapshot_K")
    name = Path(out).stem
    if Path(out).suffix != ".toml" or not re.fullmatch(r"\S+", name):
        raise InputError(f"--out {out}: give an ensemble file NAME.toml (NAME: one word, the default run id)")
    candidates = [parse_candidate(text, checkpoint) for text in runs]
    if not candidates:
        raise InputError("give the run folders to select from: dsdi select runs/A01 runs/B02 ... --out FILE.toml")
    labels = [(c.run_dir.resolve(), c.checkpoint) for c in candidates]
    twice = sorted({c.label for c, key in zip(candidates, labels, strict=True) if labels.count(key) > 1})
    if twice:
        raise InputError(f"{', '.join(twice)} given twice; selection already repeats models as it needs")
    unfinished = [f"{c.run_dir} ({reason})" for c in candidates if (reason := RunFolder(c.run_dir).unfinished_reason())]
    if unfinished:
        raise InputError(f"not finished: {'; '.join(unfinished)}; rank --ensemble takes finished runs only: resume "
                         "each with dsdi train --out RUN --resume, or leave it out")
    _, targets, predictions = load_holdout(candidates)
    selection = forward_selection(predictions, targets, size)

    def scores(mixed: np.ndarray) -> tuple[float, float]:
        return holdout_map(targets, mixed), lrap(targets, mixed)

    weights = selection.counts.astype(np.float64)
    selected = scores(np.tensordot(weights / weights.sum(), predictions, axes=1))
    singles = [holdout_map(targets, p) for p in predictions]
    best = max(range(len(singles)), key=lambda m: (not math.isnan(singles[m]), singles[m], -m))
    members = [Member(_member_run(c.run_dir, Path(runs_dir)), c.checkpoint, float(count))
               for c, count in zip(candidates, selection.counts, strict=True) if count]
    ensemble = Ensemble(name, members, agg, description=f"dsdi select: greedy forward selection with replacement "
                        f"(Caruana et al. 2004), {size} picks from {len(candidates)} runs",
                        holdout_map=round(selected[0], 6))
    write_ensemble(out, ensemble, comment=(
        f"Written by dsdi select (greedy forward selection with replacement on the hold-out mAP, {size} picks).\n"
        f"Candidates: {' '.join(c.label for c in candidates)}\n"
        f"Rank with: dsdi rank --ensemble {out} --clips CLIPS   (member runs are under --runs-dir {runs_dir})"))
    ensemble.path = Path(out)
    return SelectionReport(ensemble, candidates, selection, len(targets), selected,
                           scores(predictions.mean(axis=0)), scores(predictions[best]), candidates[best].label)
