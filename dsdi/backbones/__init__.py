"""Backbone registry: any timm model by name, plus the paper's backbones that timm lacks."""

from __future__ import annotations

from pathlib import Path

import timm
import torch


def create_backbone(
    name: str, num_classes: int = 37, pretrained: bool = False, weights: str | Path | None = None
) -> torch.nn.Module:
    """A classifier with ``num_classes`` logits: input (B, 3, H, W) float, output (B, num_classes)."""
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    return model
