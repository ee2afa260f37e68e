"""The ``dsdi`` command: the typer app, ``--version`` and every command, in pipeline order. The commands live in
one module per pipeline group (data, training, ranking, evaluation, searching, serving, research); each is a config
dataclass and a thin body (``dsdi.cli.common``)."""

from __future__ import annotations

from importlib import metadata

import typer

from dsdi.cli import data, evaluation, ranking, research, searching, serving, training
from dsdi.cli.common import console

HELP = """dsdi trains multi-label classifiers of disaster features on LADI aerial photos (LADI v1's 37 classes by
default, LADI v2's or a team's own label set), ranks video shot clips by those features for TRECVID DSDI (Disaster
Scene Description and Indexing), and searches what it ranked.

A typical run: dsdi labels -> dsdi prepare -> dsdi train -> dsdi rank -> dsdi eval / dsdi report / dsdi serve.
To try it without data: dsdi synth --out world, then the same commands on the world's files. Every option of
every command: docs/cli.md, or dsdi COMMAND --help."""

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)


def _print_version(given: bool) -> None:
    if given:
        console.print(f"dsdi {metadata.version('dsdi')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="print the installed dsdi version and exit")) -> None:
    """(options of dsdi itself; HELP is the app's help)"""


for group in (data, training, ranking, evaluation, searching, serving, research):
    group.register(app)
