"""``dsdi table``: the paper's Table 2 (one row per trained run) and Table 3 (one row per ranked submission)
rebuilt from the files the runs wrote, with the paper's own numbers beside them.

Table 2 reads a run folder's ``config.toml`` (backbone, loss, gamma / beta / th, techniques, input size,
epochs) and ``metrics.csv``: validation LRAP and mAP of the best epoch (the highest ``val_lrap``, the epoch
``best.pt`` holds), hold-out LRAP and mAP at that epoch (columns ``holdout_lrap`` / ``holdout_map``, absent in
older runs: shown "-"), and the training time (the sum of ``seconds``). Table 3 scores a ``dsdi rank`` output
folder's submitted run against qrels (``dsdi.trecvid.evaluation.evaluate_judgments`` at depth 1000: mAP on trec_eval
qrels, mean xinfAP on NIST sample qrels, as sample_eval computes it).

The paper's values are each kept once: Table 2's LRAP in :data:`PAPER_TABLE_2_LRAP` here (a recipe cannot hold
it: TrainConfig refuses unknown keys), Table 3's mAP as ``paper_map`` in the ensemble files
``runs/ensembles/NAME.toml`` (``dsdi.rank.ensemble``) that rank those submissions. A Table 2 row gets its paper LRAP
when its index (the run folder's name, a ``-s<seed>`` suffix ignored) is A01..D13; a Table 3 row gets its
paper mAP when its run id or folder name is an ensemble file's name or stem (spaces, ``_``, ``-`` and case
ignored: ``VAS 2`` = ``vas2``).

Each table is printed (rich) and written as CSV (raw numbers, empty where absent) and Markdown (as shown).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.options import read_toml
from dsdi.rank.output import RankOutput
from dsdi.train.run_folder import CONFIG_NAME, RunFolder
from dsdi.trecvid.evaluation import DEFAULT_K, evaluate_judgments
from dsdi.trecvid.qrels import Judgments, read_judgments
from dsdi.workspace import RUNS_DIR

PAPER_TABLE_2_LRAP = {
    "A01": 0.846, "B02": 0.854, "C03": 0.844, "C04": 0.853, "C05": 0.852, "C06": 0.844, "C07": 0.846,
    "C08": 0.837, "C09": 0.825, "C10": 0.823, "C11": 0.843, "C12": 0.849, "D13": 0.824,
}  # fmt: skip
"""Table 2 of the paper: validation LRAP per model index (each on its own split; "just a reference")."""
ENSEMBLES_DIR = RUNS_DIR / "ensembles"
"""Where the ensemble files (``dsdi.rank.ensemble``) of the paper's Table 3 lie; their ``paper_map`` is the paper's."""

TABLE2_COLUMNS = ("index", "backbone", "loss", "gamma", "beta", "th", "none_weight", "drop_max_loss", "snapshots",
                  "img_size", "epochs", "epochs_done", "best_epoch", "val_lrap", "val_map", "holdout_lrap",
                  "holdout_map", "train_seconds", "paper_lrap")
TABLE3_COLUMNS = ("run", "run_id", "models", "fused_runs", "map", "features", "paper_submission", "paper_map",
                  "paper_description")
_TABLE2_INTEGERS = ("snapshots", "img_size", "epochs", "epochs_done", "best_epoch")
_SEED_SUFFIX = re.compile(r"-s\d+$")


@dataclass
class Tables:
    """The tables built, as data (CSV columns above; None where a value is absent)."""

    table2: pd.DataFrame | None = None
    table3: pd.DataFrame | None = None
    table3_measure: str = "TREC mAP"
    """What Table 3's ``map`` column holds: TREC mAP (trec_eval qrels) or mean xinfAP (NIST sample qrels)."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def paper_lrap(index: str) -> float | None:
    """The paper's Table 2 LRAP of a run named ``index`` (``C04``, ``C04-s1``), None for other names."""
    return PAPER_TABLE_2_LRAP.get(_SEED_SUFFIX.sub("", index))


@dataclass(frozen=True)
class PaperSubmission:
    """A Table 3 row as its ensemble file states it (``runs/ensembles/NAME.toml``: name, description, paper_map)."""

    name: str
    description: str
    paper_map: float


def paper_submissions(ensembles_dir: str | Path = ENSEMBLES_DIR) -> dict[str, PaperSubmission]:
    """The ensemble files in ``ensembles_dir`` that carry a ``paper_map``, by normalised name and file stem (none
    when the folder is absent); a malformed ensemble file is an InputError naming it."""
    from dsdi.rank.ensemble import load_ensemble

    found: dict[str, PaperSubmission] = {}
    folder = Path(ensembles_dir)
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        ensemble = load_ensemble(path)
        if ensemble.paper_map is not None:
            submission = PaperSubmission(ensemble.name, ensemble.description, float(ensemble.paper_map))
            found.setdefault(_key(ensemble.name), submission)
            found.setdefault(_key(path.stem), submission)
    return found


def paper_submission(submissions: dict[str, PaperSubmission], *names: str) -> PaperSubmission | None:
    """The paper submission whose name matches one of ``names`` (normalised: ``VAS 2`` = ``vas2``), else None."""
    return next((submissions[_key(name)] for name in names if name and _key(name) in submissions), None)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def table2_row(run_dir: str | Path) -> dict[str, Any]:
    """One Table 2 row from a run folder (see the module docstring); InputError when it holds no config.toml."""
    run = RunFolder(Path(run_dir))
    if not run.config_toml.is_file():
        raise InputError(f"{run}: no {CONFIG_NAME}; pass run folders written by dsdi train or dsdi sweep")
    config = read_toml(run.config_toml)
    row: dict[str, Any] = {column: None for column in TABLE2_COLUMNS}
    row.update(index=run.path.name, paper_lrap=paper_lrap(run.path.name))
    for key in ("backbone", "loss", "gamma", "beta", "th", "none_weight", "drop_max_loss", "snapshots", "img_size",
                "epochs"):
        row[key] = config.get(key)
    metrics = run.read_metrics()  # InputError when malformed
    row["epochs_done"] = metrics.epochs_done if metrics is not None else 0
    if metrics is None or not metrics.rows:
        return row
    row["train_seconds"] = metrics.train_seconds
    best = metrics.best()
    if best is not None:
        row["best_epoch"] = best.epoch
        for column in ("val_lrap", "val_map", "holdout_lrap", "holdout_map"):
            row[column] = _number(getattr(best, column))
    return row


def table2(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Table 2 of the given run folders, in the order given."""
    table = pd.DataFrame([table2_row(run_dir) for run_dir in run_dirs], columns=list(TABLE2_COLUMNS))
    return table.astype({column: "Int64" for column in _TABLE2_INTEGERS})


def table3_row(out_dir: str | Path, qrels: Judgments, k: int = DEFAULT_K,
               submissions: dict[str, PaperSubmission] | None = None) -> dict[str, Any]:
    """One Table 3 row: a rank output folder's submitted run scored against ``qrels`` (``map``: mAP, or mean xinfAP
    on sample qrels), the paper's submission of the same name (``submissions``, from :func:`paper_submissions`)
    beside it."""
    output = RankOutput(Path(out_dir))
    ranked = output.read()
    mean_ap = evaluate_judgments(ranked.rankings, qrels, k).mean
    run_id = ranked.facts.run_id or ""
    match = paper_submission(submissions or {}, run_id, output.path.name)
    return {
        "run": output.path.name, "run_id": run_id, "models": len(ranked.facts.models or []),
        "fused_runs": len(ranked.facts.fuse or []), "map": _number(mean_ap),
        "features": sum(1 for judged in qrels.relevance.values() if any(rel > 0 for rel in judged.values())),
        "paper_submission": match.name if match else None, "paper_map": match.paper_map if match else None,
        "paper_description": match.description if match else None,
    }  # fmt: skip


def table3(out_dirs: Sequence[str | Path], qrels: Judgments, k: int = DEFAULT_K,
           ensembles_dir: str | Path = ENSEMBLES_DIR) -> pd.DataFrame:
    """Table 3 of the given rank output folders against ``qrels`` (``read_judgments``), in the order given; the
    paper's values from the ensemble files in ``ensembles_dir``."""
    submissions = paper_submissions(ensembles_dir)
    table = pd.DataFrame([table3_row(out_dir, qrels, k, submissions) for out_dir in out_dirs],
                         columns=list(TABLE3_COLUMNS))
    return table.astype({"models": "Int64", "fused_runs": "Int64", "features": "Int64"})


# ---- shown form: the same cells for the terminal and Markdown --------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals, text as is, "-" for an absent value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _int(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else str(int(number))


def _param(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:g}"


def _duration(seconds: Any) -> str:
    number = _number(seconds)
    if number is None:
        return "-"
    minutes, secs = divmod(round(number), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _techniques(row: pd.Series) -> str:
    parts = []
    if _number(row["none_weight"]) is not None and _number(row["none_weight"]) != 1:
        parts.append(f"none-class x{_number(row['none_weight']):g}")
    if not isinstance(row["drop_max_loss"], str) and row["drop_max_loss"] in (True, 1):
        parts.append("max-loss drop")
    if (_number(row["snapshots"]) or 0) > 0:
        parts.append(f"{int(row['snapshots'])} snapshots")
    return ", ".join(parts) or "-"


TABLE2_HEADERS = ("index", "backbone", "loss", "γ", "β", "th", "techniques", "input", "epochs", "best ep.",
                  "val LRAP", "val mAP", "hold-out LRAP", "hold-out mAP", "train time", "paper LRAP")
TABLE3_HEADERS = ("run", "run id", "models", "mAP", "paper", "paper mAP", "paper description")


def table2_cells(table: pd.DataFrame) -> list[list[str]]:
    """Table 2 as shown: one list of TABLE2_HEADERS cells per row."""
    rows = []
    for _, row in table.iterrows():
        epochs_total, done = _number(row["epochs"]), _number(row["epochs_done"]) or 0
        epochs = "-" if epochs_total is None else (f"{int(epochs_total)}" if done >= epochs_total
                                                   else f"{int(done)}/{int(epochs_total)}")
        size = _number(row["img_size"])
        rows.append([
            str(row["index"]), _fmt(row["backbone"]), _fmt(row["loss"]), _param(row["gamma"]), _param(row["beta"]),
            _param(row["th"]), _techniques(row), "-" if size is None else f"{int(size)}x{int(size)}", epochs,
            _int(row["best_epoch"]), _fmt(row["val_lrap"]), _fmt(row["val_map"]), _fmt(row["holdout_lrap"]),
            _fmt(row["holdout_map"]), _duration(row["train_seconds"]), _fmt(row["paper_lrap"]),
        ])  # fmt: skip
    return rows


def table3_cells(table: pd.DataFrame) -> list[list[str]]:
    """Table 3 as shown: one list of TABLE3_HEADERS cells per row."""
    rows = []
    for _, row in table.iterrows():
        fused = int(row["fused_runs"] or 0)
        models = f"{int(row['models'])}" + (f" + {fused} fused run{'s' if fused > 1 else ''}" if fused else "")
        rows.append([str(row["run"]), _fmt(row["run_id"]), models, _fmt(row["map"]), _fmt(row["paper_submission"]),
                     _fmt(row["paper_map"]), _fmt(row["paper_description"])])
    return rows


_TEXT_HEADERS = {"index", "backbone", "loss", "techniques", "run", "run id", "models", "paper", "paper description"}


def rich_table(title: str, headers: Sequence[str], cells: list[list[str]]) -> Table:
    shown = Table(title=title)
    for header in headers:
        shown.add_column(header, justify="left" if header in _TEXT_HEADERS else "right", no_wrap=True)
    for row in cells:
        shown.add_row(*map(Text, row))  # cells are plain text, never rich markup
    return shown


def markdown_table(headers: Sequence[str], cells: list[list[str]]) -> str:
    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, cells)]) + "\n"


TABLE2_TITLE = "Table 2: models (validation on each run's split; hold-out common to all)"


def table3_title(measure: str) -> str:
    """Table 3's title, naming what its mAP column holds (``Tables.table3_measure``)."""
    return f"Table 3: submissions ({measure} at depth 1000)"


def paper_tables(run_dirs: Sequence[str | Path], rank_dirs: Sequence[str | Path], qrels_path: str | Path | None,
                 k: int = DEFAULT_K, ensembles_dir: str | Path = ENSEMBLES_DIR) -> Tables:
    """Table 2 of ``run_dirs`` and Table 3 of ``rank_dirs`` against ``qrels_path`` (None where no folder is given)."""
    if not rank_dirs:
        return Tables(table2(run_dirs) if run_dirs else None)
    qrels = read_judgments(qrels_path)
    return Tables(table2(run_dirs) if run_dirs else None, table3(rank_dirs, qrels, k, ensembles_dir),
                  "mean xinfAP" if qrels.sampled else "TREC mAP")


def shown_tables(tables: Tables) -> list[Table]:
    """The built tables as rich tables to print, Table 2 first."""
    shown = []
    if tables.table2 is not None:
        shown.append(rich_table(TABLE2_TITLE, TABLE2_HEADERS, table2_cells(tables.table2)))
    if tables.table3 is not None:
        shown.append(rich_table(table3_title(tables.table3_measure), TABLE3_HEADERS, table3_cells(tables.table3)))
    return shown


def output_prefix(out_dir: str | Path | None, run_dirs: Sequence[str | Path], rank_dirs: Sequence[str | Path]) -> Path:
    """Where :func:`write_tables` writes: ``table2`` (``table3`` when no run folder is given) in ``out_dir``,
    by default the folder that holds the first run folder (else the first rank output)."""
    name = "table2" if run_dirs else "table3"
    if out_dir is not None:
        return Path(out_dir) / name
    return Path(run_dirs[0] if run_dirs else rank_dirs[0]).parent / name


def write_tables(prefix: str | Path, tables: Tables) -> list[Path]:
    """PREFIX.csv (Table 2, else Table 3), PREFIX.rank.csv (Table 3 beside a Table 2) and PREFIX.md (every table
    as shown); returns the paths written."""
    prefix = Path(prefix)
    written, markdown = [], []
    if tables.table2 is not None:
        write_text_atomic(prefix.with_name(prefix.name + ".csv"), tables.table2.to_csv(index=False))
        written.append(prefix.with_name(prefix.name + ".csv"))
        markdown.append(f"## {TABLE2_TITLE}\n\n{markdown_table(TABLE2_HEADERS, table2_cells(tables.table2))}")
    if tables.table3 is not None:
        suffix = ".rank.csv" if tables.table2 is not None else ".csv"
        write_text_atomic(prefix.with_name(prefix.name + suffix), tables.table3.to_csv(index=False))
        written.append(prefix.with_name(prefix.name + suffix))
        markdown.append(f"## {table3_title(tables.table3_measure)}\n\n"
                        f"{markdown_table(TABLE3_HEADERS, table3_cells(tables.table3))}")
    write_text_atomic(prefix.with_name(prefix.name + ".md"), "\n".join(markdown))
    written.append(prefix.with_name(prefix.name + ".md"))
    return written
