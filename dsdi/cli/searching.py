"""Searching a rank output on the command line: ``dsdi search`` (by features, examples or both)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from dsdi import options
from dsdi.cli.common import SEARCH, add_command, console
from dsdi.options import option

SHOWN_FEATURES = 3  # the best features of each hit shown in the terminal table


@dataclasses.dataclass(kw_only=True)
class SearchConfig:
    """``dsdi search``: the rank output, what to look for and where the results go."""

    rank_dir: Path = option(help="output folder of dsdi rank (run.json, clip_scores.csv, scores.sqlite)",
                            argument=True)
    query: str | None = option(None, help="features to look for: names, AND, OR, NOT, parentheses, weights "
                                          "('flooding_any AND NOT water_any', '2*debris_any OR roads_damage', "
                                          "quote names with spaces: '\"rubble / debris\"')")
    like: list[Path] = option([], help="example image (photo or frame grab); repeat to average several")
    like_shot: list[str] = option([], help="example shot id of the index; repeat to average several")
    topk: int = option(20, minimum=1, help="clips listed")
    out: Path | None = option(None, help="also write the results to this .csv or .json file")
    trec: Path | None = option(None, help="also write the ranking as a one-topic TREC run (for dsdi eval)")
    topic: str | None = option(None, help="the TREC run's topic (a feature number or name)",
                               shown_default="the query's feature, for a one-feature --query")
    run_id: str = option("dsdi_search", help="the TREC run's run id")


def _search(given: dict) -> None:
    """List the clips of a rank output that best match a feature query (scored from the fused class scores), example
    images or shots (by the cosine of clip embeddings), or both (a mixed query: the query value x (1 + cosine) / 2).
    Prints a table; --out and --trec write the results to files."""
    from dsdi.search.engine import SearchIndex
    from dsdi.search.results import search_folder, search_topic, write_hits, write_hits_trec

    config = options.from_values(SearchConfig, given)
    index = SearchIndex.open(config.rank_dir)
    parsed = index.parse(config.query) if config.query is not None else None
    # a missing topic is said before the search runs
    topic = search_topic(config.topic, parsed, index.labelset) if config.trec is not None else None
    hits = search_folder(index, parsed, config.like, config.like_shot, config.topk)
    console.print(_table(hits, config), soft_wrap=True)
    if config.out is not None:
        write_hits(config.out, hits, index.labelset)
    if config.trec is not None:
        write_hits_trec(config.trec, hits, topic, config.run_id)


def _table(hits, config: SearchConfig):
    """The rich table of the hits: rank, shot, score, peak time, clip file and the best features."""
    from rich.table import Table

    what = " + ".join(filter(None, [config.query, *map(str, config.like), *config.like_shot]))
    table = Table(title=f"{config.rank_dir}: {what}")
    for header in ("rank", "shot", "score", "peak s", "clip", "best features"):
        table.add_column(header, justify="right" if header in ("rank", "score", "peak s") else "left")
    for rank, hit in enumerate(hits, start=1):
        best = sorted(hit.features.items(), key=lambda item: -item[1])[:SHOWN_FEATURES]
        table.add_row(str(rank), hit.shot_id, f"{hit.score:.4f}", f"{hit.peak_s:.1f}", Path(hit.clip_path).name,
                      ", ".join(f"{name} {value:.2f}" for name, value in best))
    return table


def register(app: typer.Typer) -> None:
    """Add the search command to ``app``."""
    add_command(app, "search", SEARCH, SearchConfig, _search)
