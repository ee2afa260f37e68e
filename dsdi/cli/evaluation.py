"""Evaluation commands: ``dsdi eval`` (TREC AP of a run), ``dsdi report`` (an HTML page of a rank output) and
``dsdi table`` (the paper's Tables 2 and 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from dsdi import options
from dsdi.cli.common import EVALUATION, add_command, console, err_console
from dsdi.errors import InputError
from dsdi.options import option
from dsdi.workspace import RUNS_DIR


@dataclasses.dataclass(kw_only=True)
class EvalConfig:
    """``dsdi eval``: the run, its ground truth and the depth."""

    run: Path = option(help="run file: TRECVID XML submission or TREC form 'fNum Q0 shotId rank score runId' "
                            "(detected from the content)")
    qrels: Path = option(help="ground truth, TREC qrels 'fNum 0 shotId rel' (rel > 0 relevant)")
    topk: int = option(1000, minimum=1, help="cut every ranking at this depth before scoring")
    out: Path | None = option(None, help="CSV file to write the table to as well (last row 'all' = mAP)")
    feature_numbers: Path | None = option(None, help="CSV 'feature,number' naming the fNums",
                                          shown_default="dsdi's table")


def _eval(given: dict) -> None:
    """Score a run against qrels: TREC average precision per feature at depth --topk, and the mAP."""
    from rich.table import Table

    from dsdi.trecvid.evaluation import evaluate_files, write_metrics_csv

    config = options.from_values(EvalConfig, given)
    table, mean_ap = evaluate_files(config.run, config.qrels, k=config.topk,
                                    feature_numbers_path=config.feature_numbers)
    shown = Table(title=f"{config.run.name} vs {config.qrels.name}, AP at depth {config.topk}")
    for header in ("feature", "number", "relevant", "retrieved", "rel. retrieved", "AP"):
        shown.add_column(header, justify="left" if header == "feature" else "right")
    for row in table.itertuples(index=False):
        ap_text = "-" if row.relevant == 0 else f"{row.ap:.4f}"
        shown.add_row(row.feature, str(row.fnum), str(row.relevant), str(row.retrieved),
                      str(row.relevant_retrieved), ap_text)
    console.print(shown)
    if not (table["retrieved"] > 0).any() or not (table["relevant_retrieved"] > 0).any():
        err_console.print("[yellow]warning:[/] no relevant shot was retrieved for any feature: do the run's "
                          "feature numbers and shot ids match the qrels?", highlight=False)
    judged = int((table["relevant"] > 0).sum())
    console.print(f"mAP {mean_ap:.4f} over {judged} features with at least one relevant shot", highlight=False)
    if config.out is not None:
        write_metrics_csv(config.out, table, mean_ap)
        console.print(f"wrote {config.out}", highlight=False)


@dataclasses.dataclass(kw_only=True)
class ReportConfig:
    """``dsdi report``: the rank output, its ground truth and the page to write."""

    rank_dir: Path = option(help="output folder of dsdi rank (clip_scores.csv, run.json, ...)", argument=True)
    qrels: Path | None = option(None, help="ground truth 'fNum 0 shotId rel': adds the AP chart")
    out: Path | None = option(None, help="HTML file to write", shown_default="RANK_DIR/report.html")
    topk: int = option(6, minimum=1, help="clips shown per feature")


def _report(given: dict) -> None:
    """Write one self-contained HTML page of a rank output: AP per feature, top clips, run facts, failures."""
    from dsdi.report.html import build_report

    config = options.from_values(ReportConfig, given)
    page = build_report(config.rank_dir, qrels_path=config.qrels, out_path=config.out, top_n=config.topk)
    console.print(f"report: {page}", highlight=False)


@dataclasses.dataclass(kw_only=True)
class TableConfig:
    """``dsdi table``: the runs of Table 2, the rank outputs of Table 3 and where the tables go."""

    run_dirs: list[Path] = option([], help="run folders (Table 2), e.g. runs/A01 runs/C04", argument=True)
    rank: list[Path] = option([], help="a dsdi rank output folder for Table 3 (--rank A --rank B); needs --qrels")
    qrels: Path | None = option(None, help="ground truth for Table 3: TREC qrels")
    out: Path | None = option(None, help="folder to write table2.csv and table2.md into (table3.* with --rank "
                                         "alone)", shown_default="the parent of the first folder given")
    topk: int = option(1000, minimum=1, help="Table 3: cut every ranking at this depth")
    ensembles: Path = option(RUNS_DIR / "ensembles", help="Table 3: folder of ensemble files whose paper_map is "
                                                          "shown beside the rank output of the same name")


def _table(given: dict) -> None:
    """The paper's Tables 2 (trained runs) and 3 (rank outputs), the paper's values beside matching rows.

    Table 2: config, best-epoch validation and hold-out LRAP / mAP, training time. Table 3 (with --rank):
    models, mAP against --qrels. Printed and written as CSV and Markdown into the folder --out."""
    from dsdi.report.tables import output_prefix, paper_tables, shown_tables, write_tables

    config = options.from_values(TableConfig, given)
    if not config.run_dirs and not config.rank:
        raise InputError("give run folders (Table 2) and/or --rank OUT_DIR --qrels FILE (Table 3)")
    if config.rank and config.qrels is None:
        raise InputError("--rank needs --qrels FILE to score the submissions")
    tables = paper_tables(config.run_dirs, config.rank, config.qrels, config.topk, config.ensembles)
    for table in shown_tables(tables):  # as wide as the table needs (no cut numbers), also into a file or pipe
        needed = console.measure(table, options=console.options.update_width(1000)).maximum
        Console(width=max(console.width, needed)).print(table)
    written = write_tables(output_prefix(config.out, config.run_dirs, config.rank), tables)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""
    add_command(app, "eval", EVALUATION, EvalConfig, _eval)
    add_command(app, "report", EVALUATION, ReportConfig, _report)
    add_command(app, "table", EVALUATION, TableConfig, _table)
