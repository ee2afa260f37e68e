"""``dsdi search``'s library side: a search of a rank output from files (``search_folder``) and its results as a
table, CSV or JSON (``write_hits``) and as a TREC run that ``dsdi eval`` scores (``write_hits_trec``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels.labelset import LabelSet
from dsdi.search.engine import Hit, SearchIndex
from dsdi.search.media import example_pixels
from dsdi.search.query import Query
from dsdi.trecvid.submission import Topic, parse_topic, write_trec_run

HIT_COLUMNS = ("rank", "shot_id", "score", "clip_path", "peak_s")


def search_folder(index: SearchIndex, query: Query | None, like: Sequence[Path], like_shots: Sequence[str],
                  topk: int) -> list[Hit]:
    """The best ``topk`` hits of a search of ``index`` by a parsed query, example image files and example shots;
    InputError naming an unreadable image file."""
    vectors = []
    for path in like:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InputError(f"--like {path}: cannot read ({error.strerror or error})") from None
        vectors.append(index.embed_image(example_pixels(data, f"--like {path}")))
    return index.search(query, like_vectors=vectors, like_shots=like_shots, topk=topk)


def hits_table(hits: list[Hit], labelset: LabelSet) -> pd.DataFrame:
    """One row per hit: rank (from 1), shot_id, score, clip_path, peak_s, then every feature's fused score."""
    rows = [(rank, hit.shot_id, hit.score, hit.clip_path, hit.peak_s, *(hit.features[f] for f in labelset.features))
            for rank, hit in enumerate(hits, start=1)]
    return pd.DataFrame(rows, columns=[*HIT_COLUMNS, *labelset.features])


def write_hits(path: Path, hits: list[Hit], labelset: LabelSet) -> None:
    """The hits as ``path``'s suffix says: .csv (hits_table) or .json (a list of objects, features as an object);
    InputError for another suffix."""
    table = hits_table(hits, labelset)
    if path.suffix.lower() == ".csv":
        write_text_atomic(path, table.to_csv(index=False))
    elif path.suffix.lower() == ".json":
        records = [{**{c: row[c] for c in HIT_COLUMNS}, "features": hit.features}
                   for row, hit in zip(table.to_dict("records"), hits, strict=True)]
        write_text_atomic(path, json.dumps(records, indent=1) + "\n")
    else:
        raise InputError(f"--out {path}: write a .csv or a .json file")


def search_topic(topic: str | None, query: Query | None, labelset: LabelSet) -> Topic:
    """The TREC topic of a search's run: ``topic`` as given (a number, or a name without whitespace), else the
    topic of the query's feature when the query is one feature alone; InputError otherwise."""
    if topic is not None:
        if topic.split() != [topic]:
            raise InputError(f"--topic {topic!r}: give a feature number or a name without whitespace")
        return parse_topic(topic)
    feature = query.single_feature() if query is not None else None
    if feature is None:
        raise InputError("--trec needs --topic NAME (the topic of the run) unless --query is one feature")
    return labelset.topics()[feature]


def write_hits_trec(path: Path, hits: list[Hit], topic: Topic, run_id: str) -> None:
    """The hits as a TREC run of one topic: 'topic Q0 shot_id rank score run_id' lines."""
    write_trec_run(path, {topic: [(hit.shot_id, hit.score) for hit in hits]}, run_id)
