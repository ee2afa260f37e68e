"""``dsdi study``: build the worlds, train every variant with every seed, rank the clips, measure the claims and
write the report. Every stage resumes: a world whose spec file matches is kept, ``dsdi sweep`` skips finished runs
and resumes broken ones, ``dsdi rank`` re-uses the scores in its index; so an interrupted study is continued by
running the same command again.

Layout under the study folder (``runs/study`` by ``make study``)::

    worlds/<world>/            dsdi synth output (+ spec.json, written last)
    labels/<world>-<mode>.csv  dsdi labels output
    recipes/<variant>.toml     one TrainConfig per variant (dsdi.study.design)
    models/<variant>-s<seed>/  dsdi sweep output
    rank/all/                  dsdi rank: every model's best.pt (and the snapshot checkpoints) on the default world
    rank/{plain,flip,tiles}/   dsdi rank: the baseline models plain, with --tta flip, with --tiles 2x2
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels.crowd import make_labels
from dsdi.rank.config import RankConfig
from dsdi.rank.scoring import rank
from dsdi.study.design import (
    BASELINE,
    INFERENCE_OPTIONS,
    VARIANTS,
    WORLDS,
    StudySize,
    WorldSpec,
    labels_path,
    ranked_checkpoints,
    run_dir,
    world_path,
    write_recipes,
)
from dsdi.study.report import write_report
from dsdi.synth import build_world
from dsdi.train.run_folder import BEST_NAME
from dsdi.train.sweep import sweep

console = Console(stderr=True)


class Stage:
    """Prints the study's stage headers with the time since the study started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        console.print(f"\n== [{time.perf_counter() - self.started:5.0f} s] study: {text}", highlight=False)


def build_worlds(root: Path, size: StudySize) -> None:
    """Synthesise every world of WORLDS and its label tables (skipping a world built with the same spec, and its
    label tables unless one is missing)."""
    for spec in WORLDS:
        folder = world_path(root, spec.name)
        wanted = json.dumps({"world": asdict(spec), "size": asdict(size)}, sort_keys=True)
        spec_file = folder / "spec.json"
        rebuilt = not (spec_file.is_file() and spec_file.read_text() == wanted)
        if rebuilt:
            _build_world(folder, spec, size)
            write_text_atomic(spec_file, wanted)
        for mode in spec.label_modes:
            labels = labels_path(root, spec.name, mode)
            if rebuilt or not labels.is_file():
                make_labels(folder / "ladi_aggregated_responses_url.tsv", labels, mode)


def _build_world(folder: Path, spec: WorldSpec, size: StudySize) -> None:
    build_world(folder, n_images=size.images, n_clips=size.clips if spec.with_clips else 0, seed=size.world_seed,
                image_size=size.image_size, clip_size=size.clip_size, clip_seconds=size.clip_seconds,
                miss_rate=spec.miss_rate, false_rate=spec.false_rate, outlier_rate=spec.outlier_rate)


def train_variants(root: Path, size: StudySize) -> None:
    """``dsdi sweep`` over every variant's recipe and seed; InputError naming every failed run."""
    result = sweep(write_recipes(root, size), seeds=list(size.seeds), out_root=root / "models")
    if not result.ok:
        failed = "; ".join(f"{run.name}: {run.error}" for run in result.failures)
        raise InputError(f"study: {len(result.failures)} training run(s) failed ({failed}); fix the cause and run "
                         "the study again (finished runs are kept)")


def rank_clips(root: Path, size: StudySize) -> None:
    """Rank the default world's clips with every checkpoint (rank/all), then the baseline models plain, flipped
    and tiled (rank/<option>), recording each call's sampled frames per second (every model scoring each frame) in
    rank/<option>/speed.json."""
    clips = world_path(root, "default") / "clips"
    common = {"clips": clips, "device": "cpu", "run_id": "study", "topk": 1000}
    rank(RankConfig(models=ranked_checkpoints(root, size), out=root / "rank" / "all", **common).resolved())
    baseline = [run_dir(root, BASELINE, seed) / BEST_NAME for seed in size.seeds]
    for name, settings in INFERENCE_OPTIONS.items():
        out = root / "rank" / name
        speed = out / "speed.json"
        result = rank(RankConfig(models=baseline, out=out, **common, **settings).resolved())
        if result.frames_scored and not result.clips_reused:  # only a call that scored every clip times it
            write_text_atomic(speed, json.dumps({"frames": result.frames_scored, "models": len(baseline),
                                                 "seconds": result.elapsed_s,
                                                 "frames_per_s": result.frames_scored / result.elapsed_s}))


def run_study(root: str | Path, report: str | Path, size: StudySize = StudySize()) -> Path:
    """The whole study (module docstring); returns the report's path."""
    root = Path(root)
    stage = Stage()
    if size.epochs < 1 or len(size.seeds) < 2:
        raise InputError(f"study: need epochs >= 1 and at least 2 seeds (got {size.epochs}, {list(size.seeds)})")
    stage(f"1/4 worlds ({size.images} images each, {size.clips} clips in the default world)")
    build_worlds(root, size)
    stage(f"2/4 training {len(VARIANTS)} variants x {len(size.seeds)} seeds ({size.backbone}, {size.epochs} epochs)")
    train_variants(root, size)
    stage("3/4 ranking the default world's clips")
    rank_clips(root, size)
    stage(f"4/4 measuring the claims -> {report}")
    path = write_report(root, size, Path(report))
    stage(f"done: {path}")
    return path
