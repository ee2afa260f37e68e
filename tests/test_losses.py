"""Losses against float64 numpy re-derivations of the equations, gradcheck, identities and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsdi import schema
from dsdi.errors import InputError
from dsdi.losses import LOSSES, create_loss, register_loss

NAMES = ["bce", "focal", "cbfl", "rfl", "lovasz"]
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


def lovasz_ref_sample(z: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Lovász extension of the Jaccard set loss Δ(M) = |M| / |F ∪ M|, evaluated on hinge errors."""
    errors = (1.0 - z * (2 * labels - 1)) * weights
    order = np.argsort(-errors, kind="stable")
    foreground = set(np.flatnonzero(labels == 1))

    def jaccard_loss(mispredicted: set) -> float:
        union = foreground | mispredicted
        return len(mispredicted) / len(union) if union else 0.0

    total, previous, chosen = 0.0, 0.0, set()
    for index in order:
        chosen.add(index)
        current = jaccard_loss(chosen)
        total += max(errors[index], 0.0) * (current - previous)
        previous = current
    return total


def lovasz_ref(z: np.ndarray, y: np.ndarray, none_weight: float = 1.0) -> np.ndarray:
    weights = np.where(NONE_MASK, none_weight, 1.0)
    labels = (y >= 0.5).astype(float)
    out = []
    for zi, li in zip(z, labels, strict=True):
        sym = 0.5 * (lovasz_ref_sample(zi, li, weights) + lovasz_ref_sample(-zi, 1 - li, weights))
        out.append(np.sqrt(sym + 1e-6) - np.sqrt(1e-6))
    return np.array(out)


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
    lov = lovasz_ref(z, y, none_weight)
    if drop_max:
        lov = np.sort(lov)[:-1]
    assert run("lovasz", z, y, **common) == pytest.approx(float(lov.mean()), rel=1e-9)


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
    assert set(NAMES) <= set(LOSSES)
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
