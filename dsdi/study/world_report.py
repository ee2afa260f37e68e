"""The report's section on the study's world: its class frequencies and co-occurrence beside paper Table 1, its
crowd's parameters (each with where its value comes from, read from ``AnnotatorModel``'s field docstrings) and its
annotation statistics beside what the paper reports."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from dsdi.labels import schema
from dsdi.report.tables import markdown_table
from dsdi.synth.annotators import AnnotatorModel, annotation_statistics
from dsdi.synth.ladi_shape import world_frequencies
from dsdi.synth.ladi_world import ANNOTATIONS_NAME

CO_OCCURRING = (("flooding / water damage", "flooding"), ("flooding / water damage", "river / stream"),
                ("rubble / debris", "damage (misc)"), ("road", "car"), ("trees", "shrubs"), ("lava", "car"))
"""Pairs whose lift the report shows (the last one a pair with no link, for contrast)."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) and isinstance(following.value,
                                                                                              ast.Constant):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _table(frame: pd.DataFrame) -> str:
    return markdown_table(list(frame.columns), frame.astype(str).values.tolist()).rstrip()


def _lift(labels: pd.DataFrame, a: str, b: str) -> str:
    both, pa, pb = (labels[a] & labels[b]).mean(), labels[a].mean(), labels[b].mean()
    return f"{a} & {b}: {both / (pa * pb):.2f}" if pa * pb > 0 else f"{a} & {b}: –"


def parameters_table(model: AnnotatorModel = AnnotatorModel()) -> str:
    docs = field_docs(AnnotatorModel)
    rows = [(f"`{f.name}`", str(getattr(model, f.name)) if f.name not in ("sibling_confusions", "cross_false_alarms")
             else f"{len(getattr(model, f.name))} pairs", docs.get(f.name, "")) for f in fields(AnnotatorModel)]
    return _table(pd.DataFrame(rows, columns=["parameter", "value", "where the value comes from"]))


def world_section(world_dir: Path) -> str:
    """The markdown section describing the world in ``world_dir`` (``build_ladi_world`` output)."""
    table = pd.read_csv(world_dir / "true_labels.csv", dtype={"image_id": str})
    train = table[table["split"] == "train"]
    frequencies = world_frequencies(train[list(schema.CLASSES)].to_numpy(np.uint8))
    answers = pd.read_csv(world_dir / ANNOTATIONS_NAME, sep="\t", dtype=str)
    answers = answers[answers["url"].isin(set(train["image_id"]))]  # the hold-out's rare features are topped up
    order = answers["url"].drop_duplicates()
    truth = train.set_index("image_id").loc[order, list(schema.CLASSES)].to_numpy(np.uint8)
    stats = annotation_statistics(answers, truth)
    per_class = pd.DataFrame({
        "class": schema.CLASSES,
        "Table 1 answers / top": [f"{v:.4f}" for v in stats.per_class["table1_share"]],
        "world answers / top": [f"{v:.4f}" for v in stats.per_class["answer_share_of_top"]],
        "world prevalence (train)": [f"{v:.4f}" for v in frequencies["prevalence"]],
        "named when present": [f"{v:.2f}" for v in stats.per_class["named_when_present"]],
        "named when absent": [f"{v:.4f}" for v in stats.per_class["named_when_absent"]],
        "Fleiss κ": [f"{v:.2f}" for v in stats.per_class["fleiss_kappa"]]})
    categories = stats.per_category
    features = frequencies.iloc[: schema.NUM_FEATURES]
    positives = features["prevalence"][features["prevalence"] > 0]
    labels = train.set_index("image_id")[list(schema.CLASSES)].astype(bool)
    return "\n\n".join([
        "## The world and its crowd",
        f"- **Images**: {len(train):,} training, {int((table['split'] == 'outlier').sum()):,} outliers among the "
        f"training images (paper Fig. 5's kind: no feature, crowd-labelled as if normal), "
        f"{int((table['split'] == 'holdout').sum()):,} hold-out. Features are drawn with prevalence proportional to "
        f"paper Table 1 (range {positives.max() / positives.min():.0f}:1 among the features drawn in training; "
        "Table 1: 494:1) and co-occur through a Gaussian copula (`dsdi/synth/ladi_shape.py`); lift "
        "P(a and b) / P(a) P(b) in the training images: " + "; ".join(_lift(labels, a, b) for a, b in CO_OCCURRING)
        + ".",
        "- **Crowd** (`dsdi/synth/annotators.py`, training images): per category "
        f"{categories['min_answers'].min():.0f}-{categories['max_answers'].max():.0f} answers per image, "
        f"{categories['answers_per_image'].mean():.2f} on average (LADI: 3-6 workers per category; paper Fig. 1 "
        "shows six). damage: none answers per flooding / "
        f"water damage answer: {stats.damage_none_ratio:.2f} (Table 1: 2.97). Images with a none answer beside a "
        f"feature answer of the same category: {stats.none_beside_feature:.1%} (paper Fig. 1 shows one such image; "
        "the paper gives no rate).",
        "Its parameters:", parameters_table(),
        "Per class, the world's crowd on the training images beside Table 1 (answer counts as a share of flooding / "
        "water damage's, the top feature's; agreement over the images whose workers answered the class's category):",
        _table(per_class),
    ])
