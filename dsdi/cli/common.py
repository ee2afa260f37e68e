"""What every command module of the CLI shares: the consoles, the InputError exit and how a command is added.

A command is a config dataclass (its options, declared once with ``dsdi.options.option``) and a thin body
``run(given)`` that builds the config, calls one library function and prints. :func:`add_command` makes the typer
command from the two and files it under its pipeline panel in ``dsdi --help``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import typer
from rich.console import Console

from dsdi.errors import InputError
from dsdi.options import config_command

console = Console()
err_console = Console(stderr=True)

DATA, TRAINING, RANKING, EVALUATION, SEARCH, RESEARCH = (
    "Data", "Training", "Ranking", "Evaluation", "Search", "Research")
PANELS = (DATA, TRAINING, RANKING, EVALUATION, SEARCH, RESEARCH)
"""The ``dsdi --help`` panels in pipeline order."""


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


def add_command(app: typer.Typer, name: str, panel: str, config_cls: type, run: Callable[..., None],
                *extra: inspect.Parameter) -> None:
    """Register ``dsdi NAME``: flags from ``config_cls``'s fields (plus ``extra``), help from ``run``'s docstring,
    listed under ``panel`` (one of PANELS)."""
    command = exits_on_input_error(config_command(config_cls, run, *extra))
    app.command(name, rich_help_panel=panel)(command)
