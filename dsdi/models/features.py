"""A classifier's pooled pre-logit features, read in the same forward pass as its logits (``with_features``).

The features are the input of the classifier's last layer: for a timm model that of ``get_classifier()``, which is
``forward_head(forward_features(x), pre_logits=True)``; for a Hugging Face image classifier that of its
``classifier`` layer, the pooled output. A hook on that layer records them, so nothing is computed twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

from dsdi.errors import InputError


def classifier_layer(module: nn.Module) -> nn.Module | None:
    """The last layer of a dsdi classifier module (timm's ``get_classifier()``, a Hugging Face model's
    ``classifier``), or None when it has none that can be found."""
    if hasattr(module, "get_classifier"):
        layer = module.get_classifier()
        return layer if isinstance(layer, nn.Module) and not isinstance(layer, nn.Identity) else None
    inner = getattr(module, "model", None)  # models.classifier's wrapper of a transformers model
    layer = getattr(inner, "classifier", None)
    return layer if isinstance(layer, nn.Module) else None


def with_features(module: nn.Module, name: str = "the model") -> Callable[[torch.Tensor], tuple[torch.Tensor,
                                                                                               torch.Tensor]]:
    """``module`` as a function of images (N, 3, S, S) -> (logits (N, C), features float32 (N, D)), the features
    recorded on the way by a hook on its classifier layer (``classifier_layer``; call this once per module: each
    call adds a hook); InputError naming ``name`` when it has none. Threads may call it at once (rank's CPU forward
    workers do): each reads the features its own pass recorded."""
    layer = classifier_layer(module)
    if layer is None:
        raise InputError(f"{name}: no classifier layer to read pooled features from (a timm model or a Hugging "
                         "Face image classifier has one); pass another --embed-model")
    seen = threading.local()  # .features: the classifier layer's input in this thread's latest pass
    layer.register_forward_hook(lambda _layer, inputs, _output: setattr(seen, "features", inputs[0]))

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = module(images)
        return logits, seen.features.flatten(1).float()

    return run

