"""The drawing surface of synthetic scenes: a float RGB canvas held at a fraction of the picture's resolution,
with optional per-feature coverage masks, and the anti-aliased shapes that features are drawn with."""

from __future__ import annotations

import numpy as np
from PIL import Image

COVER_STEP = 4  # clip coverage masks: one cell per 4x4 output pixels


class Canvas:
    """A float32 RGB scene in 0..255 for a picture of height x width pixels, held at `scale` x that resolution.

    Every geometry argument (boxes, sizes, widths, noise cells) is in picture pixels; arrays made by
    coords/noise/grain have the canvas shape ``shape(h, w)``. Optionally records per-feature coverage on a
    grid of COVER_STEP picture pixels (cell (r, c) = picture pixel (COVER_STEP*r, COVER_STEP*c))."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, track_cover: bool, scale: float = 1.0):
        self.rng = rng
        self.scale = scale
        self.picture_height, self.picture_width = height, width
        self.height, self.width = self.shape(height, width)
        self.rgb = np.zeros((self.height, self.width, 3), dtype=np.float32)
        self.cover_step = max(1, int(round(COVER_STEP * scale)))  # canvas pixels per cover cell
        self.cover_shape = (self.height // self.cover_step + 1, self.width // self.cover_step + 1)
        self.cover: dict[int, np.ndarray] | None = {} if track_cover else None

    def shape(self, h: float, w: float) -> tuple[int, int]:
        """Canvas array shape of an (h, w) picture-pixel box."""
        return max(1, int(round(h * self.scale))), max(1, int(round(w * self.scale)))

    def coords(self, h: float, w: float, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Rotated picture-pixel coordinates (u along `angle`, v across) over an (h, w) box, origin (cx, cy)."""
        ch, cw = self.shape(h, w)
        y, x = np.ogrid[0:ch, 0:cw]
        x = x.astype(np.float32) / np.float32(self.scale) - np.float32(cx)
        y = y.astype(np.float32) / np.float32(self.scale) - np.float32(cy)
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        return x * c + y * s, y * c - x * s

    def noise(self, h: float, w: float, cell: float) -> np.ndarray:
        """Smooth value noise in [0, 1] over an (h, w) box with features about `cell` picture pixels wide."""
        ch, cw = self.shape(h, w)
        small = self.rng.random((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)), dtype=np.float32)
        return np.asarray(Image.fromarray(small).resize((cw, ch), Image.BILINEAR))

    def grain(self, h: float, w: float) -> np.ndarray:
        """Per-pixel standard normal noise over an (h, w) box."""
        return self.rng.standard_normal(self.shape(h, w), dtype=np.float32)

    def colour(self, rgb: tuple[int, int, int], jitter: float = 12.0) -> np.ndarray:
        """rgb (3,) float32 with each channel moved uniformly within +-jitter."""
        return np.asarray(rgb, np.float32) + self.rng.uniform(-jitter, jitter, 3).astype(np.float32)

    def paint(self, x0: float, y0: float, alpha: np.ndarray, colour, feature: int | None = None) -> None:
        """Blend colour ((3,) or canvas-shaped (h, w, 3)) with alpha (canvas-shaped (h, w), values in [0, 1])
        placed with its top-left corner at picture pixel (x0, y0); the box may overhang the picture."""
        x0, y0 = int(round(x0 * self.scale)), int(round(y0 * self.scale))
        h, w = alpha.shape
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, self.width), min(y0 + h, self.height)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        oy, ox = cy0 - y0, cx0 - x0
        a = alpha[oy: oy + cy1 - cy0, ox: ox + cx1 - cx0]
        if a.size > 4096:  # skip empty margins (long thin shapes in a large box)
            rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
            if rows.size == 0:
                return
            a = a[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
            oy, ox, cy0, cx0 = oy + rows[0], ox + cols[0], cy0 + rows[0], cx0 + cols[0]
            cy1, cx1 = cy0 + a.shape[0], cx0 + a.shape[1]
        colour = np.asarray(colour, dtype=np.float32)
        if colour.ndim == 3:
            colour = colour[oy: oy + a.shape[0], ox: ox + a.shape[1]]
        target = self.rgb[cy0:cy1, cx0:cx1]
        target += (colour - target) * a[..., None]
        if feature is not None and self.cover is not None:
            step = self.cover_step
            gy, gx = -(-cy0 // step) * step, -(-cx0 // step) * step
            self.mark(feature, gy // step, gx // step, a[gy - cy0:: step, gx - cx0:: step] > 0.5)

    def mark(self, feature: int, row: int, col: int, hits: np.ndarray) -> None:
        """OR a boolean block of cover cells into the feature's coverage at cover cell (row, col)."""
        mask = self.cover.setdefault(feature, np.zeros(self.cover_shape, bool))
        hits = hits[: mask.shape[0] - row, : mask.shape[1] - col]
        mask[row: row + hits.shape[0], col: col + hits.shape[1]] |= hits

    def picture(self) -> np.ndarray:
        """The scene as uint8 (picture_height, picture_width, 3), upsampled from the canvas when scale < 1."""
        pixels = np.clip(self.rgb, 0, 255).astype(np.uint8)
        if (self.height, self.width) == (self.picture_height, self.picture_width):
            return pixels
        size = (self.picture_width, self.picture_height)
        return np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))


def inside(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased alpha from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def rect(u: np.ndarray, v: np.ndarray, half_len: float, half_wid: float) -> np.ndarray:
    """Anti-aliased alpha of the rectangle |u| <= half_len, |v| <= half_wid (pixels)."""
    return inside(np.maximum(np.abs(u) - half_len, np.abs(v) - half_wid))


def ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Anti-aliased alpha of the ellipse with semi-axes a along u and b along v (pixels)."""
    return inside((np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b))


def blob(cv: Canvas, h: int, w: int, wobble: float = 0.35) -> np.ndarray:
    """An irregular filled blob alpha (h, w) inscribed in the box."""
    u, v = cv.coords(h, w, w / 2, h / 2, 0.0)
    radius = np.sqrt((u / (w / 2)) ** 2 + (v / (h / 2)) ** 2)
    return inside((radius + wobble * (cv.noise(h, w, max(h, w) / 4) - 0.5) - 0.85) * min(h, w) / 2)


def texture(base: np.ndarray, *layers: tuple[np.ndarray, float | tuple]) -> np.ndarray:
    """base (3,) + sum of field (h, w) x amplitude (scalar or per-channel) -> (h, w, 3)."""
    out = None
    for field, amplitude in layers:
        term = field[..., None] * np.asarray(amplitude, np.float32)
        out = term if out is None else out + term
    return base + out
