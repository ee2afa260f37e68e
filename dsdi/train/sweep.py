"""``dsdi sweep``: train a list of recipes (times seeds) one after another, each into its own run folder.

A sweep is resumable by running it again: a finished run (``dsdi.train.run_folder``: every epoch of the config's
``epochs`` recorded and in ``last.pt``) is skipped, an interrupted one resumes from its ``last.pt``
(``TrainConfig.layered(flags, recipe, resume=True)``, so the run's own config.toml < the recipe < the ``--set``
overrides, then ``train(config, resume=True)``), a new one starts. A run that fails (bad input, a non-finite loss,
any exception) is reported with its message and the sweep carries on; :class:`SweepResult` lists what happened
to every run.

Run folders: the recipe's ``out`` (``runs/<recipe stem>`` when it has none), or ``<out_root>/<recipe stem>``;
with seeds, ``-s<seed>`` is appended and the seed is the run's ``seed`` (init and augmentation; the split
follows ``split_seed`` where the recipe sets one).

Under torchrun every process calls :func:`sweep` with the same arguments and walks the same sequence; the sweep
joins the process group once and every ``train`` call reuses it; only process 0 prints.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dsdi.errors import InputError
from dsdi.options import check_field_value, read_toml
from dsdi.runtime import join_process_group, pick_device
from dsdi.train.config import TrainConfig
from dsdi.train.loop import train
from dsdi.train.run_folder import RunFolder
from dsdi.workspace import RUNS_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

STATUSES = ("trained", "resumed", "skipped", "failed")

console = Console(stderr=True)


@dataclass
class RunOutcome:
    """What the sweep did with one recipe x seed."""

    recipe: Path
    name: str
    """The run folder's name (the row's index in Table 2)."""
    seed: int | None
    """The seed given with ``seeds``; None when the recipe's own seed was used."""
    out: Path
    status: str
    """trained | resumed | skipped | failed."""
    epochs_done: int
    epochs: int
    best_val_lrap: float
    seconds: float
    """Wall time of this sweep's work on the run (0 when skipped)."""
    error: str = ""
    """The failure's one-line message."""
    trace: str = ""
    """The failure's traceback (shown only when asked)."""


@dataclass
class SweepResult:
    runs: list[RunOutcome]

    @property
    def failures(self) -> list[RunOutcome]:
        return [run for run in self.runs if run.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts -> {key: value}: VALUE is read as a TOML value (``2``, ``0.5``, ``true``, ``"x"``,
    ``[30, 35]``), bare text as a string. Keys and value types are checked against TrainConfig's fields
    (InputError naming --set)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=2")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        overrides[key] = value
    if "out" in overrides:
        raise InputError("--set out=...: every run needs its own folder; use --out DIR instead")
    checked = TrainConfig().updated(overrides, source="--set")
    for key in overrides:
        check_field_value(TrainConfig, key, getattr(checked, key))
    return {key: getattr(checked, key) for key in overrides}


def is_main_process() -> bool:
    """False in torchrun processes other than 0 (which print nothing)."""
    return int(os.environ.get("RANK", "0")) == 0


def _say(message: str, style: str | None = None) -> None:
    if is_main_process():
        console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _progress(run_dir: Path) -> tuple[int, float]:
    """(epochs recorded in metrics.csv, best validation LRAP so far; NaN when none). A damaged metrics.csv counts
    as none: train() says what is wrong with it."""
    try:
        table = RunFolder(run_dir).read_metrics()
    except InputError:
        table = None
    best = table.best() if table is not None else None
    return (table.epochs_done if table is not None else 0), (best.val_lrap if best is not None else math.nan)


def run_folder(recipe: Path, recipe_values: Mapping[str, Any], seed: int | None, out_root: Path | None) -> Path:
    """Where a recipe x seed trains (see the module docstring)."""
    if out_root is not None:
        base = out_root / recipe.stem
    else:
        base = Path(recipe_values["out"]) if recipe_values.get("out") else RUNS_DIR / recipe.stem
    return base.with_name(f"{base.name}-s{seed}") if seed is not None else base


def sweep(recipes: Sequence[str | Path], seeds: Sequence[int] | None = None,
          overrides: Mapping[str, Any] | None = None, out_root: str | Path | None = None,
          on_run: Callable[[RunOutcome], None] | None = None) -> SweepResult:
    """Train every recipe (x every seed) in turn; see the module docstring. ``overrides``: TrainConfig field ->
    value for every run (checked first: an InputError before any run trains). ``on_run`` is called with each
    run's outcome as it ends. InputError only for arguments that no run could use (a missing recipe file, an
    unknown override); a run's own failure is recorded in the result instead."""
    overrides = dict(overrides or {})
    if "out" in overrides:
        raise InputError("overrides: 'out' would send every run to one folder; use out_root instead")
    TrainConfig().updated(overrides, source="--set")
    recipe_paths = [Path(recipe) for recipe in recipes]
    recipe_values = {path: read_toml(path) for path in recipe_paths}  # InputError for a missing or bad file
    jobs = [(path, seed) for path in recipe_paths for seed in (seeds if seeds else [None])]
    folders = [run_folder(path, recipe_values[path], seed, Path(out_root) if out_root else None) for path, seed in jobs]
    twice = sorted({str(folder) for folder in folders if folders.count(folder) > 1})
    if twice:
        raise InputError(f"several runs would train into {', '.join(twice)}: give each recipe its own out")
    outcomes = []
    group = join_process_group(pick_device("auto").type)  # one group for every run: train() reuses it
    try:
        for number, ((recipe, seed), folder) in enumerate(zip(jobs, folders, strict=True), start=1):
            outcome = _one_run(recipe, seed, folder, overrides, f"[{number}/{len(jobs)}]")
            outcomes.append(outcome)
            if on_run is not None:
                on_run(outcome)
    finally:
        group.leave()
    return SweepResult(outcomes)


def _one_run(recipe: Path, seed: int | None, folder: Path, overrides: Mapping[str, Any], label: str) -> RunOutcome:
    flags = {**overrides, "out": str(folder), **({"seed": seed} if seed is not None else {})}
    name = folder.name
    started = time.perf_counter()
    epochs = 0
    try:
        config = TrainConfig.layered(flags, recipe=recipe, resume=True)
        epochs = config.epochs
        if RunFolder(folder).is_finished(epochs):
            done, best = _progress(folder)
            _say(f"{label} {name}: skipped, finished ({done}/{epochs} epochs) in {folder}")
            return RunOutcome(recipe, name, seed, folder, "skipped", done, epochs, best, 0.0)
        resuming = RunFolder(folder).last.is_file()
        done_before, _ = _progress(folder)
        verb = f"resuming after epoch {done_before}" if resuming else "training"
        _say(f"{label} {name}: {verb} ({config.backbone}, {config.loss}, {epochs} epochs) -> {folder}")
        train(config, resume=resuming)
    except Exception as error:  # noqa: BLE001 - a failed run is reported and the sweep goes on
        message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        done, best = _progress(folder)
        _say(f"{label} {name}: failed: {message}", style="red")
        return RunOutcome(recipe, name, seed, folder, "failed", done, epochs, best, time.perf_counter() - started,
                          error=message, trace=traceback.format_exc())
    done, best = _progress(folder)
    status = "resumed" if resuming else "trained"
    seconds = time.perf_counter() - started
    _say(f"{label} {name}: {status}, {done}/{epochs} epochs, best val LRAP {best:.4f} ({seconds:.0f} s)")
    return RunOutcome(recipe, name, seed, folder, status, done, epochs, best, seconds)


def summary_table(result: SweepResult) -> Table:
    """The sweep's summary: one row per run (run, seed, status, epochs done / total, best val LRAP, seconds)."""
    shown = Table(title=f"dsdi sweep: {len(result.runs)} run(s)")
    for header in ("run", "seed", "status", "epochs", "best val LRAP", "seconds"):
        shown.add_column(header, justify="left" if header in ("run", "status") else "right")
    for run in result.runs:
        lrap = "-" if math.isnan(run.best_val_lrap) else f"{run.best_val_lrap:.4f}"
        shown.add_row(Text(run.name), "-" if run.seed is None else str(run.seed),
                      Text(run.status, style="red" if run.status == "failed" else ""),
                      f"{run.epochs_done}/{run.epochs or '?'}", lrap, f"{run.seconds:.0f}")
    return shown
