"""Model input: decoded RGB pixels to the normalised float tensor a classifier takes.

uint8 (N, H, W, 3) --bilinear antialiased resize--> float (N, 3, S, S) in [0, 1] --mean/std--> model input.
Training images (``dsdi.train.data``), video frames and tiles (``dsdi.rank``) share it exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] -> ImageNet-normalised (on the batch's device)."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(3, 1, 1)
    return (batch - mean) / std


def frames_to_tensor(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """Validation preprocessing for decoded video frames.

    frames: uint8 (N, H, W, 3) RGB -> float32 (N, 3, img_size, img_size), resized (bilinear, antialiased)
    and normalised with the ImageNet mean/std, exactly like the validation transform of training images.
    Frames already at img_size x img_size (``dsdi rank`` has the decoder scale them) are only normalised.
    """
    return normalise(resize_unit(frames, img_size))
