"""Scores: TREC average precision of shot rankings and mAP over features.

Retrieval (``dsdi eval``), TREC definition (trec_eval ``map``): per feature, the ranked list is cut at
``k``; AP = sum over relevant retrieved shots of the precision at their rank, divided by the number of
relevant shots in the qrels (also those never retrieved). A shot is relevant when its qrels ``rel > 0``.
mAP = mean AP over the features with at least one relevant shot in the qrels; a feature the run does not
rank at all counts with AP 0 (trec_eval ``-c``). The order evaluated is the run's own order (rank
column / seqNum); ties were already ordered when the run was made (see ``dsdi.trecvid.submission``).

On NIST sample qrels (``dsdi.trecvid.qrels``) the scores are sample_eval's inferred measures instead
(``dsdi.trecvid.inferred``: xinfAP, infNDCG, inferred precision at 10, 100, 1000 and the depth), in sample_eval's
order (score descending, ties by shot id descending); the means are over the features with a judged relevant
shot, a feature the run does not rank counting 0. :func:`evaluate_judgments` picks the scoring from the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels.labelset import LADI_V1
from dsdi.trecvid.inferred import PRECISION_CUTOFFS, inferred_scores, nist_order
from dsdi.trecvid.qrels import Judgments, read_judgments
from dsdi.trecvid.submission import Rankings, Topic, read_run, topic_order

DEFAULT_K = 1000
METRIC_COLUMNS = ["feature", "fnum", "relevant", "retrieved", "relevant_retrieved", "ap"]
INFERRED_COLUMNS = ["feature", "fnum", "relevant", "retrieved", "relevant_retrieved", "est_relevant",
                    "est_relevant_retrieved", "infap", "infndcg", *(f"ip{c}" for c in PRECISION_CUTOFFS), "ip_depth"]
"""Per-feature columns on sample qrels: ``relevant`` / ``relevant_retrieved`` count judged relevant shots,
``est_*`` are sample_eval's estimates (inum_rel, inum_rel_ret), ``ip_depth`` the inferred precision at the depth."""
_INFERRED_MEASURES = ["infap", "infndcg", *(f"ip{c}" for c in PRECISION_CUTOFFS), "ip_depth"]


# ---- retrieval: TREC AP / mAP ----------------------------------------------------------------


def check_depth(depth: int) -> None:
    """InputError unless the ranking depth (``--topk``) is at least 1."""
    if depth < 1:
        raise InputError(f"--topk {depth}: the cut-off depth must be >= 1 (NIST scores at 1000)")


def average_precision(
    ranked_shot_ids: Sequence[str], relevant_ids: Collection[str], k: int | None = DEFAULT_K
) -> float:
    """TREC average precision of a ranking cut at ``k`` (None = no cut); NaN when nothing is relevant.

    ``ranked_shot_ids``: best first. ``relevant_ids``: every relevant shot in the ground truth.
    Raises InputError if ``k`` < 1 (``--k``) or a shot id appears twice in the ranking (an ill-formed run).
    """
    if k is not None:
        check_depth(k)
    ranked = list(ranked_shot_ids)
    if len(set(ranked)) != len(ranked):
        twice = sorted(shot_id for shot_id, count in Counter(ranked).items() if count > 1)
        raise InputError(f"ranking lists shot ids more than once: {twice[:10]}")
    relevant = set(relevant_ids)
    if not relevant:
        return float("nan")
    hits = 0
    precision_sum = 0.0
    for rank, shot_id in enumerate(ranked[:k], start=1):
        if shot_id in relevant:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / len(relevant)


def evaluate_run(
    rankings: Rankings,
    qrels: Mapping[Topic, Mapping[str, int]],
    k: int | None = DEFAULT_K,
    topics: Mapping[str, Topic] | None = None,
) -> tuple[pd.DataFrame, float]:
    """Per-feature TREC AP of a run and the mAP.

    Returns (table, mAP). The table has one row per topic found in the run or the qrels, sorted by
    ``topic_order``, with columns ``feature`` (its name from ``topics``, feature -> topic, default LADI v1's
    numbers; a topic that is a name names itself; "?" if unknown), ``fnum`` (the topic), ``relevant``
    (relevant shots in the qrels), ``retrieved`` (shots ranked, after the cut at k), ``relevant_retrieved``,
    ``ap`` (NaN when nothing is relevant). mAP is NaN when no feature has a relevant shot.
    """
    names = _feature_names(topics)
    rows = []
    for fnum in sorted(set(rankings) | set(qrels), key=topic_order):
        ranked = [shot_id for shot_id, _score in rankings.get(fnum, [])]
        relevant = {shot_id for shot_id, rel in qrels.get(fnum, {}).items() if rel > 0}
        cut = ranked[:k]
        rows.append(
            {
                "feature": _feature_name(names, fnum),
                "fnum": fnum,
                "relevant": len(relevant),
                "retrieved": len(cut),
                "relevant_retrieved": len(relevant.intersection(cut)),
                "ap": average_precision(ranked, relevant, k),
            }
        )
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    judged = table[table["relevant"] > 0]
    mean_ap = float(judged["ap"].mean()) if len(judged) else float("nan")
    return table, mean_ap


def inferred_table(
    rankings: Rankings, judgments: Judgments, depth: int = DEFAULT_K, topics: Mapping[str, Topic] | None = None
) -> pd.DataFrame:
    """Per-feature sample_eval measures (``INFERRED_COLUMNS``) of a run on sample qrels, one row per topic in the
    run or the qrels (named as in ``evaluate_run``); measures NaN for a feature without a judged relevant shot."""
    check_depth(depth)
    names = _feature_names(topics)
    rows = []
    for fnum in sorted(set(rankings) | set(judgments.relevance), key=topic_order):
        judged = {shot_id: (judgments.strata[fnum][shot_id], judgment)
                  for shot_id, judgment in judgments.relevance.get(fnum, {}).items()}
        scores = inferred_scores(nist_order(rankings.get(fnum, [])), judged, depth)
        rows.append({"feature": _feature_name(names, fnum), "fnum": fnum, "relevant": scores.judged_relevant,
                     "retrieved": scores.retrieved, "relevant_retrieved": scores.relevant_retrieved,
                     "est_relevant": scores.est_relevant, "est_relevant_retrieved": scores.est_relevant_retrieved,
                     "infap": scores.infap, "infndcg": scores.infndcg,
                     **{f"ip{c}": scores.precision[c] for c in PRECISION_CUTOFFS}, "ip_depth": scores.precision[depth]})
    return pd.DataFrame(rows, columns=INFERRED_COLUMNS)


@dataclass(frozen=True)
class Evaluation:
    """A run scored against a qrels file: the per-feature ``table`` (``METRIC_COLUMNS`` on trec_eval qrels,
    ``INFERRED_COLUMNS`` on sample qrels), the ``means`` of its measure columns over the features with a (judged)
    relevant shot, the qrels ``format`` and the headline ``measure`` column ("ap" or "infap")."""

    table: pd.DataFrame
    means: dict[str, float]
    format: str
    measure: str

    @property
    def mean(self) -> float:
        """The headline mean: mAP, or mean xinfAP on sample qrels (NaN without a relevant shot)."""
        return self.means[self.measure]

    def by_feature(self) -> dict[Topic, float]:
        """topic -> the headline measure, for the features with a (judged) relevant shot."""
        judged = self.table[self.table["relevant"] > 0]
        return {fnum: float(value) for fnum, value in zip(judged["fnum"], judged[self.measure], strict=True)}


def evaluate_judgments(
    rankings: Rankings, judgments: Judgments, k: int = DEFAULT_K, topics: Mapping[str, Topic] | None = None
) -> Evaluation:
    """Score a run against either qrels form: TREC AP at depth ``k`` (trec_eval qrels) or sample_eval's inferred
    measures with depth ``k`` (sample qrels)."""
    if not judgments.sampled:
        table, mean_ap = evaluate_run(rankings, judgments.relevance, k, topics)
        return Evaluation(table, {"ap": mean_ap}, judgments.format, "ap")
    table = inferred_table(rankings, judgments, k, topics)
    judged = table[table["relevant"] > 0]
    means = {column: float(judged[column].mean()) if len(judged) else float("nan") for column in _INFERRED_MEASURES}
    return Evaluation(table, means, judgments.format, "infap")


def evaluate_files(
    run_path: str | Path,
    qrels_path: str | Path,
    k: int = DEFAULT_K,
    topics: Mapping[str, Topic] | None = None,
) -> Evaluation:
    """:func:`evaluate_judgments` on a run file (TRECVID XML or TREC form) and a qrels file (either form);
    InputError on bad files."""
    return evaluate_judgments(read_run(run_path), read_judgments(qrels_path), k, topics)


def _feature_names(topics: Mapping[str, Topic] | None) -> dict[Topic, str]:
    """topic -> feature name (default LADI v1's numbers)."""
    return {topic: name for name, topic in (topics if topics is not None else LADI_V1.topics()).items()}


def _feature_name(names: Mapping[Topic, str], topic: Topic) -> str:
    """The feature of a topic: its name in ``names``, the topic itself where it is a name, else "?"."""
    return names.get(topic, topic if isinstance(topic, str) else "?")


def write_metrics_csv(path: str | Path, evaluation: Evaluation) -> None:
    """Atomically write the per-feature table plus a last row ``all`` (summed counts, measures = their means)."""
    table = evaluation.table
    summary = {column: (table[column].sum() if column in table else "") for column in table.columns}
    summary.update({"feature": "all", "fnum": "", **evaluation.means})
    out = pd.concat([table.astype({"fnum": object}), pd.DataFrame([summary])], ignore_index=True)
    write_text_atomic(path, out.to_csv(index=False, float_format="%.6f"))
