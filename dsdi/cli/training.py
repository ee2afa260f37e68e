"""Training commands: ``dsdi train`` (one model, options from ``TrainConfig``) and ``dsdi sweep`` (recipes in
turn)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from dsdi import options
from dsdi.cli.common import TRAINING, add_command, console, err_console
from dsdi.options import command_option, option
from dsdi.train.config import TrainConfig


def _train(given: dict, config: Path | None, resume: bool) -> None:
    """Train a multi-label classifier of a label set's classes (LADI v1's 37 by default) into the run folder --out.

    Writes config.toml, metrics.csv, last.pt, best.pt (+ snapshot_K.pt). Precedence: defaults < the run's own
    config.toml (with --resume) < --config recipe < flags."""
    from dsdi.train.loop import NonFiniteLossError, train

    settings = TrainConfig.layered(given, recipe=config, resume=resume)
    try:
        run_dir = train(settings, resume=resume)
    except NonFiniteLossError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"train: {run_dir}", highlight=False)


TRAIN_COMMAND_OPTIONS = (
    command_option("config", Optional[Path], typer.Option(  # noqa: UP045 - typer on Python 3.10
        None, "--config", help="recipe TOML file (e.g. runs/C04.toml); flags override it")),
    command_option("resume", bool, typer.Option(
        False, "--resume", help="continue --out from its last.pt (or extend it with a higher --epochs)")),
)


@dataclasses.dataclass(kw_only=True)
class SweepConfig:
    """``dsdi sweep``: which recipes, seeds and overrides, and where the runs go."""

    recipes: list[Path] = option(help="recipe TOML files, e.g. runs/*.toml or runs/toy/*.toml", argument=True)
    seeds: list[int] = option([], help="train each recipe once per seed into OUT-s<seed> (--seeds 0 --seeds 1)",
                              shown_default="the recipe's seed")
    set: list[str] = option([], help="KEY=VALUE: a train option for every run, VALUE as TOML (--set epochs=2 "
                                     "--set lr=0.005)")
    out: Path | None = option(None, help="folder to train into: OUT/<recipe name> for each recipe",
                              shown_default="each recipe's out")
    traceback: bool = option(False, help="print a failed run's traceback too")


def _sweep(given: dict) -> None:
    """Train recipe files one after another (Table 2's models), resuming where a sweep stopped.

    Finished runs are skipped, interrupted ones resumed, a failed one is reported and the sweep carries on (exit 1
    when any failed). Works under torchrun (process 0 prints)."""
    from dsdi.train.sweep import is_main_process, parse_overrides, summary_table, sweep

    config = options.from_values(SweepConfig, given)

    def on_run(outcome) -> None:
        if outcome.trace and config.traceback and is_main_process():
            err_console.print(outcome.trace, highlight=False, markup=False)

    result = sweep(config.recipes, seeds=config.seeds or None, overrides=parse_overrides(config.set),
                   out_root=config.out, on_run=on_run)
    if is_main_process():
        console.print(summary_table(result))
        for run in result.failures:
            err_console.print(f"failed: {run.name} ({run.recipe}): {run.error}", highlight=False, markup=False,
                              soft_wrap=True)
    if result.failures:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""
    add_command(app, "train", TRAINING, TrainConfig, _train, *TRAIN_COMMAND_OPTIONS)
    add_command(app, "sweep", TRAINING, SweepConfig, _sweep)
