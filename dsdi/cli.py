"""The ``dsdi`` command: a thin typer shell. Each command parses flags and calls one library function
of the same name; bad input (``InputError``) is printed without a traceback and exits with status 2."""

from __future__ import annotations

import functools
from pathlib import Path  # noqa: F401  (used by the command sections)
from typing import Optional  # noqa: F401  (typer needs Optional on Python 3.10)

import typer
from rich.console import Console

from dsdi.errors import InputError
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

# ---- dsdi synth (owner: synth) ---------------------------------------------------------------

# ---- dsdi eval (owner: metrics/submission) ---------------------------------------------------

# ---- dsdi prepare (owner: data) --------------------------------------------------------------

# ---- dsdi train (owner: train) ---------------------------------------------------------------

# ---- dsdi rank / dsdi fuse (owner: rank) -----------------------------------------------------

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
    from dsdi.report import build_report

    console.print(f"report: {build_report(out_dir, qrels_path=qrels, out_path=out, top_n=top)}", highlight=False)
