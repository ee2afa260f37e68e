"""Ranking commands: ``dsdi select`` (an ensemble on the hold-out), ``dsdi export`` (a model for ONNX Runtime),
``dsdi rank`` (clips per feature, options from ``RankConfig``) and ``dsdi fuse`` (re-rank stored scores)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from dsdi import options
from dsdi.cli.common import RANKING, add_command, console
from dsdi.index.scores import AGGREGATIONS
from dsdi.models.ort import EXPORT_TOLERANCE, PRECISIONS
from dsdi.options import option
from dsdi.rank.config import RankConfig, parse_fuse_spec
from dsdi.workspace import RUNS_DIR


@dataclasses.dataclass(kw_only=True)
class SelectConfig:
    """``dsdi select``: the candidate runs, the number of greedy picks and the ensemble file."""

    runs: list[str] = option(help="run folders to choose from (RUN_DIR, or RUN_DIR:last / RUN_DIR:snapshot_K for "
                                  "another checkpoint of that run)", argument=True)
    size: int = option(10, minimum=1, help="greedy steps (picks, repetitions allowed)")
    out: Path = option(help="ensemble file to write, e.g. runs/ensembles/NAME.toml")
    checkpoint: str = option("best", help="checkpoint of each run: best | last | snapshot_K")
    runs_dir: Path = option(RUNS_DIR, help="members under it are written relative to it (as dsdi rank --ensemble "
                                           "looks them up)")


def _select(given: dict) -> None:
    """Choose an ensemble of trained runs on the common hold-out and write it as an ensemble file.

    Greedy forward selection with replacement (Caruana et al. 2004) on the stored hold-out sigmoids; a member's
    weight is how often it was picked."""
    from rich.table import Table

    from dsdi.rank.selection import select_ensemble

    config = options.from_values(SelectConfig, given)
    found = select_ensemble(config.runs, config.size, config.out, checkpoint=config.checkpoint,
                            runs_dir=config.runs_dir)
    shown = Table(title=f"hold-out ({found.images} images): {len(found.candidates)} runs, {config.size} picks")
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
    console.print(f"wrote {config.out}; rank with: dsdi rank --ensemble {config.out} --clips CLIPS", highlight=False)


@dataclasses.dataclass(kw_only=True)
class ExportConfig:
    """``dsdi export``: the model, the precision and, for int8, the calibration images."""

    model: Path = option(help="a run folder (its best.pt, else last.pt), a .pt checkpoint, a Hugging Face "
                              "image-classification folder or a hub name in the Hugging Face cache (owner/name)",
                         argument=True)
    precision: str = option("fp32", choices=PRECISIONS, help="fp32, or int8 (static quantisation calibrated on "
                                                             "training images; dynamic without any)")
    images: Path | None = option(None, help="int8: a folder of images to calibrate on (required for a Hugging Face "
                                            "model)", shown_default="the run's training images (its config.toml)")
    calibration_images: int = option(200, minimum=1, help="int8: images calibrated on")
    tolerance: float = option(EXPORT_TOLERANCE, above=0.0, help="largest |logit difference| from PyTorch on sample "
                                                                 "inputs that an fp32 export may have (times the "
                                                                 "largest |logit| when above 1)")
    out: Path | None = option(None, help="ONNX model file to write (its sidecar: the same name + .json); rank "
                                         "--engine onnxruntime uses the default place's",
                              shown_default="RUN/export/best.onnx (int8: best.int8.onnx); a Hugging Face model: "
                                            "$DSDI_EXPORT_CACHE/DIGEST16.PRECISION.onnx (default cache "
                                            "~/.cache/dsdi/exports)")


def _export(given: dict) -> None:
    """Export a model to an ONNX model for ONNX Runtime (dsdi rank --engine onnxruntime): a checkpoint into
    RUN/export/, a Hugging Face model into the export cache.

    Checked against PyTorch on sample inputs; with --precision int8 the hold-out mAP it costs is measured on the
    run's stored hold-out predictions."""
    from dsdi.train.export import export_model, model_to_export

    config = options.from_values(ExportConfig, given)
    model = model_to_export(config.model)
    done = export_model(model, config.precision, images=config.images, calibration_images=config.calibration_images,
                        tolerance=config.tolerance, out=config.out)
    how = f"{done.info.precision}, {done.info.quantisation}" if done.info.quantisation else done.info.precision
    console.print(f"exported {model} -> {done.path} ({how}; max |logit - PyTorch's| "
                  f"{done.info.max_abs_diff:.3g} on sample inputs)", highlight=False)
    if done.holdout is not None:
        cost = done.holdout
        console.print(f"hold-out mAP ({cost.images} images): PyTorch {cost.torch_map:.4f}, {done.info.precision} "
                      f"{cost.exported_map:.4f} ({cost.exported_map - cost.torch_map:+.4f})", highlight=False)


def _print_rank_summary(result) -> None:
    """The last line of rank and fuse: clips ranked, failed, scored this time and reused from the index, the
    index's size on disk (as run.json records them), the outputs."""
    outputs = ", ".join(str(p) for p in (result.xml_path, result.trec_path) if p is not None)
    console.print(f"ranked {result.clips_ranked}, failed {result.clips_failed} "
                  f"(scored {result.clips_scored} new clips, {result.frames_scored} frames, "
                  f"reused {result.clips_reused} from the index of {result.index_bytes / 1e6:.1f} MB, "
                  f"{result.elapsed_s:.1f} s) -> {outputs}", highlight=False)
    if result.note:
        console.print(result.note, highlight=False)


def _rank(given: dict) -> None:
    """Rank shot clips per disaster feature with one or more models: a TREC run (and TRECVID XML) in --out.

    Paper 2.5: 10 fps frames, max of sigmoids, fused models, top-k. Resumable: scores are kept in
    OUT/scores.sqlite per model and clip, and re-running skips scored clips."""
    from dsdi.rank.scoring import rank

    result = rank(RankConfig().updated(given, source="command line"))
    if result.trec_path is not None:  # torchrun: only process 0 writes and reports
        _print_rank_summary(result)


@dataclasses.dataclass(kw_only=True)
class FuseConfig:
    """``dsdi fuse``: a rank output and what to change about its fusion; unset options keep what run.json says."""

    rank_dir: Path = option(help="a dsdi rank output folder (holds scores.sqlite and run.json)", argument=True)
    out: Path | None = option(None, help="folder to write into instead (with a copy of the scores); RANK_DIR is "
                                         "left as it is", shown_default="RANK_DIR")
    models: list[str] = option([], help="only these of the run's models: run dirs, checkpoints or keys as in "
                                        "run.json (--models runs/A --models runs/B)", shown_default="all")
    model_weights: list[float] | None = option(None, help="one weight per model, in --models order",
                                               shown_default="equal")
    agg: str | None = option(None, choices=AGGREGATIONS, help="clip score per class over its frames",
                             shown_default="as ranked")
    fuse: list[tuple[Path, float]] = option([], parse=parse_fuse_spec, help="OTHER_OUT_DIR:W (replaces the run's "
                                                                            "--fuse)", shown_default="as ranked")
    topk: int | None = option(None, minimum=1, help="clips kept per feature", shown_default="as ranked")
    run_id: str | None = option(None, help="run name of the outputs", shown_default="as ranked")


def _fuse(given: dict) -> None:
    """Re-fuse and re-rank a rank output from its stored scores, without decoding.

    Rewrites RANK_DIR's outputs, or with --out writes them (and a copy of the scores) into a new folder.
    `dsdi fuse RANK_DIR --out ALONE --models runs/A`: one model's ranking; weights are equal over the chosen
    models unless --model-weights."""
    from dsdi.rank.fusion import fuse

    config = options.from_values(FuseConfig, given)
    _print_rank_summary(fuse(config.rank_dir, model_weights=config.model_weights, agg=config.agg,
                             other=config.fuse or None, topk=config.topk, models=config.models or None,
                             new_out=config.out, run_id=config.run_id))


def register(app: typer.Typer) -> None:
    """Add the ranking commands to ``app``."""
    add_command(app, "select", RANKING, SelectConfig, _select)
    add_command(app, "export", RANKING, ExportConfig, _export)
    add_command(app, "rank", RANKING, RankConfig, _rank)
    add_command(app, "fuse", RANKING, FuseConfig, _fuse)
