"""Symmetric Lovász loss with square-root scaling (paper 2.4 and Table 2, C12; Berman et al. 2018, Yu & Blaschko 2015).

The paper names the technique ("Symmetric Lovasz Softmax Loss [2][28]", "Symmetric Lovasz Loss with square
root scaling") but gives no formula. Two readings are possible; ``lovasz`` implements the first, and the
second stays available, clearly named, as ``lovasz_hinge``.

``lovasz``: the Lovász extension over probability errors (the Lovász-softmax of Berman et al. on sigmoids).
Per sample, the 37 classes are the ground set (as the pixels of one image in Berman et al.'s per-image loss):
- errors m_c = w_c |y_c − p_c| with p = sigmoid(z), y the soft target and w_c the none-class weight
  (``none_weight`` on the 5 none classes, 1 elsewhere); note m_c = 1 − p̂_c of the paper's eq. 2;
- foreground F = {c : y_c >= 0.5} (the argmax of the two-way target (y, 1 − y), ties to "present");
- Jaccard set loss Δ_F(M) = |M| / |F ∪ M| (Δ_F(∅) = 0), submodular and non-decreasing (Yu & Blaschko);
- its Lovász extension: sort m decreasing (π), ℓ_F(m) = Σ_k m_{π_k} (Δ_F({π_1..π_k}) − Δ_F({π_1..π_{k−1}}));
- symmetric: ℓ = (ℓ_F(m) + ℓ_{F̄}(m)) / 2, F̄ the complement (the negatives as a foreground too, so a sample
  with no positive still has a Jaccard term);
- square-root scaling: the per-sample loss is sqrt(ℓ + ε) − sqrt(ε), ε = 1e-6 (compresses large losses,
  finite gradient at ℓ = 0).

Why this reading rather than the Lovász hinge on logits:
1. The paper says Lovász *Softmax*. What distinguishes Berman et al.'s Lovász-softmax from the Lovász hinge is
   that its errors are probability errors m_i(c) = |1[y_i = c] − f_i(c)|. A sigmoid output is a two-class
   softmax (present p, absent 1 − p); the Lovász-softmax over those two classes, averaged over both classes
   as Berman et al. do, is exactly the symmetric form above (the "absent" class has the same errors
   |(1 − y) − (1 − p)| = |y − p| and foreground F̄). "Symmetric" and "softmax" then name one loss.
2. It keeps the soft targets, the paper's central label technique (2.1): m_c = |y_c − p_c| is the same error
   the soft focal loss uses (1 − p̂), every term is 0 only at p = y, so a class seen by 1 of 4 annotators is
   pulled to 0.25. The hinge needs ±1 labels: soft targets must be binarised (0.25 and 0 become the same
   negative) and any logit past the margin costs nothing, so it cannot learn the annotators' confidence.
3. The errors are bounded in [0, 1] like the focal term's, so "focal + lovasz" adds two losses of one kind;
   the hinge is unbounded in the logits.
The soft labels enter through the errors only: F stays a crisp set, so Δ_F is exactly the Jaccard loss whose
Lovász extension Berman et al. and Yu & Blaschko analyse (a fuzzy foreground, Σy in place of |F|, would be a
further modification with no source in the paper).

``lovasz_hinge`` (the other reading, cheap to keep): the binary Lovász hinge of Berman et al. per sample,
labels y >= 0.5, signs s = 2y − 1, errors e_c = w_c (1 − z_c s_c), ℓ_F(relu(e)) as above (sorted by e),
symmetric over (z, y) and (−z, 1 − y), same square-root scaling.
"""

from __future__ import annotations

import torch

from dsdi.train.losses.base import MultiLabelLoss

SQRT_EPS = 1e-6


def lovasz_grad(sorted_labels: torch.Tensor) -> torch.Tensor:
    """Jaccard-loss increments Δ_F(prefix_k) − Δ_F(prefix_{k−1}) for 0/1 labels (B, C) sorted by decreasing error.

    With P = |F|: Δ_F(prefix_k) = 1 − |F \\ prefix_k| / |F ∪ prefix_k| = 1 − (P − Σ_{≤k} y) / (P + Σ_{≤k} (1 − y)).
    """
    positives = sorted_labels.sum(dim=1, keepdim=True)
    intersection = positives - sorted_labels.cumsum(dim=1)
    union = positives + (1.0 - sorted_labels).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_extension(errors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample Lovász extension of the Jaccard loss (B,) at non-negative errors (B, C), foreground 0/1 labels."""
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    return (errors_sorted * lovasz_grad(torch.gather(labels, 1, order))).sum(dim=1)


def sqrt_scaled(loss: torch.Tensor) -> torch.Tensor:
    """The square-root scaling sqrt(ℓ + ε) − sqrt(ε): 0 at ℓ = 0, gradient at most 1 / (2 sqrt(ε))."""
    return torch.sqrt(loss + SQRT_EPS) - SQRT_EPS**0.5


class LovaszLoss(MultiLabelLoss):
    """Symmetric Lovász(-softmax) loss over sigmoid probability errors |y − p|, square-root scaled (module doc)."""

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        errors = (targets - torch.sigmoid(logits)).abs() * self.class_weight.to(logits)
        labels = (targets >= 0.5).to(logits.dtype)
        return sqrt_scaled(0.5 * (lovasz_extension(errors, labels) + lovasz_extension(errors, 1.0 - labels)))


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor) -> torch.Tensor:
    """Per-sample binary Lovász hinge (B,) for logits and 0/1 labels (B, C)."""
    errors = (1.0 - logits * (2.0 * labels - 1.0)) * class_weight
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    grad = lovasz_grad(torch.gather(labels, 1, order))
    return (torch.relu(errors_sorted) * grad).sum(dim=1)


class LovaszHingeLoss(MultiLabelLoss):
    """Symmetric Lovász hinge on logits (labels y >= 0.5), square-root scaled; the other reading (module doc)."""

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = (targets >= 0.5).to(logits.dtype)
        weight = self.class_weight.to(logits)
        return sqrt_scaled(0.5 * (lovasz_hinge(logits, labels, weight) + lovasz_hinge(-logits, 1.0 - labels, weight)))
