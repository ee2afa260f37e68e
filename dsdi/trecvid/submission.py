"""TRECVID DSDI run files: ranking clips per feature, the XML submission, the TREC run form.

A *rankings* object is ``dict[Topic, list[tuple[str, float]]]``: topic -> the ranked shots ``(shot_id, score)``,
best first. A topic is a TRECVID feature number (fNum, an int) where the label set numbers its features (LADI v1),
else the feature's class name (a str without whitespace, e.g. ``roads_any``); files hold either in their first
column, and readers take a topic that is an integer as an int. Within a feature, shot ids are unique and scores never
increase down the list.

Files:

- XML submission (what NIST accepts): DOCTYPE ``videoFeatureExtractionResults``, validated against the
  DTD shipped in ``dsdi/data_files/videoFeatureExtractionResults.dtd`` before it is written. It holds
  ranks (``seqNum``), not scores.
- TREC run: one line per ranked shot, ``fNum Q0 shotId rank score runId`` (trec_eval, NIST sample_eval).
- qrels (ground truth): ``dsdi.trecvid.qrels``.

Ties: ``rank_features`` orders by score descending, then shot id ascending (plain string order), so a
ranking never depends on the order clips were scored in. trec_eval ignores the rank column and re-sorts
by score, breaking ties by shot id *descending*; dsdi's reader and ``dsdi eval`` on complete qrels follow the
rank column (the ``seqNum`` order of XML); on NIST sample qrels ``dsdi eval`` orders as NIST's sample_eval does,
by score and then shot id descending (``dsdi.trecvid.inferred.nist_order``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from lxml import etree

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels.labelset import LADI_V1

Topic = int | str
Ranking = list[tuple[str, float]]
Rankings = dict[Topic, Ranking]

NIST_MAX_ITEMS = 1000
"""NIST accepts at most this many shots per feature."""
DTD_NAME = "videoFeatureExtractionResults.dtd"
DTD_SYSTEM_ID = "https://www-nlpir.nist.gov/projects/tv2020/dtds/videoFeatureExtractionResults.dtd"
"""The DOCTYPE's SYSTEM id written into submissions (the public 2020 location); dsdi itself always
validates against its shipped copy and never fetches anything."""
TR_TYPES = ("L", "O")
"""Training types: L = trained on LADI only, O = other training data too."""


# ---- shared helpers --------------------------------------------------------------------------


def topic_order(topic: Topic) -> tuple[int, int, str]:
    """Sort key of topics: feature numbers in numeric order, then names in string order."""
    return (0, topic, "") if isinstance(topic, int) else (1, 0, topic)


def parse_topic(text: str) -> Topic:
    """A topic as a file writes it: an int where it is an integer (a feature number), else the name."""
    try:
        return int(text)
    except ValueError:
        return text


def _valid_topic(topic: object) -> bool:
    if isinstance(topic, bool):
        return False
    if isinstance(topic, numbers.Integral):
        return topic >= 0
    return isinstance(topic, str) and bool(topic) and topic.split() == [topic] and isinstance(parse_topic(topic), str)


def check_rankings(rankings: Mapping[int, Sequence[tuple[str, float]]], max_items: int | None = None) -> None:
    """Raise unless ``rankings`` is a valid rankings object (see the module docstring).

    Checks: topics an integer fNum >= 0 or a name without whitespace; each entry a ``(shot_id, score)`` pair;
    shot ids non-empty strings without whitespace, unique within a feature; scores finite and non-increasing; at most
    ``max_items`` per feature. Too many items (``--topk`` above NIST's 1000) and non-finite scores (a score table can
    hold them) raise InputError; the rest raise ValueError: rankings are built by ``rank_features`` or ``read_run``,
    which check the user's data first, so a malformed object is a mistake of the calling code.
    """
    if not isinstance(rankings, Mapping):
        raise ValueError(f"rankings must be a dict topic -> [(shot_id, score), ...], got {type(rankings).__name__}")
    for fnum, ranking in rankings.items():
        if not _valid_topic(fnum):
            raise ValueError(f"topic {fnum!r} must be a non-negative int or a name without whitespace that is no "
                             "number")
        if isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence):
            raise ValueError(f"feature {fnum}: ranking must be a list of (shot_id, score), "
                             f"got {type(ranking).__name__}")
        if max_items is not None and len(ranking) > max_items:
            raise InputError(f"feature {fnum}: {len(ranking)} ranked shots, at most {max_items} allowed; "
                             f"use --topk {max_items} or less")
        seen: set[str] = set()
        previous_score = math.inf
        for position, entry in enumerate(ranking, start=1):
            if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 2:
                raise ValueError(f"feature {fnum}, rank {position}: expected (shot_id, score), got {entry!r}")
            shot_id, score = entry
            if not isinstance(shot_id, str) or not shot_id or shot_id.split() != [shot_id]:
                raise ValueError(f"feature {fnum}, rank {position}: shot id {shot_id!r} must be a non-empty "
                                 "string without whitespace")
            if shot_id in seen:
                raise ValueError(f"feature {fnum}: shot id {shot_id!r} appears twice")
            seen.add(shot_id)
            if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
                raise InputError(f"feature {fnum}, rank {position}: score {score!r} of shot {shot_id!r} is not a "
                                 "finite number; check the model or score table that produced it")
            if score > previous_score:
                raise ValueError(f"feature {fnum}, rank {position}: score {score!r} is higher than the score above "
                                 f"it ({previous_score!r}); rankings must be sorted best first")
            previous_score = score


def rank_features(
    scores: Mapping[str, Sequence[float] | np.ndarray] | pd.DataFrame,
    topk: int = NIST_MAX_ITEMS,
    topics: Mapping[str, Topic] | None = None,
) -> Rankings:
    """Rank clips per retrieval feature from their class scores and keep the top ``topk``.

    ``topics``: feature name -> its topic, in feature order (``LabelSet.topics()``; default LADI v1's: fNums
    1..32). ``scores``: a DataFrame with a ``shot_id`` column (else the index is the shot id) and one column per
    feature (other columns, e.g. none classes, are never ranked), or shot_id -> array of the features' scores in
    ``topics`` order (for LADI v1 also its 37 classes, features first). Order: score descending, ties by shot id
    ascending. Raises InputError for ``topk`` < 1, NaN scores (a diverged model) and shot ids with whitespace
    (they come from clip file names); ValueError for bad shapes, missing columns or repeated shot ids, which the
    calling code rules out (rank builds the table from its score index, one row per distinct shot with every
    class column).
    """
    if topk < 1:
        raise InputError(f"--topk {topk}: keep at least 1 clip per feature (NIST accepts up to {NIST_MAX_ITEMS})")
    topics = dict(topics) if topics is not None else LADI_V1.topics()
    features = list(topics)
    if isinstance(scores, pd.DataFrame):
        missing = [f for f in features if f not in scores.columns]
        if missing:
            raise ValueError(f"score table lacks feature columns {missing}")
        shot_ids = scores["shot_id"] if "shot_id" in scores.columns else scores.index
        shot_ids = np.asarray([str(s) for s in shot_ids], dtype=object)
        matrix = scores[features].to_numpy(dtype=np.float64)
    else:
        shot_ids = np.asarray([str(s) for s in scores], dtype=object)
        rows = [np.asarray(v, dtype=np.float64) for v in scores.values()]
        allowed = {(len(features),)} | ({(len(LADI_V1.class_names),)} if features == list(LADI_V1.features) else set())
        bad = [str(s) for s, r in zip(shot_ids, rows, strict=True) if r.shape not in allowed]
        if bad:
            raise ValueError(f"scores must have shape {' or '.join(map(str, sorted(allowed)))}; wrong for {bad[:5]}")
        matrix = np.stack(rows)[:, : len(features)] if rows else np.zeros((0, len(features)))
    if len(set(shot_ids)) != len(shot_ids):
        raise ValueError("shot ids in the score table must be unique")
    spaced = [s for s in shot_ids if not s or s.split() != [s]]
    if spaced:
        raise InputError(f"shot ids {spaced[:5]} are empty or contain whitespace, which run files cannot hold: "
                         "rename those clip files or give shot ids in a shot table")
    if np.isnan(matrix).any():
        row, column = np.argwhere(np.isnan(matrix))[0]
        raise InputError(f"NaN score for shot {shot_ids[row]!r}, feature {features[column]!r}: the model gives NaN "
                         "(did its training diverge?); rank with another checkpoint")

    by_id = np.argsort(shot_ids.astype(str), kind="stable")  # ascending shot id: the tie order
    rankings: Rankings = {}
    for column, feature in enumerate(features):
        column_scores = matrix[by_id, column]
        best_first = by_id[np.argsort(-column_scores, kind="stable")][:topk]
        rankings[topics[feature]] = [(shot_ids[i], float(matrix[i, column])) for i in best_first]
    return rankings


# ---- TRECVID XML -----------------------------------------------------------------------------


def _shipped_dtd() -> etree.DTD:
    with resources.files("dsdi").joinpath("data_files", DTD_NAME).open("rb") as handle:
        return etree.DTD(handle)


def _elapsed_text(elapsed_s: float | Mapping[int, float] | None, fnum: int) -> str:
    value = elapsed_s.get(fnum, 0.0) if isinstance(elapsed_s, Mapping) else (elapsed_s or 0.0)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InputError(f"elapsed time for feature {fnum} must be a finite number >= 0 seconds, got {value!r} "
                         "(dsdi fuse reads it from elapsed_s in OUT_DIR/run.json)")
    return f"{value:.3f}"


def submission_xml(
    rankings: Rankings,
    *,
    pid: str,
    run_desc: str,
    tr_type: str = "L",
    priority: int = 1,
    elapsed_s: float | Mapping[int, float] | None = None,
    max_items: int | None = NIST_MAX_ITEMS,
) -> bytes:
    """The TRECVID XML of one run (bytes, UTF-8), validated against the shipped DTD.

    ``elapsed_s``: seconds per feature (``elapsedTime``): one number for every feature, a dict fNum ->
    seconds, or None for 0 (not measured). Raises InputError for a bad ``tr_type``, ``pid``, ``priority`` or
    elapsed time (flags of dsdi rank, or run.json for dsdi fuse) and as ``check_rankings`` does.
    """
    check_rankings(rankings, max_items=max_items)
    named = [topic for topic in rankings if not isinstance(topic, int)]
    if named:  # a calling-code contract: rank writes XML only for label sets with feature numbers
        raise ValueError(f"the TRECVID XML needs feature numbers, not topics named {named[:3]}")
    if tr_type not in TR_TYPES:
        raise InputError(f"--tr-type {tr_type!r}: choose one of {', '.join(TR_TYPES)} "
                         "(L = trained on LADI only, O = other data too)")
    if not pid or not pid.strip():
        raise InputError("--pid: the team id must not be empty")
    if isinstance(priority, bool) or not isinstance(priority, numbers.Integral) or priority < 1:
        raise InputError(f"--priority {priority!r}: the submission priority must be an integer >= 1")

    root = etree.Element("videoFeatureExtractionResults")
    run = etree.SubElement(
        root, "videoFeatureExtractionRunResult", trType=tr_type, pid=pid, priority=str(priority), desc=run_desc
    )
    for fnum in sorted(rankings):
        feature = etree.SubElement(
            run, "videoFeatureExtractionFeatureResult", fNum=str(fnum), elapsedTime=_elapsed_text(elapsed_s, fnum)
        )
        for seq_num, (shot_id, _score) in enumerate(rankings[fnum], start=1):
            etree.SubElement(feature, "item", seqNum=str(seq_num), shotId=shot_id)
    dtd = _shipped_dtd()
    if not dtd.validate(root):  # ValueError: the checks above make this a bug in dsdi, not the user's doing
        raise ValueError(f"submission does not validate against {DTD_NAME}: {dtd.error_log.filter_from_errors()}")
    return etree.tostring(
        etree.ElementTree(root),
        xml_declaration=True,
        encoding="UTF-8",
        pretty_print=True,
        doctype=f'<!DOCTYPE videoFeatureExtractionResults SYSTEM "{DTD_SYSTEM_ID}">',
    )


def write_submission_xml(
    path: str | Path,
    rankings: Rankings,
    *,
    pid: str,
    run_desc: str,
    tr_type: str = "L",
    priority: int = 1,
    elapsed_s: float | Mapping[int, float] | None = None,
    max_items: int | None = NIST_MAX_ITEMS,
) -> None:
    """Validate and atomically write the TRECVID XML submission of one run (see ``submission_xml``)."""
    xml = submission_xml(
        rankings, pid=pid, run_desc=run_desc, tr_type=tr_type, priority=priority, elapsed_s=elapsed_s,
        max_items=max_items,
    )
    write_text_atomic(path, xml.decode("utf-8"))


# ---- TREC run form ---------------------------------------------------------------------------


def write_trec_run(path: str | Path, rankings: Rankings, run_id: str) -> None:
    """Atomically write ``fNum Q0 shotId rank score runId`` lines (rank from 1; score as a round-trip float)."""
    check_rankings(rankings)
    if not run_id or run_id.split() != [run_id]:
        raise InputError(f"--run-id {run_id!r}: the run id must be non-empty and without whitespace")
    lines = [
        f"{fnum} Q0 {shot_id} {rank} {float(score)!r} {run_id}\n"
        for fnum in sorted(rankings, key=topic_order)
        for rank, (shot_id, score) in enumerate(rankings[fnum], start=1)
    ]
    write_text_atomic(path, "".join(lines))


# ---- readers ---------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a file") from None


def _text_lines(path: Path, data: bytes) -> list[str]:
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error})") from None


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM dropped); InputError when it is missing, a folder or not UTF-8."""
    return _text_lines(path, _read_bytes(path))


def parse_int(text: str, path: Path, line_no: int, what: str) -> int:
    """``text`` as an int; InputError naming the file, the line and ``what`` otherwise."""
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{path}, line {line_no}: {what} {text!r} is not an integer") from None


def _read_trec_run(path: Path, lines: list[str]) -> Rankings:
    entries: dict[Topic, dict[int, tuple[str, float]]] = {}  # topic -> rank -> (shot, score)
    seen_shots: dict[tuple[Topic, str], int] = {}  # (topic, shot) -> line number
    run_ids: dict[str, int] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 6:
            raise InputError(f"{path}, line {line_no}: expected 6 columns 'topic Q0 shotId rank score runId', "
                             f"found {len(fields)}: {line.strip()!r}")
        fnum = parse_topic(fields[0])
        shot_id = fields[2]
        rank = parse_int(fields[3], path, line_no, "rank")
        try:
            score = float(fields[4])
        except ValueError:
            raise InputError(f"{path}, line {line_no}: score {fields[4]!r} is not a number") from None
        if not math.isfinite(score):
            raise InputError(f"{path}, line {line_no}: score {fields[4]!r} is not finite")
        run_ids.setdefault(fields[5], line_no)
        if len(run_ids) > 1:
            raise InputError(f"{path}, line {line_no}: run id {fields[5]!r} differs from {next(iter(run_ids))!r} "
                             "on earlier lines; put one run per file")
        if (fnum, shot_id) in seen_shots:
            raise InputError(f"{path}, line {line_no}: shot {shot_id!r} is ranked twice for feature {fnum} "
                             f"(first on line {seen_shots[fnum, shot_id]})")
        seen_shots[fnum, shot_id] = line_no
        if rank in entries.setdefault(fnum, {}):
            raise InputError(f"{path}, line {line_no}: rank {rank} is used twice for feature {fnum}")
        entries[fnum][rank] = (shot_id, score)
    if not entries:
        raise InputError(f"{path}: no run lines found (expected 'fNum Q0 shotId rank score runId')")
    return {fnum: [by_rank[r] for r in sorted(by_rank)]
            for fnum, by_rank in sorted(entries.items(), key=lambda item: topic_order(item[0]))}


def _read_xml_run(path: Path) -> Rankings:
    parser = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False)
    try:
        tree = etree.parse(str(path), parser)
    except etree.XMLSyntaxError as error:
        raise InputError(f"{path}, line {error.lineno}: not well-formed XML: {error.msg}") from None
    dtd = _shipped_dtd()
    if not dtd.validate(tree):
        first = dtd.error_log.filter_from_errors()[0]
        raise InputError(f"{path}, line {first.line}: does not match the TRECVID DTD ({DTD_NAME}): {first.message}")
    runs = tree.getroot().findall("videoFeatureExtractionRunResult")
    if len(runs) != 1:
        raise InputError(f"{path}: holds {len(runs)} runs (videoFeatureExtractionRunResult); "
                         "split it into one run per file")
    rankings: Rankings = {}
    for feature in runs[0].iterfind("videoFeatureExtractionFeatureResult"):
        fnum = parse_int(feature.get("fNum"), path, feature.sourceline, "fNum")
        if fnum in rankings:
            raise InputError(f"{path}, line {feature.sourceline}: feature {fnum} appears twice")
        items: dict[int, str] = {}
        lines_of_shots: dict[str, int] = {}
        for item in feature.iterfind("item"):
            seq_num = parse_int(item.get("seqNum"), path, item.sourceline, "seqNum")
            shot_id = item.get("shotId")
            if seq_num in items:
                raise InputError(f"{path}, line {item.sourceline}: seqNum {seq_num} is used twice in feature {fnum}")
            if shot_id in lines_of_shots:
                raise InputError(f"{path}, line {item.sourceline}: shot {shot_id!r} is listed twice in feature {fnum} "
                                 f"(first on line {lines_of_shots[shot_id]})")
            items[seq_num] = shot_id
            lines_of_shots[shot_id] = item.sourceline
        if sorted(items) != list(range(1, len(items) + 1)):
            raise InputError(f"{path}, line {feature.sourceline}: seqNum of feature {fnum} must run 1..{len(items)}")
        rankings[fnum] = [(items[s], 1.0 / s) for s in range(1, len(items) + 1)]
    return dict(sorted(rankings.items()))


def read_run(path: str | Path) -> Rankings:
    """Read a run file, TRECVID XML or TREC form (detected from the first non-blank character: ``<`` = XML).

    TREC form: ordered by the rank column (not re-sorted by score); scores kept; a feature without lines
    is absent (the TREC form cannot list an empty ranking). XML: validated against
    the shipped DTD, ordered by ``seqNum`` (which must run 1..n); XML holds no scores, so each shot gets
    the synthetic score ``1 / seqNum`` (decreasing, only the order is meaningful). Raises InputError
    naming the file and line for malformed lines, duplicate shots or ranks, mixed run ids.
    """
    path = Path(path)
    data = _read_bytes(path)
    if data.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<"):
        return _read_xml_run(path)  # lxml honours the declared encoding (participants also used ISO-8859-1)
    return _read_trec_run(path, _text_lines(path, data))
