"""Checkpoint files: everything needed to rebuild a trained model from the file alone.

A checkpoint is a ``torch.save``d dict (loadable with ``weights_only=True``) with keys:

- ``model``      state dict of the classifier
- ``backbone``   backbone name for ``dsdi.models.backbones.create_backbone``
- ``classes``    list of the class names in output order (the label set's ``class_names``)
- ``labelset``   the label set, ``LabelSet.to_dict()`` (a checkpoint without it is a LADI v1 model)
- ``img_size``   square input side in pixels used for training and inference
- ``epoch``      number of completed epochs
- ``val_lrap``   validation LRAP at that epoch (float or None)
- ``config``     the resolved training config as a plain dict
- ``mean``, ``std``  per-channel (R, G, B) normalisation of the model input on the [0, 1] scale, as trained
- ``interpolation``  the resize to ``img_size`` ("bilinear")
  (``dsdi.models.preprocess.Preprocessing``; taken from the model's timm data config by ``checkpoint_payload``;
  a checkpoint written before they existed reads as ImageNet's mean/std, bilinear: what training used then)
- plus, in ``last.pt`` only, training state (``optimizer``, ``scheduler``, ``rng``...) for ``--resume``: the
  caller adds it as extra keys, ``save_checkpoint(path, {**checkpoint_payload(...), **training_state})``.

Checkpoints are built (``checkpoint_payload``), written (``save_checkpoint``) and read (``read_checkpoint``,
``checkpoint_epoch``, ``load_model``) only here; a file that cannot be read as one raises InputError naming it, on
one line. Which checkpoint of a run folder stands for its model is ``dsdi.train.run_folder``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dsdi.errors import InputError
from dsdi.files import atomic_output, read_torch_file
from dsdi.labels.labelset import LADI_V1, LabelSet, labelset_of
from dsdi.models.backbones import create_backbone
from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, model_preprocessing

REQUIRED_KEYS = ("model", "backbone", "classes", "img_size")
_WHAT = "a dsdi checkpoint"


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about its model."""

    path: Path
    backbone: str
    img_size: int
    epoch: int
    val_lrap: float | None
    preprocessing: Preprocessing
    labelset: LabelSet


def checkpoint_payload(model: nn.Module, *, backbone: str, img_size: int, epoch: int = 0,
                       val_lrap: float | None = None, config: dict | None = None,
                       labelset: LabelSet = LADI_V1) -> dict:
    """The checkpoint dict of ``model`` (keys as in the module docstring), a classifier of ``labelset``.
    ``img_size``: square input side in pixels; ``epoch``: completed epochs; ``config``: plain values only.
    ``mean``, ``std``, ``interpolation``: ``model_preprocessing(model, img_size)``, as training normalises."""
    preprocessing = model_preprocessing(model, img_size)
    return {
        "model": model.state_dict(),
        "backbone": backbone,
        "classes": list(labelset.class_names),
        "labelset": labelset.to_dict(),
        "img_size": img_size,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "interpolation": preprocessing.interpolation,
        "epoch": epoch,
        "val_lrap": val_lrap,
        "config": dict(config or {}),
    }


def checkpoint_preprocessing(checkpoint: dict, path: str | Path) -> Preprocessing:
    """The model input a checkpoint dict (read from ``path``) was trained with; ImageNet's mean/std and bilinear
    for the keys it lacks (checkpoints written before they existed). InputError naming the file for values no
    model input can use."""
    try:
        preprocessing = Preprocessing(int(checkpoint["img_size"]), tuple(checkpoint.get("mean", IMAGENET_MEAN)),
                                      tuple(checkpoint.get("std", IMAGENET_STD)),
                                      checkpoint.get("interpolation", "bilinear"))
    except (TypeError, ValueError):
        raise InputError(f"{path}: its img_size, mean or std are not numbers; the file is damaged or was "
                         "edited") from None
    problem = preprocessing.problem()
    if problem:
        raise InputError(f"{path}: {problem}; the file is damaged or was edited")
    return preprocessing


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (a ``checkpoint_payload``, plus any training state as extra keys) atomically (temp
    file + rename) so a kill never leaves half a checkpoint."""
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint dict saved at ``path`` (tensors on the CPU; with ``mmap`` mapped from the file, read only when
    used). InputError, one line naming the file, when it is missing, truncated or corrupt, holds objects
    ``weights_only`` refuses, or lacks a key of REQUIRED_KEYS."""
    checkpoint = read_torch_file(path, _WHAT, mmap=mmap)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint] if isinstance(checkpoint, dict) else None
    if missing is None or missing:
        found = f"lacks {', '.join(missing)}" if missing else f"holds a {type(checkpoint).__name__}, not a dict"
        raise InputError(f"{path}: not {_WHAT}: it {found}; pass a run directory or a best.pt/last.pt written by "
                         "dsdi train (a plain state dict goes to dsdi train --weights)")
    return checkpoint


def checkpoint_labelset(checkpoint: dict, path: str | Path) -> LabelSet:
    """The label set a checkpoint dict (read from ``path``) records (``ladi-v1`` for one written before label sets
    were recorded); InputError naming the file when its class list disagrees with it."""
    labelset = labelset_of(checkpoint.get("labelset"), f"{path}: its label set")
    if list(checkpoint["classes"]) != list(labelset.class_names):
        raise InputError(f"{path}: its {len(checkpoint['classes'])} classes are not those of label set "
                         f"{labelset.name} ({len(labelset.class_names)}); the file is damaged or was edited")
    return labelset


def checkpoint_epoch(path: str | Path) -> int:
    """The completed epochs the checkpoint at ``path`` holds (0 when it says none), read without loading its
    tensors; InputError as ``read_checkpoint``."""
    return int(read_checkpoint(path, mmap=True).get("epoch") or 0)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild the classifier of the checkpoint file ``path``, in eval mode on ``device``.

    Raises InputError for a file that is no readable checkpoint (see ``read_checkpoint``), for weights that do
    not fit its backbone, and for a class list its label set does not have (``checkpoint_labelset``).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    labelset = checkpoint_labelset(checkpoint, path)
    model = create_backbone(checkpoint["backbone"], num_classes=len(labelset.class_names))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0][:160]
        raise InputError(f"{path}: its model weights do not fit backbone {checkpoint['backbone']!r} ({reason}); "
                         "the file is damaged or was edited") from None
    model.to(device).eval()
    info = ModelInfo(path, checkpoint["backbone"], int(checkpoint["img_size"]), int(checkpoint.get("epoch", 0)),
                     checkpoint.get("val_lrap"), checkpoint_preprocessing(checkpoint, path), labelset)
    return model, info
