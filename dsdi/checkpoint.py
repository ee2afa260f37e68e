"""Checkpoint files: everything needed to rebuild a trained model from the file alone.

A checkpoint is a ``torch.save``d dict (loadable with ``weights_only=True``) with keys:

- ``model``      state dict of the classifier
- ``backbone``   backbone name for ``dsdi.backbones.create_backbone``
- ``classes``    list of the 37 class names in output order (``dsdi.schema.CLASSES``)
- ``img_size``   square input side in pixels used for training and inference
- ``epoch``      number of completed epochs
- ``val_lrap``   validation LRAP at that epoch (float or None)
- ``config``     the resolved training config as a plain dict
- plus, in ``last.pt`` only, training state (``optimizer``, ``scheduler``, ``rng``) for ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dsdi.backbones import create_backbone
from dsdi.files import atomic_output
from dsdi.schema import CLASSES

BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about its model."""

    path: Path
    backbone: str
    img_size: int
    epoch: int
    val_lrap: float | None


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` atomically (temp file + rename) so a kill never leaves half a checkpoint."""
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def resolve_checkpoint(model_ref: str | Path) -> Path:
    """A run directory -> its ``best.pt`` (else ``last.pt``); a file path -> itself."""
    ref = Path(model_ref)
    if ref.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (ref / name).is_file():
                return ref / name
        raise FileNotFoundError(f"{ref}: no {BEST_NAME} or {LAST_NAME} in this run directory (did training finish?)")
    if not ref.is_file():
        raise FileNotFoundError(f"{ref}: no such checkpoint file or run directory")
    return ref


def load_checkpoint(model_ref: str | Path) -> dict:
    """The checkpoint dict of a run directory or .pt file (tensors on CPU)."""
    return torch.load(resolve_checkpoint(model_ref), map_location="cpu", weights_only=True)


def load_model(model_ref: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelInfo]:
    """Rebuild the classifier of a run directory or checkpoint file, in eval mode on ``device``.

    Refuses (ValueError) a checkpoint whose class list differs from this dsdi's schema.
    """
    path = resolve_checkpoint(model_ref)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if list(ckpt.get("classes", [])) != list(CLASSES):
        raise ValueError(
            f"{path}: the checkpoint's class schema ({len(ckpt.get('classes', []))} classes) differs from "
            f"dsdi's {len(CLASSES)} classes; retrain the model with this version of dsdi"
        )
    model = create_backbone(ckpt["backbone"], num_classes=len(CLASSES))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    info = ModelInfo(path, ckpt["backbone"], int(ckpt["img_size"]), int(ckpt.get("epoch", 0)), ckpt.get("val_lrap"))
    return model, info
