"""The study's trunk and the features it gives: a backbone pretrained once on its own, larger synthetic world, then
frozen; every study model is a head trained on the trunk's cached pooled features (``dsdi.study.heads``).

- ``pretrain_trunk``: ``dsdi synth`` world (independent features, its own seed, true labels as targets) and one
  ``dsdi sweep`` run of ``dsdi train`` on it (resumable, skipped when finished); its ``best.pt`` is the trunk.
- ``image_features``: per image of a labels table, the pooled features (D,) of view 0 (the image as validation
  sees it) and of ``views - 1`` views augmented as ``dsdi train`` augments (flips, rotation, colour jitter; seeded),
  and optionally of its 2 x 2 tiles (``dsdi rank --tiles 2x2``'s boxes), as float16 (n, views, D) / (n, 4, D).
- ``clip_features``: per clip sampled at 10 fps by dsdi's decoder, the features of every frame's whole view and 2 x 2
  tiles, each also mirrored: float16 (frames, 2, 5, D) (mirror, crop), with the frame's shot id and time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.models.checkpoint import load_model
from dsdi.models.features import with_features
from dsdi.models.preprocess import as_unit
from dsdi.options import updated, write_toml
from dsdi.progress import progress_bar
from dsdi.rank.views import Views
from dsdi.synth import build_world
from dsdi.train.config import TrainConfig
from dsdi.train.data import decode_image, resolve_image_path, training_batch
from dsdi.train.loop import AUGMENTATION
from dsdi.train.run_folder import BEST_NAME
from dsdi.train.sweep import sweep
from dsdi.video.clip import Clip
from dsdi.video.decode import decode_clip

FEATURE_BATCH = 64
TILES = Views(flip=True, tiles=(2, 2))
"""The clip views of claim 8: the whole frame and its 2 x 2 tiles (overlap 0.25), each also mirrored."""


def pretrain_trunk(folder: Path, world: dict[str, Any], training: dict[str, Any]) -> Path:
    """The pretrained trunk's checkpoint under ``folder``: ``world`` (``build_world`` keyword arguments) is built
    unless ``world.json`` says it was, its true labels become the targets, and ``training`` (TrainConfig fields)
    trains one resumable ``dsdi sweep`` run; InputError when that run fails."""
    wanted = json.dumps(world, sort_keys=True)
    spec = folder / "world.json"
    if not (spec.is_file() and spec.read_text() == wanted):
        built = build_world(folder / "world", **world)
        write_text_atomic(folder / "labels.csv", built.true_labels.read_text())
        write_text_atomic(spec, wanted)
    recipe = folder / "trunk.toml"
    write_toml(recipe, updated(TrainConfig(), {**training, "labels": str(folder / "labels.csv"),
                                               "images": str(folder / "world" / "images")}, source="study trunk"))
    result = sweep([recipe], seeds=[0], out_root=folder / "models")
    if not result.ok:
        raise InputError(f"study: pretraining the trunk failed ({result.failures[0].error}); fix the cause and run "
                         "the study again (it resumes)")
    return folder / "models" / "trunk-s0" / BEST_NAME


class Trunk:
    """A checkpoint's backbone as a feature extractor: ``features`` of normalised images (N, 3, S, S) -> (N, D)."""

    def __init__(self, checkpoint: Path) -> None:
        model, info = load_model(checkpoint)
        self.preprocessing = info.preprocessing
        self.img_size = info.img_size
        self.checkpoint = checkpoint
        self._run = with_features(model, str(checkpoint))

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """float32 normalised (N, 3, S, S) -> float16 pooled features (N, D), in batches of FEATURE_BATCH."""
        return np.concatenate([self._run(chunk)[1].numpy() for chunk in images.split(FEATURE_BATCH)]).astype(np.float16)

    def of_units(self, units: torch.Tensor) -> np.ndarray:
        """float32 (N, 3, S, S) in [0, 1] -> float16 features (N, D) after the model's normalisation."""
        return self.features(self.preprocessing.normalise(units))


def _square(pixels: np.ndarray, side: int) -> np.ndarray:
    """uint8 (H, W, 3) stretched to (side, side, 3) with PIL's bilinear (antialiased) resize."""
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR))


def image_features(trunk: Trunk, image_ids: list[str], images_dir: Path, views: int, seed: int,
                   tiles: bool = False, label: str = "features") -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled features of each image: float16 (n, views, D) (view 0 plain, the rest augmented, torch seeded with
    ``seed``) and, with ``tiles``, (n, 4, D) of its 2 x 2 tiles (else None)."""
    size, resize = trunk.img_size, trunk.preprocessing.resize
    tile_side = TILES.tile_source_size(size)[0]
    torch.manual_seed(seed)
    per_view, per_tile = [], []
    with progress_bar("images") as bar:
        task = bar.add_task(label, total=len(image_ids), info="")
        for start in range(0, len(image_ids), FEATURE_BATCH):
            pixels = [decode_image(resolve_image_path(i, images_dir), tile_side)
                      for i in image_ids[start:start + FEATURE_BATCH]]
            whole = np.stack([_square(p, size) for p in pixels])
            uint8 = torch.from_numpy(whole).permute(0, 3, 1, 2).contiguous()
            batch = [trunk.of_units(uint8.float() / 255.0)]
            batch += [trunk.features(training_batch(uint8, AUGMENTATION, trunk.preprocessing.mean,
                                                    trunk.preprocessing.std)) for _ in range(views - 1)]
            per_view.append(np.stack(batch, axis=1))
            if tiles:
                source = np.stack([_square(p, tile_side) for p in pixels])
                crops = as_unit(Views(tiles=(2, 2)).frame_tensors(whole, source, resize)[:, 1:])
                per_tile.append(trunk.of_units(crops.flatten(0, 1)).reshape(len(pixels), 4, -1))
            bar.update(task, advance=len(pixels))
    return np.concatenate(per_view), (np.concatenate(per_tile) if tiles else None)


def clip_features(trunk: Trunk, clips: pd.DataFrame, clips_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features float16 (frames, 2, 5, D), shot ids (frames,), times s (frames,)) of every clip of clips.csv's
    table (shot_id, clip_path) sampled at 10 fps: crop 0 the whole frame, 1-4 its tiles; mirror 1 flipped."""
    size = trunk.img_size
    features, shots, times = [], [], []
    with progress_bar("clips") as bar:
        task = bar.add_task("clip features", total=len(clips), info="")
        for shot_id, clip_path in zip(clips["shot_id"], clips["clip_path"], strict=True):
            clip = Clip(str(shot_id), clips_dir / Path(str(clip_path)).name)
            whole = decode_clip(clip, size=(size, size))
            source = decode_clip(clip, size=TILES.tile_source_size(size))
            units = as_unit(TILES.frame_tensors(whole.frames, source.frames, trunk.preprocessing.resize))
            n = len(units)
            mirrored = TILES.with_mirrors(units.flatten(0, 1))
            features.append(trunk.of_units(mirrored).reshape(2, n, TILES.crops, -1).transpose(1, 0, 2, 3))
            shots += [str(shot_id)] * n
            times.append(whole.timestamps)
            bar.update(task, advance=1)
    return np.concatenate(features), np.array(shots), np.concatenate(times)
