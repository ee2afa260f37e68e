"""The search page: ``dsdi serve`` (a rank output in the browser: search, play, judge, export)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from dsdi import options
from dsdi.cli.common import SEARCH, add_command, console
from dsdi.options import option


@dataclasses.dataclass(kw_only=True)
class ServeConfig:
    """``dsdi serve``: the rank output, where to listen and where judgments go."""

    rank_dir: Path = option(help="output folder of dsdi rank (clip_scores.csv, run.json, scores.sqlite)", argument=True)
    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0: every network of this machine; the page "
                                         "has no login, so only on a network you trust)")
    port: int = option(8765, minimum=0, maximum=65535, help="port to listen on (0: any free port)")
    out: Path | None = option(None, help="qrels file the page's judgments are written to ('topic 0 shot_id rel', "
                                         "for dsdi eval --qrels)", shown_default="RANK_DIR/judgments.qrels")


def _serve(given: dict) -> None:
    """Search a rank output in the browser: pick features or type a query (flooding_any AND roads_any), drop example
    images, play each clip from its peak frame, mark results relevant or not (the list re-ranks by them; they are
    saved as qrels) and export the ranking as a TREC run. Runs until Ctrl-C."""
    from dsdi.search.serve import serve

    config = options.from_values(ServeConfig, given)
    serve(config.rank_dir, config.host, config.port, config.out,
          announce=lambda url: console.print(f"serving {config.rank_dir} at {url} (Ctrl-C stops)", highlight=False))


def register(app: typer.Typer) -> None:
    """Add the search page command to ``app``."""
    add_command(app, "serve", SEARCH, ServeConfig, _serve)
