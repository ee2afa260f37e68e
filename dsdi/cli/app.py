"""The ``dsdi`` command: a thin typer shell. Each command parses flags and calls one library function
of the same name; bad input (``InputError``) is printed without a traceback and exits with status 2."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path  # noqa: F401  (used by the command sections)
from typing import Optional  # noqa: F401  (typer needs Optional on Python 3.10)

import typer
from rich.console import Console

from dsdi.errors import InputError
from dsdi.options import command_option, config_command
from dsdi.rank.config import RankConfig
from dsdi.train.config import TrainConfig
from dsdi.workspace import IMAGES_DIR, LABELS_CSV, RUNS_DIR, SUBMISSIONS_DIR  # noqa: F401

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err_console = Console(stderr=True)


def exits_on_input_error(command):
    """Turn an InputError raised by library code into a clear message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


# ---- dsdi labels (owner: labels) -------------------------------------------------------------
from dsdi.labels.crowd import LabelMode  # noqa: E402  (section-local import: the --mode choices)


@app.command("labels")
@exits_on_input_error
def labels_command(
    annotations: Path = typer.Argument(..., help="LADI annotation .tsv/.csv: url|img_url|image_uuid, WorkerId, Answer"),
    out: Path = typer.Option(LABELS_CSV, "--out", help="label CSV to write: image_id + 37 class columns"),
    mode: LabelMode = typer.Option(
        LabelMode.soft, "--mode", help="soft: count / image max; hard: any answer; majority: >= half of the category"
    ),
    token_map: Path | None = typer.Option(None, "--token-map", help="CSV token,class that extends the shipped map"),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="skip (and count) tokens not in the map"),
) -> None:
    """LADI crowd answers -> per-image labels (paper 2.1 soft labels by default)."""
    from dsdi.labels.crowd import make_labels, summary_tables

    summary = make_labels(annotations, out, mode, token_map, skip_unknown)
    for table in summary_tables(summary):
        console.print(table)
    console.print(f"wrote {summary.images:,} images x {len(summary.positives)} classes to {out}")


# ---- dsdi synth (owner: synth) ---------------------------------------------------------------


def _pair(text: str, separator: str, cast, flag: str):
    """'640x480' -> (640, 480); '3-12' -> (3.0, 12.0); a bad value raises InputError naming the flag."""
    try:
        first, second = (cast(part) for part in text.split(separator))
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected two numbers like 'A{separator}B'") from None
    return first, second


@app.command("synth")
@exits_on_input_error
def synth_command(
    out_dir: Path = typer.Argument(..., help="Folder to write the synthetic world into (created if missing)."),
    images: int = typer.Option(1000, "--images", help="Number of images (outliers come on top)."),
    clips: int = typer.Option(60, "--clips", help="Number of shot clips."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same world."),
    image_size: str = typer.Option("640x480", "--image-size", help="Image WIDTHxHEIGHT in pixels."),
    clip_size: str = typer.Option("640x360", "--clip-size", help="Clip WIDTHxHEIGHT (even numbers)."),
    clip_seconds: str = typer.Option("3-12", "--clip-seconds", help="Clip duration range MIN-MAX in seconds."),
    miss_rate: float = typer.Option(0.2, "--miss-rate", help="Chance a simulated worker misses a present feature."),
    false_rate: float = typer.Option(0.02, "--false-rate", help="Chance a worker names an absent feature."),
    outlier_rate: float = typer.Option(
        0.0, "--outlier-rate", help="Share R (0-0.9) of outliers among all images: round(R*N/(1-R)) extra images "
        "showing no feature (sky, blur, black, lens flare) that the crowd labels as if they did; "
        "true_labels.csv marks them in a last column `outlier` (when R > 0)."),
) -> None:
    """Build the embedded synthetic LADI-like world: images, crowd answers, true labels, clips, qrels."""
    from dsdi.synth import build_world, outlier_count

    world = build_world(
        out_dir, n_images=images, n_clips=clips, seed=seed,
        image_size=_pair(image_size, "x", int, "--image-size"), clip_size=_pair(clip_size, "x", int, "--clip-size"),
        clip_seconds=_pair(clip_seconds, "-", float, "--clip-seconds"), miss_rate=miss_rate, false_rate=false_rate,
        outlier_rate=outlier_rate,
    )
    outliers = outlier_count(images, outlier_rate)
    shown = f"{images} images" + (f" + {outliers} outliers" if outlier_rate > 0 else "")
    console.print(f"synthetic world in {world.root}: {shown} in {world.images_dir}, annotations "
                  f"{world.annotations.name}, true labels {world.true_labels.name}, {clips} clips in "
                  f"{world.clips_dir}, qrels {world.qrels.name}, clip truth {world.clip_truth.name}", highlight=False)


# ---- dsdi eval (owner: metrics/submission) ---------------------------------------------------


@app.command("eval")
@exits_on_input_error
def eval_command(
    run: Path = typer.Option(..., "--run", help="Run file: TRECVID XML submission or TREC form "
                             "'fNum Q0 shotId rank score runId' (detected from the content)."),
    qrels: Path = typer.Option(..., "--qrels", help="Ground truth, TREC qrels 'fNum 0 shotId rel' (rel > 0 relevant)."),
    k: int = typer.Option(1000, "--k", min=1, help="Cut every ranking at this depth before scoring."),
    out: Optional[Path] = typer.Option(  # noqa: UP045  (Optional: typer on Python 3.10)
        None, "--out", help="Also write the table as CSV (last row 'all' = mAP)."
    ),
    feature_numbers: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--feature-numbers", help="CSV 'feature,number' naming the fNums (default: dsdi's table)."
    ),
) -> None:
    """Score a run against qrels: TREC average precision per feature at depth k, and the mAP."""
    from rich.table import Table

    from dsdi.trecvid.evaluation import evaluate_files, write_metrics_csv

    table, mean_ap = evaluate_files(run, qrels, k=k, feature_numbers_path=feature_numbers)
    shown = Table(title=f"{run.name} vs {qrels.name}, AP at k={k}")
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
    if out is not None:
        write_metrics_csv(out, table, mean_ap)
        console.print(f"wrote {out}", highlight=False)

# ---- dsdi prepare (owner: data) --------------------------------------------------------------


@app.command()
@exits_on_input_error
def prepare(
    labels: Path = typer.Option(LABELS_CSV, "--labels", help="labels CSV: image_id + the 37 class columns"),
    images: Path = typer.Option(IMAGES_DIR, "--images", help="folder of the original images"),
    out: Path = typer.Option(..., "--out", help="cache folder to write, e.g. data/images-360"),
    img_size: int = typer.Option(360, "--img-size", min=1, help="shorter side of the cached images in px"),
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG quality of the cache"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="decode threads [default: cores, max 8]"),
) -> None:
    """Write a resized JPEG cache of the labelled images (same relative paths); train with --images OUT."""
    from dsdi.train.data import prepare_image_cache

    result = prepare_image_cache(labels, images, out, img_size=img_size, quality=quality, workers=workers)
    console.print(
        f"prepare: {result.written} written, {result.up_to_date} already up to date, "
        f"{len(result.broken)} unreadable -> {out}",
        highlight=False,
    )
    for image_id, path, reason in result.broken[:20]:
        err_console.print(f"  skipped {image_id}: {path} ({reason})", highlight=False)
    if len(result.broken) > 20:
        err_console.print(f"  ... and {len(result.broken) - 20} more: see {out / 'prepare_failures.csv'}")

# ---- dsdi shots (owner: shots) ---------------------------------------------------------------


@app.command("shots")
@exits_on_input_error
def shots_command(
    videos: list[Path] = typer.Argument(..., help="video files and/or folders of them (searched recursively)"),
    out: Path = typer.Option(..., "--out", help="shot table to write or extend: video,shot_id,start,end"),
    detector: str = typer.Option("adaptive", "--detector", help="PySceneDetect detector: adaptive | content"),
    min_shot: float = typer.Option(0.6, "--min-shot", min=0.0, help="shortest shot in seconds"),
) -> None:
    """Raw footage -> master shot table for dsdi rank --shots. Videos already in the table are skipped,
    unreadable ones listed; exits 2 when none of the videos given has shots in the table."""
    from dsdi.video.shots import detect_shots

    result = detect_shots(videos, out, detector=detector, min_shot=min_shot)
    if result.skipped:
        console.print(f"shots: skipped {len(result.skipped)} videos already in {out}", highlight=False)
    if result.written:
        console.print(f"shots: {result.shots} shots of {len(result.written)} videos -> {out} ({result.frames:,} "
                      f"frames, {result.frames_per_second:.0f} frames/s)", highlight=False)
    if result.failures:
        err_console.print(f"shots: {len(result.failures)} unreadable videos skipped:", highlight=False)
        for path, reason in result.failures:
            err_console.print(f"  {path}: {reason}", highlight=False)
        if not result.written and not result.skipped:
            raise typer.Exit(code=2)


# ---- dsdi train (owner: train) ---------------------------------------------------------------


def _train(given: dict, config: Path | None, resume: bool) -> None:
    """Train a multi-label classifier; writes config.toml, metrics.csv, last.pt, best.pt (+ snapshot_K.pt).

    Precedence: defaults < the run's own config.toml (with --resume) < --config recipe < flags."""
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
        None, "--config", help="recipe TOML (e.g. runs/C04.toml); flags override it")),
    command_option("resume", bool, typer.Option(
        False, "--resume", help="continue --out from its last.pt (or extend it with a higher --epochs)")),
)
app.command("train")(exits_on_input_error(config_command(TrainConfig, _train, *TRAIN_COMMAND_OPTIONS)))

# ---- dsdi rank / dsdi fuse (owner: rank) -----------------------------------------------------


def _extra_models(ctx: typer.Context) -> list[Path]:
    """`--models A B C`: click gives an option one value, so B and C arrive as extra arguments."""
    unknown = [arg for arg in ctx.args if arg.startswith("-")]
    if unknown:
        raise InputError(f"unknown option(s) {' '.join(unknown)}; see {ctx.command_path} --help")
    return [Path(arg) for arg in ctx.args]


def _print_rank_summary(result) -> None:
    """The last line of rank and fuse: clips ranked, failed, scored this time and reused from the index, the
    index's size on disk (as run.json records them), the outputs."""
    outputs = ", ".join(str(p) for p in (result.xml_path, result.trec_path) if p is not None)
    console.print(f"ranked {result.clips_ranked}, failed {result.clips_failed} "
                  f"(scored {result.clips_scored} new clips, {result.frames_scored} frames, "
                  f"reused {result.clips_reused} from the index of {result.index_bytes / 1e6:.1f} MB, "
                  f"{result.elapsed_s:.1f} s) -> {outputs}", highlight=False)


def _rank(given: dict, ctx: typer.Context) -> None:
    """Rank shot clips per disaster feature (paper 2.5): 10 fps frames, max of sigmoids, fused models, top-k.

    Resumable: scores are kept in OUT/scores.sqlite per model and clip; re-running skips scored clips."""
    from dsdi.rank.scoring import rank

    given["models"] = [*given.get("models", []), *_extra_models(ctx)]
    result = rank(RankConfig().updated(given, source="command line"))
    if result.xml_path is not None:  # torchrun: only process 0 writes and reports
        _print_rank_summary(result)


RANK_COMMAND_OPTIONS = (command_option("ctx", typer.Context, inspect.Parameter.empty),)
app.command("rank", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    exits_on_input_error(config_command(RankConfig, _rank, *RANK_COMMAND_OPTIONS)))


@app.command("fuse", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@exits_on_input_error
def fuse_command(
    ctx: typer.Context,
    out_dir: Path = typer.Argument(..., help="A dsdi rank output folder (holds scores.sqlite and run.json)."),
    out: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--out", help="Write into this new folder (with a copy of the scores) and leave OUT_DIR as it is."
    ),
    models: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--models", help="Only these of the run's models: run dirs, checkpoints or keys as in run.json."
    ),
    model_weights: Optional[str] = typer.Option(None, "--model-weights", help="Comma list, one per model."),  # noqa: UP045
    agg: Optional[str] = typer.Option(None, "--agg", help="max | mean | top3 (default: as ranked)."),  # noqa: UP045
    fuse: Optional[list[str]] = typer.Option(None, "--fuse", help="OTHER_OUT_DIR:W (replaces the run's --fuse)."),  # noqa: UP045
    topk: Optional[int] = typer.Option(None, "--topk", min=1, help="Clips kept per feature (default: as ranked)."),  # noqa: UP045
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run name of the outputs (default: as ranked)."),  # noqa: UP045
) -> None:
    """Re-fuse and re-rank a rank output from its stored scores (no decoding); rewrites its outputs, or with --out
    writes them (and a copy of the scores) into a new folder. `dsdi fuse OUT --out ALONE --models runs/A`: one
    model's ranking; weights are equal over the chosen models unless --model-weights."""
    from dsdi.rank.config import parse_fuse_spec, parse_model_weights
    from dsdi.rank.fusion import fuse as fuse_run

    chosen = [*(models or []), *map(str, _extra_models(ctx))]
    if chosen and not models:
        raise InputError(f"unexpected argument(s) {' '.join(chosen)}; see dsdi fuse --help")
    weights = parse_model_weights(model_weights) if model_weights is not None else None
    other = [parse_fuse_spec(spec) for spec in fuse] if fuse else None
    _print_rank_summary(fuse_run(out_dir, model_weights=weights, agg=agg, other=other, topk=topk, models=chosen or None,
                                 new_out=out, run_id=run_id))


# ---- dsdi report (owner: report) -------------------------------------------------------------


@app.command()
@exits_on_input_error
def report(
    out_dir: Path = typer.Argument(..., help="output folder of `dsdi rank` (clip_scores.csv, run.json, ...)"),
    qrels: Path | None = typer.Option(None, "--qrels", help="ground truth `fNum 0 shotId rel`: adds AP chart"),
    out: Path | None = typer.Option(None, "--out", help="HTML file to write (default OUT_DIR/report.html)"),
    top: int = typer.Option(6, "--top", min=1, help="clips shown per feature"),
) -> None:
    """Write one self-contained HTML page: AP per feature with the mAP line, top clips, run facts, failures."""
    from dsdi.report.html import build_report

    console.print(f"report: {build_report(out_dir, qrels_path=qrels, out_path=out, top_n=top)}", highlight=False)


# ---- dsdi select (owner: ensemble) -----------------------------------------------------------


@app.command("select")
@exits_on_input_error
def select_command(
    runs: list[str] = typer.Argument(..., help="Run folders to choose from (RUN_DIR, or RUN_DIR:last / "
                                     ":snapshot_K for another checkpoint of that run)."),
    size: int = typer.Option(10, "--size", min=1, help="Greedy steps (picks, repetitions allowed)."),
    out: Path = typer.Option(..., "--out", help="Ensemble file to write, e.g. runs/ensembles/NAME.toml."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Checkpoint of each run: best | last | snapshot_K."),
    runs_dir: Path = typer.Option(RUNS_DIR, "--runs-dir", help="Members under it are written relative to it "
                                  "(as dsdi rank --ensemble looks them up)."),
) -> None:
    """Choose an ensemble on the common hold-out: greedy forward selection with replacement (Caruana et al.
    2004) on the stored hold-out sigmoids; writes an ensemble file (weights = how often a run was picked)."""
    from rich.table import Table

    from dsdi.rank.selection import select_ensemble

    found = select_ensemble(runs, size, out, checkpoint=checkpoint, runs_dir=runs_dir)
    shown = Table(title=f"hold-out ({found.images} images): {len(found.candidates)} runs, {size} picks")
    for header in ("ensemble", "models", "hold-out mAP", "LRAP"):
        shown.add_column(header, justify="left" if header == "ensemble" else "right")
    picked = ", ".join(f"{m.run.name}{'' if m.checkpoint == 'best' else ':' + m.checkpoint} x{m.weight:g}"
                       for m in found.ensemble.members)
    for label, count, (mean_ap, lrap_value) in (
            (f"selection ({picked})", len(found.ensemble.members), found.selected),
            ("all runs, equal weights", len(found.candidates), found.all_equal),
            (f"best single ({found.best_single_label})", 1, found.best_single)):
        shown.add_row(label, str(count), f"{mean_ap:.4f}", f"{lrap_value:.4f}")
    console.print(shown)
    steps = " ".join(f"{found.candidates[i].label}:{score:.4f}" for i, score in
                     zip(found.selection.picks, found.selection.scores, strict=True))
    console.print(f"steps (pick:mAP after it): {steps}", highlight=False)
    console.print(f"wrote {out}; rank with: dsdi rank --ensemble {out} --clips CLIPS", highlight=False)


# ---- dsdi sweep (owner: sweep) ---------------------------------------------------------------


@app.command("sweep")
@exits_on_input_error
def sweep_command(
    recipes: list[Path] = typer.Argument(..., help="Recipe TOML files, e.g. runs/*.toml or runs/toy/*.toml."),
    seeds: Optional[str] = typer.Option(  # noqa: UP045
        None, "--seeds", help="Comma list: train each recipe once per seed into OUT-s<seed> (default: the recipe's)."
    ),
    set_values: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--set", help="KEY=VALUE: a train option for every run, VALUE as TOML (--set epochs=2 --set lr=0.005)."
    ),
    out_root: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--out-root", help="Train into OUT_ROOT/<recipe name> instead of each recipe's out."
    ),
    show_traceback: bool = typer.Option(False, "--traceback", help="Print a failed run's traceback too."),
) -> None:
    """Train recipes one after another: finished runs are skipped, interrupted ones resumed, a failed one is reported
    and the sweep carries on (exit 1 when any failed). Works under torchrun (process 0 prints)."""
    from dsdi.train.sweep import is_main_process, parse_overrides, parse_seeds, summary_table, sweep

    def on_run(outcome) -> None:
        if outcome.trace and show_traceback and is_main_process():
            err_console.print(outcome.trace, highlight=False, markup=False)

    result = sweep(recipes, seeds=parse_seeds(seeds) if seeds else None, overrides=parse_overrides(set_values or []),
                   out_root=out_root, on_run=on_run)
    if is_main_process():
        console.print(summary_table(result))
        for run in result.failures:
            err_console.print(f"failed: {run.name} ({run.recipe}): {run.error}", highlight=False, markup=False,
                              soft_wrap=True)
    if result.failures:
        raise typer.Exit(code=1)


# ---- dsdi table (owner: tables) --------------------------------------------------------------
from typer.core import TyperCommand  # noqa: E402  (section-local import: the command's parser)


class _RankFoldersCommand(TyperCommand):
    """``--rank A B C``: every argument after --rank up to the next option is a rank folder (click gives an option
    one value, and the variadic RUN_DIR argument would take B and C)."""

    def parse_args(self, ctx, args):
        expanded, after_rank = [], False
        for arg in args:
            if arg.startswith("-"):
                after_rank = arg == "--rank"
                expanded.append(arg)
                continue
            if after_rank and expanded[-1] != "--rank":
                expanded.append("--rank")
            expanded.append(arg)
        return super().parse_args(ctx, expanded)


@app.command("table", cls=_RankFoldersCommand)
@exits_on_input_error
def table_command(
    run_dirs: Optional[list[Path]] = typer.Argument(None, help="Run folders (Table 2), e.g. runs/A01 runs/C04."),  # noqa: UP045
    rank: Optional[list[Path]] = typer.Option(  # noqa: UP045
        None, "--rank", help="dsdi rank output folders (Table 3; every argument after --rank is one); needs --qrels."
    ),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="Ground truth for Table 3: TREC qrels."),  # noqa: UP045
    out: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--out", help="Write PREFIX.csv and PREFIX.md (default: table2 beside the first run folder)."
    ),
    k: int = typer.Option(1000, "--k", min=1, help="Table 3: cut every ranking at this depth."),
    ensembles: Path = typer.Option(RUNS_DIR / "ensembles", "--ensembles", help="Table 3: ensemble files whose "
                                   "paper_map is shown beside the rank output of the same name."),
) -> None:
    """The paper's Table 2 (models: config, best-epoch validation and hold-out LRAP / mAP, training time) and with
    --rank its Table 3 (submissions: models, mAP against --qrels), the paper's values beside matching rows."""
    from dsdi.report.tables import (
        TABLE2_HEADERS,
        TABLE2_TITLE,
        TABLE3_HEADERS,
        TABLE3_TITLE,
        Tables,
        output_prefix,
        rich_table,
        table2,
        table2_cells,
        table3,
        table3_cells,
        write_tables,
    )

    rank_dirs = list(rank or [])
    run_dirs = list(run_dirs or [])
    if not run_dirs and not rank_dirs:
        raise InputError("give run folders (Table 2) and/or --rank OUT_DIR... --qrels FILE (Table 3)")
    if rank_dirs and qrels is None:
        raise InputError("--rank needs --qrels FILE to score the submissions")
    tables = Tables(table2(run_dirs) if run_dirs else None,
                    table3(rank_dirs, qrels, k, ensembles) if rank_dirs else None)
    shown = []
    if tables.table2 is not None:
        shown.append(rich_table(TABLE2_TITLE, TABLE2_HEADERS, table2_cells(tables.table2)))
    if tables.table3 is not None:
        shown.append(rich_table(TABLE3_TITLE, TABLE3_HEADERS, table3_cells(tables.table3)))
    for table in shown:  # as wide as the table needs (no cut numbers), also when the output is a file or pipe
        needed = console.measure(table, options=console.options.update_width(1000)).maximum
        Console(width=max(console.width, needed)).print(table)
    written = write_tables(output_prefix(out, run_dirs, rank_dirs), tables)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False)


# ---- dsdi study (owner: study) ---------------------------------------------------------------


@app.command("study")
@exits_on_input_error
def study_command(
    out_dir: Path = typer.Argument(Path("runs/study"), help="Study folder: worlds, labels, recipes, models, ranks."),
    report: Path = typer.Option(Path("docs/study.md"), "--report", help="The report to write (and <stem>.svg)."),
    images: int = typer.Option(1500, "--images", min=20, help="Normal images per world."),
    clips: int = typer.Option(60, "--clips", min=2, help="Clips of the default world."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma list of training seeds (at least 2)."),
    epochs: int = typer.Option(5, "--epochs", min=1, help="Epochs of every run (the snapshot variant: one per cycle)."),
    backbone: str = typer.Option("resnet10t", "--backbone", help="timm model of every run (random init)."),
    img_size: int = typer.Option(64, "--img-size", min=16, help="Model input side in px."),
) -> None:
    """Measure the paper's claims on the synthetic world: build worlds, train every variant with every seed, rank the
    clips, write the report (docs/study.md + figure). Resumes when run again. `make study` runs the defaults."""
    from dsdi.study import StudySize, run_study
    from dsdi.train.sweep import parse_seeds

    size = StudySize(images=images, clips=clips, seeds=tuple(parse_seeds(seeds)), epochs=epochs, backbone=backbone,
                     img_size=img_size)
    console.print(f"report: {run_study(out_dir, report, size)}", highlight=False)
