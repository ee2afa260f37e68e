"""Model input: decoded RGB pixels to the normalised float tensor a classifier takes.

uint8 (N, H, W, 3) --bilinear antialiased resize--> float (N, 3, S, S) in [0, 1] --mean/std--> model input.
Training images (``dsdi.train.data``), video frames and tiles (``dsdi.rank``) share it exactly. A model's side S,
mean, std and interpolation (``Preprocessing``) are fixed at training time (``model_preprocessing``: mean and std
from the model's timm data config) and travel in its checkpoint (``dsdi.models.checkpoint``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear",)  # the resize of resize_unit and of the video decoder's scaler (MODEL_SCALER_FLAGS)

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is made: RGB pixels resized to img_size x img_size px (``interpolation``,
    antialiased), scaled to [0, 1], then per channel (R, G, B) minus ``mean`` over ``std``."""

    img_size: int
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    interpolation: str = "bilinear"

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """float (..., 3, H, W) in [0, 1] -> the model's input (``normalise`` with this mean/std)."""
        return normalise(batch, self.mean, self.std)

    def problem(self) -> str:
        """What makes these values unusable ("" if nothing): img_size >= 1, three finite means, three finite
        stds > 0, an interpolation of INTERPOLATIONS."""
        triples = [tuple(values) if isinstance(values, (tuple, list)) else () for values in (self.mean, self.std)]
        if not all(len(t) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in t)
                   for t in triples):
            return f"mean {self.mean!r} and std {self.std!r} must be three finite numbers each (R, G, B)"
        if min(triples[1]) <= 0:
            return f"std {self.std!r} must be positive"
        if self.interpolation not in INTERPOLATIONS:
            return f"interpolation {self.interpolation!r} is not one dsdi resizes with ({', '.join(INTERPOLATIONS)})"
        return "" if isinstance(self.img_size, int) and self.img_size >= 1 else f"img_size {self.img_size!r}"


def model_preprocessing(model: nn.Module, img_size: int) -> Preprocessing:
    """The preprocessing a model is trained with at img_size px: mean and std of its timm data config
    (``timm.data.resolve_data_config`` of the model's ``pretrained_cfg``; ImageNet's for a model without one).

    The interpolation is bilinear, whatever the config prefers (bicubic for most timm models): it is what
    ``resize_unit`` and the video decoder's one-pass scaler do, and what the checkpoint then records."""
    from timm.data import resolve_data_config

    if not getattr(model, "pretrained_cfg", None):
        return Preprocessing(img_size)
    config = resolve_data_config(model=model)
    return Preprocessing(img_size, tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"]))


def resize_unit(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, S, S) in [0, 1], bilinear with antialiasing (as PIL's resize).

    One frame at a time: a frame's full-resolution float copy (4x its bytes) stays small and in cache, where
    a whole batch's would not (16 frames of 720p: about 2x faster, and no 700 MB temporary)."""
    frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames)  # from_numpy: writable
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
    if frames.shape[1:3] == (img_size, img_size):  # already at size (video decoded to it): the resize is identity
        return pixels.contiguous().float().div_(255.0)
    return torch.cat([
        F.interpolate(frame.float().div_(255.0), size=(img_size, img_size), mode="bilinear", antialias=True,
                      align_corners=False)
        for frame in pixels.split(1)
    ])


def normalise(batch: torch.Tensor, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] -> (batch - mean) / std per channel, float32 (on the batch's device)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(3, 1, 1)
    return (batch - mean_t) / std_t


def frames_to_tensor(frames: np.ndarray, img_size: int, mean: Triple = IMAGENET_MEAN,
                     std: Triple = IMAGENET_STD) -> torch.Tensor:
    """Validation preprocessing for decoded video frames.

    frames: uint8 (N, H, W, 3) RGB -> float32 (N, 3, img_size, img_size), resized (bilinear, antialiased)
    and normalised with mean/std (default ImageNet's), exactly like the validation transform of training images.
    Frames already at img_size x img_size (``dsdi rank`` has the decoder scale them) are only normalised.
    """
    return normalise(resize_unit(frames, img_size), mean, std)
