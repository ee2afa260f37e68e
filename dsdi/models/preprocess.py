"""Model input: decoded RGB pixels to the normalised float tensor a classifier takes.

uint8 (N, H, W, 3) --resize (antialiased), then centre crop--> float (N, 3, S, S) in [0, 1] --mean/std--> model input.
The resize (``Resize``) is ``square`` (stretch to R x R; dsdi's own models, R = S) or ``shortest_edge`` (the shortest
side to R px keeping the aspect, as a Hugging Face image processor's ``size: {shortest_edge: R}``), bilinear or
bicubic; a centre crop then keeps S x S. Training images (``dsdi.train.data``), video frames and tiles
(``dsdi.rank``) share it exactly. A model's ``Preprocessing`` is fixed at training time (``model_preprocessing``:
mean and std from the model's timm data config) and travels in its checkpoint (``dsdi.models.checkpoint``), or is
read from a Hugging Face model's ``preprocessor_config.json`` (``dsdi.models.classifier``).
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
INTERPOLATIONS = ("bilinear", "bicubic")  # torch's antialiased modes; the video decoder's scaler: SCALER_FLAGS
RESIZE_MODES = ("square", "shortest_edge")

Triple = tuple[float, float, float]
Size = tuple[int, int]


@dataclass(frozen=True)
class Resize:
    """Pixels to img_size x img_size: ``mode`` square stretches to size x size, shortest_edge scales the shortest
    side to size px and the other to int(size * long / short) px (transformers' rounding); antialiased
    ``interpolation``; then the centre img_size x img_size crop, its top-left corner at int((H - S) / 2),
    int((W - S) / 2) (transformers' ``center_crop``). Hashable: frames decoded once per distinct Resize."""

    img_size: int
    mode: str = "square"
    size: int = 0  # the resize target in px; 0: img_size
    interpolation: str = "bilinear"

    @property
    def target(self) -> int:
        """The resize target in px (size, or img_size when size is 0)."""
        return self.size or self.img_size

    def scaled_size(self, width: int, height: int) -> Size:
        """(width, height) px that a width x height picture is resized to before the crop."""
        if self.mode == "square":
            return self.target, self.target
        short, long = min(width, height), max(width, height)
        longer = int(self.target * long / short)
        return (self.target, longer) if width <= height else (longer, self.target)

    def unit(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float32 (N, 3, S, S) in [0, 1]: ``as_unit(self.pixels(frames))``."""
        return as_unit(self.pixels(frames))

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the centre S x S crop (N, 3, S, S) of the frames resized: uint8 as they are when
        they are already at ``scaled_size`` (as the video decoder delivers them: a crop alone, a quarter of the
        float bytes), else float32 in [0, 1], resized here (``as_unit`` makes either the model's [0, 1] input).

        One frame at a time: a frame's full-resolution float copy (4x its bytes) stays small and in cache, where
        a whole batch's would not (16 frames of 720p: about 2x faster, and no 700 MB temporary)."""
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames)  # from_numpy: writable
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
        height, width = frames.shape[1:3]
        scaled_width, scaled_height = self.scaled_size(width, height)
        if (scaled_width, scaled_height) != (width, height):
            pixels = torch.cat([
                F.interpolate(frame.float().div_(255.0), size=(scaled_height, scaled_width),
                              mode=self.interpolation, antialias=True, align_corners=False)
                for frame in pixels.split(1)
            ]).clamp_(0.0, 1.0)  # bicubic overshoots; bilinear stays within
        top, left = int((scaled_height - self.img_size) / 2), int((scaled_width - self.img_size) / 2)
        return pixels[:, :, top:top + self.img_size, left:left + self.img_size].clone(
            memory_format=torch.contiguous_format)  # never a view of frames, which the decoder may reuse

    def problem(self) -> str:
        """What makes this resize unusable ("" if nothing)."""
        if not isinstance(self.img_size, int) or self.img_size < 1:
            return f"img_size {self.img_size!r}"
        if self.mode not in RESIZE_MODES:
            return f"resize {self.mode!r} is not one dsdi does ({', '.join(RESIZE_MODES)})"
        if not isinstance(self.size, int) or self.size < 0 or 0 < self.size < self.img_size:
            return f"resize size {self.size!r} is smaller than the {self.img_size} px crop"
        if self.interpolation not in INTERPOLATIONS:
            return f"interpolation {self.interpolation!r} is not one dsdi resizes with ({', '.join(INTERPOLATIONS)})"
        return ""


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is made: RGB pixels resized (``resize_mode`` square or shortest_edge, to
    ``resize_size`` px, 0 meaning img_size; ``interpolation``, antialiased), centre-cropped to img_size x img_size,
    scaled to [0, 1], then per channel (R, G, B) minus ``mean`` over ``std`` (see ``Resize``)."""

    img_size: int
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    interpolation: str = "bilinear"
    resize_mode: str = "square"
    resize_size: int = 0

    @property
    def resize(self) -> Resize:
        """The pixels-to-img_size part (no mean/std)."""
        return Resize(self.img_size, self.resize_mode, self.resize_size, self.interpolation)

    def normalise(self, batch: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """float (..., 3, H, W) in [0, 1] -> the model's input (``normalise`` with this mean/std, in_place or not)."""
        return normalise(batch, self.mean, self.std, in_place)

    def problem(self) -> str:
        """What makes these values unusable ("" if nothing): three finite means, three finite stds > 0, and a
        usable ``Resize`` (img_size >= 1, a mode of RESIZE_MODES, resize_size 0 or >= img_size, an interpolation
        of INTERPOLATIONS)."""
        triples = [tuple(values) if isinstance(values, (tuple, list)) else () for values in (self.mean, self.std)]
        if not all(len(t) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in t)
                   for t in triples):
            return f"mean {self.mean!r} and std {self.std!r} must be three finite numbers each (R, G, B)"
        if min(triples[1]) <= 0:
            return f"std {self.std!r} must be positive"
        return self.resize.problem()


def model_preprocessing(model: nn.Module, img_size: int) -> Preprocessing:
    """The preprocessing a model is trained with at img_size px: mean and std of its timm data config
    (``timm.data.resolve_data_config`` of the model's ``pretrained_cfg``; ImageNet's for a model without one).

    The resize is square and bilinear, whatever the config prefers (bicubic for most timm models): it is what
    dsdi's training resize (``dsdi.train.data``) does, and what the checkpoint then records."""
    from timm.data import resolve_data_config

    if not getattr(model, "pretrained_cfg", None):
        return Preprocessing(img_size)
    config = resolve_data_config(model=model)
    return Preprocessing(img_size, tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"]))


def resize_unit(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, S, S) in [0, 1], stretched with antialiased bilinear (as PIL's
    resize): ``Resize(img_size).unit``."""
    return Resize(img_size).unit(frames)


def as_unit(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels uint8 (0-255) -> float32 / 255 in [0, 1]; float pixels (already in [0, 1]) as they are."""
    return pixels.float().div_(255.0) if pixels.dtype == torch.uint8 else pixels


def normalise(batch: torch.Tensor, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD,
              in_place: bool = False) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] -> (batch - mean) / std per channel, float32 (on the batch's device); in_place
    overwrites batch (the same values, no new tensor)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(3, 1, 1)
    return batch.sub_(mean_t).div_(std_t) if in_place else (batch - mean_t) / std_t


def frames_to_tensor(frames: np.ndarray, img_size: int | Preprocessing, mean: Triple = IMAGENET_MEAN,
                     std: Triple = IMAGENET_STD) -> torch.Tensor:
    """Validation preprocessing for decoded video frames and images.

    frames: uint8 (N, H, W, 3) RGB -> float32 (N, 3, S, S): with a ``Preprocessing``, its resize, crop, mean and
    std; with an int S, stretched to S x S (bilinear, antialiased) and normalised with mean/std (default
    ImageNet's), exactly like the validation transform of training images. Frames already at the resize's size
    (``dsdi rank`` has the decoder scale them) are only cropped and normalised.
    """
    if isinstance(img_size, Preprocessing):
        return img_size.normalise(img_size.resize.unit(frames))
    return normalise(resize_unit(frames, img_size), mean, std)
