"""Data commands: ``dsdi synth`` (a synthetic LADI-like world), ``dsdi labels`` (crowd answers -> labels),
``dsdi prepare`` (a resized image cache) and ``dsdi shots`` (raw footage -> master shot table)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import typer

from dsdi import options
from dsdi.cli.common import DATA, add_command, console, err_console
from dsdi.errors import InputError
from dsdi.labels.crowd import LabelMode
from dsdi.options import option
from dsdi.video.shots import DEFAULT_MIN_SHOT, DETECTORS
from dsdi.workspace import IMAGES_DIR, LABELS_CSV


def _pair(text: str, separator: str, cast: type, flag: str) -> tuple:
    """'640x480' -> (640, 480); '3-12' -> (3.0, 12.0); a bad value raises InputError naming the flag."""
    try:
        first, second = (cast(part) for part in text.split(separator))
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected two numbers like 'A{separator}B'") from None
    return first, second


@dataclasses.dataclass(kw_only=True)
class SynthConfig:
    """``dsdi synth``: the label set, size and noise of the synthetic world."""

    out: Path = option(help="folder to write the world into (created if missing)")
    labelset: str = option("ladi-v1", choices=["ladi-v1", "ladi-v2a"],
                           help="ladi-v1: 37 classes, crowd answers to turn into labels with dsdi labels; ladi-v2a: "
                                "12 classes derived from what each picture shows, labels.csv (majority of three "
                                "annotators) with train/val/test splits, qrels by class name")
    images: int = option(1000, help="number of images (outliers come on top)")
    clips: int = option(60, help="number of shot clips")
    seed: int = option(0, help="random seed: the same seed gives the same world")
    image_resolution: tuple[int, int] = option(
        (640, 480), help="image WIDTHxHEIGHT in px", shown_default="640x480",
        parse=functools.partial(_pair, separator="x", cast=int, flag="--image-resolution"))
    clip_resolution: tuple[int, int] = option(
        (640, 360), help="clip WIDTHxHEIGHT in px (even numbers)", shown_default="640x360",
        parse=functools.partial(_pair, separator="x", cast=int, flag="--clip-resolution"))
    clip_seconds: tuple[float, float] = option(
        (3.0, 12.0), help="clip duration range MIN-MAX in seconds", shown_default="3-12",
        parse=functools.partial(_pair, separator="-", cast=float, flag="--clip-seconds"))
    miss_rate: float = option(0.2, help="chance a simulated worker misses a present feature (ladi-v2a: a drawn "
                                        "element)")
    false_rate: float = option(0.02, help="chance a worker names an absent feature (ladi-v2a: imagines an element)")
    outlier_rate: float = option(
        0.0, help="share R (0-0.9) of outliers among all images: round(R*N/(1-R)) extra images showing no feature "
                  "(sky, blur, black, lens flare) that the crowd labels as if they did; true_labels.csv marks them "
                  "in a last column `outlier` (when R > 0); ladi-v1 only")


def _synth(given: dict) -> None:
    """Build a synthetic LADI-like world to try dsdi on: images, crowd answers or voted labels, true labels,
    clips, qrels."""
    from dsdi.synth import build_world, outlier_count

    config = options.from_values(SynthConfig, given)
    world = build_world(
        config.out, n_images=config.images, n_clips=config.clips, seed=config.seed, labelset=config.labelset,
        image_size=config.image_resolution, clip_size=config.clip_resolution, clip_seconds=config.clip_seconds,
        miss_rate=config.miss_rate, false_rate=config.false_rate, outlier_rate=config.outlier_rate)
    outliers = outlier_count(config.images, config.outlier_rate)
    shown = f"{config.images} images" + (f" + {outliers} outliers" if config.outlier_rate > 0 else "")
    labels = (f"annotations {world.annotations.name}" if world.annotations else
              f"labels {world.labels.name} (train/val/test)")
    console.print(f"synthetic {config.labelset} world in {world.root}: {shown} in {world.images_dir}, {labels}, "
                  f"true labels {world.true_labels.name}, {config.clips} clips in "
                  f"{world.clips_dir}, qrels {world.qrels.name}, clip truth {world.clip_truth.name}", highlight=False)


@dataclasses.dataclass(kw_only=True)
class LabelsConfig:
    """``dsdi labels``: what to read, how crowd answers become label values, where the table (and images) go."""

    inputs: list[Path] = option(
        help="LADI v1 crowd answers (.tsv/.csv: url|img_url|image_uuid, WorkerId, Answer); or LADI v2 label files "
             "(local_path, url, one boolean column per label), several at once (e.g. v2/ladi_v2a_labels_train.csv, "
             "_val.csv and _test.csv; LADI v1's damage_df_* and infra_df_* too); or a LADI v2 Arrow folder "
             "(datasets save_to_disk: the folder holding dataset_dict.json, or its parent)", argument=True)
    out: Path = option(LABELS_CSV, help="label CSV file to write: image_id (+ split for LADI v2) + one column per "
                                        "class")
    labelset: str | None = option(None, help="LADI v2 inputs: label set NAME or TOML FILE of their label columns",
                                  shown_default="the built-in one whose classes are the label columns")
    images: Path = option(IMAGES_DIR, help="Arrow folder only: its images are written to IMAGES/<split>/<row>.<ext> "
                                           "(image_id relative to it: train with --images IMAGES)")
    mode: str = option(LabelMode.soft.value, choices=[mode.value for mode in LabelMode],
                       help="crowd answers only. soft: count / image max; hard: any answer; majority: >= half of "
                            "the category")
    token_map: Path | None = option(None, help="crowd answers only: CSV token,class that extends the shipped map")
    skip_unknown: bool = option(False, help="crowd answers only: skip (and count) tokens not in the map")


_CROWD_ONLY = ("mode", "token_map", "skip_unknown")
"""LabelsConfig fields that apply to crowd answers only."""


def _labels(given: dict) -> None:
    """Labels CSV from LADI v1 crowd answers (paper 2.1 soft labels by default) or from LADI v2 as distributed
    (its label files, or the hosted Arrow folder, whose images are written out)."""
    from dsdi.labels import ladi_v2
    from dsdi.labels.crowd import make_labels, summary_tables

    config = options.from_values(LabelsConfig, given)
    kind = ladi_v2.input_kind(config.inputs)
    _refuse_options_of_other_kinds(given, kind)
    if kind is ladi_v2.InputKind.crowd:
        summary = make_labels(config.inputs[0], config.out, LabelMode(config.mode), config.token_map,
                              config.skip_unknown)
        tables = summary_tables(summary)
    else:
        summary = ladi_v2.make_labels_v2(kind, config.inputs, config.out, config.labelset, config.images)
        tables = ladi_v2.summary_tables(summary)
    console.print(f"read {kind.value}: {', '.join(map(str, config.inputs))}", highlight=False)
    for table in tables:
        console.print(table)
    console.print(f"wrote {summary.images:,} images x {len(summary.positives)} classes to {config.out}",
                  highlight=False)


def _refuse_options_of_other_kinds(given: dict, kind) -> None:
    """InputError naming the given flags that do not apply to ``kind`` (a ``ladi_v2.InputKind``): --mode,
    --token-map and --skip-unknown are for crowd answers, --images for an Arrow folder, --labelset other than
    ladi-v1 for LADI v2 inputs."""
    from dsdi.labels.labelset import LADI_V1, load_labelset
    from dsdi.labels.ladi_v2 import InputKind

    crowd = kind is InputKind.crowd
    wrong = [name for name in _CROWD_ONLY if name in given and not crowd]
    wrong += ["images"] if "images" in given and kind is not InputKind.arrow else []
    if crowd and "labelset" in given and load_labelset(given["labelset"]).name != LADI_V1.name:
        wrong.append("labelset")
    if wrong:
        raise InputError(f"{', '.join(map(options.flag_name, wrong))}: not for {kind.value} (--mode, --token-map "
                         "and --skip-unknown are for crowd answers, which make LADI v1 labels only; --images is for "
                         "an Arrow folder; --labelset for LADI v2 inputs); leave them out")


@dataclasses.dataclass(kw_only=True)
class PrepareConfig:
    """``dsdi prepare``: which images, the cache's size and quality."""

    labels: Path = option(LABELS_CSV, help="labels CSV (of any label set): its image_id column names the images")
    images: Path = option(IMAGES_DIR, help="folder of the original images")
    out: Path = option(help="cache folder to write, e.g. data/images-360")
    short_side: int = option(360, minimum=1, help="shorter side of the cached images in px (train with --img-size "
                                                  "up to it)")
    quality: int = option(95, minimum=1, maximum=100, help="JPEG quality of the cache")
    decode_threads: int | None = option(None, minimum=1, help="image decoding and resizing threads",
                                        shown_default="CPU cores, at most 8")


def _prepare(given: dict) -> None:
    """Write a resized JPEG cache of the labelled images into the folder --out; train with --images OUT.

    Same relative paths as the originals; images already up to date are skipped."""
    from dsdi.train.data import prepare_image_cache

    config = options.from_values(PrepareConfig, given)
    result = prepare_image_cache(config.labels, config.images, config.out, img_size=config.short_side,
                                 quality=config.quality, workers=config.decode_threads)
    console.print(f"prepare: {result.written} written, {result.up_to_date} already up to date, "
                  f"{len(result.broken)} unreadable -> {config.out}", highlight=False)
    for image_id, path, reason in result.broken[:20]:
        err_console.print(f"  skipped {image_id}: {path} ({reason})", highlight=False)
    if len(result.broken) > 20:
        err_console.print(f"  ... and {len(result.broken) - 20} more: see {config.out / 'prepare_failures.csv'}")


@dataclasses.dataclass(kw_only=True)
class ShotsConfig:
    """``dsdi shots``: which videos, the shot table and the detector."""

    videos: list[Path] = option(help="video files and/or folders of them (searched recursively)", argument=True)
    out: Path = option(help="shot table CSV file to write or extend: video,shot_id,start,end")
    detector: str = option("adaptive", choices=DETECTORS, help="PySceneDetect detector")
    min_shot: float = option(DEFAULT_MIN_SHOT, minimum=0.0, help="shortest shot in seconds")


def _shots(given: dict) -> None:
    """Raw footage -> master shot table (a CSV file) for dsdi rank --shots.

    Videos already in the table are skipped, unreadable ones listed; exits 2 when none of the videos given has
    shots in the table."""
    from dsdi.video.shots import detect_shots

    config = options.from_values(ShotsConfig, given)
    result = detect_shots(config.videos, config.out, detector=config.detector, min_shot=config.min_shot)
    if result.skipped:
        console.print(f"shots: skipped {len(result.skipped)} videos already in {config.out}", highlight=False)
    if result.written:
        console.print(f"shots: {result.shots} shots of {len(result.written)} videos -> {config.out} "
                      f"({result.frames:,} frames, {result.frames_per_second:.0f} frames/s)", highlight=False)
    if result.failures:
        err_console.print(f"shots: {len(result.failures)} unreadable videos skipped:", highlight=False)
        for path, reason in result.failures:
            err_console.print(f"  {path}: {reason}", highlight=False)
        if not result.written and not result.skipped:
            raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app`` in pipeline order."""
    add_command(app, "synth", DATA, SynthConfig, _synth)
    add_command(app, "labels", DATA, LabelsConfig, _labels)
    add_command(app, "prepare", DATA, PrepareConfig, _prepare)
    add_command(app, "shots", DATA, ShotsConfig, _shots)
