"""``dsdi study``: pretrain the trunk, build the LADI-shaped world, cache the trunk's features, train every member with
every seed as a head on them (in parallel processes), measure the claims and write the report. Every stage resumes: a
world or feature cache whose spec file matches is kept, the trunk's ``dsdi sweep`` run skips or resumes, a member's
scores file is kept while its spec (recipe, head settings, features) is the same, so an interrupted study continues
when the same command runs again (and new seeds add only their own heads).

Layout under the study folder (``runs/study`` by ``make study``)::

    trunk/                     the pretraining world, its labels, trunk.toml and models/trunk-s0/ (dsdi sweep)
    world/                     dsdi.synth.build_ladi_world output, clips/, clips.csv, clip_truth.csv, qrels.txt
    labels/<crowd>-<mode>.csv  dsdi labels output of each crowd's answers
    features/images.npz        the trunk's features of the training images (views, tiles) and hold-out images
    features/clips.npz         the trunk's features of every clip frame's views (dsdi.study.trunk.clip_features)
    scores/<recipe>-m<split>-s<seed>.npz   a member's hold-out sigmoids and clip scores (dsdi.study.measure)
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from dsdi.errors import InputError
from dsdi.files import atomic_output, write_text_atomic
from dsdi.index.scores import AGGREGATIONS, ClipScores
from dsdi.labels.crowd import make_labels
from dsdi.labels.schema import CLASSES
from dsdi.progress import progress_bar
from dsdi.rank.views import Views
from dsdi.runtime import default_workers
from dsdi.study.design import CROWDS, LABEL_MODES, StudySize, members, recipes
from dsdi.study.heads import (
    BATCH,
    DROPOUT,
    HIDDEN,
    LR,
    TRAIN_SHARE,
    WEIGHT_DECAY,
    HeadData,
    HeadRecipe,
    head_scores,
    train_head,
)
from dsdi.study.measure import Measurements, load_arrays, scores_path
from dsdi.study.report import write_report
from dsdi.study.trunk import Trunk, clip_features, image_features, pretrain_trunk
from dsdi.synth.clips import build_clips
from dsdi.synth.ladi_world import build_ladi_world
from dsdi.train.run_folder import RunFolder

console = Console(stderr=True)
TRUNK_WORLD_SEED = 1000
HEAD_WORKERS_CAP = 4
OPTION_VIEWS = {"plain": Views(), "flip": Views(flip=True), "tiles": Views(tiles=(2, 2))}


class Stage:
    """Prints the study's stage headers with the time since the study started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        console.print(f"\n== [{time.perf_counter() - self.started:5.0f} s] study: {text}", highlight=False)


def _fresh(spec_file: Path, wanted: dict) -> bool:
    """True when spec_file holds ``wanted`` (the output beside it was made with these settings)."""
    return spec_file.is_file() and spec_file.read_text() == json.dumps(wanted, sort_keys=True)


def _world_spec(size: StudySize) -> dict:
    keys = ("train_images", "holdout_images", "outliers", "holdout_min_positives", "clips", "image_size", "clip_size",
            "clip_seconds", "world_seed")
    return {key: asdict(size)[key] for key in keys}


def build_study_world(root: Path, size: StudySize) -> Path:
    """The LADI-shaped world with its clips and label tables under root/world and root/labels (kept when its spec
    matches)."""
    folder, spec = root / "world", _world_spec(size)
    if not _fresh(folder / "spec.json", spec):
        world = build_ladi_world(folder, size.train_images, size.holdout_images, size.outliers, size.world_seed,
                                 image_size=size.image_size, holdout_min_positives=size.holdout_min_positives)
        clips = build_clips(folder / "clips", size.clips, [size.world_seed, 2], size.clip_size, size.clip_seconds)
        for name, text in (("clips.csv", clips.clips_csv), ("clip_truth.csv", clips.truth_csv),
                           ("qrels.txt", clips.qrels)):
            write_text_atomic(folder / name, text)
        answers = {"ladi": world.annotations, "independent": world.independent_annotations}
        for crowd in CROWDS:
            for mode in LABEL_MODES:
                make_labels(answers[crowd], root / "labels" / f"{crowd}-{mode}.csv", mode)
        write_text_atomic(folder / "spec.json", json.dumps(spec, sort_keys=True))
    return folder


def _trunk(root: Path, size: StudySize) -> Trunk:
    world = {"n_images": size.trunk_images, "n_clips": 0, "seed": size.world_seed + TRUNK_WORLD_SEED,
             "image_size": tuple(size.image_size)}
    training = {"backbone": size.backbone, "loss": "bce", "img_size": size.img_size, "epochs": size.trunk_epochs,
                "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "workers": 1,
                "device": "cpu", "pretrained": False, "holdout_fraction": 0.0, "val_fraction": 0.1}
    return Trunk(pretrain_trunk(root / "trunk", world, training))


def cache_features(root: Path, size: StudySize, trunk: Trunk) -> None:
    """features/images.npz and features/clips.npz (kept when their spec matches the world and the trunk)."""
    world = root / "world"
    trained = RunFolder(trunk.checkpoint.parent).metrics_csv.read_text()
    spec = {**_world_spec(size), "views": size.views, "trunk": trained}
    if _fresh(root / "features" / "spec.json", spec):
        return
    table = pd.read_csv(world / "true_labels.csv", dtype={"image_id": str})
    pool = table[table["split"] != "holdout"]
    holdout = table[table["split"] == "holdout"]
    views, tiles = image_features(trunk, pool["image_id"].tolist(), world / "images", size.views, size.world_seed,
                                  tiles=True, label="training image features")
    plain, _ = image_features(trunk, holdout["image_id"].tolist(), world / "images", 1, size.world_seed,
                              label="hold-out image features")
    _save(root / "features" / "images.npz", ids=pool["image_id"].to_numpy(str), views=views, tiles=tiles,
          outlier=(pool["split"] == "outlier").to_numpy(), holdout=plain[:, 0])
    clips = pd.read_csv(world / "clips.csv", dtype={"shot_id": str})
    features, shots, times = clip_features(trunk, clips, world / "clips")
    _save(root / "features" / "clips.npz", features=features, shots=shots, times=times)
    write_text_atomic(root / "features" / "spec.json", json.dumps(spec, sort_keys=True))


def _save(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, **arrays)


def _head_data(root: Path) -> tuple[HeadData, np.ndarray, dict[str, np.ndarray]]:
    """(what heads train on, hold-out features (n, D), clip features by name), every feature standardised per
    dimension with the mean and SD of the normal training images' plain views."""
    images = load_arrays(root / "features" / "images.npz")
    ids = pd.Index(images["ids"])
    targets = {}
    for path in sorted((root / "labels").glob("*.csv")):
        table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id").reindex(ids)
        if table[list(CLASSES)].isna().any().any():
            raise InputError(f"{path}: no crowd labels for some training images; delete {root / 'world'} and run "
                             "the study again")
        targets[path.stem] = table[list(CLASSES)].to_numpy(np.float32)
    plain = images["views"][~images["outlier"], 0].astype(np.float32)
    mean, sd = plain.mean(axis=0), plain.std(axis=0) + 1e-3

    def standardised(features: np.ndarray) -> np.ndarray:
        return ((features.astype(np.float32) - mean) / sd).astype(np.float16)

    data = HeadData(standardised(images["views"]), images["outlier"], standardised(images["tiles"]), targets)
    frames = load_arrays(root / "features" / "clips.npz")
    return data, standardised(images["holdout"]), {**frames, "features": standardised(frames["features"])}


def clip_aggregates(probs: np.ndarray, shots: np.ndarray, times: np.ndarray, order: list[str]) -> np.ndarray:
    """(options, aggregations, clips, 37) clip scores from frame-view sigmoids (frames, 2, 5, 37): per option the
    frame scores of ``dsdi rank``'s views (``Views.frame_scores``), per clip (``order``) its max, mean and top-3."""
    out = np.empty((len(OPTION_VIEWS), len(AGGREGATIONS), len(order), probs.shape[-1]), np.float32)
    for o, views in enumerate(OPTION_VIEWS.values()):
        chosen = probs[:, : 2 if views.flip else 1, : views.crops].transpose(1, 0, 2, 3)  # mirror, frame, crop
        frames = views.frame_scores(torch.from_numpy(np.ascontiguousarray(chosen)).reshape(-1, probs.shape[-1]),
                                    len(probs)).numpy()
        for c, shot in enumerate(order):
            rows = shots == shot
            clip = ClipScores.from_frame_scores(frames[rows], times[rows], False, "")
            out[o, :, c] = [clip.aggregate(agg) for agg in AGGREGATIONS]
    return out


def _head_spec(root: Path, recipe: HeadRecipe) -> str:
    """What a member's scores depend on: its recipe, the head's settings and the cached features' spec."""
    settings = {"recipe": asdict(recipe), "hidden": HIDDEN, "dropout": DROPOUT, "batch": BATCH, "lr": LR,
                "weight_decay": WEIGHT_DECAY, "train_share": TRAIN_SHARE,
                "features": (root / "features" / "spec.json").read_text()}
    return json.dumps(settings, sort_keys=True)


def _stored_spec(path: Path) -> str | None:
    """The spec a scores file was made with (None when missing or unreadable)."""
    try:
        with np.load(path) as stored:
            return str(stored["spec"])
    except (OSError, KeyError, ValueError):
        return None


_WORKER: dict = {}


def _start_worker(root: Path) -> None:
    """Head-training process initializer: one torch thread, the study's features loaded once."""
    torch.set_num_threads(1)
    data, holdout, clips = _head_data(root)
    _WORKER.update(root=root, data=data, holdout=holdout, clips=clips,
                   order=list(dict.fromkeys(clips["shots"].tolist())))


def _train_member(recipe: HeadRecipe, seed: int, split: int, spec: str) -> None:
    """Train one member in a head-training process and store its scores (with the spec they were made with)."""
    w = _WORKER
    heads = train_head(w["data"], recipe, seed, split)
    clips = clip_aggregates(head_scores(heads, w["clips"]["features"]), w["clips"]["shots"], w["clips"]["times"],
                            w["order"])
    _save(scores_path(w["root"], (recipe.name, split), seed), holdout=head_scores(heads, w["holdout"]), clips=clips,
          spec=np.array(spec))


def train_members(root: Path, size: StudySize) -> None:
    """Train every member of every seed whose scores file is missing or was made otherwise, in HEAD_WORKERS
    processes of one torch thread each (a head's steps are too small for two threads), and store its scores."""
    by_name = recipes(size)
    jobs = []
    for seed in size.seeds:
        for name, split in members(size):
            spec = _head_spec(root, by_name[name])
            if _stored_spec(scores_path(root, (name, split), seed)) != spec:
                jobs.append((by_name[name], seed, split, spec))
    if not jobs:
        return
    with ProcessPoolExecutor(default_workers(HEAD_WORKERS_CAP), mp_context=get_context("spawn"),
                             initializer=_start_worker, initargs=(root,)) as pool, progress_bar("heads") as bar:
        task = bar.add_task("heads", total=len(jobs), info="")
        futures = {pool.submit(_train_member, *job): job for job in jobs}
        for future in as_completed(futures):
            future.result()
            recipe, seed, split, _ = futures[future]
            bar.update(task, advance=1, info=f"{recipe.name} split {split} seed {seed}")


def run_study(root: str | Path, report: str | Path, size: StudySize = StudySize()) -> Path:
    """The whole study (module docstring); returns the report's path."""
    root = Path(root)
    stage = Stage()
    if len(size.seeds) < 2:
        raise InputError(f"study: need at least 2 seeds (got {list(size.seeds)}); 10 or more for verdicts")
    stage(f"1/5 pretraining the trunk ({size.backbone}, {size.trunk_images} images, {size.trunk_epochs} epochs)")
    trunk = _trunk(root, size)
    stage(f"2/5 the world ({size.train_images} + {size.outliers} outlier training images, {size.holdout_images} "
          f"hold-out, {size.clips} clips)")
    world = build_study_world(root, size)
    stage("3/5 caching the trunk's features")
    cache_features(root, size, trunk)
    stage(f"4/5 training {len(members(size))} members x {len(size.seeds)} seeds")
    train_members(root, size)
    stage(f"5/5 measuring the claims -> {report}")
    shots = pd.read_csv(world / "clips.csv", dtype={"shot_id": str})["shot_id"].tolist()
    path = write_report(root, size, Path(report), Measurements(root, world, list(size.seeds), shots))
    stage(f"done: {path}")
    return path
