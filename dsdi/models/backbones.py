"""Backbone registry: any timm model by name, plus the paper's four backbones (Table 2).

The paper's backbones, by the names ``--backbone`` takes:

- ``resnest50d``       ResNeSt-50d (timm), rows C03-C12
- ``hrnet_w18``        HRNetV2-W18 (timm's classification HRNet), row B02, trained at 448 px
- ``regnety_064``      RegNet-6.4F, row A01. The paper does not say X or Y; we use RegNetY-6.4GF: it is
  RegNetX plus squeeze-excitation, and the paper picks its backbones for attention on high-resolution images
  (section 2.3) and says RegNet scales "more effectively than EfficientNet", the claim the RegNet paper makes
  for RegNetY. ``regnetx_064`` works too, as any timm name does.
- ``se_ibn_resnet50``  SE-ResNet-50 with IBN-a blocks, row D13 (built in :mod:`dsdi.models.ibn`)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from dsdi.errors import InputError
from dsdi.files import read_torch_file
from dsdi.models.ibn import se_ibn_resnet50
from dsdi.models.preprocess import Preprocessing, model_preprocessing

DEFAULT_IMG_SIZE = 360


@dataclass(frozen=True)
class BackboneSpec:
    """A paper backbone: its name in the paper, its training side in pixels, and its builder
    (``None``: the timm model of the same name)."""

    paper_name: str
    img_size: int
    build: Callable[[int, bool], nn.Module] | None = None


PAPER_BACKBONES: dict[str, BackboneSpec] = {
    "resnest50d": BackboneSpec("ResNeSt-50d", DEFAULT_IMG_SIZE),
    "hrnet_w18": BackboneSpec("HRNet-W18", 448),
    "regnety_064": BackboneSpec("RegNet-6.4F", DEFAULT_IMG_SIZE),
    "se_ibn_resnet50": BackboneSpec("SE-IBN-ResNet50", DEFAULT_IMG_SIZE, se_ibn_resnet50),
}


def default_img_size(name: str) -> int:
    """Square training/inference side in pixels for a backbone: 448 for hrnet_w18, else 360 (paper 3)."""
    spec = PAPER_BACKBONES.get(name)
    return spec.img_size if spec else DEFAULT_IMG_SIZE


def create_backbone(
    name: str, num_classes: int = 37, pretrained: bool = False, weights: str | Path | None = None
) -> nn.Module:
    """A classifier with ``num_classes`` logits: input (B, 3, H, W) float, output (B, num_classes).

    ``name``: a paper backbone (``PAPER_BACKBONES``) or any timm model name. ``pretrained=True`` downloads
    timm's ImageNet weights (needs internet). ``weights``: a local state dict or dsdi checkpoint (its
    ``model`` entry) loaded over the model; see :func:`load_weights`.
    """
    spec = PAPER_BACKBONES.get(name)
    if spec is not None and spec.build is not None:
        model = spec.build(num_classes, pretrained)
    elif timm.is_model(name):
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    else:
        raise InputError(
            f"unknown backbone {name!r}: use one of the paper's ({', '.join(PAPER_BACKBONES)}) or a timm model "
            f"name (list them with: python -c \"import timm; print(timm.list_models('*{name[:6]}*'))\")"
        )
    if weights is not None:
        load_weights(model, weights)
    return model


def backbone_preprocessing(name: str, img_size: int) -> Preprocessing:
    """``model_preprocessing`` of backbone ``name`` at img_size px (mean/std of its timm data config), known before
    training builds the model: it is built on the meta device (no weights allocated). InputError for an unknown
    name, as ``create_backbone``."""
    with torch.device("meta"):
        return model_preprocessing(create_backbone(name), img_size)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the classifier head (timm's ``pretrained_cfg['classifier']``)."""
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", ())
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(name + "." for name in names)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file or of a dsdi checkpoint's ``model`` entry; DDP ``module.`` stripped."""
    loaded = read_torch_file(path, "a PyTorch state dict or dsdi checkpoint")
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: holds no state dict (expected a dict of tensors, or a dsdi checkpoint)")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a local state dict or dsdi checkpoint into ``model`` (in place).

    A classifier head of another shape (e.g. weights trained for another number of classes) is skipped with
    a warning and keeps its fresh initialisation; any other missing, unexpected or mis-shaped key raises
    InputError naming the file and the keys (the file was saved from another backbone).
    """
    path = Path(weights)
    state = _read_state_dict(path)
    own = model.state_dict()
    head_prefixes = _classifier_prefixes(model)
    body_state = {key: value for key, value in state.items() if not key.startswith(head_prefixes)}
    body_own = [key for key in own if not key.startswith(head_prefixes)]
    missing = [key for key in body_own if key not in body_state]
    unexpected = [key for key in body_state if key not in own]
    misshaped = [key for key in body_state if key in own and own[key].shape != body_state[key].shape]
    if missing or unexpected or misshaped:
        raise InputError(
            f"{path}: weights do not fit backbone {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(misshaped)} keys of another shape {misshaped[:5]}; was the file saved from another backbone?"
        )
    file_head = {key: tuple(value.shape) for key, value in state.items() if key.startswith(head_prefixes)}
    model_head = {key: tuple(own[key].shape) for key in own if key.startswith(head_prefixes)}
    if file_head != model_head:
        warnings.warn(
            f"{path}: classifier head {file_head} does not fit this model's {model_head}; loaded the backbone "
            "only, the head starts from a fresh initialisation",
            stacklevel=3,
        )
    model.load_state_dict(state if file_head == model_head else body_state, strict=file_head == model_head)
