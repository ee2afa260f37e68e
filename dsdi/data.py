"""Image data: LADI image dataset, fast decode and resize, augmentation, train/validation split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_tensor(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """Validation preprocessing for decoded video frames.

    frames: uint8 (N, H, W, 3) RGB -> float32 (N, 3, img_size, img_size), resized (bilinear, antialiased)
    and normalised with the ImageNet mean/std, exactly like the validation transform of training images.
    """
    batch = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    batch = F.interpolate(batch, size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std
