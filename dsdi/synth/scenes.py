"""Scenes: a still aerial image showing given features, and a clip's scene (a camera panning over a large
drawn scene) with the frames in which each feature is visible."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdi.labels import schema
from dsdi.synth.canvas import COVER_STEP, Canvas
from dsdi.synth.looks import FEATURE_LOOKS, Look, LookSet, draw_objects, draw_regions

CLIP_FPS = 30
MIN_VISIBLE_PX = 600
RENDER_SCALE = 0.5  # scenes are drawn at half the output resolution, then upsampled (4x less work)
_CLIP_LINE_BOX = (300, 800, 250, 500)  # w_min, w_max, h_min, h_max of a line feature's box in a clip scene


def _scaled_box(rng: np.random.Generator, size: tuple[float, float, float, float], scale: float) -> tuple[int, int]:
    """(w, h) pixels: uniform in size = (w_min, w_max, h_min, h_max) reference pixels, times scale, >= 8."""
    w, h = rng.uniform(size[0], size[1]), rng.uniform(size[2], size[3])
    return max(8, int(w * scale)), max(8, int(h * scale))


def _regions(elements: list[int], looks: LookSet) -> list[int]:
    """The elements drawn as Voronoi cells (environment classes) among element ids."""
    return [j for j in elements if looks.looks[j].kind == "region"]


def render_image(labels: np.ndarray, rng: np.random.Generator, width: int = 640, height: int = 480,
                 render_scale: float = RENDER_SCALE) -> np.ndarray:
    """A uint8 (height, width, 3) aerial-looking scene showing exactly the features set in labels (37,),
    drawn at render_scale x the output resolution and upsampled."""
    return render_still(list(np.flatnonzero(labels[: schema.NUM_FEATURES])), rng, width, height, render_scale)


def render_still(elements: list[int], rng: np.random.Generator, width: int = 640, height: int = 480,
                 render_scale: float = RENDER_SCALE, looks: LookSet = FEATURE_LOOKS) -> np.ndarray:
    """A uint8 (height, width, 3) scene showing exactly the given elements (ids into looks), drawn at
    render_scale x the output resolution and upsampled; object boxes scale with min(width / 640, height / 480)."""
    return _draw_still(elements, rng, width, height, render_scale, looks, track_cover=False).picture()


def render_still_with_cover(elements: list[int], rng: np.random.Generator, width: int = 640, height: int = 480,
                            render_scale: float = RENDER_SCALE,
                            looks: LookSet = FEATURE_LOOKS) -> tuple[np.ndarray, np.ndarray]:
    """render_still's picture (the same pixels for the same rng state) and cover: float64 (len(looks.looks),)
    the fraction of the picture each element's drawn pixels cover (alpha > 0.5 on the canvas's cover grid of
    COVER_STEP picture pixels; later layers drawn over an element do not lower its cover)."""
    cv = _draw_still(elements, rng, width, height, render_scale, looks, track_cover=True)
    rows, cols = -(-cv.height // cv.cover_step), -(-cv.width // cv.cover_step)  # cover cells on the canvas
    cover = np.zeros(len(looks.looks))
    for element, mask in (cv.cover or {}).items():
        cover[element] = mask[:rows, :cols].sum() / (rows * cols)
    return cv.picture(), cover


def _draw_still(elements: list[int], rng: np.random.Generator, width: int, height: int, render_scale: float,
                looks: LookSet, track_cover: bool) -> Canvas:
    """The canvas of render_still's scene; track_cover records each element's cover (it draws nothing from rng)."""
    cv = Canvas(rng, height, width, track_cover=track_cover, scale=render_scale)
    cells = _regions(elements, looks) or [-1]
    cells = cells + [-1] * int(rng.integers(0, 2))
    draw_regions(cv, cells, rng.uniform(0, width, len(cells)), rng.uniform(0, height, len(cells)), looks)
    scale = min(width / 640, height / 480)

    def place(look: Look) -> tuple[int, int, int, int]:
        if look.kind == "line":
            return 0, 0, width, height
        w, h = _scaled_box(rng, look.size, scale)
        x0 = int(rng.integers(-w // 5, max(1, width - w * 4 // 5)))
        return x0, int(rng.integers(-h // 5, max(1, height - h * 4 // 5))), w, h

    draw_objects(cv, elements, place, looks)
    return cv


@dataclass(frozen=True)
class ClipScene:
    """A rendered clip: frames are crops of `scene` (H, W, 3) uint8 at `offsets` (frames, 2: x, y);
    `visible` (frames, n) bool says which of n features (or drawn elements) each frame shows."""

    scene: np.ndarray
    offsets: np.ndarray
    visible: np.ndarray
    width: int
    height: int


def render_clip(features: np.ndarray, rng: np.random.Generator, duration_s: float,
                width: int = 640, height: int = 360, fps: int = CLIP_FPS,
                render_scale: float = RENDER_SCALE) -> ClipScene:
    """Pan a (width x height) viewport in a straight line over a large scene holding the given features (32,);
    visible is (frames, 32)."""
    return render_pan(list(np.flatnonzero(features)), rng, duration_s, width, height, fps, render_scale)


def render_pan(elements: list[int], rng: np.random.Generator, duration_s: float, width: int = 640,
               height: int = 360, fps: int = CLIP_FPS, render_scale: float = RENDER_SCALE,
               looks: LookSet = FEATURE_LOOKS) -> ClipScene:
    """Pan a (width x height) viewport in a straight line over a large scene holding the given elements (ids
    into looks); visible is (frames, len(looks.looks)).

    Object boxes, pan speed and the visibility threshold scale with min(width / 640, height / 360), as
    render_image's scale with its 640x480 reference, so that an object has the same size relative to the
    frame in clips as in training images of the same reference scale."""
    n_frames = max(1, int(round(duration_s * fps)))
    scale = min(width / 640, height / 360)
    speed = rng.uniform(70, 200) * scale  # pixels per second
    angle = rng.uniform(-0.35, 0.35) + (np.pi if rng.random() < 0.5 else 0.0)
    travel_x, travel_y = speed * duration_s * np.cos(angle), speed * duration_s * np.sin(angle)
    scene_w, scene_h = width + 2 * int(np.ceil(abs(travel_x) / 2)), height + 2 * int(np.ceil(abs(travel_y) / 2))
    start_x, start_y = (scene_w - width if travel_x < 0 else 0), (scene_h - height if travel_y < 0 else 0)
    t = np.arange(n_frames) / max(1, n_frames - 1)
    offsets = 2 * np.round(np.stack([start_x + t * travel_x, start_y + t * travel_y], axis=1) / 2).astype(int)
    offsets = np.clip(offsets, 0, [scene_w - width, scene_h - height]) // 2 * 2  # even: whole 4:2:0 chroma cells

    cv = Canvas(rng, scene_h, scene_w, track_cover=True, scale=render_scale)
    cells = _regions(elements, looks) + [-1] * int(rng.integers(1, 3 + scene_w // 1200))
    draw_regions(cv, cells, rng.uniform(0, scene_w, len(cells)), rng.uniform(0, scene_h, len(cells)), looks)

    def place(look: Look) -> tuple[int, int, int, int]:
        w, h = _scaled_box(rng, _CLIP_LINE_BOX if look.kind == "line" else look.size, scale)
        if rng.random() < 0.25:  # near the end of the pan: on screen only briefly
            end_x, end_y = offsets[-1]
            toward = 1 if travel_x >= 0 else -1
            cx = (end_x + width if toward > 0 else end_x) - toward * rng.uniform(0, 0.6) * speed
            cy = end_y + rng.uniform(0, height)
        else:
            cx, cy = rng.uniform(0, scene_w), rng.uniform(0, scene_h)
        return int(cx - w / 2), int(cy - h / 2), w, h

    draw_objects(cv, elements, place, looks)
    visible = np.zeros((n_frames, len(looks.looks)), bool)
    step = COVER_STEP
    for feature, mask in (cv.cover or {}).items():
        area = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
        area[1:, 1:] = mask.cumsum(0).cumsum(1)
        total = area[-1, -1] * step * step
        if total == 0:
            continue
        gx0, gy0 = -(-offsets[:, 0] // step), -(-offsets[:, 1] // step)
        gx1 = np.minimum(-(-(offsets[:, 0] + width) // step), mask.shape[1])
        gy1 = np.minimum(-(-(offsets[:, 1] + height) // step), mask.shape[0])
        inside = (area[gy1, gx1] - area[gy0, gx1] - area[gy1, gx0] + area[gy0, gx0]) * step * step
        visible[:, feature] = inside >= min(MIN_VISIBLE_PX * scale**2, 0.5 * total)
    return ClipScene(cv.picture(), offsets, visible, width, height)
