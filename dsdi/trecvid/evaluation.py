"""Scores: TREC average precision of shot rankings and mAP over features.

Retrieval (``dsdi eval``), TREC definition (trec_eval ``map``): per feature, the ranked list is cut at
``k``; AP = sum over relevant retrieved shots of the precision at their rank, divided by the number of
relevant shots in the qrels (also those never retrieved). A shot is relevant when its qrels ``rel > 0``.
mAP = mean AP over the features with at least one relevant shot in the qrels; a feature the run does not
rank at all counts with AP 0 (trec_eval ``-c``). The order evaluated is the run's own order (rank
column / seqNum); ties were already ordered when the run was made (see ``dsdi.trecvid.submission``).

"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.labels.schema import load_feature_numbers
from dsdi.trecvid.submission import Rankings, read_qrels, read_run

DEFAULT_K = 1000
METRIC_COLUMNS = ["feature", "fnum", "relevant", "retrieved", "relevant_retrieved", "ap"]


# ---- retrieval: TREC AP / mAP ----------------------------------------------------------------


def average_precision(
    ranked_shot_ids: Sequence[str], relevant_ids: Collection[str], k: int | None = DEFAULT_K
) -> float:
    """TREC average precision of a ranking cut at ``k`` (None = no cut); NaN when nothing is relevant.

    ``ranked_shot_ids``: best first. ``relevant_ids``: every relevant shot in the ground truth.
    Raises InputError if ``k`` < 1 (``--k``) or a shot id appears twice in the ranking (an ill-formed run).
    """
    if k is not None and k < 1:
        raise InputError(f"--k {k}: the cut-off depth must be >= 1 (NIST scores at 1000)")
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
    qrels: Mapping[int, Mapping[str, int]],
    k: int | None = DEFAULT_K,
    feature_numbers: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, float]:
    """Per-feature TREC AP of a run and the mAP.

    Returns (table, mAP). The table has one row per feature number found in the run or the qrels, sorted
    by number, with columns ``feature`` (name from ``feature_numbers``, default the schema's map; "?" if
    unknown), ``fnum``, ``relevant`` (relevant shots in the qrels), ``retrieved`` (shots ranked, after the
    cut at k), ``relevant_retrieved``, ``ap`` (NaN when nothing is relevant). mAP is NaN when no feature
    has a relevant shot.
    """
    names = {number: name for name, number in (feature_numbers or load_feature_numbers()).items()}
    rows = []
    for fnum in sorted(set(rankings) | set(qrels)):
        ranked = [shot_id for shot_id, _score in rankings.get(fnum, [])]
        relevant = {shot_id for shot_id, rel in qrels.get(fnum, {}).items() if rel > 0}
        cut = ranked[:k]
        rows.append(
            {
                "feature": names.get(fnum, "?"),
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


def evaluate_files(
    run_path: str | Path,
    qrels_path: str | Path,
    k: int | None = DEFAULT_K,
    feature_numbers_path: str | Path | None = None,
) -> tuple[pd.DataFrame, float]:
    """``evaluate_run`` on a run file (TRECVID XML or TREC form) and a qrels file; InputError on bad files."""
    rankings = read_run(run_path)
    qrels = read_qrels(qrels_path)
    feature_numbers = load_feature_numbers(Path(feature_numbers_path) if feature_numbers_path else None)
    return evaluate_run(rankings, qrels, k, feature_numbers)


def write_metrics_csv(path: str | Path, table: pd.DataFrame, mean_ap: float) -> None:
    """Atomically write the per-feature table plus a last row ``all`` (summed counts, ap = mAP) as CSV."""
    summary = {
        "feature": "all",
        "fnum": "",
        "relevant": int(table["relevant"].sum()),
        "retrieved": int(table["retrieved"].sum()),
        "relevant_retrieved": int(table["relevant_retrieved"].sum()),
        "ap": mean_ap,
    }
    out = pd.concat([table.astype({"fnum": object}), pd.DataFrame([summary])], ignore_index=True)
    write_text_atomic(path, out.to_csv(index=False, float_format="%.6f"))
