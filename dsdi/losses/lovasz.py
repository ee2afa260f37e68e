"""Symmetric Lovász hinge with square-root scaling (paper C12; Berman et al. 2018, Yu & Blaschko 2015).

What is implemented (the paper names the technique but gives no formula):
- Per sample, the 37 classes form the set being segmented: the binary Lovász hinge of Berman et al.
  is applied to the sample's 37 logits with hard labels y >= 0.5 (signs s = 2y - 1), hinge errors
  e_c = 1 - z_c s_c, sorted in decreasing order and weighted by the Lovász extension gradient of the
  Jaccard loss. ``none_weight`` scales the none-class errors before sorting.
- Symmetric: the mean of the hinge on (z, y) and on (-z, 1 - y), so the negatives are treated as a
  foreground too (a sample with no positive still gets a loss).
- Square-root scaling: the per-sample loss ℓ becomes sqrt(ℓ + ε) - sqrt(ε) with ε = 1e-6; this
  compresses large losses (like the outlier drop) and keeps a finite gradient at ℓ = 0.
"""

from __future__ import annotations

import torch

from dsdi.losses.base import MultiLabelLoss

SQRT_EPS = 1e-6


def lovasz_grad(sorted_labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss for labels (B, C) sorted by decreasing error."""
    positives = sorted_labels.sum(dim=1, keepdim=True)
    intersection = positives - sorted_labels.cumsum(dim=1)
    union = positives + (1.0 - sorted_labels).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor) -> torch.Tensor:
    """Per-sample binary Lovász hinge (B,) for logits and 0/1 labels (B, C)."""
    errors = (1.0 - logits * (2.0 * labels - 1.0)) * class_weight
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    grad = lovasz_grad(torch.gather(labels, 1, order))
    return (torch.relu(errors_sorted) * grad).sum(dim=1)


class LovaszLoss(MultiLabelLoss):
    """Symmetric Lovász hinge with square-root scaling; see the module docstring."""

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = (targets >= 0.5).to(logits.dtype)
        weight = self.class_weight.to(logits)
        symmetric = 0.5 * (lovasz_hinge(logits, labels, weight) + lovasz_hinge(-logits, 1.0 - labels, weight))
        return torch.sqrt(symmetric + SQRT_EPS) - SQRT_EPS**0.5
