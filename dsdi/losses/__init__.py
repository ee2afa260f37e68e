"""Loss registry: ``create_loss(name, **params)`` for bce, focal, cbfl, rfl, lovasz.

Every loss maps logits and soft targets (B, 37) to a scalar: per sample the sum over classes, then
the mean over the batch. Common params: none_weight (float, 1.0), drop_max (bool, False).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from dsdi.errors import InputError
from dsdi.losses.base import MultiLabelLoss
from dsdi.losses.bce import BCELoss
from dsdi.losses.focal import ClassBalancedFocalLoss, FocalLoss, ReducedFocalLoss
from dsdi.losses.lovasz import LovaszLoss

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
    ("lovasz", LovaszLoss),
):
    register_loss(_name)(_factory)


def valid_params(name: str) -> list[str]:
    """Parameter names the loss ``name`` accepts."""
    return [p for p in inspect.signature(LOSSES[name]).parameters if p != "self"]


def create_loss(name: str, **params: Any) -> nn.Module:
    """Build a registered loss; None-valued params are dropped (so defaults apply).

    Raises InputError (they come from ``dsdi train`` flags) for an unknown name, naming the choices, and for
    an unknown param, naming the valid ones.
    """
    if name not in LOSSES:
        raise InputError(f"--loss: unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}")
    given = {key: value for key, value in params.items() if value is not None}
    allowed = valid_params(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        flags = ", ".join(f"--{param.replace('_', '-')}" for param in unknown)
        raise InputError(f"--loss {name}: does not take {', '.join(unknown)}; valid params: {', '.join(allowed)} "
                         f"(leave out {flags} or choose a loss that takes it)")
    return LOSSES[name](**given)


__all__ = ["LOSSES", "MultiLabelLoss", "create_loss", "register_loss", "valid_params"]
