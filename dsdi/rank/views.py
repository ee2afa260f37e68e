"""What a model sees of each sampled frame in ``dsdi rank`` (``--tta``, ``--tiles``) and how a frame's score is made.

The views of a frame are the whole frame and, with tiles, its R x C overlapping tiles (the SAHI idea of slicing
for small objects), each brought to the model's input size S x S by the model's ``Resize`` (as a whole image: a
stretch, or the shortest edge then the centre crop), then normalised with the model's own mean/std (its
``Preprocessing``, applied by the scorer on the model's device). With flip TTA every view is also scored mirrored
(``torch.flip`` on the width).
Per class a frame's score is the max over its views of the view's sigmoid, a view's sigmoid being the mean of
its own and its mirror's with flip TTA. Plain (no option) is the whole frame alone: the score of before.

Tiles are cut from the frame decoded at ``tile_source_size`` of the resize's size R (where each tile is R x R, so
that a shortest-edge model's resize leaves it as it is and takes its centre S x S), or at its own size when the
footage is smaller than that on a side (then each tile is upscaled, as a small frame is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dsdi.models.preprocess import Resize, as_unit

Box = tuple[int, int, int, int]


def _spans(length: int, count: int, overlap: float) -> list[tuple[int, int]]:
    """[start, end) pixel ranges of ``count`` tiles along ``length`` px: tile size length / (count - (count - 1)
    * overlap), stride size * (1 - overlap), each edge rounded half up (floor(x + 0.5))."""
    size = length / (count - (count - 1) * overlap)
    stride = size * (1.0 - overlap)
    return [(math.floor(i * stride + 0.5), math.floor(i * stride + size + 0.5)) for i in range(count)]


def tile_boxes(width: int, height: int, rows: int, cols: int, overlap: float) -> list[Box]:
    """The (x0, y0, x1, y1) pixel boxes (half-open: columns x0 <= x < x1, rows y0 <= y < y1) of ``rows`` x
    ``cols`` tiles covering a width x height frame, row by row from the top left.

    Along each side a tile is w = width / (cols - (cols - 1) * overlap) px wide and the next starts w * (1 -
    overlap) px further, so neighbours share ``overlap`` of a tile (w * overlap px, within 1 px after rounding)
    and the last tile ends exactly at the frame's edge. Each edge is rounded half up to a whole pixel, so tiles
    differ in size by at most 1 px. Needs width >= cols, height >= rows (every tile at least 1 px) and
    0 <= overlap < 1; ValueError otherwise."""
    if rows < 1 or cols < 1 or not 0.0 <= overlap < 1.0 or width < cols or height < rows:
        raise ValueError(f"cannot cut {rows}x{cols} tiles with overlap {overlap} from a {width}x{height} frame")
    xs, ys = _spans(width, cols, overlap), _spans(height, rows, overlap)
    return [(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]


@dataclass(frozen=True)
class Views:
    """The views scored per frame: ``flip`` mirrors each view too; ``tiles`` (rows, cols) adds that many tiles
    (None: the whole frame only); ``overlap`` the fraction of a tile shared with each neighbour."""

    flip: bool = False
    tiles: tuple[int, int] | None = None
    overlap: float = 0.25

    @property
    def crops(self) -> int:
        """Images preprocessed per frame: the whole frame and its tiles."""
        return 1 + (self.tiles[0] * self.tiles[1] if self.tiles else 0)

    @property
    def images(self) -> int:
        """Images the model scores per frame: every crop, twice with flip."""
        return self.crops * (2 if self.flip else 1)

    def key_suffix(self) -> str:
        """What the views add to a model key: '' (plain), '+flip', '+tiles2x2o0.25' or '+flip+tiles2x2o0.25'."""
        tiles = f"+tiles{self.tiles[0]}x{self.tiles[1]}o{self.overlap:g}" if self.tiles else ""
        return ("+flip" if self.flip else "") + tiles

    def tile_source_size(self, img_size: int) -> tuple[int, int]:
        """(width, height) px to decode a frame at for tiles of img_size px: img_size * (C - (C - 1) * overlap)
        wide, img_size * (R - (R - 1) * overlap) high, rounded up."""
        rows, cols = self.tiles
        return (math.ceil(img_size * (cols - (cols - 1) * self.overlap) - 1e-9),
                math.ceil(img_size * (rows - (rows - 1) * self.overlap) - 1e-9))

    def frame_tensors(self, whole: np.ndarray, source: np.ndarray | None, resize: Resize) -> torch.Tensor:
        """(n, crops, 3, S, S), S = resize.img_size: crop 0 the whole frames uint8 (n, h, w, 3) RGB, then the tiles
        (tile_boxes order) of the same frames decoded larger, uint8 (n, H, W, 3) (None without tiles), each through
        ``resize.pixels``: uint8 when no crop needed resizing (the decoder scaled them), else float32 in [0, 1]
        (``as_unit`` then the model's Preprocessing.normalise make them its input)."""
        crops = [resize.pixels(whole)]
        if self.tiles:
            height, width = source.shape[1:3]
            crops += [resize.pixels(source[:, y0:y1, x0:x1])
                      for x0, y0, x1, y1 in tile_boxes(width, height, *self.tiles, self.overlap)]
        if len({crop.dtype for crop in crops}) > 1:
            crops = [as_unit(crop) for crop in crops]
        return torch.stack(crops, dim=1) if len(crops) > 1 else crops[0].unsqueeze(1)

    def with_mirrors(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> the model's input: the images, then with flip the same images mirrored, (2N, 3, S, S)."""
        return torch.cat([images, torch.flip(images, dims=[-1])]) if self.flip else images

    def frame_scores(self, probs: torch.Tensor, frames: int) -> torch.Tensor:
        """Sigmoids (frames * images, C) of with_mirrors' output for `frames` frames of `crops` crops each ->
        the frames' scores (frames, C): mean of a crop and its mirror, then max over the crops."""
        per_crop = probs.view(2 if self.flip else 1, frames, self.crops, probs.shape[-1]).mean(dim=0)
        return per_crop.amax(dim=1)
