"""Evaluation commands: ``dsdi eval`` (TREC AP or xinfAP of a run), ``dsdi eval-images`` (classifiers per class on
labelled images), ``dsdi pool`` (NIST-style sample qrels),
``dsdi report`` (an HTML page of a rank output) and
``dsdi table`` (the paper's Tables 2 and 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from dsdi import options
from dsdi.cli.common import EVALUATION, add_command, console, err_console
from dsdi.errors import InputError
from dsdi.labels.labelset import DEFAULT_LABELSET, load_labelset, read_feature_numbers
from dsdi.options import option
from dsdi.report.images import ImageEvalConfig
from dsdi.workspace import RUNS_DIR


@dataclasses.dataclass(kw_only=True)
class EvalConfig:
    """``dsdi eval``: the run, its ground truth and the depth."""

    run: Path = option(help="run file: TRECVID XML submission or TREC form 'fNum Q0 shotId rank score runId' "
                            "(detected from the content)")
    qrels: Path = option(help="ground truth: trec_eval qrels 'fNum 0 shotId rel' (rel > 0 relevant; scored with "
                              "TREC AP) or NIST sample qrels 'fNum 0 shotId stratum judgment' (judgment 1/0/-1 = "
                              "relevant / not / pooled but not judged; scored with xinfAP as sample_eval does)")
    topk: int = option(1000, minimum=1, help="cut every ranking at this depth before scoring (sample qrels: "
                                             "sample_eval's maximum result size)")
    out: Path | None = option(None, help="CSV file to write the table to as well (last row 'all' = the means)")
    labelset: str = option(DEFAULT_LABELSET, help="label set naming the topics: a built-in name or a TOML file "
                                                  "(topics are its feature numbers, or its class names)")
    feature_numbers: Path | None = option(None, help="CSV 'feature,number' renumbering the label set's features",
                                          shown_default="the label set's numbers")


def _fmt(value: float) -> str:
    """A measure to 4 decimals."""
    return f"{value:.4f}"


def _eval_table(evaluation, title: str):
    """The rich table of an Evaluation: AP per feature, or sample_eval's measures on sample qrels."""
    from rich.table import Table

    shown = Table(title=title)
    sampled = evaluation.measure == "infap"
    headers = ("judged rel.", "retrieved", "rel. retrieved", "est. rel.", "est. rel. ret.", "xinfAP", "infNDCG",
               "iP10", "iP100", "iP1000", "iP depth")
    if not sampled:
        headers = ("relevant", "retrieved", "rel. retrieved", "AP")
    for header in ("feature", "topic", *headers):
        shown.add_column(header, justify="left" if header == "feature" else "right")
    for row in evaluation.table.itertuples(index=False):
        counts = [str(row.relevant), str(row.retrieved), str(row.relevant_retrieved)]
        if not sampled:
            shown.add_row(row.feature, str(row.fnum), *counts, "-" if row.relevant == 0 else _fmt(row.ap))
            continue
        measures = (row.infap, row.infndcg, row.ip10, row.ip100, row.ip1000, row.ip_depth)
        shown.add_row(row.feature, str(row.fnum), *counts, f"{row.est_relevant:.1f}",
                      f"{row.est_relevant_retrieved:.1f}", *("-" if row.relevant == 0 else _fmt(v) for v in measures))
    return shown


def _eval(given: dict) -> None:
    """Score a run against qrels at depth --topk: TREC AP per feature and the mAP (trec_eval qrels), or xinfAP,
    infNDCG and inferred precision per feature and their means as NIST's sample_eval computes them (NIST sample
    qrels). The qrels form is detected from the file."""
    from dsdi.trecvid.evaluation import evaluate_files, write_metrics_csv

    config = options.from_values(EvalConfig, given)
    labelset = load_labelset(config.labelset)
    if config.feature_numbers is not None:
        labelset = labelset.with_feature_numbers(read_feature_numbers(config.feature_numbers, labelset))
    evaluation = evaluate_files(config.run, config.qrels, k=config.topk, topics=labelset.topics())
    measure = "xinfAP" if evaluation.measure == "infap" else "AP"
    console.print(_eval_table(evaluation, f"{config.run.name} vs {config.qrels.name} ({evaluation.format}), "
                                          f"{measure} at depth {config.topk}"))
    table = evaluation.table
    if not (table["retrieved"] > 0).any() or not (table["relevant_retrieved"] > 0).any():
        err_console.print("[yellow]warning:[/] no relevant shot was retrieved for any feature: do the run's "
                          "feature numbers and shot ids match the qrels?", highlight=False)
    judged = int((table["relevant"] > 0).sum())
    if evaluation.measure == "infap":
        means = evaluation.means
        console.print(f"mean xinfAP {means['infap']:.4f}, infNDCG {means['infndcg']:.4f}, iP10 {means['ip10']:.4f}, "
                      f"iP100 {means['ip100']:.4f}, iP1000 {means['ip1000']:.4f}, iP{config.topk} "
                      f"{means['ip_depth']:.4f} over {judged} features with a judged relevant shot", highlight=False)
    else:
        console.print(f"mAP {evaluation.mean:.4f} over {judged} features with at least one relevant shot",
                      highlight=False)
    if config.out is not None:
        write_metrics_csv(config.out, evaluation)
        console.print(f"wrote {config.out}", highlight=False)


def _print_whole(table) -> None:
    """Print a rich table as wide as it needs (no cut numbers), also into a file or pipe."""
    needed = console.measure(table, options=console.options.update_width(1000)).maximum
    Console(width=max(console.width, needed)).print(table)


def _eval_images(given: dict) -> None:
    """Score classifiers on labelled images (e.g. LADI v2's test split) and compare them class by class: AP and F1
    at 0.5 per class, and mAP, LRAP and macro F1 per model (with several models, also of the mean of their
    sigmoids). Models of other label sets are scored by class name. Unreadable images are skipped and counted."""
    from dsdi.report.images import evaluate_images, shown_tables, write_image_tables

    config = options.from_values(ImageEvalConfig, given)
    evaluation = evaluate_images(config)
    for item in evaluation.unreadable:
        err_console.print(f"[yellow]skipped unreadable image[/] {item.path}: {item.reason}", highlight=False)
    for table in shown_tables(evaluation):
        _print_whole(table)
    if config.out is not None:
        written = write_image_tables(config.out, evaluation)
        console.print(f"wrote {', '.join(map(str, written))}", highlight=False)


def _stratum(text: str) -> tuple[int, int, float]:
    """``--stratum FIRST-LAST:RATE`` (``dsdi.trecvid.pool.parse_stratum``)."""
    from dsdi.trecvid.pool import parse_stratum

    return parse_stratum(text)


@dataclasses.dataclass(kw_only=True)
class PoolConfig:
    """``dsdi pool``: the runs to pool, the complete judgments, the strata and the seed."""

    runs: list[Path] = option(help="run files to pool (TRECVID XML or TREC form, as dsdi eval reads them)",
                              argument=True)
    qrels: Path = option(help="complete judgments, trec_eval qrels 'fNum 0 shotId rel' (e.g. dsdi synth's "
                              "qrels.txt); a shot they do not list is not relevant")
    stratum: list[tuple[int, int, float]] = option(
        [], parse=_stratum, help="FIRST-LAST:RATE, repeated, contiguous from rank 1: shots whose best rank over the "
                                 "runs falls in FIRST..LAST, judged at RATE (--stratum 1-100:1.0 --stratum "
                                 "101-1000:0.2); the last LAST is the pool depth")
    seed: int = option(0, minimum=0, help="seed of the random sample within each stratum")
    out: Path = option(help="NIST sample qrels file to write 'fNum 0 shotId stratum judgment' (1/0/-1 = relevant "
                            "/ not / pooled but not judged)")


def _pool(given: dict) -> None:
    """Simulate NIST's judging: pool the runs, judge a stratified random sample of each feature's pool from complete
    judgments, write NIST sample qrels for dsdi eval (xinfAP)."""
    from dsdi.trecvid.pool import sample_pool, write_sample_qrels
    from dsdi.trecvid.qrels import read_qrels
    from dsdi.trecvid.submission import read_run

    config = options.from_values(PoolConfig, given)
    runs = [read_run(path) for path in config.runs]
    sampled = sample_pool(runs, read_qrels(config.qrels), config.stratum, config.seed)
    write_sample_qrels(config.out, sampled)
    pooled = sum(len(shots) for shots in sampled.values())
    judged = sum(judgment >= 0 for shots in sampled.values() for _, judgment in shots.values())
    console.print(f"pooled {pooled} shots of {len(sampled)} features from {len(runs)} runs, {judged} judged; "
                  f"wrote {config.out}", highlight=False)


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
    for table in shown_tables(tables):
        _print_whole(table)
    written = write_tables(output_prefix(config.out, config.run_dirs, config.rank), tables)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""
    add_command(app, "eval", EVALUATION, EvalConfig, _eval)
    add_command(app, "eval-images", EVALUATION, ImageEvalConfig, _eval_images)
    add_command(app, "pool", EVALUATION, PoolConfig, _pool)
    add_command(app, "report", EVALUATION, ReportConfig, _report)
    add_command(app, "table", EVALUATION, TableConfig, _table)
