"""The eight claims of the study, each measured as differences "A minus B" (``dsdi.study.stats``) between
variants trained with the same seeds, on image AP against the true labels and clip AP against the qrels
(``dsdi.study.measure``). Each claim names its headline comparison: the one that tests the paper's words most
directly; its verdict is the claim's verdict, and the table shows every other comparison with its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsdi.index.store import ScoreIndex
from dsdi.labels.schema import FEATURES
from dsdi.rank.output import RankOutput
from dsdi.rank.selection import forward_selection, holdout_map
from dsdi.study.design import (
    BASELINE,
    ENSEMBLE_POOL,
    INFERENCE_OPTIONS,
    SMALL_OBJECT_FEATURES,
    WORLDS,
    StudySize,
    ranked_checkpoints,
    run_dir,
    variant,
    world_path,
)
from dsdi.study.measure import ClipJudge, clip_scores, holdout_scores, image_ap, mean_scores, read_truth
from dsdi.study.stats import Difference, difference, verdict_text
from dsdi.train.predictions import read_targets
from dsdi.train.run_folder import BEST_NAME


@dataclass(frozen=True)
class Row:
    """One comparison: A minus B on one measure; ``a`` and ``b`` are the variants' mAPs (mean over seeds)."""

    comparison: str
    measure: str
    a: float
    b: float
    diff: Difference


@dataclass
class Claim:
    number: int
    title: str
    claim: str
    rows: list[Row]
    headline: int = 0
    """The row whose verdict is the claim's."""
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The headline comparison's verdict (with "(B better)" when its interval lies below 0)."""
        return verdict_text(self.rows[self.headline].diff)


def _map(ap: np.ndarray) -> float:
    """Mean over seeds of the per-seed mAP of a (seeds, features) AP array."""
    per_seed = [np.nanmean(row) for row in ap if np.isfinite(row).any()]
    return float(np.mean(per_seed)) if per_seed else float("nan")


def compare(comparison: str, measure: str, a: np.ndarray, b: np.ndarray) -> Row:
    return Row(comparison, measure, _map(a), _map(b), difference(a, b))


def masked(ap: np.ndarray, features: list[str]) -> np.ndarray:
    """A copy of a (..., 32) AP array with every feature outside ``features`` set to NaN."""
    keep = np.isin(np.array(FEATURES), features)
    out = np.array(ap, dtype=np.float64)
    out[..., ~keep] = np.nan
    return out


class Measured:
    """Reads the study folder: per variant and seed its image AP and clip AP (32,), stacked over seeds."""

    def __init__(self, root: Path, size: StudySize) -> None:
        self.root, self.size, self.seeds = root, size, list(size.seeds)
        self.truth = {world.name: read_truth(world_path(root, world.name)) for world in WORLDS}
        self.judge = ClipJudge(world_path(root, "default"))
        self.index = ScoreIndex(root / "rank" / "all")
        facts = RankOutput(root / "rank" / "all").read_facts(needed=("models", "model_keys"))
        self.keys = {Path(path).resolve(): key for path, key in zip(facts.models, facts.model_keys, strict=True)}
        missing = [path for path in ranked_checkpoints(root, size) if path.resolve() not in self.keys]
        if missing:
            raise ValueError(f"rank/all lacks {len(missing)} checkpoints, e.g. {missing[0]}")  # run_study ranks them
        counts = self.truth["default"].sum(axis=0).sort_values(kind="stable")
        self.rarest_third = list(counts.index[: -(-len(FEATURES) // 3)])
        self._measured: dict[tuple, np.ndarray] = {}  # each variant's APs are read once, though claims share them

    def key(self, checkpoint: Path) -> str:
        return self.keys[checkpoint.resolve()]

    def image(self, name: str) -> np.ndarray:
        """(seeds, 32) image AP of the variant's best checkpoints on its world's hold-out."""
        if ("image", name) not in self._measured:
            truth = self.truth[variant(name).world]
            self._measured["image", name] = np.stack([image_ap(holdout_scores(run_dir(self.root, name, s)), truth)
                                                      for s in self.seeds])
        return self._measured["image", name]

    def clip(self, name: str, agg: str = "max", brief: bool = False) -> np.ndarray:
        """(seeds, 32) clip AP of the variant's best checkpoints."""
        if ("clip", name, agg, brief) not in self._measured:
            keys = [self.key(run_dir(self.root, name, s) / BEST_NAME) for s in self.seeds]
            self._measured["clip", name, agg, brief] = np.stack(
                [self.judge.ap(clip_scores(self.index, [key], agg=agg), brief) for key in keys])
        return self._measured["clip", name, agg, brief]

    def both(self, comparison: str, a: str, b: str, scope: str = "") -> list[Row]:
        """Image and clip rows of variant a minus variant b."""
        where = f", {scope}" if scope else ""
        return [compare(comparison, f"image mAP{where}", self.image(a), self.image(b)),
                compare(comparison, f"clip mAP{where}", self.clip(a), self.clip(b))]


def labels_claim(m: Measured) -> Claim:
    rows = []
    for world, soft in (("heavy-noise", "heavy-noise-focal"), ("default", BASELINE)):
        spec = next(w for w in WORLDS if w.name == world)
        label = f"{world} world (miss {spec.miss_rate}, false {spec.false_rate})"
        for other in ("hard", "majority"):
            rows += m.both(f"soft − {other}", soft, f"{world}-{other}", label)
    return Claim(1, "Soft labels vs hard and majority labels",
                 "Soft labels (the share of workers naming a class) resist annotator noise better than hard (anyone "
                 "named it) or majority labels.", rows)


def losses_claim(m: Measured) -> Claim:
    rows = []
    for loss in ("focal", "cbfl", "rfl"):
        name = BASELINE if loss == "focal" else f"default-{loss}"
        for scope, features in (("all features", list(FEATURES)), ("rarest third", m.rarest_third)):
            rows.append(compare(f"{loss} − bce", f"image mAP, {scope}", masked(m.image(name), features),
                                masked(m.image("default-bce"), features)))
            rows.append(compare(f"{loss} − bce", f"clip mAP, {scope}", masked(m.clip(name), features),
                                masked(m.clip("default-bce"), features)))
    claim = Claim(2, "BCE vs focal vs CBFL vs RFL", "Focal-loss variants beat plain BCE, most of all on the rare "
                  "classes.", rows, headline=2)
    claim.notes.append(f"Rarest third (by true count in the default world): {', '.join(m.rarest_third)}.")
    return claim


def none_weight_claim(m: Measured) -> Claim:
    rows = [row for weight in ("0.1", "0.01") for row in m.both(f"none ×{weight} − none ×1", f"default-none{weight}",
                                                                  BASELINE)]
    return Claim(3, "None-class weight 1 vs 0.1 vs 0.01", "Down-weighting the five 'none' classes' losses (×0.1, "
                 "×0.01) helps the 32 features.", rows)


def drop_max_claim(m: Measured) -> Claim:
    rows = m.both("drop max − keep", "outliers-dropmax", "outliers-focal", "10% outliers")
    rows += m.both("drop max − keep", "default-dropmax", BASELINE, "no outliers")
    return Claim(4, "Max-loss dropping, with and without outliers", "Dropping each batch's largest loss removes the "
                 "outliers' harm (paper Fig. 5).", rows)


def aggregation_claim(m: Measured) -> Claim:
    rows = []
    for brief, scope in ((True, "features on screen < 1 s"), (False, "all features")):
        top = m.clip(BASELINE, "max", brief)
        rows += [compare(f"max − {agg}", f"clip mAP, {scope}", top, m.clip(BASELINE, agg, brief))
                 for agg in ("mean", "top3")]
    claim = Claim(5, "Clip aggregation: max vs mean vs top-3 over frames", "The max over a clip's frames finds brief "
                  "events that a mean dilutes.", rows)
    claim.notes.append(f"{len(m.judge.brief)} of {len(m.judge.brief) + len(m.judge.lasting)} relevant (feature, clip)"
                       " pairs are on screen under a second; the brief measure drops the lasting ones from ranking.")
    return claim


def ensemble_claim(m: Measured) -> Claim:
    """Per seed: the pool of default-world models; best single and greedy weights chosen on half the hold-out
    (crowd labels), all three measured on the other half (true labels) and on the clips."""
    image = {kind: [] for kind in ("best", "equal", "greedy")}
    clip = {kind: [] for kind in image}
    notes = []
    for seed in m.seeds:
        runs = [run_dir(m.root, name, seed) for name in ENSEMBLE_POOL]
        targets = read_targets(run_dir(m.root, BASELINE, seed), "holdout")
        choose, judge = targets.index[0::2], targets.index[1::2]
        tables = [holdout_scores(run) for run in runs]
        chosen = np.stack([t.loc[choose, targets.columns].to_numpy() for t in tables])
        best = int(np.nanargmax([holdout_map(targets.loc[choose].to_numpy(), p) for p in chosen]))
        counts = forward_selection(chosen, targets.loc[choose].to_numpy(), size=len(runs)).counts
        weights = {"best": np.eye(len(runs))[best], "equal": np.ones(len(runs)), "greedy": counts.astype(float)}
        keys = [m.key(run / BEST_NAME) for run in runs]
        for kind, w in weights.items():
            used = np.flatnonzero(w)
            image[kind].append(image_ap(mean_scores([tables[i].loc[judge] for i in used], list(w[used])),
                                        m.truth["default"]))
            clip[kind].append(m.judge.ap(clip_scores(m.index, [keys[i] for i in used], list(w[used]))))
        picked = ", ".join(f"{ENSEMBLE_POOL[i].removeprefix('default-')}×{c}" for i, c in enumerate(counts) if c)
        notes.append(f"seed {seed}: best single {ENSEMBLE_POOL[best].removeprefix('default-')}; greedy {picked}")
    rows = []
    for a, b in (("equal", "best"), ("greedy", "best"), ("greedy", "equal")):
        label = f"{a} − {b}".replace("best", "best single").replace("equal", f"equal-weight all {len(ENSEMBLE_POOL)}")
        rows.append(compare(label, "image mAP, judging half of the hold-out", np.stack(image[a]), np.stack(image[b])))
        rows.append(compare(label, "clip mAP", np.stack(clip[a]), np.stack(clip[b])))
    return Claim(6, "Ensembles: best single vs equal weights vs greedy selection", "Ensembles beat single models, "
                 "and greedy selection on a hold-out beats equal weights.", rows, notes=notes)


def snapshot_claim(m: Measured) -> Claim:
    epochs = m.size.epochs
    image, clip = [], []
    for seed in m.seeds:
        run = run_dir(m.root, "default-snapshots", seed)
        stems = [f"snapshot_{k}" for k in range(1, epochs + 1)]
        image.append(image_ap(mean_scores([holdout_scores(run, stem) for stem in stems]), m.truth["default"]))
        clip.append(m.judge.ap(clip_scores(m.index, [m.key(run / f"{stem}.pt") for stem in stems])))
    label = f"{epochs} snapshots − one run"
    rows = [compare(label, "image mAP", np.stack(image), m.image(BASELINE)),
            compare(label, "clip mAP", np.stack(clip), m.clip(BASELINE))]
    return Claim(7, "Snapshot ensemble vs one run of the same length", f"A snapshot ensemble ({epochs} cosine cycles "
                 f"of one epoch, mean of the {epochs} snapshots) beats one {epochs}-epoch cosine run.", rows)


def inference_claim(m: Measured) -> Claim:
    ap = {}
    for option in INFERENCE_OPTIONS:
        out = m.root / "rank" / option
        index, keys = ScoreIndex(out), RankOutput(out).read_facts(needed=("model_keys",)).model_keys
        ap[option] = np.stack([m.judge.ap(clip_scores(index, [key])) for key in keys])
    rows = []
    for option in ("tiles", "flip"):
        for scope, features in (("small objects", list(SMALL_OBJECT_FEATURES)), ("all features", list(FEATURES))):
            rows.append(compare(f"{_option_label(option)} − plain", f"clip mAP, {scope}",
                                masked(ap[option], features), masked(ap["plain"], features)))
    speed = {option: json.loads((m.root / "rank" / option / "speed.json").read_text())["frames_per_s"]
             for option in INFERENCE_OPTIONS}
    notes = [f"Small objects: {', '.join(SMALL_OBJECT_FEATURES)}.",
             f"Cost: `dsdi rank` end to end with the {len(m.seeds)} baseline models on the CPU, sampled frames per "
             "second: " + "; ".join(f"{_option_label(o)} {fps:.0f} ({fps / speed['plain']:.2f}× plain)"
                                    for o, fps in speed.items()) + "."]
    return Claim(8, "Inference options: --tta flip and --tiles 2x2", "Beyond the paper: tiling (SAHI-style) helps "
                 "small objects; flip test-time augmentation helps overall.", rows, notes=notes)


def _option_label(option: str) -> str:
    return {"plain": "plain", "flip": "--tta flip", "tiles": "--tiles 2x2"}[option]


CLAIMS: tuple[Callable[[Measured], Claim], ...] = (labels_claim, losses_claim, none_weight_claim, drop_max_claim,
                                                   aggregation_claim, ensemble_claim, snapshot_claim, inference_claim)


def measure_claims(root: Path, size: StudySize) -> list[Claim]:
    measured = Measured(root, size)
    return [claim(measured) for claim in CLAIMS]


__all__ = ["CLAIMS", "Claim", "Measured", "Row", "measure_claims"]
