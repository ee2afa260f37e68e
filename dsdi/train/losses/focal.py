"""Focal family: focal (paper eq. 1-2), class-balanced focal (Cui et al.), reduced focal as the paper's eq. 4-6
(``rfl``) and as the xView original (``rfl_xview``, Sergievskiy & Ponamarev 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dsdi.errors import InputError
from dsdi.labels.labelset import LADI_V1
from dsdi.train.losses.base import MultiLabelLoss, log_p_hat


class FocalLoss(MultiLabelLoss):
    """-(1 - p̂)^γ log p̂ per class with p̂ = 1 - |y - p| (so 1 - p̂ = |y - p|)."""

    def __init__(self, gamma: float = 2.0, none_weight: float = 1.0, drop_max: bool = False,
                 none_mask: Sequence[bool] = LADI_V1.none_mask) -> None:
        super().__init__(none_weight=none_weight, drop_max=drop_max, none_mask=none_mask)
        self.gamma = float(gamma)

    def modulation(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The factor (B, C) multiplying -log p̂."""
        return (targets - torch.sigmoid(logits)).abs().pow(self.gamma)

    def per_class(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -self.modulation(logits, targets) * log_p_hat(logits, targets)


def class_balanced_weights(beta: float, class_counts: Sequence[float]) -> np.ndarray:
    """(1 - β) / (1 - β^n_c) per class, rescaled to sum to the number of classes; float64 (C,)."""
    if not 0.0 <= beta < 1.0:
        raise InputError(f"--beta {beta}: the class-balanced beta must be in [0, 1) (default 0.9999)")
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    log_beta = np.log(beta) if beta > 0 else -np.inf
    effective = -np.expm1(counts * log_beta)  # 1 - β^n, accurate for β near 1
    weights = (1.0 - beta) / effective
    return weights * (len(counts) / weights.sum())


class ClassBalancedFocalLoss(FocalLoss):
    """Focal loss with per-class weight (1 - β)/(1 - β^n_c) (rescaled to sum to C)."""

    def __init__(
        self,
        gamma: float = 2.0,
        beta: float = 0.9999,
        class_counts: Sequence[float] = LADI_V1.counts,
        none_weight: float = 1.0,
        drop_max: bool = False,
        none_mask: Sequence[bool] = LADI_V1.none_mask,
    ) -> None:
        super().__init__(gamma=gamma, none_weight=none_weight, drop_max=drop_max, none_mask=none_mask)
        self.beta = float(beta)
        weights = torch.tensor(class_balanced_weights(self.beta, class_counts), dtype=torch.float64)
        self.register_buffer("balance_weight", weights, persistent=False)

    def per_class(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().per_class(logits, targets) * self.balance_weight.to(logits)


class ReducedFocalLoss(FocalLoss):
    """Reduced focal loss, paper eq. 4-6 as written: factor 1 where p > th, else ((1 - p̂)/th)^γ.

    The paper conditions on the predicted probability p_i; the xView reduced focal loss
    (Sergievskiy & Ponamarev) conditions on p_t instead: that one is ``rfl_xview``
    (:class:`XViewReducedFocalLoss`). ``rfl`` follows the paper.
    """

    def __init__(self, th: float = 0.5, gamma: float = 2.0, none_weight: float = 1.0, drop_max: bool = False,
                 none_mask: Sequence[bool] = LADI_V1.none_mask) -> None:
        super().__init__(gamma=gamma, none_weight=none_weight, drop_max=drop_max, none_mask=none_mask)
        if not 0.0 < th <= 1.0:
            raise InputError(f"--th {th}: the reduced focal threshold must be in (0, 1] (default 0.5)")
        self.th = float(th)

    def modulation(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        reduced = ((targets - probs).abs() / self.th).pow(self.gamma)
        return torch.where(probs > self.th, torch.ones_like(reduced), reduced)


class XViewReducedFocalLoss(ReducedFocalLoss):
    """Reduced focal loss as defined for xView (Sergievskiy & Ponamarev 2019, eq. 4), with soft targets.

    The original, for the probability p_t of the true class:
    RFL(p_t) = -log p_t where p_t < th, and -((1 - p_t)^γ / th^γ) log p_t where p_t >= th: hard examples keep
    the full cross-entropy, easy ones get the focal reduction (scaled by 1/th^γ). Here p_t is p̂ = 1 - |y - p|
    as in the rest of dsdi (paper eq. 2; equal to p_t for 0/1 targets), so per class:
    factor 1 where p̂ < th, else ((1 - p̂)/th)^γ = (|y - p|/th)^γ, times -log p̂.
    At p̂ = th the factor jumps from 1 to ((1 - th)/th)^γ (continuous only for th = 0.5), as in the original.
    """

    def modulation(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        error = (targets - torch.sigmoid(logits)).abs()  # 1 - p̂
        reduced = (error / self.th).pow(self.gamma)
        return torch.where(1.0 - error < self.th, torch.ones_like(reduced), reduced)
