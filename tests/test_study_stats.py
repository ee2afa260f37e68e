"""The study's statistics against outside references: weighted AP against scikit-learn and duplicated rows, the
sign-flip test and TOST against scipy's permutation test and a brute-force enumeration, Holm against statsmodels,
the two-level bootstrap against scipy's bootstrap and its analytic variance, and the verdict partition."""

import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import average_precision_score
from statsmodels.stats.multitest import multipletests

from dsdi.errors import InputError
from dsdi.study import resampling
from dsdi.study.resampling import image_resamples, resampled_map, weighted_average_precision
from dsdi.study.stats import (
    ALPHA,
    EQUIVALENCE_MARGIN,
    VERDICTS,
    Comparison,
    Interval,
    compare,
    holm,
    judge_headlines,
    sign_flip_test,
    tost,
    two_level_draws,
    two_level_interval,
    verdict,
)
from dsdi.train.metrics import per_class_average_precision


def tied_problem(items=60, features=5, seed=0):
    """Scores rounded to one decimal (many ties), a rare feature, and a feature without any positive."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((items, features)) < np.linspace(0.05, 0.5, features)).astype(int)
    truth[:3, 0], truth[3:, 0] = 1, 0  # three positives
    truth[:, -1] = 0  # none
    scores = np.round(np.clip(rng.normal(0.4, 0.2, (items, features)) + 0.3 * truth, 0, 1), 1)
    return scores, truth


def sklearn_weighted_ap(scores, truth, weights):
    expected = np.full((len(weights), truth.shape[1]), np.nan)
    for b, f in itertools.product(range(len(weights)), range(truth.shape[1])):
        if (weights[b] * truth[:, f]).sum() > 0:
            expected[b, f] = average_precision_score(truth[:, f], scores[:, f], sample_weight=weights[b])
    return expected


def test_weighted_ap_is_sklearns_with_sample_weights_and_ties():
    scores, truth = tied_problem()
    weights = image_resamples(len(scores), 25, seed=3)
    weights[0, :3] = 0  # the rare feature loses every positive: NaN
    got = weighted_average_precision(scores, truth, weights)
    np.testing.assert_allclose(got, sklearn_weighted_ap(scores, truth, weights), rtol=0, atol=1e-12)
    assert np.isnan(got[0, 0]) and np.isnan(got[:, -1]).all()


def test_weighted_ap_is_ap_on_the_duplicated_rows():
    scores, truth = tied_problem(seed=1)
    weights = image_resamples(len(scores), 4, seed=5)
    got = weighted_average_precision(scores, truth, weights)
    for b, row in enumerate(weights):
        repeated = np.repeat(np.arange(len(scores)), row)
        ap, _ = per_class_average_precision(truth[repeated], scores[repeated])
        np.testing.assert_allclose(got[b], ap, rtol=0, atol=1e-12)


def test_weighted_ap_chunks_give_the_same_values(monkeypatch):
    scores, truth = tied_problem(seed=2)
    weights = image_resamples(len(scores), 30, seed=1)
    whole = weighted_average_precision(scores, truth, weights)
    monkeypatch.setattr(resampling, "CHUNK_ELEMENTS", len(scores) * 7)  # chunks of 7 resamples
    np.testing.assert_array_equal(weighted_average_precision(scores, truth, weights), whole)


@pytest.mark.parametrize(("truth", "weights", "message"), [
    (None, -np.ones((2, 60), int), "non-negative"),
    (None, np.full((2, 60), 0.5), "whole"),
    (None, np.ones((2, 59), int), "image_resamples"),
    (np.full((60, 5), 0.5), np.ones((2, 60), int), "0 and 1"),
])
def test_weighted_ap_rejects_bad_input(truth, weights, message):
    scores, good_truth = tied_problem()
    with pytest.raises(InputError, match=message):
        weighted_average_precision(scores, good_truth if truth is None else truth, weights)


def test_image_resamples_are_reproducible_multinomial_draws():
    draws = image_resamples(50, 400, seed=7)
    assert draws.shape == (400, 50) and (draws.sum(axis=1) == 50).all() and (draws >= 0).all()
    np.testing.assert_array_equal(draws, image_resamples(50, 400, seed=7))
    assert not np.array_equal(draws, image_resamples(50, 400, seed=8))
    assert draws.mean() == pytest.approx(1.0) and draws.var() == pytest.approx(1 - 1 / 50, rel=0.05)


def test_resampled_map_is_the_mean_ap_over_masked_features_with_a_positive():
    scores, truth = tied_problem(items=40)
    seeds = np.stack([scores, np.round(scores[::-1] * 0.7, 1)])  # (2, 40, 5)
    weights = image_resamples(40, 6, seed=2)
    weights[1, :3] = 0  # no positive of feature 0 in resample 1
    mask = np.array([True, False, True, True, True])
    got = resampled_map(seeds, truth, weights, mask)
    for s in range(2):
        expected = np.nanmean(sklearn_weighted_ap(seeds[s][:, mask], truth[:, mask], weights), axis=1)
        np.testing.assert_allclose(got[:, s], expected, rtol=0, atol=1e-12)
    identity = resampled_map(seeds, truth, np.ones((1, 40), int))[0]
    assert identity[0] == pytest.approx(per_class_average_precision(truth, scores)[1], abs=1e-12)
    with pytest.raises(InputError, match="no positive"):
        resampled_map(seeds, truth, weights, np.array([True, False, False, False, True]))


def brute_force_sign_flip(deltas, alternative):
    """Every sign vector by itertools, the mean compared with a relative tie tolerance."""
    observed = np.mean(deltas)
    hits = 0
    combos = list(itertools.product((1, -1), repeat=len(deltas)))
    for signs in combos:
        flipped = np.mean(np.multiply(signs, deltas))
        tie = 1e-12 * abs(observed)
        hits += {"greater": flipped >= observed - tie, "less": flipped <= observed + tie,
                 "two-sided": abs(flipped) >= abs(observed) - tie}[alternative]
    return hits / len(combos)


def scipy_sign_flip(deltas, alternative):
    """scipy's paired permutation test of mean(x - y), exact: swapping a pair flips the sign of its delta."""
    result = scipy_stats.permutation_test((np.asarray(deltas), np.zeros(len(deltas))),
                                          lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                                          n_resamples=np.inf, alternative=alternative, vectorized=True)
    return result.pvalue


DELTA_SETS = [
    [0.012, -0.004, 0.031, 0.008, 0.015, -0.002, 0.02, 0.011],
    [0.01, -0.01, 0.01, 0.02, -0.02, 0.03, 0.0, 0.01, -0.03, 0.01],  # equal magnitudes: ties in the null
    [-0.02, -0.01, -0.03, 0.005, -0.015, -0.02],
]


@pytest.mark.parametrize("deltas", DELTA_SETS)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_sign_flip_test_is_scipys_exact_permutation_test(deltas, alternative):
    got = sign_flip_test(np.array(deltas), alternative)
    assert got == pytest.approx(scipy_sign_flip(deltas, alternative), abs=1e-12)
    assert got == pytest.approx(brute_force_sign_flip(deltas, alternative), abs=1e-12)


def test_sign_flip_test_is_monte_carlo_beyond_sixteen_seeds():
    deltas = np.random.default_rng(4).normal(0.004, 0.01, size=18)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=18)))  # all 2^18, enumerated here
    exact = np.mean(np.abs(signs @ deltas) >= abs(deltas.sum()) * (1 - 1e-12))
    got = sign_flip_test(deltas, "two-sided", seed=1)
    assert got == pytest.approx(exact, abs=0.006)  # 100,000 draws: SE <= 0.0016
    assert got == sign_flip_test(deltas, "two-sided", seed=1) and got > 0
    assert got != sign_flip_test(deltas, "two-sided", seed=2)


def test_sign_flip_test_rejects_missing_seeds_and_unknown_alternatives():
    with pytest.raises(InputError, match="finite delta per seed"):
        sign_flip_test(np.array([0.01, np.nan, 0.02]))
    with pytest.raises(InputError, match="alternative"):
        sign_flip_test(np.array([0.01, 0.02]), "bigger")


@pytest.mark.parametrize("deltas", DELTA_SETS)
def test_tost_is_two_one_sided_scipy_tests_on_the_shifted_deltas(deltas):
    deltas = np.array(deltas)
    expected = max(scipy_sign_flip(deltas + EQUIVALENCE_MARGIN, "greater"),
                   scipy_sign_flip(deltas - EQUIVALENCE_MARGIN, "less"))
    assert tost(deltas) == pytest.approx(expected, abs=1e-12)


def test_tost_finds_tiny_effects_equivalent_and_large_ones_not():
    tiny = np.random.default_rng(0).uniform(-0.002, 0.002, size=10)
    assert tost(tiny) == pytest.approx(1 / 2 ** 10)  # only the identity is as extreme, on either side
    assert tost(tiny + 0.02) > 0.5  # every seed beyond the margin
    assert tost(tiny, margin=0.001) > ALPHA  # the same deltas, a margin they straddle


def test_holm_is_statsmodels_and_a_hand_computed_example():
    pvalues = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04]
    np.testing.assert_allclose(holm(pvalues), multipletests(pvalues, method="holm")[1], rtol=0, atol=1e-15)
    # sorted 0.01, 0.02, 0.04, 0.6 -> 4 * 0.01, 3 * 0.02, 2 * 0.04, 1 * 0.6
    np.testing.assert_allclose(holm([0.02, 0.01, 0.04, 0.6]), [0.06, 0.04, 0.08, 0.6], rtol=0, atol=1e-15)
    np.testing.assert_allclose(holm([0.7, 0.6]), [1.0, 1.0], rtol=0, atol=1e-15)  # 2 * 0.6 capped; 0.7 raised to it
    np.testing.assert_allclose(holm([0.3, 0.01, 0.2]), [0.4, 0.03, 0.4], rtol=0, atol=1e-15)  # max-accumulated
    with pytest.raises(InputError, match="p-values"):
        holm([0.1, np.nan])


def seed_deltas(seeds=10, seed=0):
    return np.random.default_rng(seed).normal(0.01, 0.015, size=seeds)


def test_two_level_interval_without_item_noise_is_scipys_seed_bootstrap():
    per_seed = seed_deltas()
    resamples = 20_000
    arm_a = np.tile(0.5 + per_seed, (resamples, 1))  # identity item weights: every row is the test set as it is
    arm_b = np.full((resamples, len(per_seed)), 0.5)
    got = two_level_interval(arm_a, arm_b, seed=3)
    reference = scipy_stats.bootstrap((per_seed,), np.mean, method="percentile", n_resamples=resamples,
                                      rng=np.random.default_rng(11)).confidence_interval
    assert got.low == pytest.approx(reference.low, abs=4e-4) and got.high == pytest.approx(reference.high, abs=4e-4)


def linear_world(item_sd, seeds=10, items=200, resamples=3000):
    """Per-seed, per-item deltas ``seed effect + item effect``; the arms' mAPs are their weighted item means."""
    rng = np.random.default_rng(1)
    seed_effect, item_effect = rng.normal(0.01, 0.015, size=seeds), rng.normal(0, item_sd, size=items)
    weights = image_resamples(items, resamples, seed=2)
    arm_a = seed_effect[None, :] + (weights @ item_effect / items)[:, None]  # (B, S)
    return seed_effect, item_effect, arm_a, np.zeros_like(arm_a)


def test_two_level_variance_is_the_analytic_seed_plus_item_variance():
    seed_effect, item_effect, arm_a, arm_b = linear_world(item_sd=0.2)
    draws = two_level_draws(arm_a, arm_b, seed=4)
    # Seeds drawn with replacement: plug-in variance / S; multinomial items: plug-in variance / n; independent.
    analytic = seed_effect.var() / len(seed_effect) + item_effect.var() / len(item_effect)
    assert draws.var() == pytest.approx(analytic, rel=0.1)  # 3000 draws: relative SE of a variance ~ 0.026


def test_two_level_interval_widens_with_item_noise():
    widths = []
    for item_sd in (0.0, 0.2):
        *_, arm_a, arm_b = linear_world(item_sd)
        interval = two_level_interval(arm_a, arm_b, seed=4)
        widths.append(interval.high - interval.low)
    assert widths[1] > 1.3 * widths[0]


def test_verdicts_partition_every_outcome():
    cases = itertools.product((-0.02, -0.001, 0.0, 0.001, 0.02), (0.001, ALPHA, 0.3), (0.001, ALPHA, 0.3))
    for mean, p_difference, p_equivalence in cases:
        significant = p_difference < ALPHA
        holds = {"equivalent": p_equivalence < ALPHA,
                 "reproduced": p_equivalence >= ALPHA and significant and mean > 0,
                 "reversed": p_equivalence >= ALPHA and significant and mean < 0,
                 "inconclusive": p_equivalence >= ALPHA and not (significant and mean != 0)}
        assert sum(holds.values()) == 1 and set(holds) == set(VERDICTS)
        assert holds[verdict(mean, p_difference, p_equivalence)]
    assert verdict(0.001, 0.001, 0.001) == "equivalent"  # significant but tiny: never also "reproduced"
    with pytest.raises(InputError, match="finite"):
        verdict(float("nan"), 0.01, 0.5)


def test_compare_and_headline_verdicts_adjust_each_family_on_its_own():
    rng = np.random.default_rng(0)
    map_b = rng.uniform(0.3, 0.5, size=10)
    gains = {"big": 0.03 + rng.normal(0, 0.005, 10), "none": rng.uniform(-0.003, 0.003, 10),
             "worse": -0.04 + rng.normal(0, 0.01, 10),
             "noisy": np.array([0.04, -0.03, 0.05, -0.045, 0.01, -0.02, 0.035, -0.04, 0.02, -0.01])}
    resampled_b = map_b + rng.normal(0, 0.003, (50, 10))
    comparisons = [compare(map_b + gain, map_b, resampled_b + gain, resampled_b) for gain in gains.values()]
    big = comparisons[0]
    assert big.mean == pytest.approx(gains["big"].mean()) and big.per_seed == pytest.approx(tuple(gains["big"]))
    assert big.p_difference == pytest.approx(2 / 2 ** 10) and big.interval.low > 0
    judged = judge_headlines(comparisons)
    assert [j.verdict for j in judged] == ["reproduced", "equivalent", "reversed", "inconclusive"]
    np.testing.assert_allclose([j.p_difference_adjusted for j in judged], holm([c.p_difference for c in comparisons]))
    np.testing.assert_allclose([j.p_equivalence_adjusted for j in judged],
                               holm([c.p_equivalence for c in comparisons]))
    alone = judge_headlines([Comparison(0.02, (0.02,) * 10, Interval(0.01, 0.03), 0.03, 0.9)])[0]
    assert alone.verdict == "reproduced" and alone.p_difference_adjusted == 0.03  # a family of one: unadjusted
