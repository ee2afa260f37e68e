"""Research command: ``dsdi study`` (the paper's claims measured on synthetic worlds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from dsdi import options
from dsdi.cli.common import RESEARCH, add_command, console
from dsdi.options import option


@dataclasses.dataclass(kw_only=True)
class StudyConfig:
    """``dsdi study``: its folder, its report and how big it is (``dsdi.study.StudySize``)."""

    out: Path = option(Path("runs/study"), help="study folder: worlds, labels, recipes, models, ranks")
    report: Path | None = option(None, help="report file to write (and <stem>.svg beside it)",
                                 shown_default="OUT/study.md")
    images: int = option(1500, minimum=20, help="normal images per world")
    clips: int = option(60, minimum=2, help="clips of the default world")
    seeds: list[int] = option([0, 1, 2], help="training seeds, at least 2 (--seeds 0 --seeds 1)")
    epochs: int = option(5, minimum=1, help="epochs of every run (the snapshot variant: one per cycle)")
    backbone: str = option("resnet10t", help="timm model of every run (random init)")
    img_size: int = option(64, minimum=16, help="square input side of every model in px")


def _study(given: dict) -> None:
    """Measure the paper's claims on synthetic worlds and write a report (OUT/study.md + figure).

    Builds worlds, trains every variant with every seed, ranks the clips. Resumes when run again. `make study`
    runs the defaults and writes docs/study.md."""
    from dsdi.study import StudySize, run_study

    config = options.from_values(StudyConfig, given)
    size = StudySize(images=config.images, clips=config.clips, seeds=tuple(config.seeds), epochs=config.epochs,
                     backbone=config.backbone, img_size=config.img_size)
    console.print(f"report: {run_study(config.out, config.report or config.out / 'study.md', size)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the research command to ``app``."""
    add_command(app, "study", RESEARCH, StudyConfig, _study)
