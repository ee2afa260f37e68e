"""Simulated LADI workers with LADI's kind of noise, in the spirit of Dawid and Skene (1979: each worker has
his own confusion rates) and GLAD (Whitehill et al., 2009: each image has its own difficulty).

One worker answers one category of one image (LADI format: url, WorkerId, Answer, a Python-list string of
tokens, ``['<category>:none']`` when he names nothing); 3-6 distinct workers of a fixed pool answer each
category. A pool worker is one of three kinds, drawn once:

- diligent: names a present feature j of image i when he detects it, with
  P(detect) = sigmoid(worker logit + cover_slope * log(max(cover[i, j], cover_floor) / reference_cover)
  - difficulty_i); a detected feature is named as a sibling k of its category instead with probability
  confusion[j, k]; an absent feature j is named (false alarm) with probability
  1 - (1 - worker's false-alarm rate * share_j) * prod over present features k of another category
  (1 - confusion[k, j]), share_j = feature j's Table 1 count / the top feature's (33120);
- careless: names each feature j of the category with probability careless_pick_rate * share_j, whatever the
  image shows;
- none-clicker: answers the category's none token whatever the image shows (paper Fig. 1: four workers name
  flood / water while one answers damage: none).

cover[i, j] is the fraction of image i that feature j's drawn pixels cover (scenes.render_still_with_cover);
difficulty_i ~ Normal(0, difficulty_sd) is shared by all of image i's workers, so their answers correlate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from dsdi.errors import InputError
from dsdi.labels import schema
from dsdi.labels.crowd import count_answers
from dsdi.synth.crowd import answer_tokens, worker_ids

KINDS = ("diligent", "careless", "none-clicker")
TABLE1_SHARE = np.asarray(schema.CLASS_COUNTS[: schema.NUM_FEATURES], dtype=np.float64) / schema.CLASS_COUNTS[
    schema.FEATURES.index("flooding / water damage")]
"""float64 (32,): each feature's Table 1 count / the top feature's (33120); scales false alarms and careless picks."""


@dataclass(frozen=True)
class AnnotatorModel:
    """Every parameter of the simulated crowd (module docstring: how each enters)."""

    pool_size: int = 200
    """Distinct workers. Assumed: LADI publishes its WorkerIds but not their number; 200 gives each worker
    about a thousand answers in a 10,000-image world, as MTurk batches are done by a few hundred workers."""
    workers_per_category: tuple[int, int] = (3, 6)
    """(min, max) workers per category of an image, uniform: LADI's 3-6 (DESIGN section 3, LADI human
    annotations; paper Fig. 1 has six)."""
    sensitivity: float = 0.75
    """The median worker's probability of naming a present feature at reference_cover on an image of average
    difficulty. Paper Fig. 1: 4 of 6 workers name the flood that fills the picture (0.67); chosen so that
    flooding / water damage's answers reach about Table 1's share of the damage category's answers (0.183;
    the world gives 0.19)."""
    sensitivity_logit_sd: float = 0.8
    """SD of the workers' detection logits (logit-normal, Dawid-Skene's per-worker rates): the central 90 % of
    workers detect with 0.45-0.92 at the reference cover. Assumed."""
    false_alarm: float = 0.02
    """The median worker's probability of naming an absent flooding / water damage (no sibling present): the
    old world's independent false rate. Another feature's is this times its Table 1 count / 33120: Table 1
    bounds a rare feature's false alarms (lava's 67 answers over ~40K images x 4.5 answers are < 0.0004 of its
    category's answers), so a rate shared by all features would swamp the tail; chosen so that the world's
    answer shares follow Table 1."""
    false_alarm_logit_sd: float = 0.7
    """SD of the workers' false-alarm logits (logit-normal): the central 90 % lie in 0.006-0.062. Assumed."""
    careless_share: float = 0.05
    """Share of careless workers (spammers in the Dawid-Skene sense: answers independent of the image).
    Assumed; CIFAR-N (Wei et al., 2022) finds a few workers with label noise far above the rest."""
    careless_pick_rate: float = 0.25
    """Probability that a careless worker names flooding / water damage; another feature's is this times its
    Table 1 count / 33120. Chosen as ladi_shape.DEFAULT_P_TOP: a careless worker names each feature about as
    often as a random image shows it (a uniform rate would swamp the rare features, as for false_alarm)."""
    none_clicker_share: float = 0.03
    """Share of workers who answer the category's none whatever they see (paper Fig. 1's damage: none beside
    flood x4); chosen so that damage: none has about Table 1's 2.97 answers per flooding / water damage answer
    (measured on 1,600 train images, 4 seeds: 2.83 with no none-clickers, 3.04 with 4 %)."""
    cover_slope: float = 0.8
    """Detection logit per unit of log cover: halving an object's share of the image multiplies the odds of
    naming it by 2 ** -0.8 = 0.57. Assumed (CIFAR-10H, Peterson et al. 2019: human errors concentrate on hard,
    ambiguous images; here small and faint ones)."""
    reference_cover: float = 0.05
    """Cover at which a worker's logit is his sensitivity: about a drawn building's share of a 640x480 image."""
    cover_floor: float = 1e-3
    """Covers below this count as this in the detection logit (a feature drawn under one cover cell)."""
    difficulty_sd: float = 0.7
    """SD of the per-image difficulty (normal, in logits) shared by the image's workers: GLAD's image
    difficulty, CIFAR-10H's image-dependent disagreement. Assumed."""
    sibling_confusions: tuple[tuple[str, str, float], ...] = (
        ("flooding", "lake / pond", 0.10), ("flooding", "river / stream", 0.05),
        ("lake / pond", "flooding", 0.08), ("lake / pond", "river / stream", 0.05),
        ("river / stream", "lake / pond", 0.05), ("river / stream", "flooding", 0.05),
        ("trees", "shrubs", 0.12), ("shrubs", "trees", 0.15), ("shrubs", "grass", 0.08),
        ("grass", "shrubs", 0.08), ("car", "truck", 0.08), ("truck", "car", 0.15),
        ("dirt", "sand", 0.12), ("sand", "dirt", 0.12),
    )
    """(seen, named, rate): a worker who detects `seen` names its same-category sibling `named` instead.
    Assumed rates for the look-alike pairs of LADI's vocabulary (water bodies, vegetation, vehicles, bare
    ground); the more specific class is mistaken for the commoner one more often than the reverse."""
    cross_false_alarms: tuple[tuple[str, str, float], ...] = (
        ("dirt", "rubble / debris", 0.06), ("sand", "rubble / debris", 0.04),
        ("puddle", "flooding / water damage", 0.05), ("building", "damage (misc)", 0.03),
    )
    """(present, named, rate): a present feature raises the false alarm of an absent feature of another
    category (bare ground read as debris, standing water as flood damage, any roof as damage). Assumed."""

    def __post_init__(self) -> None:
        _check_model(self)

    def confusion_matrix(self) -> np.ndarray:
        """float64 (32, 32), rows = seen, cols = named: same category, the chance of naming the sibling instead;
        across categories, the false-alarm chance the seen feature adds."""
        matrix = np.zeros((schema.NUM_FEATURES, schema.NUM_FEATURES))
        for seen, named, rate in (*self.sibling_confusions, *self.cross_false_alarms):
            matrix[schema.FEATURES.index(seen), schema.FEATURES.index(named)] = rate
        return matrix


def _check_model(model: AnnotatorModel) -> None:
    """InputError naming the first AnnotatorModel parameter no crowd can have."""
    low, high = model.workers_per_category
    if not 1 <= low <= high <= model.pool_size:
        raise InputError(f"AnnotatorModel: need 1 <= workers_per_category min <= max <= pool_size "
                         f"(got {model.workers_per_category}, pool {model.pool_size})")
    for name in ("sensitivity", "false_alarm"):
        if not 0.0 < getattr(model, name) < 1.0:
            raise InputError(f"AnnotatorModel.{name} must lie in (0, 1) (got {getattr(model, name)})")
    for name in ("careless_share", "careless_pick_rate", "none_clicker_share"):
        if not 0.0 <= getattr(model, name) <= 1.0:
            raise InputError(f"AnnotatorModel.{name} must lie in [0, 1] (got {getattr(model, name)})")
    if model.careless_share + model.none_clicker_share > 1.0:
        raise InputError("AnnotatorModel: careless_share + none_clicker_share must be <= 1")
    for name in ("sensitivity_logit_sd", "false_alarm_logit_sd", "difficulty_sd", "cover_slope"):
        if not np.isfinite(getattr(model, name)) or getattr(model, name) < 0:
            raise InputError(f"AnnotatorModel.{name} must be finite and >= 0 (got {getattr(model, name)})")
    if not 0.0 < model.cover_floor <= model.reference_cover <= 1.0:
        raise InputError(f"AnnotatorModel: need 0 < cover_floor <= reference_cover <= 1 "
                         f"(got {model.cover_floor}, {model.reference_cover})")
    _check_confusions(model.sibling_confusions, same_category=True)
    _check_confusions(model.cross_false_alarms, same_category=False)


def _check_confusions(pairs: tuple[tuple[str, str, float], ...], same_category: bool) -> None:
    """InputError for an unknown feature, a rate outside [0, 1], a repeated pair, a pair in the wrong kind of
    category, or a feature whose substitutions sum to more than 1."""
    kind = "sibling_confusions" if same_category else "cross_false_alarms"
    seen_pairs, substituted = set(), np.zeros(schema.NUM_FEATURES)
    for seen, named, rate in pairs:
        for name in (seen, named):
            if name not in schema.FEATURES:
                raise InputError(f"AnnotatorModel.{kind}: {name!r} is not one of the 32 features")
        if not 0.0 <= rate <= 1.0 or (seen, named) in seen_pairs or seen == named:
            raise InputError(f"AnnotatorModel.{kind} ({seen!r}, {named!r}, {rate}): the rate must lie in [0, 1] "
                             "and each pair of distinct features appear once")
        if (schema.category_of(seen) == schema.category_of(named)) != same_category:
            raise InputError(f"AnnotatorModel.{kind} ({seen!r}, {named!r}): the two must be in "
                             f"{'the same' if same_category else 'different'} categories")
        seen_pairs.add((seen, named))
        substituted[schema.FEATURES.index(seen)] += rate
    if substituted.max() > 1.0:
        raise InputError(f"AnnotatorModel.{kind}: a feature's substitution rates sum to more than 1")


@dataclass(frozen=True)
class WorkerPool:
    """The crowd: per worker (pool_size,) its id, kind (KINDS), detection logit at the reference cover and
    false-alarm probability."""

    ids: list[str]
    kind: np.ndarray
    sensitivity_logit: np.ndarray
    false_alarm: np.ndarray = field(repr=False)

    def table(self) -> pd.DataFrame:
        """WorkerId, kind, sensitivity (at the reference cover, average image), false_alarm."""
        return pd.DataFrame({"WorkerId": self.ids, "kind": self.kind,
                             "sensitivity": expit(self.sensitivity_logit), "false_alarm": self.false_alarm})


def draw_worker_pool(rng: np.random.Generator, model: AnnotatorModel) -> WorkerPool:
    """model.pool_size workers: ids, then kinds (careless, none-clicker or diligent by their shares), then
    logit-normal sensitivities and false-alarm rates."""
    ids = worker_ids(rng, model.pool_size)
    u = rng.random(model.pool_size)
    kind = np.where(u < model.careless_share, KINDS[1],
                    np.where(u < model.careless_share + model.none_clicker_share, KINDS[2], KINDS[0]))
    sensitivity = logit(model.sensitivity) + model.sensitivity_logit_sd * rng.standard_normal(model.pool_size)
    false_alarm = expit(logit(model.false_alarm) + model.false_alarm_logit_sd * rng.standard_normal(model.pool_size))
    return WorkerPool(ids, kind, sensitivity, false_alarm)


def _check_inputs(image_ids: list[str], labels: np.ndarray, cover: np.ndarray) -> None:
    """InputError unless labels is (n, 37) 0/1 and cover (n, 32) in [0, 1] for n image ids."""
    n = len(image_ids)
    if labels.shape != (n, schema.NUM_CLASSES) or not np.isin(labels, (0, 1)).all():
        raise InputError(f"labels must be (n images = {n}, {schema.NUM_CLASSES}) of 0/1 (got shape {labels.shape})")
    if cover.shape != (n, schema.NUM_FEATURES) or not ((cover >= 0) & (cover <= 1)).all():
        raise InputError(f"cover must be (n images = {n}, {schema.NUM_FEATURES}) fractions in [0, 1] "
                         f"(got shape {cover.shape})")


def simulate_workers(image_ids: list[str], labels: np.ndarray, cover: np.ndarray, rng: np.random.Generator,
                     model: AnnotatorModel = AnnotatorModel(), pool: WorkerPool | None = None) -> pd.DataFrame:
    """LADI-format answers (url, WorkerId, Answer) of labels (n, 37) 0/1 with cover (n, 32) fractions: one row
    per image x category x worker, in that order; the pool (default: draw_worker_pool(rng, model), drawn
    first), then each image's difficulty, then each category's workers and answers come from rng."""
    labels, cover = np.asarray(labels), np.asarray(cover, dtype=np.float64)
    _check_inputs(image_ids, labels, cover)
    pool = draw_worker_pool(rng, model) if pool is None else pool
    difficulty = model.difficulty_sd * rng.standard_normal(len(image_ids))
    present = labels[:, : schema.NUM_FEATURES].astype(bool)
    confusion = model.confusion_matrix()
    no_cross_alarm = np.ones(present.shape)  # (n, 32): P(no cross-category false alarm) of each named feature
    for seen, named, rate in model.cross_false_alarms:
        no_cross_alarm[:, schema.FEATURES.index(named)] *= np.where(present[:, schema.FEATURES.index(seen)],
                                                                    1.0 - rate, 1.0)
    detect_logit = model.cover_slope * np.log(np.maximum(cover, model.cover_floor) / model.reference_cover)
    detect_logit -= difficulty[:, None]
    token_of, none_token = answer_tokens()
    parts = []
    for c, category in enumerate(schema.CATEGORIES):
        members = np.array([j for j, name in enumerate(schema.FEATURES) if schema.category_of(name) == category])
        workers, named = _category_answers(rng, model, pool, present[:, members], detect_logit[:, members],
                                           no_cross_alarm[:, members], confusion[np.ix_(members, members)],
                                           TABLE1_SHARE[members])
        tokens = [token_of[schema.FEATURES[j]] for j in members]
        codes = named.astype(np.int64) @ (1 << np.arange(len(members)))
        answer_of = {code: str([t for k, t in enumerate(tokens) if code >> k & 1] or [none_token[category]])
                     for code in np.unique(codes).tolist()}
        image, slot = np.nonzero(workers >= 0)
        parts.append(pd.DataFrame({"image": image, "category": c, "slot": slot, "worker": workers[image, slot],
                                   "Answer": [answer_of[code] for code in codes[image, slot].tolist()]}))
    rows = pd.concat(parts).sort_values(["image", "category", "slot"], kind="stable")
    return pd.DataFrame({"url": np.asarray(image_ids, dtype=object)[rows["image"].to_numpy()],
                         "WorkerId": np.asarray(pool.ids, dtype=object)[rows["worker"].to_numpy()],
                         "Answer": rows["Answer"].to_numpy()})


def _category_answers(rng: np.random.Generator, model: AnnotatorModel, pool: WorkerPool, present: np.ndarray,
                      detect_logit: np.ndarray, no_cross_alarm: np.ndarray, confusion: np.ndarray,
                      share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One category's answers for n images with its m features: (workers (n, max) pool indices, -1 past the
    image's count; named (n, max, m) bool). present, detect_logit (without the worker's logit) and
    no_cross_alarm are (n, m); confusion (m, m) the category's sibling substitutions; share (m,) TABLE1_SHARE."""
    n, m = present.shape
    low, high = model.workers_per_category
    count = rng.integers(low, high + 1, n)
    workers = np.argpartition(rng.random((n, len(pool.ids))), high - 1, axis=1)[:, :high]
    workers = np.where(np.arange(high) < count[:, None], workers, -1)
    u_detect, u_swap, u_alarm, u_careless = rng.random((4, n, high, m))
    detected = present[:, None] & (u_detect < expit(pool.sensitivity_logit[workers][..., None] + detect_logit[:, None]))
    cumulative = np.cumsum(confusion, axis=1)  # (m seen, m named): u_swap below cumulative[j, k] -> k
    swapped_to = np.argmax(u_swap[..., None] < cumulative, axis=-1)  # (n, max, m): the first k, or 0
    swaps = detected & (u_swap < cumulative[:, -1])
    named = detected & ~swaps
    for j in range(m):
        named |= swaps[..., j, None] & (np.arange(m) == swapped_to[..., j, None])
    alarm = 1.0 - (1.0 - pool.false_alarm[workers][..., None] * share) * no_cross_alarm[:, None]
    named |= ~present[:, None] & (u_alarm < alarm)
    kind = pool.kind[workers][..., None]
    named = np.where(kind == KINDS[1], u_careless < model.careless_pick_rate * share, named)
    return workers, named & (kind != KINDS[2])


@dataclass(frozen=True)
class AnnotationStatistics:
    """What annotation_statistics measures: per_class (index schema.CLASSES), per_category (index
    schema.CATEGORIES), the share of images with a none answer beside a feature answer of the same category,
    and the ratio of damage: none answers to flooding / water damage answers (Table 1: 98412 / 33120 = 2.97)."""

    per_class: pd.DataFrame
    per_category: pd.DataFrame
    none_beside_feature: float
    damage_none_ratio: float


def annotation_statistics(answers: pd.DataFrame, true_labels: np.ndarray) -> AnnotationStatistics:
    """Agreement and answer shares of LADI-format answers (url or image_id, Answer) against the true labels
    (n, 37) of their images in order of first appearance.

    Per class, over the images whose workers answered its category (n of them, k naming the class):
    answers (rows naming it), answer_share_of_top (/ flooding / water damage's answers), table1_share (Table 1
    count / 33120), named_when_present / named_when_absent (mean k / n where the class is / is not true),
    pairwise_agreement (mean share of agreeing worker pairs, [k(k-1) + (n-k)(n-k-1)] / [n(n-1)], over n >= 2)
    and fleiss_kappa (Fleiss' kappa of named / not named over those images). Per category: answers per image
    (mean, min, max) and the share of images with a none answer beside a feature answer."""
    counts = count_answers(answers.rename(columns={"url": "image_id"}) if "image_id" not in answers else answers)
    truth = np.asarray(true_labels).astype(bool)
    if truth.shape != (len(counts.image_ids), schema.NUM_CLASSES):
        raise InputError(f"true_labels must be (images answered = {len(counts.image_ids)}, {schema.NUM_CLASSES}) "
                         f"in the answers' image order (got shape {truth.shape})")
    category = np.array([schema.CATEGORIES.index(schema.category_of(name)) for name in schema.CLASSES])
    named, asked = counts.class_counts.astype(np.float64), counts.category_rows[:, category].astype(np.float64)
    share = np.divide(named, asked, out=np.zeros_like(named), where=asked > 0)
    pairs = asked >= 2
    agreeing = named * (named - 1) + (asked - named) * (asked - named - 1)
    agreement = np.divide(agreeing, asked * (asked - 1), out=np.zeros_like(named), where=pairs)
    p_named = (named * pairs).sum(axis=0) / np.maximum((asked * pairs).sum(axis=0), 1)
    chance = p_named**2 + (1 - p_named) ** 2
    mean_agreement = (agreement * pairs).sum(axis=0) / np.maximum(pairs.sum(axis=0), 1)
    answer_counts = named.sum(axis=0)
    table1 = np.asarray(schema.CLASS_COUNTS, dtype=np.float64)
    top = schema.FEATURES.index("flooding / water damage")

    def mean_where(mask: np.ndarray) -> np.ndarray:
        return (share * mask).sum(axis=0) / np.where(mask.sum(axis=0) > 0, mask.sum(axis=0), np.nan)

    per_class = pd.DataFrame({
        "category": [schema.category_of(name) for name in schema.CLASSES],
        "answers": answer_counts.astype(np.int64),
        "answer_share_of_top": answer_counts / answer_counts[top] if answer_counts[top] else np.nan,
        "table1_share": table1 / table1[top],
        "named_when_present": mean_where(truth & (asked > 0)),
        "named_when_absent": mean_where(~truth & (asked > 0)),
        "pairwise_agreement": np.where(pairs.any(axis=0), mean_agreement, np.nan),
        "fleiss_kappa": np.divide(mean_agreement - chance, 1 - chance, out=np.full(len(chance), np.nan),
                                  where=pairs.any(axis=0) & (chance < 1)),
    }, index=pd.Index(schema.CLASSES, name="class"))
    mixed = _none_beside_feature(counts.class_counts > 0)
    rows = counts.category_rows
    per_category = pd.DataFrame({"answers_per_image": rows.mean(axis=0), "min_answers": rows.min(axis=0),
                                 "max_answers": rows.max(axis=0), "none_beside_feature": mixed.mean(axis=0)},
                                index=pd.Index(schema.CATEGORIES, name="category"))
    ratio = answer_counts[schema.CLASSES.index("damage: none")] / answer_counts[top] if answer_counts[top] else np.nan
    return AnnotationStatistics(per_class, per_category, float(mixed.any(axis=1).mean()), float(ratio))


def _none_beside_feature(named: np.ndarray) -> np.ndarray:
    """bool (n, 5): per image and category, a '<category>: none' answer and a feature answer of that category."""
    columns = []
    for category in schema.CATEGORIES:
        none_class = next(c for c in schema.NONE_CLASSES if schema.category_of(c) == category)
        features = [j for j, name in enumerate(schema.FEATURES) if schema.category_of(name) == category]
        columns.append(named[:, schema.CLASSES.index(none_class)] & named[:, features].any(axis=1))
    return np.stack(columns, axis=1)
