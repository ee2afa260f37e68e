"""Shared base for the multi-label losses: none-class weighting, outlier drop and reduction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsdi.labels.labelset import LADI_V1


def log_p_hat(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p̂ with p̂ = 1 - |y - sigmoid(z)|, stable for any logit; (B, C) float32.

    Where p >= y: p̂ = (1 - p) + y, so log p̂ = logaddexp(logsigmoid(-z), log y);
    where p < y:  p̂ = p + (1 - y), so log p̂ = logaddexp(logsigmoid(z), log(1 - y)).
    """
    probs = torch.sigmoid(logits)
    above = torch.logaddexp(nn.functional.logsigmoid(-logits), torch.log(targets))
    below = torch.logaddexp(nn.functional.logsigmoid(logits), torch.log1p(-targets))
    return torch.where(probs >= targets, above, below)


class MultiLabelLoss(nn.Module):
    """Base: subclasses give per-class terms (B, C); this applies none_weight, drop_max and the reduction.

    ``none_mask``: True at the label set's none classes (C,), the classes ``none_weight`` weighs.

    Reduction: per sample the sum over classes, then the mean over the batch (after dropping the
    largest per-sample loss when ``drop_max`` and the batch has more than one sample).
    """

    def __init__(self, none_weight: float = 1.0, drop_max: bool = False,
                 none_mask: Sequence[bool] = LADI_V1.none_mask) -> None:
        super().__init__()
        weights = torch.tensor([none_weight if is_none else 1.0 for is_none in none_mask], dtype=torch.float64)
        self.register_buffer("class_weight", weights, persistent=False)
        self.none_weight = float(none_weight)
        self.drop_max = bool(drop_max)

    def per_class(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-class loss terms (B, C) from float32 logits and targets."""
        raise NotImplementedError

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (B,): weighted sum of the per-class terms."""
        return (self.per_class(logits, targets) * self.class_weight.to(logits)).sum(dim=1)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits, targets: (B, C) -> scalar loss (computed in float32 even under autocast)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
            losses = self.per_sample(logits.to(dtype), targets.to(dtype).clamp(0.0, 1.0))
            if self.drop_max and losses.numel() > 1:
                losses = torch.sort(losses).values[:-1]
            return losses.mean()
