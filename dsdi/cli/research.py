"""Research command: ``dsdi study`` (the paper's claims measured on synthetic worlds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from dsdi import options
from dsdi.cli.common import RESEARCH, add_command, console
from dsdi.errors import InputError
from dsdi.options import option


@dataclasses.dataclass(kw_only=True)
class StudyConfig:
    """``dsdi study``: its folder, its report and how big it is (``dsdi.study.StudySize``)."""

    out: Path = option(Path("runs/study"), help="study folder: trunk, world, labels, features, scores")
    report: Path | None = option(None, help="report file to write (and <stem>.svg beside it)",
                                 shown_default="OUT/study.md")
    seeds: str = option("0-9", help="training seeds: a range A-B or a comma list, at least 2 (10 or more for "
                        "verdicts); a new seed adds only its own models to the study folder")
    train_images: int = option(4000, minimum=20, help="training images of the world (outliers come on top)")
    holdout_images: int = option(3000, minimum=20, help="hold-out images of the world")
    clips: int = option(100, minimum=2, help="clips of the world")
    trunk_images: int = option(6000, minimum=20, help="images of the trunk's pretraining world")
    trunk_epochs: int = option(6, minimum=1, help="epochs of the trunk's pretraining")
    head_epochs: int = option(40, minimum=1, help="epochs of every head (the long run: 4x)")
    backbone: str = option("resnet10t", help="timm model of the trunk (random init, pretrained by the study)")
    img_size: int = option(96, minimum=16, help="square input side of the trunk in px")


def _study(given: dict) -> None:
    """Measure the paper's claims on synthetic worlds and write a report (OUT/study.md + figure).

    Pretrains a trunk, builds a world with LADI's long tail and crowd noise, trains every member with every seed
    as a head on the trunk's cached features, then judges ten pre-registered claims with the seed as the unit.
    Resumes when run again. `make study` runs the defaults and writes docs/study.md."""
    from dsdi.study import StudySize, run_study

    config = options.from_values(StudyConfig, given)
    seeds = parse_seeds(config.seeds)
    size = StudySize(seeds=seeds, train_images=config.train_images, holdout_images=config.holdout_images,
                     outliers=round(config.train_images / 9), clips=config.clips, trunk_images=config.trunk_images,
                     trunk_epochs=config.trunk_epochs, head_epochs=config.head_epochs, backbone=config.backbone,
                     img_size=config.img_size)
    console.print(f"report: {run_study(config.out, config.report or config.out / 'study.md', size)}", highlight=False)


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-9' or '0,3,5' -> the seeds; InputError naming --seeds otherwise."""
    try:
        if "-" in text.strip().lstrip("-"):
            first, last = (int(part) for part in text.split("-"))
            seeds = tuple(range(first, last + 1))
        else:
            seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(f"--seeds {text!r}: give a range A-B or a comma list of at least 2 distinct seeds >= 0 "
                         "(for example 0-9)")
    return seeds


def register(app: typer.Typer) -> None:
    """Add the research command to ``app``."""
    add_command(app, "study", RESEARCH, StudyConfig, _study)
