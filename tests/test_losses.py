"""Losses against float64 numpy re-derivations of the equations, gradcheck, identities and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsdi.errors import InputError
from dsdi.labels import schema
from dsdi.train.losses import LOSSES, create_loss, register_loss

NAMES = ["bce", "focal", "cbfl", "rfl", "rfl_xview", "lovasz", "lovasz_hinge", "focal+lovasz"]
BASE_NAMES = ["bce", "focal", "cbfl", "rfl", "rfl_xview", "lovasz", "lovasz_hinge"]
SQRT_EPS = 1e-6
NONE_MASK = np.array(schema.NONE_CLASS_MASK)


def random_batch(seed: int, batch: int = 6, scale: float = 4.0, hard: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(batch, 37))
    targets = (rng.random((batch, 37)) < 0.3).astype(float) if hard else rng.random((batch, 37))
    if not hard:
        targets[:, :3] = rng.integers(0, 2, size=(batch, 3))  # exact 0/1 entries too
    return logits, targets


def reduce_ref(per_class: np.ndarray, none_weight: float = 1.0, drop_max: bool = False) -> float:
    weights = np.where(NONE_MASK, none_weight, 1.0)
    per_sample = (per_class * weights).sum(axis=1)
    if drop_max:
        per_sample = np.sort(per_sample)[:-1]
    return float(per_sample.mean())


def focal_ref(z: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z))
    p_hat = 1.0 - np.abs(y - p)
    return -((1.0 - p_hat) ** gamma) * np.log(p_hat)


def cb_weights_ref(beta: float, counts) -> np.ndarray:
    w = np.array([(1.0 - beta) / (1.0 - beta ** max(n, 1)) for n in counts], dtype=np.float64)
    return w * len(w) / w.sum()


def rfl_ref(z: np.ndarray, y: np.ndarray, th: float, gamma: float) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z))
    p_hat = 1.0 - np.abs(y - p)
    factor = np.where(p > th, 1.0, ((1.0 - p_hat) / th) ** gamma)
    return -factor * np.log(p_hat)


def jaccard_set_loss(mispredicted: set, foreground: set) -> float:
    """Δ_F(M) = |M| / |F ∪ M| (Berman et al. eq. 1 as a loss: 1 − |F ∩ M̄| / |F ∪ M|); 0 for M = ∅."""
    union = foreground | mispredicted
    return len(mispredicted) / len(union) if union else 0.0


def lovasz_extension_ref(errors: np.ndarray, foreground: set) -> tuple[float, np.ndarray]:
    """Lovász extension of Δ_F at ``errors`` and its gradient: sort decreasing, walk the prefixes one by one."""
    order = sorted(range(len(errors)), key=lambda index: -errors[index])
    value, grad, prefix, previous = 0.0, np.zeros(len(errors)), set(), 0.0
    for index in order:
        prefix.add(index)
        current = jaccard_set_loss(prefix, foreground)
        grad[index] = current - previous  # linear in the errors while the order holds
        value += errors[index] * grad[index]
        previous = current
    return value, grad


def lovasz_ref_sample(z: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """dsdi ``lovasz`` for one sample: errors w|y − p|, F = {y >= 0.5}, symmetric mean, sqrt; value, d/dz."""
    p = 1.0 / (1.0 + np.exp(-z))
    errors = weights * np.abs(y - p)
    d_errors = weights * np.sign(p - y) * p * (1.0 - p)
    positives = {c for c in range(len(y)) if y[c] >= 0.5}
    negatives = set(range(len(y))) - positives
    value_pos, grad_pos = lovasz_extension_ref(errors, positives)
    value_neg, grad_neg = lovasz_extension_ref(errors, negatives)
    symmetric = 0.5 * (value_pos + value_neg)
    d_symmetric = 0.5 * (grad_pos + grad_neg) * d_errors
    return np.sqrt(symmetric + SQRT_EPS) - np.sqrt(SQRT_EPS), d_symmetric / (2.0 * np.sqrt(symmetric + SQRT_EPS))


def lovasz_hinge_ref_sample(z: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Binary Lovász hinge of one sample: the extension of Δ_F at relu of the hinge errors w(1 − z s)."""
    errors = (1.0 - z * (2 * labels - 1)) * weights
    value, _ = lovasz_extension_ref(np.maximum(errors, 0.0), set(np.flatnonzero(labels == 1)))
    return value


def weights_ref(none_weight: float) -> np.ndarray:
    return np.where(NONE_MASK, none_weight, 1.0)


def lovasz_ref(z: np.ndarray, y: np.ndarray, none_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses (B,) and their gradients (B, C) of dsdi ``lovasz``."""
    pairs = [lovasz_ref_sample(zi, yi, weights_ref(none_weight)) for zi, yi in zip(z, y, strict=True)]
    return np.array([value for value, _ in pairs]), np.array([grad for _, grad in pairs])


def lovasz_hinge_ref(z: np.ndarray, y: np.ndarray, none_weight: float = 1.0) -> np.ndarray:
    weights = weights_ref(none_weight)
    labels = (y >= 0.5).astype(float)
    out = []
    for zi, li in zip(z, labels, strict=True):
        sym = 0.5 * (lovasz_hinge_ref_sample(zi, li, weights) + lovasz_hinge_ref_sample(-zi, 1 - li, weights))
        out.append(np.sqrt(sym + SQRT_EPS) - np.sqrt(SQRT_EPS))
    return np.array(out)


def focal_grad_ref(z: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """d/dz of −e^γ log(1 − e), e = |y − p| = 1 − p̂."""
    p = 1.0 / (1.0 + np.exp(-z))
    e = np.abs(y - p)
    d_e = -gamma * e ** (gamma - 1.0) * np.log(1.0 - e) + e**gamma / (1.0 - e) if gamma else 1.0 / (1.0 - e)
    return d_e * np.sign(p - y) * p * (1.0 - p)


def rfl_xview_ref(z: np.ndarray, y: np.ndarray, th: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Sergievskiy & Ponamarev eq. 4 at p_t = p̂ = 1 − |y − p|: −log p_t (p_t < th), −((1 − p_t)^γ/th^γ) log p_t.

    Per-class values and their gradients d/dz.
    """
    p = 1.0 / (1.0 + np.exp(-z))
    p_t = 1.0 - np.abs(y - p)
    easy = p_t >= th
    value = np.where(easy, -((1.0 - p_t) ** gamma / th**gamma) * np.log(p_t), -np.log(p_t))
    # d/dp_t of each branch, then dp_t/dz = −sign(p − y) p (1 − p)
    d_easy = (gamma * (1.0 - p_t) ** (gamma - 1.0) * np.log(p_t) - (1.0 - p_t) ** gamma / p_t) / th**gamma
    d_hard = -1.0 / p_t
    return value, np.where(easy, d_easy, d_hard) * -np.sign(p - y) * p * (1.0 - p)


def reduce_with_grad(per_sample: np.ndarray, grads: np.ndarray, drop_max: bool) -> tuple[float, np.ndarray]:
    """Batch mean (dropping the largest sample when ``drop_max``) and its gradient (B, C)."""
    keep = np.ones(len(per_sample), dtype=bool)
    if drop_max and len(per_sample) > 1:
        keep[int(np.argmax(per_sample))] = False
    return float(per_sample[keep].mean()), grads * keep[:, None] / keep.sum()


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """A random batch of logits and soft targets as dsdi's labels make them (k/n fractions, exact 0 and 1)."""
    batch = int(rng.integers(2, 9))
    z = rng.normal(scale=rng.uniform(0.3, 6.0), size=(batch, 37))
    kind = rng.integers(0, 3)
    if kind == 0:
        y = rng.random((batch, 37))
    elif kind == 1:  # annotator fractions count / max count
        y = rng.integers(0, 5, size=(batch, 37)) / 4.0
    else:
        y = (rng.random((batch, 37)) < 0.2).astype(float)
    none_weight = float(rng.choice([1.0, 0.1, 0.01, rng.uniform(0.05, 2.0)]))
    return z, y, none_weight, bool(rng.integers(0, 2))


def torch_value_and_grad(loss: torch.nn.Module, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    logits = torch.from_numpy(z).requires_grad_(True)
    value = loss(logits, torch.from_numpy(y))
    value.backward()
    return float(value.detach()), logits.grad.numpy()


def run(name: str, z: np.ndarray, y: np.ndarray, **params) -> float:
    return float(create_loss(name, **params)(torch.from_numpy(z), torch.from_numpy(y)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("none_weight,drop_max", [(1.0, False), (0.1, True)])
def test_against_float64_rederivations(seed: int, none_weight: float, drop_max: bool) -> None:
    z, y = random_batch(seed)
    common = {"none_weight": none_weight, "drop_max": drop_max}
    p = 1.0 / (1.0 + np.exp(-z))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert run("bce", z, y, **common) == pytest.approx(reduce_ref(bce, **common), rel=1e-9)
    assert run("focal", z, y, gamma=1.5, **common) == pytest.approx(
        reduce_ref(focal_ref(z, y, 1.5), **common), rel=1e-9
    )
    cbfl = focal_ref(z, y, 2.0) * cb_weights_ref(0.999, schema.CLASS_COUNTS)
    assert run("cbfl", z, y, beta=0.999, **common) == pytest.approx(reduce_ref(cbfl, **common), rel=1e-9)
    rfl = rfl_ref(z, y, 0.3, 2.0)
    assert run("rfl", z, y, th=0.3, **common) == pytest.approx(reduce_ref(rfl, **common), rel=1e-9)
    lov, _ = lovasz_ref(z, y, none_weight)
    hinge = lovasz_hinge_ref(z, y, none_weight)
    if drop_max:
        lov, hinge = np.sort(lov)[:-1], np.sort(hinge)[:-1]
    assert run("lovasz", z, y, **common) == pytest.approx(float(lov.mean()), rel=1e-9)
    assert run("lovasz_hinge", z, y, **common) == pytest.approx(float(hinge.mean()), rel=1e-9)
    xview, _ = rfl_xview_ref(z, y, 0.3, 2.0)
    assert run("rfl_xview", z, y, th=0.3, **common) == pytest.approx(reduce_ref(xview, **common), rel=1e-9)


def test_default_cbfl_uses_table1_counts_and_default_beta() -> None:
    z, y = random_batch(3)
    expected = reduce_ref(focal_ref(z, y, 2.0) * cb_weights_ref(0.9999, schema.CLASS_COUNTS))
    assert run("cbfl", z, y) == pytest.approx(expected, rel=1e-9)


def test_gamma_zero_hard_targets_equals_bce() -> None:
    z, y = random_batch(4, hard=True)
    bce = run("bce", z, y)
    assert run("focal", z, y, gamma=0.0) == pytest.approx(bce, rel=1e-12)
    assert run("cbfl", z, y, gamma=0.0, beta=0.0) == pytest.approx(bce, rel=1e-12)
    assert run("rfl", z, y, gamma=0.0, th=1.0) == pytest.approx(bce, rel=1e-12)
    assert run("rfl_xview", z, y, gamma=0.0, th=1.0) == pytest.approx(bce, rel=1e-12)


def test_beta_to_zero_gives_equal_weights() -> None:
    z, y = random_batch(5)
    focal = run("focal", z, y)
    assert run("cbfl", z, y, beta=0.0) == pytest.approx(focal, rel=1e-12)
    assert run("cbfl", z, y, beta=1e-8) == pytest.approx(focal, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name: str) -> None:
    z, y = random_batch(6, batch=3, scale=2.0)
    loss = create_loss(name, none_weight=0.5)
    logits = torch.from_numpy(z).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, torch.from_numpy(y)), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hard", [False, True])
def test_extreme_logits_finite_loss_and_grads(name: str, hard: bool) -> None:
    _, y = random_batch(7, hard=hard)
    signs = np.random.default_rng(8).choice([-1.0, 1.0], size=y.shape)
    for dtype in (torch.float32, torch.float64):
        logits = torch.tensor(50.0 * signs, dtype=dtype, requires_grad=True)
        value = create_loss(name)(logits, torch.tensor(y, dtype=dtype))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_confident_wrong_bce_is_linear_in_logit() -> None:
    z = np.full((1, 37), 50.0)
    y = np.zeros((1, 37))
    assert run("bce", z, y) == pytest.approx(37 * 50.0, rel=1e-9)
    assert run("focal", z, y) == pytest.approx(37 * 50.0, rel=1e-9)  # |y - p|^γ = 1 there


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_finite(name: str) -> None:
    _, y = random_batch(9)
    layer = torch.nn.Linear(8, 37)
    features = torch.randn(6, 8) * 40
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        value = create_loss(name)(logits, torch.tensor(y, dtype=torch.float32))
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(layer.weight.grad).all()


def test_registry_and_param_errors() -> None:
    assert set(BASE_NAMES) <= set(LOSSES) and "focal+lovasz" not in LOSSES  # composites are built, not registered
    with pytest.raises(InputError, match="--loss: unknown loss 'nope'.*bce"):
        create_loss("nope")
    with pytest.raises(InputError, match=r"--loss rfl: does not take beta.*valid params: th, gamma, none_weight, "
                       r"drop_max \(leave out --beta"):
        create_loss("rfl", beta=0.9)
    assert create_loss("focal", gamma=None, th=None).gamma == 2.0
    with pytest.raises(ValueError, match="already registered"):
        register_loss("bce")(torch.nn.Module)
    with pytest.raises(InputError, match=r"--beta 1.0: the class-balanced beta must be in \[0, 1\)"):
        create_loss("cbfl", beta=1.0)
    with pytest.raises(InputError, match=r"--th 0.0: the reduced focal threshold must be in \(0, 1\]"):
        create_loss("rfl", th=0.0)


RANDOM_CASES = 200


def test_lovasz_value_and_gradient_match_the_prefix_walk_over_random_cases() -> None:
    rng = np.random.default_rng(2024)
    for case in range(RANDOM_CASES):
        z, y, none_weight, drop_max = random_case(rng)
        per_sample, grads = lovasz_ref(z, y, none_weight)
        expected, expected_grad = reduce_with_grad(per_sample, grads, drop_max)
        value, grad = torch_value_and_grad(create_loss("lovasz", none_weight=none_weight, drop_max=drop_max), z, y)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-12), case
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-10, err_msg=str(case))


@pytest.mark.slow
@pytest.mark.parametrize("lovasz_weight", [None, 0.5])
def test_focal_plus_lovasz_value_and_gradient_over_random_cases(lovasz_weight: float | None) -> None:
    rng = np.random.default_rng(7 if lovasz_weight is None else 8)
    weight = 1.0 if lovasz_weight is None else lovasz_weight
    for case in range(RANDOM_CASES // 2):
        z, y, none_weight, drop_max = random_case(rng)
        gamma = float(rng.choice([2.0, 1.5, 3.0]))
        class_weight = weights_ref(none_weight)
        focal = (focal_ref(z, y, gamma) * class_weight).sum(axis=1)
        focal_grad = focal_grad_ref(z, y, gamma) * class_weight
        lov, lov_grad = lovasz_ref(z, y, none_weight)
        expected, expected_grad = reduce_with_grad(focal + weight * lov, focal_grad + weight * lov_grad, drop_max)
        loss = create_loss("focal+lovasz", gamma=gamma, none_weight=none_weight, drop_max=drop_max,
                           lovasz_weight=lovasz_weight)
        value, grad = torch_value_and_grad(loss, z, y)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-12), case
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-10, err_msg=str(case))


@pytest.mark.slow
def test_rfl_xview_value_and_gradient_over_random_cases() -> None:
    rng = np.random.default_rng(11)
    for case in range(RANDOM_CASES):
        z, y, none_weight, drop_max = random_case(rng)
        th, gamma = float(rng.choice([0.3, 0.5, 0.7, rng.uniform(0.05, 1.0)])), float(rng.choice([2.0, 1.0, 2.5]))
        values, grads = rfl_xview_ref(z, y, th, gamma)
        class_weight = weights_ref(none_weight)
        expected, expected_grad = reduce_with_grad((values * class_weight).sum(axis=1), grads * class_weight, drop_max)
        loss = create_loss("rfl_xview", th=th, gamma=gamma, none_weight=none_weight, drop_max=drop_max)
        value, grad = torch_value_and_grad(loss, z, y)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-12), case
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-10, err_msg=str(case))


def test_rfl_xview_hard_targets_is_the_original_on_p_t() -> None:
    z, y = random_batch(12, hard=True)
    p = 1.0 / (1.0 + np.exp(-z))
    p_t = np.where(y == 1, p, 1.0 - p)
    th, gamma = 0.5, 2.0
    original = np.where(p_t < th, -np.log(p_t), -((1.0 - p_t) ** gamma) / th**gamma * np.log(p_t))
    assert run("rfl_xview", z, y, th=th, gamma=gamma) == pytest.approx(reduce_ref(original), rel=1e-10)
    # the paper's eq. 4-6 (rfl) conditions on p instead: a different loss on the same batch
    assert run("rfl", z, y, th=th, gamma=gamma) != pytest.approx(run("rfl_xview", z, y, th=th, gamma=gamma), rel=1e-3)


def test_lovasz_keeps_soft_targets_and_is_symmetric() -> None:
    rng = np.random.default_rng(13)
    y = rng.integers(1, 4, size=(3, 37)) / 4.0  # soft fractions, never 0 or 1
    at_target = run("lovasz", np.log(y / (1.0 - y)), y)
    assert at_target == pytest.approx(0.0, abs=1e-9)  # p = y: zero, so 0.25 is learnt as 0.25
    assert run("lovasz", np.log(y / (1.0 - y)) + 0.3, y) > 1e-3
    # the hinge binarises: 0.25 and 0 are the same negative, so pushing 0.25 to p≈0 costs nothing there
    assert run("lovasz_hinge", np.where(y >= 0.5, 5.0, -5.0), y) == pytest.approx(0.0, abs=1e-12)
    assert run("lovasz", np.where(y >= 0.5, 5.0, -5.0), y) > 0.1
    z, hard = random_batch(14, hard=True)
    for name in ("lovasz", "lovasz_hinge"):
        assert run(name, z, hard) == pytest.approx(run(name, -z, 1.0 - hard), rel=1e-12)


def test_composite_is_the_weighted_sum_with_one_drop_and_routed_params() -> None:
    z, y = random_batch(15)
    focal, lovasz = run("focal", z, y, gamma=3.0), run("lovasz", z, y)
    assert run("focal+lovasz", z, y, gamma=3.0) == pytest.approx(focal + lovasz, rel=1e-12)
    assert run("focal+lovasz", z, y, gamma=3.0, lovasz_weight=0.25) == pytest.approx(focal + 0.25 * lovasz, rel=1e-12)
    assert run("bce+lovasz", z, y) == pytest.approx(run("bce", z, y) + lovasz, rel=1e-12)
    # drop_max drops the sample whose combined loss is largest, once
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    combined = create_loss("focal", gamma=3.0).per_sample(zt, yt) + create_loss("lovasz").per_sample(zt, yt)
    expected = float(torch.sort(combined).values[:-1].mean())
    assert run("focal+lovasz", z, y, gamma=3.0, drop_max=True) == pytest.approx(expected, rel=1e-12)
    loss = create_loss("cbfl+rfl_xview", gamma=1.5, beta=0.99, th=0.3, none_weight=0.1, rfl_xview_weight=2.0)
    cbfl, rfl = loss.terms
    assert (cbfl.gamma, cbfl.beta, cbfl.none_weight) == (1.5, 0.99, 0.1)
    assert (rfl.gamma, rfl.th, rfl.none_weight) == (1.5, 0.3, 0.1)
    assert loss.weights == [1.0, 2.0] and not cbfl.drop_max and not rfl.drop_max


def test_composite_param_errors() -> None:
    with pytest.raises(InputError, match=r"--loss focal\+lovasz: does not take beta; valid params: gamma, none_weight, "
                       r"drop_max, lovasz_weight \(leave out --beta"):
        create_loss("focal+lovasz", beta=0.9)
    with pytest.raises(InputError, match="does not take th"):
        create_loss("bce+lovasz", th=0.5)
    with pytest.raises(InputError, match=r"unknown loss 'nope'.*joined by \+"):
        create_loss("focal+nope")
    with pytest.raises(InputError, match="appears twice"):
        create_loss("focal+focal")
    with pytest.raises(InputError, match=r"--loss lovasz: does not take gamma"):
        create_loss("lovasz", gamma=2.0)
