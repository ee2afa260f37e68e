"""Outlier pictures (paper Fig. 5): frames that show no feature at all (plain sky, a heavily blurred bare
texture, a near-black frame with sensor noise, a lens flare), which the crowd still labels as if they did."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from dsdi.synth.canvas import Canvas, ellipse
from dsdi.synth.looks import draw_regions
from dsdi.synth.scenes import RENDER_SCALE

OUTLIER_KINDS = ("sky", "blur", "black", "flare")


def _bare_ground(cv: Canvas) -> None:
    """Fill the canvas with bare pavement cells (the background of normal scenes, no environment class)."""
    n = int(cv.rng.integers(2, 5))
    draw_regions(cv, [-1] * n, cv.rng.uniform(0, cv.picture_width, n), cv.rng.uniform(0, cv.picture_height, n))


def _sky(cv: Canvas) -> np.ndarray:
    """A blue-grey gradient, darker at the top, with soft clouds."""
    h, w = cv.picture_height, cv.picture_width
    _, y = cv.coords(h, w, 0, 0, 0.0)
    top, horizon = cv.colour((100, 130, 175), 10), cv.colour((180, 192, 208), 8)
    cv.rgb[:] = top + (horizon - top) * np.clip(y / h, 0, 1)[..., None] ** 0.8
    puffs = 0.6 * cv.noise(h, w, w / 3) + 0.4 * cv.noise(h, w, w / 8)
    clouds = np.clip((puffs - 0.45) * 2.0, 0, 1) * (0.6 + 0.4 * cv.noise(h, w, w / 16))
    cv.paint(0, 0, clouds * cv.rng.uniform(0.5, 0.9), cv.colour((238, 240, 244), 4))
    return cv.picture()


def _blur(cv: Canvas) -> np.ndarray:
    """Bare ground so far out of focus that only soft tone changes remain."""
    _bare_ground(cv)
    radius = cv.rng.uniform(0.03, 0.06) * cv.picture_width
    return np.asarray(Image.fromarray(cv.picture()).filter(ImageFilter.GaussianBlur(radius)))


def _black(cv: Canvas) -> np.ndarray:
    """A near-black frame: a dark level with a slight tint and per-pixel, per-channel sensor noise."""
    h, w = cv.picture_height, cv.picture_width
    level = cv.rng.uniform(2, 18) + cv.rng.uniform(-2, 2, 3)
    noise = cv.rng.standard_normal((h, w, 3)) * cv.rng.uniform(2, 5)
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def _flare(cv: Canvas) -> np.ndarray:
    """A lens flare: a bright disc with a halo, streaks and faint ghosts on a washed-out background."""
    h, w = cv.picture_height, cv.picture_width
    _bare_ground(cv)
    cv.rgb += (cv.colour((238, 238, 236), 6) - cv.rgb) * cv.rng.uniform(0.6, 0.85)
    cx, cy = cv.rng.uniform(0.15, 0.85) * w, cv.rng.uniform(0.15, 0.85) * h
    u, v = cv.coords(h, w, cx, cy, 0.0)
    size = min(w, h)
    halo = np.exp(-(u**2 + v**2) / (0.35 * size) ** 2)
    cv.paint(0, 0, halo, (255, 246, 228))
    for angle in cv.rng.uniform(0, np.pi, int(cv.rng.integers(3, 7))):
        along, across = cv.coords(h, w, cx, cy, angle)
        cv.paint(0, 0, np.exp(-np.abs(across) / 1.5 - np.abs(along) / (0.6 * w)), (255, 250, 238))
    for t in cv.rng.uniform(0.4, 1.6, int(cv.rng.integers(2, 5))):  # ghosts on the line through the centre
        gx, gy = cx + t * (w / 2 - cx) * 2, cy + t * (h / 2 - cy) * 2
        r = cv.rng.uniform(0.03, 0.08) * size
        gu, gv = cv.coords(h, w, gx, gy, 0.0)
        cv.paint(0, 0, ellipse(gu, gv, r, r) * cv.rng.uniform(0.1, 0.25), cv.colour((215, 225, 250), 10))
    cv.paint(0, 0, ellipse(u, v, 0.06 * size, 0.06 * size), (255, 255, 250))
    return cv.picture()


_RENDER = {"sky": _sky, "blur": _blur, "black": _black, "flare": _flare}


def render_outlier(kind: str, rng: np.random.Generator, width: int = 640, height: int = 480,
                   render_scale: float = RENDER_SCALE) -> np.ndarray:
    """A uint8 (height, width, 3) picture of one of OUTLIER_KINDS, showing no feature."""
    return _RENDER[kind](Canvas(rng, height, width, track_cover=False, scale=render_scale))
