"""A training run folder (``runs/NAME/``): its file names, its metrics table, its checkpoints and whether its
training finished. Every module that reads or writes a run folder goes through :class:`RunFolder`.

What ``dsdi train`` (``dsdi.train.loop``) writes there:

- ``config.toml``   once, before the first epoch of a run (again when a resume raises its ``epochs``): the resolved
                    config; its ``epochs`` is the number of epochs the run plans
- then each epoch, in this order: ``metrics.csv`` (one :class:`EpochMetrics` row per completed epoch, rewritten
  atomically), ``best.pt`` when the validation LRAP improved, ``snapshot_K.pt`` at the end of a cosine cycle and
  ``last.pt`` (model plus training state); each checkpoint after its ``predictions/`` files
  (``dsdi.train.predictions``)

Later ``dsdi export`` (or ``dsdi rank --engine onnxruntime`` on first use) writes ``export/`` (:func:`export_file`):
the ONNX models of a checkpoint and their ``.json`` sidecars (``dsdi.train.export``).

**Finished** (:meth:`RunFolder.is_finished`): config.toml plans E epochs, metrics.csv records every epoch 1..E and
``last.pt`` holds epoch E (or more). A kill at any point leaves one of them short (last.pt is written last), and
``dsdi train --out RUN --resume`` finishes it. A folder without config.toml was not written by dsdi train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.models.checkpoint import checkpoint_epoch
from dsdi.options import read_toml

CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.csv"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
PREDICTIONS_DIR = "predictions"
EXPORT_DIR = "export"


@dataclass(frozen=True)
class EpochMetrics:
    """One metrics.csv row: a completed epoch. lr at the epoch's first step; losses, LRAP and mAP of training,
    validation and the common hold-out (NaN without one, or in older runs without the columns); seconds: wall
    time of training, validation and hold-out; images_per_s: training images per second, all processes."""

    epoch: int
    lr: float = math.nan
    train_loss: float = math.nan
    val_loss: float = math.nan
    val_lrap: float = math.nan
    val_map: float = math.nan
    holdout_lrap: float = math.nan
    holdout_map: float = math.nan
    seconds: float = math.nan
    images_per_s: float = math.nan
    broken_images: int = 0


METRIC_COLUMNS = tuple(field.name for field in fields(EpochMetrics))


@dataclass(frozen=True)
class MetricsTable:
    """A run's metrics.csv, one row per completed epoch in file order."""

    rows: tuple[EpochMetrics, ...]

    @property
    def epochs(self) -> set[int]:
        return {row.epoch for row in self.rows}

    @property
    def epochs_done(self) -> int:
        """The highest epoch recorded (0 when none)."""
        return max(self.epochs, default=0)

    @property
    def train_seconds(self) -> float:
        """Wall seconds of every recorded epoch (the sum of the finite ``seconds``)."""
        return math.fsum(row.seconds for row in self.rows if math.isfinite(row.seconds))

    def best(self) -> EpochMetrics | None:
        """The row with the highest finite validation LRAP (the epoch best.pt holds; the first on ties), else None."""
        scored = [row for row in self.rows if math.isfinite(row.val_lrap)]
        return max(scored, key=lambda row: row.val_lrap) if scored else None

    def up_to(self, epoch: int) -> list[EpochMetrics]:
        """The rows of epochs 1..``epoch`` (what a run resumed after ``epoch`` keeps)."""
        return [row for row in self.rows if row.epoch <= epoch]


def _float_column(table: pd.DataFrame, name: str) -> list[float]:
    if name not in table:
        return [math.nan] * len(table)
    return [float(value) for value in pd.to_numeric(table[name], errors="coerce")]


def read_metrics(path: str | Path) -> MetricsTable:
    """Parse a metrics.csv (columns METRIC_COLUMNS; only ``epoch`` is required, absent or non-numeric values read
    as NaN, absent broken_images as 0). InputError naming the file when it is unreadable or an epoch is no whole
    number."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
        epochs = pd.to_numeric(table["epoch"], errors="raise").astype(float)
        if not all(value.is_integer() and value >= 1 for value in epochs):
            raise ValueError("an epoch is not a whole number >= 1")
    except (OSError, ValueError, KeyError) as error:  # pandas' parser errors are ValueErrors
        reason = f"no column {error}" if isinstance(error, KeyError) else str(error).splitlines()[0]
        raise InputError(f"{path}: not a dsdi metrics table ({reason}); delete it and resume the run") from None
    columns = {name: _float_column(table, name) for name in METRIC_COLUMNS[1:-1]}
    broken = [int(value) if math.isfinite(value) else 0 for value in _float_column(table, "broken_images")]
    rows = tuple(EpochMetrics(int(epoch), **{name: values[i] for name, values in columns.items()},
                              broken_images=broken[i]) for i, epoch in enumerate(epochs))
    return MetricsTable(rows)


@dataclass(frozen=True)
class RunFolder:
    """A training run folder at ``path`` (see the module docstring); creating one touches no file."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_toml(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def best(self) -> Path:
        return self.path / BEST_NAME

    @property
    def last(self) -> Path:
        return self.path / LAST_NAME

    @property
    def predictions(self) -> Path:
        """The folder of stored sigmoids and targets (``dsdi.train.predictions``)."""
        return self.path / PREDICTIONS_DIR

    @property
    def export_dir(self) -> Path:
        """The folder of the run's ONNX exports (:func:`export_file`)."""
        return self.path / EXPORT_DIR

    def checkpoint(self, stem: str) -> Path:
        """``<stem>.pt``: best, last or snapshot_K."""
        return self.path / f"{stem}.pt"

    def model_checkpoint(self) -> Path:
        """The checkpoint that stands for the run's model: best.pt, else last.pt (a run whose validation LRAP was
        never finite keeps no best.pt). InputError when it holds neither."""
        for path in (self.best, self.last):
            if path.is_file():
                return path
        raise InputError(f"{self.path}: no {BEST_NAME} or {LAST_NAME} in this run directory (did training finish?)")

    def read_metrics(self) -> MetricsTable | None:
        """metrics.csv (:func:`read_metrics`), None when absent."""
        return read_metrics(self.metrics_csv) if self.metrics_csv.is_file() else None

    def write_metrics(self, rows: Sequence[EpochMetrics]) -> None:
        """Rewrite metrics.csv atomically with ``rows`` (columns METRIC_COLUMNS)."""
        table = pd.DataFrame([asdict(row) for row in rows], columns=list(METRIC_COLUMNS))
        write_text_atomic(self.metrics_csv, table.to_csv(index=False))

    def planned_epochs(self) -> int:
        """The epochs config.toml plans. InputError when it is absent, unreadable or gives no whole number."""
        if not self.config_toml.is_file():
            raise InputError(f"{self.path}: no {CONFIG_NAME}, so no run of dsdi train")
        epochs = read_toml(self.config_toml).get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise InputError(f"{self.config_toml}: epochs {epochs!r} is no whole number >= 1")
        return epochs

    def unfinished_reason(self, epochs: int | None = None) -> str:
        """Why the run is not finished at ``epochs`` (default: config.toml's) as a short clause, "" when it is: every
        epoch 1..epochs in metrics.csv and last.pt holding the last of them. Reads last.pt's epoch only."""
        if epochs is None and not self.config_toml.is_file():
            return f"no {CONFIG_NAME}: not a run of dsdi train"
        try:
            planned = self.planned_epochs() if epochs is None else epochs
            table = self.read_metrics()
            recorded = len(table.epochs & set(range(1, planned + 1))) if table is not None else 0
            if recorded < planned:
                return f"{recorded} of {planned} epochs in {METRICS_NAME}"
            if not self.last.is_file():
                return f"no {LAST_NAME}"
            saved = checkpoint_epoch(self.last)
        except InputError as error:
            return str(error)
        if saved < planned:
            return f"{LAST_NAME} holds epoch {saved} of {planned} (stopped while saving the last epoch)"
        return ""

    def is_finished(self, epochs: int | None = None) -> bool:
        """True when the run completed ``epochs`` (default: config.toml's); see :meth:`unfinished_reason`."""
        return not self.unfinished_reason(epochs)


def is_run_folder(path: Path) -> bool:
    """A folder dsdi train has written into (config.toml, metrics.csv or a best.pt / last.pt)."""
    return path.is_dir() and any((path / name).is_file() for name in (CONFIG_NAME, METRICS_NAME, BEST_NAME, LAST_NAME))


def runs_in(runs_dir: str | Path) -> tuple[list[RunFolder], list[tuple[RunFolder, str]]]:
    """(the finished runs, (each unfinished run, why)) among the run folders directly under ``runs_dir``, sorted by
    name; other folders (``ensembles/``...) are no runs. Both empty when ``runs_dir`` is absent."""
    folder = Path(runs_dir)
    finished, unfinished = [], []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if is_run_folder(path):
            run = RunFolder(path)
            reason = run.unfinished_reason()
            if reason:
                unfinished.append((run, reason))
            else:
                finished.append(run)
    return finished, unfinished


def export_file(checkpoint: str | Path, precision: str = "fp32") -> Path:
    """Where ``dsdi export`` writes a checkpoint's ONNX model (its sidecar: the same name plus ``.json``): the
    ``export/`` folder beside the checkpoint, ``<stem>.onnx`` (int8: ``<stem>.int8.onnx``); for a run's best.pt
    ``RUN/export/best.onnx``, for a checkpoint file outside a run an ``export/`` folder next to it."""
    checkpoint = Path(checkpoint)
    suffix = "" if precision == "fp32" else f".{precision}"
    return checkpoint.parent / EXPORT_DIR / f"{checkpoint.stem}{suffix}.onnx"


def model_checkpoint(ref: str | Path) -> Path:
    """A run directory -> the checkpoint standing for its model (:meth:`RunFolder.model_checkpoint`); a file ->
    itself. InputError when neither exists."""
    ref = Path(ref)
    if ref.is_dir():
        return RunFolder(ref).model_checkpoint()
    if not ref.is_file():
        raise InputError(f"{ref}: no such checkpoint file or run directory")
    return ref
