"""The study's models: a head on the frozen trunk's cached features, trained with dsdi's own losses
(``dsdi.train.losses.create_loss``: focal, CBFL, RFL, BCE, none-class weight, max-loss dropping) and its cosine
schedule with snapshot restarts (``dsdi.train.schedule``), so that every variant differs from the baseline only in
its recipe.

A head is Linear(D, HIDDEN) - ReLU - Dropout(DROPOUT) - Linear(HIDDEN, 37) on features standardised per dimension
(``dsdi.study.run``). Training (``train_head``):

- **member** ``m`` of seed ``s`` trains on its own split: TRAIN_SHARE of the candidate images drawn by
  ``default_rng([s, m, 1])`` (the paper's members each had their own 80/20 split); candidates are the world's normal
  training images, plus its outliers when the recipe says so;
- **seed** ``s`` sets the head's initialisation, the batch order and which augmented view of an image each step
  sees (``torch.manual_seed(s * 1000 + m)``): two recipes of the same seed and member differ in nothing else;
- each epoch visits every training image once in one of its augmented views (views 1.. of the cached features),
  and with ``tiles`` also each of its 2 x 2 tiles, a tile carrying its image's labels (LADI has no boxes to slice);
- AdamW (LR, WEIGHT_DECAY), batches of BATCH, the cosine learning rate per step; the heads returned are the last
  epoch's, or with ``snapshots = k`` the k snapshots at the ends of the cosine cycles.
CBFL's class counts are the training targets' positives per class (``dsdi.train.loop.training_counts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dsdi.labels.labelset import LADI_V1
from dsdi.train.loop import training_counts
from dsdi.train.losses import create_loss
from dsdi.train.schedule import learning_rate, snapshot_index

HIDDEN, DROPOUT = 256, 0.2
BATCH, LR, WEIGHT_DECAY = 64, 1e-3, 1e-4
TRAIN_SHARE = 0.8


@dataclass(frozen=True)
class HeadRecipe:
    """How one study model is trained: its labels (``<crowd>-<mode>``: the label table), loss and loss settings,
    epochs, snapshot cycles (0: none), whether the world's outliers are among its images and whether it also
    trains on tiles."""

    name: str
    labels: str = "ladi-soft"
    loss: str = "focal"
    loss_settings: dict[str, Any] = field(default_factory=dict)
    epochs: int = 12
    snapshots: int = 0
    outliers: bool = False
    tiles: bool = False


@dataclass(frozen=True)
class HeadData:
    """What heads train on: float16 features (n, views, D) of the world's training images then its outliers
    (``outlier`` (n,) bool), tile features (n, 4, D) or None, and the label tables' targets (n, 37) by name."""

    views: np.ndarray
    outlier: np.ndarray
    tiles: np.ndarray | None
    targets: dict[str, np.ndarray]


def new_head(dim: int, classes: int = len(LADI_V1.class_names)) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, classes))


def member_split(data: HeadData, recipe: HeadRecipe, seed: int, member: int) -> np.ndarray:
    """Sorted indices of the images member ``member`` of ``seed`` trains on (module docstring)."""
    candidates = np.flatnonzero(~data.outlier | recipe.outliers)
    rng = np.random.default_rng([seed, member, 1])
    return np.sort(rng.choice(candidates, size=int(round(TRAIN_SHARE * len(candidates))), replace=False))


def _items(data: HeadData, recipe: HeadRecipe, chosen: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 (images, views - 1 or 1, D) per training item, targets (items, 37)); with tiles each tile
    is one more item (its features repeated over the view axis)."""
    views = data.views[chosen, 1:] if data.views.shape[1] > 1 else data.views[chosen]
    features, targets = [torch.from_numpy(views.astype(np.float32))], [data.targets[recipe.labels][chosen]]
    if recipe.tiles:
        tiles = data.tiles[chosen].astype(np.float32)
        features.append(torch.from_numpy(tiles.reshape(-1, 1, tiles.shape[-1])).expand(-1, views.shape[1], -1))
        targets.append(np.repeat(data.targets[recipe.labels][chosen], tiles.shape[1], axis=0))
    return torch.cat(features), torch.from_numpy(np.concatenate(targets).astype(np.float32))


def train_head(data: HeadData, recipe: HeadRecipe, seed: int, member: int) -> list[nn.Module]:
    """Train member ``member`` of ``seed`` with ``recipe`` (module docstring); the heads in eval mode."""
    features, targets = _items(data, recipe, member_split(data, recipe, seed, member))
    torch.manual_seed(seed * 1000 + member)
    head = new_head(features.shape[-1])
    loss_fn = create_loss(recipe.loss, none_mask=LADI_V1.none_mask, class_counts=training_counts(targets),
                          **recipe.loss_settings)
    optimizer = torch.optim.AdamW(head.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch, step, kept = -(-len(features) // BATCH), 0, []
    for epoch in range(1, recipe.epochs + 1):
        head.train()
        order = torch.randperm(len(features))
        view = torch.randint(0, features.shape[1], (len(features),))
        for batch in order.split(BATCH):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps_per_epoch, recipe.epochs, recipe.snapshots, LR)
            loss = loss_fn(head(features[batch, view[batch]]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if snapshot_index(epoch, recipe.epochs, recipe.snapshots) is not None:
            kept.append(_frozen_copy(head))
    return kept if recipe.snapshots else [_frozen_copy(head)]


def _frozen_copy(head: nn.Module) -> nn.Module:
    copy = new_head(head[0].in_features, head[-1].out_features)
    copy.load_state_dict(head.state_dict())
    return copy.eval()


@torch.inference_mode()
def head_scores(heads: list[nn.Module], features: np.ndarray) -> np.ndarray:
    """float32 (..., 37): the mean over heads of their sigmoids on features (..., D)."""
    flat = torch.from_numpy(np.asarray(features, dtype=np.float32).reshape(-1, features.shape[-1]))
    probs = torch.stack([torch.sigmoid(head(flat)) for head in heads]).mean(dim=0)
    return probs.numpy().reshape(*features.shape[:-1], -1)
