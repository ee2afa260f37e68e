"""Tiny random timm models saved as dsdi checkpoints for the rank tests (presets of conftest.tiny_checkpoint),
and their reference forward passes (plain timm models loaded from the checkpoint's weights, not through
dsdi.models.checkpoint.load_model)."""

import functools
from pathlib import Path

import numpy as np
import timm
import torch
from conftest import finish_run, tiny_checkpoint

from dsdi.labels.schema import CLASSES
from dsdi.models.checkpoint import read_checkpoint
from dsdi.models.preprocess import frames_to_tensor
from dsdi.video.clip import Clip
from dsdi.video.decode import ClipChunks

IMG = 64  # input side of the colour model


def save_tiny_model(run_dir: Path, seed: int) -> Path:
    """The colour model: lcnet_050 with a random head and batch-norm statistics calibrated on random colours (so
    its outputs depend on the frame colour), saved as run_dir/best.pt at 64 px in a finished run folder."""
    tiny_checkpoint(run_dir, backbone="lcnet_050", img_size=IMG, seed=seed, head_std=(0.3, 0.5),
                    colour_calibrated=True)
    return finish_run(run_dir)


def save_pattern_model(run_dir: Path, seed: int, side: int) -> Path:
    """resnet10t at timm's initial batch-norm statistics with a strong random head, saved at `side` px: on
    moving test patterns its sigmoids spread by 0.1-0.3 over a clip's frames and move by ~0.005 under 1-level
    pixel noise (the colour model moves by 0.46 on patterns; lcnet_050 here would be constant)."""
    tiny_checkpoint(run_dir, backbone="resnet10t", img_size=side, seed=seed, head_std=(3.0, None))
    return finish_run(run_dir)


@functools.cache
def reference_model(run_dir: Path) -> torch.nn.Module:
    """The checkpoint's weights in a plain timm model (not through dsdi.models.checkpoint.load_model)."""
    payload = read_checkpoint(run_dir / "best.pt")
    model = timm.create_model(payload["backbone"], num_classes=len(CLASSES))
    model.load_state_dict(payload["model"])
    return model.eval()


def model_sigmoids(run_dir: Path, images: torch.Tensor) -> np.ndarray:
    """Reference forward pass of preprocessed images float32 (N, 3, S, S): (N, 37) float64 sigmoids of the
    float32 logits."""
    with torch.no_grad():
        logits = reference_model(run_dir)(images)
    return torch.sigmoid(logits.double()).numpy()


def model_input_frames(path: Path, side: int = IMG) -> np.ndarray:
    """The 10 fps frames of a clip file as dsdi rank feeds a side-px model: uint8 (N, h, w, 3) from the decoder's
    model-input path (ClipChunks shrink_to; at side x side, or at the clip's own size when it is smaller)."""
    return np.concatenate([frames[0] for frames, _ in ClipChunks(Clip(path.stem, path), shrink_to=[(side, side)])])


def frame_sigmoids(run_dir: Path, frames: np.ndarray) -> np.ndarray:
    """model_sigmoids of uint8 (N, H, W, 3) frames preprocessed at the colour model's IMG px."""
    return model_sigmoids(run_dir, frames_to_tensor(frames, IMG))
