"""Soft binary cross-entropy (baseline)."""

from __future__ import annotations

import torch
from torch import nn

from dsdi.train.losses.base import MultiLabelLoss


class BCELoss(MultiLabelLoss):
    """-(y log p + (1 - y) log(1 - p)) per class, from logits."""

    def per_class(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
