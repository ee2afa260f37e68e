"""Loss registry: ``create_loss(name, **params)`` for bce, focal, cbfl, rfl, rfl_xview, lovasz, lovasz_hinge,
and composites of them joined by ``+`` (``"focal+lovasz"``, paper C12: focal γ=2 plus the symmetric Lovász term).

Every loss maps logits and soft targets (B, C) to a scalar: per sample the sum over classes, then
the mean over the batch. Common params: none_weight (float, 1.0), drop_max (bool, False). The label set's
shape comes as the structural params ``none_mask`` (C,) and, for cbfl, ``class_counts`` (C,): ``create_loss``
hands each to the terms that take it; they are not user params.

A composite ``"a+b"`` is, per sample, ``a + b_weight * b`` (one weight param per added term, named after it:
``lovasz_weight`` for ``focal+lovasz``, default 1.0), then the batch mean; ``drop_max`` drops the sample with the
largest *combined* loss, once. Every other param goes to each term that takes it (``gamma`` to focal, not to
lovasz; ``none_weight`` to all); a param no term takes is an InputError. Why weight 1.0: the paper (Table 2, 2.4)
adds the Lovász technique to the γ=2 focal recipe and gives no weight, and Berman et al. give none for mixing
their loss with another; an unweighted sum is the plain reading. It has no ``dsdi train`` flag (Python only).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dsdi.errors import InputError
from dsdi.train.losses.base import MultiLabelLoss
from dsdi.train.losses.bce import BCELoss
from dsdi.train.losses.focal import ClassBalancedFocalLoss, FocalLoss, ReducedFocalLoss, XViewReducedFocalLoss
from dsdi.train.losses.lovasz import LovaszHingeLoss, LovaszLoss

LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator/registrar: ``register_loss("x")(factory)`` makes ``create_loss("x")`` call it."""

    def register(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in LOSSES:  # ValueError: a programming mistake (names are registered in code, not by users)
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = factory
        return factory

    return register


for _name, _factory in (
    ("bce", BCELoss),
    ("focal", FocalLoss),
    ("cbfl", ClassBalancedFocalLoss),
    ("rfl", ReducedFocalLoss),
    ("rfl_xview", XViewReducedFocalLoss),
    ("lovasz", LovaszLoss),
    ("lovasz_hinge", LovaszHingeLoss),
):
    register_loss(_name)(_factory)


COMPOSITE_SEPARATOR = "+"
COMPOSITE_PARAMS = ("drop_max",)
"""Params a composite applies itself (to the summed per-sample loss), not passed to its terms."""
STRUCTURAL_PARAMS = ("none_mask", "class_counts")
"""Params that describe the label set, not the loss: given by the caller, never by a user."""


def term_weight_param(term: str) -> str:
    """The composite's weight param for an added term: ``lovasz`` -> ``lovasz_weight``."""
    return f"{term}_weight"


class CompositeLoss(MultiLabelLoss):
    """Per sample Σ_k weight_k · term_k (weight 1 for the first term), then the base reduction (drop_max once)."""

    def __init__(self, terms: list[MultiLabelLoss], weights: list[float], drop_max: bool = False) -> None:
        super().__init__(drop_max=drop_max)
        self.terms = nn.ModuleList(terms)
        self.weights = [float(weight) for weight in weights]

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sum(weight * term.per_sample(logits, targets)
                   for weight, term in zip(self.weights, self.terms, strict=True))


def _terms(name: str) -> list[str]:
    """The registered names of ``name`` (one for a plain loss); InputError for an unknown or repeated one."""
    terms = name.split(COMPOSITE_SEPARATOR)
    unknown = [term for term in terms if term not in LOSSES]
    if unknown:
        raise InputError(f"--loss: unknown loss {unknown[0]!r}; choose one of: {', '.join(sorted(LOSSES))}"
                         + (f", or several joined by {COMPOSITE_SEPARATOR}" if len(terms) > 1 else ""))
    if len(set(terms)) < len(terms):
        raise InputError(f"--loss {name}: a loss appears twice; join different losses with {COMPOSITE_SEPARATOR}")
    return terms


def _term_params(name: str, structural: bool = False) -> list[str]:
    """The params the registered loss ``name`` takes (with ``structural``: including STRUCTURAL_PARAMS)."""
    return [p for p in inspect.signature(LOSSES[name]).parameters
            if p != "self" and (structural or p not in STRUCTURAL_PARAMS)]


def valid_params(name: str) -> list[str]:
    """Parameter names the loss ``name`` accepts (for a composite: any term's, drop_max and the term weights)."""
    terms = _terms(name)
    if len(terms) == 1:
        return _term_params(name)
    params = [p for term in terms for p in _term_params(term) if p not in COMPOSITE_PARAMS]
    params = list(dict.fromkeys(params)) + list(COMPOSITE_PARAMS)
    return params + [term_weight_param(term) for term in terms[1:]]


def create_loss(name: str, *, none_mask: tuple[bool, ...] | None = None,
                class_counts: tuple[float, ...] | None = None, **params: Any) -> nn.Module:
    """Build a registered loss, or a composite ``"a+b"`` of registered ones; None-valued params are dropped.
    ``none_mask`` and ``class_counts`` (the label set's, module doc) go to every term that takes them.

    Raises InputError (they come from ``dsdi train`` flags) for an unknown name, naming the choices, and for
    an unknown param, naming the valid ones.
    """
    terms = _terms(name)
    given = {key: value for key, value in params.items() if value is not None}
    allowed = valid_params(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        flags = ", ".join(f"--{param.replace('_', '-')}" for param in unknown)
        raise InputError(f"--loss {name}: does not take {', '.join(unknown)}; valid params: {', '.join(allowed)} "
                         f"(leave out {flags} or choose a loss that takes it)")
    structural = {key: value for key, value in (("none_mask", none_mask), ("class_counts", class_counts))
                  if value is not None}
    if len(terms) == 1:
        return LOSSES[name](**given, **{k: v for k, v in structural.items() if k in _term_params(name, True)})
    built = []
    for term in terms:
        accepted = set(_term_params(term, structural=True)) - set(COMPOSITE_PARAMS)
        taken = {key: value for key, value in {**given, **structural}.items() if key in accepted}
        loss = LOSSES[term](**taken)
        if not isinstance(loss, MultiLabelLoss):  # a programming mistake: composites sum per-sample losses
            raise TypeError(f"loss {term!r} is not a MultiLabelLoss and cannot be part of {name!r}")
        built.append(loss)
    weights = [1.0] + [float(given.get(term_weight_param(term), 1.0)) for term in terms[1:]]
    return CompositeLoss(built, weights, drop_max=bool(given.get("drop_max", False)))


__all__ = ["LOSSES", "CompositeLoss", "MultiLabelLoss", "create_loss", "register_loss", "valid_params"]
