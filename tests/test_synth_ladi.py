"""The LADI-shaped world: Table 1 prevalence and copula co-occurrence (scipy's normal and bivariate normal),
simulated workers' rates recovered from large draws (binomial bounds, Gauss-Hermite quadrature for the shared
difficulty), annotation statistics against statsmodels' Fleiss kappa and brute-force counts, the world folder."""

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit, logit
from scipy.stats import multivariate_normal, norm
from statsmodels.stats.inter_rater import fleiss_kappa

from dsdi.errors import InputError
from dsdi.labels import schema
from dsdi.labels.crowd import parse_answer, read_annotations, soft_labels
from dsdi.synth.annotators import (
    KINDS,
    TABLE1_SHARE,
    AnnotatorModel,
    annotation_statistics,
    draw_worker_pool,
    simulate_workers,
)
from dsdi.synth.crowd import with_none_classes
from dsdi.synth.ladi_shape import (
    CO_OCCURRENCE_GROUPS,
    TOP_FEATURE,
    force_positives,
    latent_correlation,
    sample_ladi_features,
    table1_prevalence,
    world_frequencies,
)
from dsdi.synth.ladi_world import build_ladi_world
from dsdi.synth.scenes import render_still, render_still_with_cover

FEATURE = {name: j for j, name in enumerate(schema.FEATURES)}
TOKEN_CLASS = {token: name for token, name in schema.shipped_answer_tokens()}
# a crowd whose every worker is the median diligent worker on average images: rates are exact to compute
PLAIN = AnnotatorModel(pool_size=30, sensitivity_logit_sd=0.0, false_alarm_logit_sd=0.0, careless_share=0.0,
                       none_clicker_share=0.0, difficulty_sd=0.0, sibling_confusions=(), cross_false_alarms=())


def within_binomial(measured: float, expected: float, trials: int, sds: float = 4.5) -> bool:
    return abs(measured - expected) <= sds * np.sqrt(max(expected * (1 - expected), 1e-12) / trials) + 1 / trials


def named_table(answers: pd.DataFrame) -> pd.DataFrame:
    """One row per answer: image (code in order), category, WorkerId and a bool column per class named."""
    codes, distinct = pd.factorize(answers["Answer"])
    classes = [[TOKEN_CLASS[t] for t in parse_answer(a)] for a in distinct]
    table = pd.DataFrame({name: np.array([name in row for row in classes])[codes] for name in schema.CLASSES})
    table.insert(0, "image", pd.factorize(answers["url"])[0])
    table.insert(1, "category", np.array([schema.category_of(row[0]) for row in classes])[codes])
    table.insert(2, "WorkerId", answers["WorkerId"].to_numpy())
    return table


def labels_with(n: int, names: list[str], probability: float = 1.0, seed: int = 0) -> np.ndarray:
    features = np.zeros((n, schema.NUM_FEATURES), np.uint8)
    for name in names:
        features[:, FEATURE[name]] = np.random.default_rng([seed, FEATURE[name]]).random(n) < probability
    return with_none_classes(features)


def ids(n: int) -> list[str]:
    return [f"img_{i:06d}.jpg" for i in range(n)]


# ---- ladi_shape -------------------------------------------------------------------------------------------


def test_table1_prevalence_keeps_table1_ratios_exactly():
    counts = np.asarray(schema.CLASS_COUNTS[:32], dtype=np.float64)
    prevalence = table1_prevalence(0.3)
    np.testing.assert_allclose(prevalence / prevalence[TOP_FEATURE], counts / 33120, rtol=1e-12)
    assert prevalence.max() == pytest.approx(0.3) and prevalence.max() / prevalence.min() == pytest.approx(33120 / 67)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="p_top"):
            table1_prevalence(bad)


def test_copula_marginals_exact_and_grouped_pairs_co_occur():
    n = 200_000
    prevalence = table1_prevalence()
    features = sample_ladi_features(n, np.random.default_rng(1))
    assert features.dtype == np.uint8 and features.shape == (n, 32)
    for j in range(32):
        assert within_binomial(features[:, j].mean(), prevalence[j], n), schema.FEATURES[j]
    correlation = latent_correlation()
    assert np.linalg.eigvalsh(correlation).min() > 0
    thresholds = norm.isf(prevalence)
    grouped = {tuple(sorted((FEATURE[a], FEATURE[b]))) for _, members in CO_OCCURRENCE_GROUPS
               for (a, _), (b, _) in itertools.combinations(members, 2)}
    for a, b in sorted(grouped):
        rho = correlation[a, b]
        joint = multivariate_normal(cov=[[1, rho], [rho, 1]]).cdf([-thresholds[a], -thresholds[b]])
        measured = (features[:, a] & features[:, b]).mean()
        assert within_binomial(measured, joint, n), (schema.FEATURES[a], schema.FEATURES[b])
        if joint * n >= 200:
            assert measured / (prevalence[a] * prevalence[b]) > 1.2, (schema.FEATURES[a], schema.FEATURES[b])
    lonely = [FEATURE["lava"], FEATURE["aircraft"]]
    assert correlation[lonely[0], lonely[1]] == 0


def test_force_positives_tops_up_only_missing_features():
    features = sample_ladi_features(300, np.random.default_rng(2))
    topped = force_positives(features, 20, np.random.default_rng(3))
    assert (topped.sum(axis=0) >= 20).all() and (topped >= features).all()
    assert ((topped != features).sum(axis=0) == np.maximum(20 - features.sum(axis=0).astype(int), 0)).all()
    with pytest.raises(InputError, match="minimum positives"):
        force_positives(features, 301, np.random.default_rng(3))
    with pytest.raises(InputError, match="prevalence"):
        sample_ladi_features(5, np.random.default_rng(0), np.full(32, 1.5))


def test_world_frequencies_follow_table1():
    n = 200_000
    table = world_frequencies(with_none_classes(sample_ladi_features(n, np.random.default_rng(4))))
    assert list(table.index) == list(schema.CLASSES)
    prevalence = table1_prevalence()
    for j, name in enumerate(schema.FEATURES):
        assert within_binomial(table.loc[name, "prevalence"], prevalence[j], n), name
        assert table.loc[name, "table1_share"] == pytest.approx(schema.CLASS_COUNTS[j] / 33120)
    assert table.loc["lava", "positives"] > 0
    assert table.loc["damage: none", "table1_share"] == pytest.approx(98412 / 33120)
    none_share = table.loc["damage: none", "prevalence"] / table.loc["flooding / water damage", "prevalence"]
    assert table.loc["damage: none", "share_of_top"] == pytest.approx(none_share)
    with pytest.raises(InputError, match="labels must be"):
        world_frequencies(np.zeros((3, 32)))


# ---- cover ------------------------------------------------------------------------------------------------


def test_render_still_with_cover_same_picture_and_covers():
    for seed, names in enumerate([["trees", "car", "road"], ["flooding / water damage", "boat"], []]):
        elements = [FEATURE[name] for name in names]
        plain = render_still(elements, np.random.default_rng([7, seed]), 192, 144)
        picture, cover = render_still_with_cover(elements, np.random.default_rng([7, seed]), 192, 144)
        assert picture.tobytes() == plain.tobytes()
        assert cover.shape == (32,) and ((cover > 0) == np.isin(np.arange(32), elements)).all()
        assert (cover <= 1).all()
    full = [render_still_with_cover([FEATURE["lava"]], np.random.default_rng([8, s]), 96, 64)[1] for s in range(8)]
    assert max(c[FEATURE["lava"]] for c in full) == 1.0  # a lone region with no bare cell fills the image


# ---- annotators: parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"sensitivity": 0.0}, {"sensitivity": 1.2}, {"false_alarm": -0.1}, {"careless_share": 1.2},
    {"careless_share": 0.6, "none_clicker_share": 0.5}, {"careless_pick_rate": 2.0}, {"difficulty_sd": -1.0},
    {"sensitivity_logit_sd": float("nan")}, {"cover_slope": -0.5}, {"cover_floor": 0.0},
    {"reference_cover": 1e-4}, {"reference_cover": 1.5}, {"workers_per_category": (0, 3)},
    {"workers_per_category": (4, 3)}, {"workers_per_category": (3, 500)},
    {"sibling_confusions": (("car", "boat", 0.1), ("car", "boat", 0.1))},
    {"sibling_confusions": (("car", "road", 0.1),)}, {"sibling_confusions": (("car", "truck", 1.5),)},
    {"sibling_confusions": (("car", "truck", 0.7), ("car", "boat", 0.7))},
    {"sibling_confusions": (("cars", "truck", 0.1),)}, {"cross_false_alarms": (("dirt", "sand", 0.1),)},
])
def test_annotator_model_refuses_impossible_values(change):
    with pytest.raises(InputError, match="AnnotatorModel"):
        AnnotatorModel(**change)


def test_confusion_matrix_places_every_pair():
    model = AnnotatorModel()
    matrix = model.confusion_matrix()
    assert matrix.shape == (32, 32) and (np.diag(matrix) == 0).all()
    pairs = (*model.sibling_confusions, *model.cross_false_alarms)
    assert np.count_nonzero(matrix) == len(pairs)
    for seen, named, rate in pairs:
        assert matrix[FEATURE[seen], FEATURE[named]] == rate


# ---- annotators: rates recovered --------------------------------------------------------------------------


def test_answers_format_and_determinism():
    n = 50
    labels = with_none_classes(sample_ladi_features(n, np.random.default_rng(5)))
    cover = np.where(labels[:, :32] == 1, 0.05, 0.0)
    answers = simulate_workers(ids(n), labels, cover, np.random.default_rng(6))
    assert list(answers.columns) == ["url", "WorkerId", "Answer"]
    table = named_table(answers)
    per_task = table.groupby(["image", "category"])["WorkerId"]
    assert per_task.size().between(3, 6).all() and (per_task.nunique() == per_task.size()).all()
    assert len(per_task.size()) == n * 5
    soft = soft_labels(answers.rename(columns={"url": "image_id"}))
    assert list(soft["image_id"]) == ids(n)
    again = simulate_workers(ids(n), labels, cover, np.random.default_rng(6))
    assert answers.equals(again)
    with pytest.raises(InputError, match="cover must be"):
        simulate_workers(ids(n), labels, cover + 1.5, np.random.default_rng(6))
    with pytest.raises(InputError, match="labels must be"):
        simulate_workers(ids(n - 1), labels, cover, np.random.default_rng(6))


def test_per_worker_sensitivity_and_false_alarm_recovered():
    model = dataclasses.replace(PLAIN, pool_size=12, sensitivity_logit_sd=0.8, false_alarm=0.2,
                                false_alarm_logit_sd=0.5)
    n = 3000
    labels = labels_with(n, list(schema.FEATURES), 0.5, seed=9)
    pool = draw_worker_pool(np.random.default_rng(10), model)
    answers = simulate_workers(ids(n), labels, np.full((n, 32), 0.05), np.random.default_rng(11), model, pool)
    table = named_table(answers)
    truth = labels[table["image"].to_numpy()]
    in_category = table["category"].to_numpy()[:, None] == np.array([schema.category_of(f) for f in schema.FEATURES])
    named = table[list(schema.FEATURES)].to_numpy()
    for w, worker in enumerate(pool.ids):
        mine = (table["WorkerId"] == worker).to_numpy()[:, None] & in_category
        hits, absent = mine & (truth[:, :32] == 1), mine & (truth[:, :32] == 0)
        assert within_binomial(named[hits].mean(), expit(pool.sensitivity_logit[w]), hits.sum()), worker
        expected_alarm = (pool.false_alarm[w] * np.broadcast_to(TABLE1_SHARE, absent.shape)[absent]).mean()
        assert within_binomial(named[absent].mean(), expected_alarm, absent.sum()), worker


def test_careless_and_none_clicker_shares():
    model = dataclasses.replace(PLAIN, pool_size=4000, careless_share=0.1, none_clicker_share=0.2,
                                careless_pick_rate=0.5)
    pool = draw_worker_pool(np.random.default_rng(12), model)
    for kind, share in zip(KINDS, (0.7, 0.1, 0.2), strict=True):
        assert within_binomial((pool.kind == kind).mean(), share, model.pool_size), kind
    model = dataclasses.replace(model, pool_size=300)
    pool = draw_worker_pool(np.random.default_rng(12), model)
    n = 2000
    labels = labels_with(n, ["flooding / water damage"], 0.5, seed=13)
    answers = simulate_workers(ids(n), labels, np.full((n, 32), 0.05), np.random.default_rng(14), model, pool)
    table = named_table(answers)
    kind_of = dict(zip(pool.ids, pool.kind, strict=True))
    kinds = table["WorkerId"].map(kind_of)
    nones = table[list(schema.NONE_CLASSES)].any(axis=1)
    assert nones[kinds == "none-clicker"].all()
    damage = table[(kinds == "careless") & (table["category"] == "damage")]
    shown = labels[damage["image"].to_numpy(), TOP_FEATURE] == 1
    for subset in (shown, ~shown):  # careless workers name the top feature at 0.5 whatever the image shows
        assert within_binomial(damage.loc[subset, "flooding / water damage"].mean(), 0.5, subset.sum())


def test_miss_rate_falls_as_cover_grows():
    n = 6000
    labels = labels_with(n, ["flooding / water damage"])
    cover = np.zeros((n, 32))
    cover[:, TOP_FEATURE] = np.exp(np.random.default_rng(15).uniform(np.log(1e-3), np.log(0.5), n))
    answers = simulate_workers(ids(n), labels, cover, np.random.default_rng(16), PLAIN)
    damage = named_table(answers).query("category == 'damage'")
    image_cover = cover[damage["image"].to_numpy(), TOP_FEATURE]
    expected = expit(logit(PLAIN.sensitivity) + PLAIN.cover_slope * np.log(image_cover / PLAIN.reference_cover))
    rates = []
    for low, high in [(1e-3, 0.005), (0.005, 0.03), (0.03, 0.15), (0.15, 0.5)]:
        inside = (image_cover >= low) & (image_cover < high)
        rate = damage.loc[inside, "flooding / water damage"].mean()
        assert within_binomial(rate, expected[inside].mean(), inside.sum())
        rates.append(rate)
    assert np.all(np.diff(rates) > 0.05)


def test_sibling_and_cross_category_confusion_rates():
    model = dataclasses.replace(PLAIN, sibling_confusions=(("trees", "shrubs", 0.3),),
                                cross_false_alarms=(("dirt", "rubble / debris", 0.2),))
    n = 3000
    labels = labels_with(n, ["trees", "dirt"])
    answers = simulate_workers(ids(n), labels, np.full((n, 32), 0.05), np.random.default_rng(17), model)
    table = named_table(answers)
    environment, damage = table.query("category == 'environment'"), table.query("category == 'damage'")
    s, fa = model.sensitivity, model.false_alarm
    expected = [
        (environment, "trees", s * 0.7),
        (environment, "shrubs", 1 - (1 - s * 0.3) * (1 - fa * TABLE1_SHARE[FEATURE["shrubs"]])),
        (damage, "rubble / debris", 1 - (1 - fa * TABLE1_SHARE[FEATURE["rubble / debris"]]) * (1 - 0.2)),
        (damage, "landslide", fa * TABLE1_SHARE[FEATURE["landslide"]]),
    ]
    for rows, name, rate in expected:
        assert within_binomial(rows[name].mean(), rate, len(rows)), name


@pytest.mark.parametrize("difficulty_sd", [0.0, 1.0])
def test_shared_difficulty_correlates_answers_of_one_image(difficulty_sd):
    model = dataclasses.replace(PLAIN, difficulty_sd=difficulty_sd, workers_per_category=(2, 2))
    n = 8000
    labels = labels_with(n, ["flooding / water damage"])
    answers = simulate_workers(ids(n), labels, np.full((n, 32), 0.05), np.random.default_rng(18), model)
    named = named_table(answers).query("category == 'damage'")["flooding / water damage"].to_numpy()
    first, second = named.reshape(n, 2).T
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)  # E over difficulty ~ Normal(0, sd)
    p = expit(logit(model.sensitivity) - difficulty_sd * nodes)
    one, both = weights @ p / weights.sum(), weights @ p**2 / weights.sum()
    expected = (both - one**2) / (one * (1 - one))
    assert abs(np.corrcoef(first, second)[0, 1] - expected) < 4.5 / np.sqrt(n)
    assert (expected > 0.1) == (difficulty_sd > 0)


# ---- annotation statistics --------------------------------------------------------------------------------


def test_annotation_statistics_against_statsmodels_and_counting():
    n = 400
    model = dataclasses.replace(AnnotatorModel(), workers_per_category=(3, 3))
    labels = with_none_classes(sample_ladi_features(n, np.random.default_rng(19), table1_prevalence(0.6)))
    cover = np.where(labels[:, :32] == 1, 0.05, 0.0)
    answers = simulate_workers(ids(n), labels, cover, np.random.default_rng(20), model)
    stats = annotation_statistics(answers, labels)
    table = named_table(answers)
    for name in ["flooding / water damage", "trees", "car", "damage: none", "water: none"]:
        k = table.groupby("image")[name].sum().to_numpy()
        assert stats.per_class.loc[name, "fleiss_kappa"] == pytest.approx(fleiss_kappa(np.c_[k, 3 - k]))
        assert stats.per_class.loc[name, "answers"] == k.sum()
        rows = table[table["category"] == schema.category_of(name)]
        agree = [np.mean([a == b for a, b in itertools.combinations(group[name], 2)])
                 for _, group in rows.groupby("image")]
        assert stats.per_class.loc[name, "pairwise_agreement"] == pytest.approx(np.mean(agree))
        present = labels[:, schema.CLASSES.index(name)] == 1
        assert stats.per_class.loc[name, "named_when_present"] == pytest.approx((k / 3)[present].mean())
    top = stats.per_class.loc["flooding / water damage", "answers"]
    assert stats.damage_none_ratio == pytest.approx(stats.per_class.loc["damage: none", "answers"] / top)
    named = table.groupby(["image", "category"])[list(schema.CLASSES)].any()
    mixed = named[list(schema.NONE_CLASSES)].any(axis=1) & named[list(schema.FEATURES)].any(axis=1)
    assert stats.none_beside_feature == pytest.approx(mixed.groupby(level=0).any().mean())
    assert (stats.per_category["answers_per_image"] == 3).all()
    with pytest.raises(InputError, match="true_labels must be"):
        annotation_statistics(answers, labels[:-1])


# ---- the world folder -------------------------------------------------------------------------------------


def test_build_ladi_world_files_and_determinism(tmp_path):
    def build(folder, seed):
        return build_ladi_world(tmp_path / folder, n_train=24, n_holdout=12, n_outliers=4, seed=seed,
                                image_size=(96, 64), holdout_min_positives=2)

    world = build("a", 5)
    truth = pd.read_csv(world.true_labels)
    assert list(truth.columns) == ["image_id", "split", *schema.CLASSES]
    assert list(truth["split"]) == ["train"] * 24 + ["holdout"] * 12 + ["outlier"] * 4
    holdout, outliers = truth[truth["split"] == "holdout"], truth[truth["split"] == "outlier"]
    assert (holdout[list(schema.FEATURES)].sum() >= 2).all()
    assert (outliers[list(schema.FEATURES)] == 0).all(axis=None)
    assert (outliers[list(schema.NONE_CLASSES)] == 1).all(axis=None)
    cover = pd.read_csv(world.cover)
    assert list(cover.columns) == ["image_id", *schema.FEATURES] and (cover["image_id"] == truth["image_id"]).all()
    drawn = cover[list(schema.FEATURES)].to_numpy() > 0
    assert not (drawn & (truth[list(schema.FEATURES)].to_numpy() == 0)).any()
    names = sorted(p.name for p in world.images_dir.iterdir())
    assert names == [url.rsplit("/", 1)[1] for url in truth["image_id"]]
    with Image.open(world.images_dir / names[-1]) as image:
        assert (image.format, image.size) == ("JPEG", (96, 64))
    for path in (world.annotations, world.independent_annotations):
        answers = read_annotations(path)
        assert list(pd.unique(answers["image_id"])) == list(truth["image_id"])
    assert set(pd.read_csv(world.workers)["kind"]) <= set(KINDS)
    again, other = build("b", 5), build("c", 6)
    for name in ["true_labels.csv", "cover.csv", world.annotations.name, world.independent_annotations.name,
                 "workers.csv", "images/img_000030.jpg"]:
        assert (world.root / name).read_bytes() == (again.root / name).read_bytes(), name
    assert world.annotations.read_bytes() != other.annotations.read_bytes()
    with pytest.raises(InputError, match="holdout_min_positives"):
        build_ladi_world(tmp_path / "d", 10, 5, 0, 0, holdout_min_positives=20)
    with pytest.raises(InputError, match="image counts"):
        build_ladi_world(tmp_path / "d", -1, 5, 0, 0)
