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
