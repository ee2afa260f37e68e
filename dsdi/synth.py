"""The embedded synthetic world: LADI-like aerial images, crowd answers, shot clips and their ground truth.

``build_world(out_dir)`` (CLI: ``dsdi synth OUT_DIR``) writes::

    OUT/images/img_000123.jpg            procedurally rendered aerial scenes (default 640x480 JPEG, quality 90)
    OUT/ladi_aggregated_responses_url.tsv LADI format: url, WorkerId, Answer (one row per worker and category)
    OUT/true_labels.csv                  image_id (= the url) + 37 0/1 columns named schema.CLASSES
    OUT/clips/ShotN_MMM.mp4              H.264 (libx264, yuv420p), 30 fps, 640x360, panning over a large scene
    OUT/clips.csv                        shot_id, clip_path, duration_s, frames, fps, width, height
    OUT/clip_truth.csv                   shot_id, feature, fnum, start_s, end_s, frames, sampled
    OUT/qrels.txt                        ``fNum 0 shotId rel`` for every feature x clip

Ground truth
- Images: a feature is in ``true_labels.csv`` when it was drawn. ``<category>: none`` is 1 when no feature of
  that category was drawn. Image ids are LADI-like urls ``https://ladi.s3.amazonaws.com/synth/img_000123.jpg``
  whose basename is the file name.
- Annotations: per image and category, 3-6 simulated workers (``workers_per_category``); each names a drawn
  feature with probability ``1 - miss_rate`` and an absent feature of that category with ``false_rate``; a
  worker who names nothing answers ``['<category>:none']``. Tokens come from ``dsdi/data_files/token_map.csv``.
- Clips: a feature is *visible in a frame* when at least ``min(MIN_VISIBLE_PX * scale**2, 0.5 * its drawn area
  in the scene)`` of its drawn pixels lie inside that frame's viewport (occlusion by later layers is ignored;
  scale = min(width / 640, height / 360)).
  ``clip_truth.csv`` has one row per maximal run of visible frames (30 fps): ``start_s`` = first frame index / fps,
  ``end_s`` = (last frame index + 1) / fps, ``frames`` = frames in the run, ``sampled`` = 1 when the run contains a
  frame the 10 fps sampler decodes (t = 0, 0.1, 0.2 ..., i.e. every third frame). ``qrels.txt`` has rel 1 for a
  feature and shot when any of its runs is sampled, else 0; it lists every feature (fNum order) x shot.

Clips last between the two ``clip_seconds`` bounds (default 3-12 s, skewed short: min + span * u**3), at
30 fps; the camera pans in a straight line at 70-200 px/s (times scale) over a scene drawn for the whole path;
a quarter of the objects are placed near the end of the pan so that they are on screen briefly (often under
a second).
Scenes are drawn at RENDER_SCALE (half) resolution and upsampled; environment classes are textured cells of
a noisy Voronoi partition, the other features are objects drawn in painter's order (water, damage, lines,
buildings, vehicles, smoke on top). Clip frames are piped to ffmpeg as raw YUV 4:2:0 planes (see encode_clip).

Frequencies follow the long tail of paper Table 1: feature j is drawn with probability
``p_top * (n_j / n_max) ** a`` where ``a`` puts the rarest class (lava) at ``p_min``; the order of Table 1 is
kept exactly, and every feature is forced into at least ``min_per_feature`` images. Clips draw features the
same way with a flatter tail, CLIP_FEATURE_PROBABILITY (0.30 .. 0.04, mean 0.16: about 5 features per clip),
each feature in at least CLIP_MIN_PER_FEATURE clips, so that every feature has relevant shots to rank and a
random ranking scores a low mAP (dense qrels would make chance look good). Everything is
deterministic per seed (each image and clip has its own generator ``default_rng([seed, part, index])``).
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
from PIL import Image

from dsdi import schema
from dsdi.errors import InputError
from dsdi.files import atomic_output, write_text_atomic
from dsdi.progress import progress_bar

URL_PREFIX = "https://ladi.s3.amazonaws.com/synth/"
ANNOTATIONS_NAME = "ladi_aggregated_responses_url.tsv"
CLIP_FPS = 30
SAMPLER_FPS = 10
MIN_VISIBLE_PX = 600
COVER_STEP = 4  # clip coverage masks: one cell per 4x4 output pixels
RENDER_SCALE = 0.5  # scenes are drawn at half the output resolution, then upsampled (4x less work)

CLIP_FEATURE_PROBABILITY = (0.30, 0.04)  # (p_top, p_min) of feature_probabilities for clips
CLIP_MIN_PER_FEATURE = 2

_SEED_LABELS, _SEED_IMAGES, _SEED_CLIPS, _SEED_WORKERS = 0, 1, 2, 3


@dataclass(frozen=True)
class World:
    """Paths of a built synthetic world."""

    root: Path
    images_dir: Path
    annotations: Path
    true_labels: Path
    clips_dir: Path
    qrels: Path
    clip_truth: Path
    clips_table: Path


# ---------------------------------------------------------------------------------------------- labels


def feature_probabilities(p_top: float = 0.45, p_min: float = 0.008) -> np.ndarray:
    """Per-feature draw probability (32,): a power law of the Table 1 counts from p_top (most frequent) to p_min."""
    counts = np.asarray(schema.CLASS_COUNTS[: schema.NUM_FEATURES], dtype=np.float64)
    exponent = np.log(p_min / p_top) / np.log(counts.min() / counts.max())
    return p_top * (counts / counts.max()) ** exponent


def with_none_classes(features: np.ndarray) -> np.ndarray:
    """(N, 32) 0/1 features -> (N, 37) labels: '<category>: none' is 1 when no feature of the category is 1."""
    labels = np.zeros((features.shape[0], schema.NUM_CLASSES), dtype=np.uint8)
    labels[:, : schema.NUM_FEATURES] = features
    for none_name in schema.NONE_CLASSES:
        category = schema.category_of(none_name)
        members = [i for i, name in enumerate(schema.FEATURES) if schema.category_of(name) == category]
        labels[:, schema.CLASSES.index(none_name)] = features[:, members].max(axis=1) == 0
    return labels


def sample_labels(n: int, rng: np.random.Generator, probabilities: np.ndarray | None = None,
                  min_per_feature: int = 3) -> np.ndarray:
    """(n, 37) uint8 true labels: independent Bernoulli features, each forced into >= min_per_feature rows."""
    probabilities = feature_probabilities() if probabilities is None else probabilities
    features = (rng.random((n, schema.NUM_FEATURES)) < probabilities).astype(np.uint8)
    for j in range(schema.NUM_FEATURES):
        missing = min(min_per_feature, n) - int(features[:, j].sum())
        if missing > 0:
            candidates = np.flatnonzero(features[:, j] == 0)
            features[rng.choice(candidates, size=missing, replace=False), j] = 1
    return with_none_classes(features)


def _answer_tokens() -> tuple[dict[str, str], dict[str, str]]:
    """(class name -> first LADI token mapped to it, category -> its ':none' token), from token_map.csv."""
    token_of: dict[str, str] = {}
    for token, class_name in schema.shipped_answer_tokens():
        token_of.setdefault(class_name, token)
    none_token = {schema.category_of(name): token_of[name] for name in schema.NONE_CLASSES}
    return token_of, none_token


def simulate_annotations(image_ids: list[str], labels: np.ndarray, rng: np.random.Generator,
                         miss_rate: float = 0.2, false_rate: float = 0.02,
                         workers_per_category: tuple[int, int] = (3, 6), worker_pool: int = 120) -> pd.DataFrame:
    """LADI-format crowd answers (url, WorkerId, Answer): one row per image x category x simulated worker."""
    token_of, none_token = _answer_tokens()
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    workers = ["A" + "".join(rng.choice(alphabet, size=13)) for _ in range(worker_pool)]
    by_category = {c: [j for j, name in enumerate(schema.FEATURES) if schema.category_of(name) == c]
                   for c in schema.CATEGORIES}
    rows = []
    for image_id, truth in zip(image_ids, labels, strict=True):
        for category, members in by_category.items():
            n_workers = int(rng.integers(workers_per_category[0], workers_per_category[1] + 1))
            present = truth[members].astype(bool)
            named = rng.random((n_workers, len(members))) < np.where(present, 1.0 - miss_rate, false_rate)
            for worker, picks in zip(rng.choice(worker_pool, size=n_workers, replace=False), named, strict=True):
                tokens = [token_of[schema.FEATURES[members[k]]] for k in np.flatnonzero(picks)]
                rows.append((image_id, workers[worker], str(tokens or [none_token[category]])))
    return pd.DataFrame(rows, columns=["url", "WorkerId", "Answer"])


# ---------------------------------------------------------------------------------------------- drawing


class _Canvas:
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


def _inside(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased alpha from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _rect(u: np.ndarray, v: np.ndarray, half_len: float, half_wid: float) -> np.ndarray:
    return _inside(np.maximum(np.abs(u) - half_len, np.abs(v) - half_wid))


def _ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    return _inside((np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b))


def _blob(cv: _Canvas, h: int, w: int, wobble: float = 0.35) -> np.ndarray:
    """An irregular filled blob alpha (h, w) inscribed in the box."""
    u, v = cv.coords(h, w, w / 2, h / 2, 0.0)
    radius = np.sqrt((u / (w / 2)) ** 2 + (v / (h / 2)) ** 2)
    return _inside((radius + wobble * (cv.noise(h, w, max(h, w) / 4) - 0.5) - 0.85) * min(h, w) / 2)


def _texture(base: np.ndarray, *layers: tuple[np.ndarray, float | tuple]) -> np.ndarray:
    """base (3,) + sum of field (h, w) x amplitude (scalar or per-channel) -> (h, w, 3)."""
    out = None
    for field, amplitude in layers:
        term = field[..., None] * np.asarray(amplitude, np.float32)
        out = term if out is None else out + term
    return base + out


# Region textures (environment classes and bare ground): colour (h, w, 3) for a box of size (h, w).
def _tex_pavement(cv, h, w):
    grey = np.float32((172, 168, 160)) + np.float32(cv.rng.uniform(-15, 15))
    return _texture(grey, (cv.noise(h, w, 60), 14.0), (cv.grain(h, w), 4.0))


def _tex_dirt(cv, h, w):
    return _texture(cv.colour((150, 112, 78)), (cv.noise(h, w, 40), 40.0), (cv.grain(h, w), 7.0))


def _tex_grass(cv, h, w):
    return _texture(cv.colour((96, 150, 66)), (cv.noise(h, w, 30), (10.0, 30.0, 10.0)), (cv.grain(h, w), (6, 12, 6)))


def _tex_lava(cv, h, w):
    veins = np.clip(1.0 - np.abs(cv.noise(h, w, 22) - 0.5) / 0.05, 0.0, 1.0)
    return _texture(np.array((28, 24, 24), np.float32), (veins, (235.0, 105.0, 10.0)), (cv.grain(h, w), 5.0))


def _tex_rocks(cv, h, w):
    boulders = cv.noise(h, w, 7)
    shade = np.where(boulders > 0.68, -55.0, np.where(boulders < 0.25, 40.0, 0.0)).astype(np.float32)
    return _texture(cv.colour((128, 124, 120), 8), (shade, 1.0), (cv.grain(h, w), 6.0))


def _tex_sand(cv, h, w):
    u, _ = cv.coords(h, w, 0, 0, cv.rng.uniform(0, np.pi))
    ripples = np.sin(u * 0.45 + 6.0 * cv.noise(h, w, 50)).astype(np.float32)
    return _texture(cv.colour((226, 204, 156), 8), (ripples, 9.0), (cv.grain(h, w), 3.0))


def _tex_shrubs(cv, h, w):
    dots = np.clip((cv.noise(h, w, 5) - 0.6) * 8.0, 0.0, 1.0)
    return _texture(cv.colour((150, 128, 92)), (dots, (-70.0, -30.0, -50.0)), (cv.grain(h, w), 5.0))


def _tex_snow(cv, h, w):
    shadows = np.clip((cv.noise(h, w, 50) - 0.6) * 3.0, 0.0, 1.0)
    return _texture(cv.colour((242, 244, 250), 4), (shadows, (-40.0, -30.0, -12.0)), (cv.grain(h, w), 2.0))


def _tex_trees(cv, h, w):
    crowns = cv.noise(h, w, 9)
    return _texture(cv.colour((30, 62, 28), 8), (crowns, (40.0, 70.0, 30.0)), (cv.grain(h, w), 5.0))


# Object features: draw(cv, x0, y0, w, h, f) inside the box at (x0, y0) of size (w, h).
def _draw_damage_misc(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    roof = _rect(u, v, w * 0.35, h * 0.3)
    cv.paint(x0, y0, roof, cv.colour((120, 105, 90)), f)
    tarps = roof * (cv.noise(h, w, 14) > 0.62)
    cv.paint(x0, y0, tarps, cv.colour((30, 95, 205), 10), f)
    holes = roof * (cv.noise(h, w, 6) < 0.2)
    cv.paint(x0, y0, holes, (35, 30, 28), f)


def _draw_flood_damage(cv, x0, y0, w, h, f):
    water = _blob(cv, h, w)
    cv.paint(x0, y0, water, _texture(cv.colour((92, 110, 104)), (cv.noise(h, w, 25), 18.0)), f)
    for _ in range(int(cv.rng.integers(3, 7))):
        cx, cy = cv.rng.uniform(0.25, 0.75) * w, cv.rng.uniform(0.25, 0.75) * h
        u, v = cv.coords(h, w, cx, cy, cv.rng.uniform(0, np.pi))
        cv.paint(x0, y0, _rect(u, v, 12, 8) * water, cv.colour((150, 60, 50), 25), f)
        cv.paint(x0, y0, _inside(np.abs(v) - 0.8) * _rect(u, v, 12, 8) * water, (60, 40, 35), f)


def _draw_landslide(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, 0, np.pi / 2 + cv.rng.uniform(-0.4, 0.4))
    fan = _inside(np.abs(v) - (0.15 + 0.35 * np.clip(u / h, 0, 1)) * w) * _inside(u - h) * _inside(-u)
    streaks = np.sin(v * 0.5 + 3 * cv.noise(h, w, 30)).astype(np.float32)
    cv.paint(x0, y0, fan, _texture(cv.colour((188, 132, 84)), (streaks, 22.0), (cv.grain(h, w), 8.0)), f)


def _draw_washout(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(-0.3, 0.3))
    cv.paint(x0, y0, _rect(u, v, w / 2, h * 0.22), cv.colour((88, 88, 92), 6), f)
    gap = _inside(np.abs(u) - w * 0.12 - 14 * (cv.noise(h, w, 10) - 0.5)) * _rect(u, v, w / 2, h * 0.45)
    cv.paint(x0, y0, gap, _texture(cv.colour((140, 100, 66)), (cv.grain(h, w), 14.0)), f)
    cv.paint(x0, y0, gap * _inside(np.abs(u) - 4), cv.colour((70, 95, 110)), f)


def _draw_rubble(cv, x0, y0, w, h, f):
    speckle = cv.rng.integers(0, 4, size=cv.shape(h, w))
    palette = np.array([(90, 85, 80), (170, 160, 150), (230, 228, 220), (125, 95, 70)], np.float32)
    cv.paint(x0, y0, _blob(cv, h, w, 0.5), palette[speckle] + 10 * cv.grain(h, w)[..., None], f)


def _draw_smoke_fire(cv, x0, y0, w, h, f):
    fx, fy = cv.rng.uniform(0.2, 0.4) * w, cv.rng.uniform(0.4, 0.6) * h
    direction = cv.rng.uniform(-0.4, 0.4)
    u, v = cv.coords(h, w, fx, fy, direction)
    plume = _ellipse(u - w * 0.3, v, w * 0.4, h * 0.22) * (0.45 + 0.4 * cv.noise(h, w, 20))
    cv.paint(x0, y0, plume, _texture(cv.colour((165, 165, 165), 6), (cv.noise(h, w, 15), 30.0)), f)
    flames = _ellipse(u, v, 16, 11) * (0.6 + 0.4 * cv.noise(h, w, 4))
    cv.paint(x0, y0, flames, (245, 90, 20), f)
    cv.paint(x0, y0, _ellipse(u, v, 7, 5), (255, 220, 90), f)


def _draw_bridge(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    cv.paint(x0, y0, _rect(u, v - 8, w * 0.28, 14) * 0.6, (20, 20, 25))  # shadow
    cv.paint(x0, y0, _rect(u, v, w * 0.55, 12), cv.colour((205, 203, 198), 6), f)
    joints = _rect(u, v, w * 0.55, 12) * (np.sin(u * 0.35) > 0.9)
    cv.paint(x0, y0, joints + _rect(u, np.abs(v) - 11, w * 0.55, 1.2), (70, 70, 72), f)


def _draw_building(cv, x0, y0, w, h, f):
    for _ in range(int(cv.rng.integers(1, 4))):
        cx, cy = cv.rng.uniform(0.3, 0.7) * w, cv.rng.uniform(0.3, 0.7) * h
        u, v = cv.coords(h, w, cx, cy, cv.rng.choice([0.0, np.pi / 2]) + cv.rng.uniform(-0.2, 0.2))
        a, b = cv.rng.uniform(0.15, 0.3) * w, cv.rng.uniform(0.15, 0.3) * h
        cv.paint(x0, y0, _rect(u - 5, v - 5, a, b) * 0.55, (25, 25, 25))
        roof = [(150, 55, 45), (75, 75, 80), (190, 185, 175), (60, 110, 115)][int(cv.rng.integers(4))]
        cv.paint(x0, y0, _rect(u, v, a, b), cv.colour(roof, 15), f)
        cv.paint(x0, y0, _rect(u, v, a, 1.0), (40, 35, 35), f)


def _draw_dam(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    half = cv.rng.uniform(12, 18)
    cv.paint(x0, y0, _inside(-(v + half)) * _inside(np.abs(v + half) - 50) * _inside(np.abs(u) - w / 2),
             cv.colour((35, 65, 100)), f)
    cv.paint(x0, y0, _inside(np.abs(v) - half) * _inside(np.abs(u) - w / 2),
             _texture(cv.colour((198, 192, 182), 6), (np.cos(v * 0.6).astype(np.float32), 14.0)), f)


def _draw_pipes(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    for offset in (-9.0, 0.0, 9.0)[: int(cv.rng.integers(2, 4))]:
        across = np.abs(v - offset)
        shade = np.clip(1.0 - across / 3.5, 0, 1)
        cv.paint(x0, y0, _inside(across - 3.5) * _inside(np.abs(u) - w * 0.45),
                 _texture(np.array((110, 112, 118), np.float32), (shade, 120.0)), f)
    cv.paint(x0, y0, _inside(np.abs(v) - 14) * (np.sin(u * 0.2) > 0.97) * _inside(np.abs(u) - w * 0.45),
             (60, 60, 60), f)


def _draw_power_lines(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    for offset in (-7.0, 0.0, 7.0):
        cv.paint(x0, y0, _inside(np.abs(v - offset) - 0.8), (35, 35, 35), f)
    towers = _inside(np.abs(((u + 1000) % 110) - 55) - 5) * _inside(np.abs(v) - 11)
    lattice = towers * (np.abs(np.sin(u * 0.9 + v * 0.9)) > 0.6)
    cv.paint(x0, y0, lattice, (190, 190, 195), f)


def _draw_railway(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    cv.paint(x0, y0, _inside(np.abs(v) - 13), cv.colour((118, 100, 86), 6), f)
    cv.paint(x0, y0, _inside(np.abs(v) - 9) * (np.sin(u * 0.9) > 0.3), (78, 58, 44), f)
    cv.paint(x0, y0, _inside(np.abs(np.abs(v) - 5.5) - 1.0), (45, 42, 40), f)


def _draw_comms_tower(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h * 0.85, -np.pi / 2 + cv.rng.uniform(-0.3, 0.3))
    length = h * 0.75
    mast = _inside(np.abs(v) - 1.6) * _inside(u - length) * _inside(-u)
    cv.paint(x0, y0, _inside(np.abs(v - u * 0.5) - 1.5) * _inside(u - length) * _inside(-u) * 0.5, (20, 20, 20))
    bands = (np.floor(u / 9) % 2 == 0)[..., None]
    cv.paint(x0, y0, mast, np.where(bands, np.float32([225, 40, 35]), np.float32([245, 245, 245])), f)
    for sign in (-1.0, 1.0):
        cv.paint(x0, y0, _inside(np.abs(v - sign * (length - u) * 0.35) - 0.6) * _inside(u - length) * _inside(-u),
                 (215, 215, 215), f)


def _draw_water_tower(cv, x0, y0, w, h, f):
    r = min(w, h) * 0.3
    u, v = cv.coords(h, w, w * 0.45, h * 0.45, 0.0)
    cv.paint(x0, y0, _ellipse(u - r * 0.6, v - r * 0.6, r, r) * 0.55, (20, 20, 25))
    cv.paint(x0, y0, _ellipse(u, v, r, r), cv.colour((222, 228, 232), 6), f)
    cv.paint(x0, y0, _inside(np.abs(np.sqrt(u**2 + v**2) - r * 0.8) - 1.2) + _ellipse(u, v, 3, 3), (95, 110, 125), f)


def _draw_road(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    v = v - 25 * np.sin(u / cv.rng.uniform(150, 400))
    half = cv.rng.uniform(9, 15)
    cv.paint(x0, y0, _inside(np.abs(v) - half), cv.colour((88, 88, 93), 6), f)
    dashes = _inside(np.abs(v) - 1.0) * (np.sin(u * 0.25) > 0)
    cv.paint(x0, y0, dashes, cv.colour((235, 205, 70), 10), f)


def _draw_aircraft(cv, x0, y0, w, h, f):
    cv.paint(x0, y0, np.ones(cv.shape(h, w), np.float32) * 0.8, cv.colour((118, 118, 122), 5))
    s = min(w, h) / 2
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, 2 * np.pi))
    body = _ellipse(u, v, s * 0.9, s * 0.12)
    wings = _inside(np.abs(v) - s * 0.85) * _inside(np.abs(u + 0.5 * np.abs(v)) - s * 0.13)
    tail = _inside(np.abs(v) - s * 0.3) * _inside(np.abs(u + s * 0.75 + 0.3 * np.abs(v)) - s * 0.07)
    cv.paint(x0, y0, np.clip(body + wings + tail, 0, 1), cv.colour((238, 238, 242), 4), f)


def _draw_boat(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w * 0.6, h / 2, cv.rng.uniform(0, 2 * np.pi))
    length = min(w, h) * 0.35
    wake = _inside(np.abs(np.abs(v) - 0.35 * (length - u)) - 1.5) * _inside(u - length * 0.2) * _inside(-u - 3 * length)
    cv.paint(x0, y0, wake * 0.8, (235, 240, 245), f)
    hull = _inside(np.abs(v) - length * 0.3 * np.clip(1.0 - np.maximum(u, 0) / length, 0, 1)) * _inside(
        np.abs(u) - length)
    cv.paint(x0, y0, hull, cv.colour((245, 245, 245), 5), f)
    cv.paint(x0, y0, _rect(u + length * 0.2, v, length * 0.25, length * 0.12), (60, 70, 90), f)


def _draw_vehicles(cv, x0, y0, w, h, f, count: tuple[int, int], size: tuple[float, float], palette):
    angle = cv.rng.uniform(0, np.pi)
    for _ in range(int(cv.rng.integers(*count))):
        u, v = cv.coords(h, w, cv.rng.uniform(0.15, 0.85) * w, cv.rng.uniform(0.15, 0.85) * h, angle)
        cv.paint(x0, y0, _rect(u - 2, v - 2, size[0], size[1]) * 0.5, (20, 20, 20))
        cv.paint(x0, y0, _rect(u, v, size[0], size[1]), cv.colour(palette[int(cv.rng.integers(len(palette)))], 8), f)
        cv.paint(x0, y0, _rect(u - size[0] * 0.55, v, size[0] * 0.2, size[1] * 0.8), (30, 35, 45), f)


def _draw_car(cv, x0, y0, w, h, f):
    palette = [(220, 30, 30), (30, 70, 210), (245, 245, 245), (240, 210, 30), (25, 25, 25)]
    _draw_vehicles(cv, x0, y0, w, h, f, (3, 8), (7.0, 3.5), palette)


def _draw_truck(cv, x0, y0, w, h, f):
    _draw_vehicles(cv, x0, y0, w, h, f, (1, 4), (17.0, 5.5), [(235, 235, 230), (200, 200, 195), (210, 120, 30)])


def _draw_flooding(cv, x0, y0, w, h, f):
    sheen = np.clip((cv.noise(h, w, 60) - 0.55) * 3, 0, 1)
    cv.paint(x0, y0, _blob(cv, h, w, 0.5),
             _texture(cv.colour((140, 112, 74)), (sheen, 35.0)), f)


def _draw_lake(cv, x0, y0, w, h, f):
    lake = _blob(cv, h, w)
    cv.paint(x0, y0, np.clip(_blob(cv, h, w) * 1.0, 0, 1) * 0.7, cv.colour((70, 105, 60)))
    cv.paint(x0, y0, lake, _texture(cv.colour((28, 66, 112), 8), (cv.noise(h, w, 40), 14.0)), f)


def _draw_ocean(cv, x0, y0, w, h, f):
    _, v = cv.coords(h, w, 0, 0, cv.rng.uniform(-0.3, 0.3))
    crests = np.clip((np.sin(v * 0.5 + 5 * cv.noise(h, w, 40)) - 0.85) * 8, 0, 1)
    cv.paint(x0, y0, _blob(cv, h, w, 0.25), _texture(cv.colour((18, 58, 122), 6), (crests, 200.0)), f)


def _draw_puddles(cv, x0, y0, w, h, f):
    for _ in range(int(cv.rng.integers(3, 7))):
        pw, ph = max(2, int(w * cv.rng.uniform(0.1, 0.25))), max(2, int(h * cv.rng.uniform(0.1, 0.25)))
        px, py = x0 + cv.rng.uniform(0, w - pw), y0 + cv.rng.uniform(0, h - ph)
        cv.paint(px, py, _blob(cv, ph, pw), _texture(cv.colour((78, 92, 112), 6), (cv.noise(ph, pw, 8), 60.0)), f)


def _draw_river(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    v = v - cv.rng.uniform(20, 50) * np.sin(u / cv.rng.uniform(40, 90) + cv.rng.uniform(0, 6))
    half = cv.rng.uniform(10, 22)
    cv.paint(x0, y0, _inside(np.abs(v) - half - 3), cv.colour((110, 100, 80)), f)
    cv.paint(x0, y0, _inside(np.abs(v) - half), _texture(cv.colour((48, 96, 122), 8), (cv.noise(h, w, 25), 16.0)), f)


@dataclass(frozen=True)
class _Look:
    """How a feature is drawn: a region texture (Voronoi cell) or an object in a box; box sizes in pixels."""

    kind: str  # 'region' | 'object' | 'line' (a line crosses the whole image / a long box in clips)
    draw: Callable
    size: tuple[int, int, int, int] = (0, 0, 0, 0)  # w_min, w_max, h_min, h_max


_LOOKS: dict[str, _Look] = {
    "dirt": _Look("region", _tex_dirt), "grass": _Look("region", _tex_grass), "lava": _Look("region", _tex_lava),
    "rocks": _Look("region", _tex_rocks), "sand": _Look("region", _tex_sand), "shrubs": _Look("region", _tex_shrubs),
    "snow/ice": _Look("region", _tex_snow), "trees": _Look("region", _tex_trees),
    "ocean": _Look("object", _draw_ocean, (260, 420, 180, 280)),
    "flooding": _Look("object", _draw_flooding, (220, 380, 160, 260)),
    "lake / pond": _Look("object", _draw_lake, (110, 220, 90, 170)),
    "river / stream": _Look("line", _draw_river),
    "puddle": _Look("object", _draw_puddles, (120, 200, 90, 150)),
    "flooding / water damage": _Look("object", _draw_flood_damage, (180, 300, 130, 220)),
    "landslide": _Look("object", _draw_landslide, (130, 220, 130, 220)),
    "road": _Look("line", _draw_road),
    "railway": _Look("line", _draw_railway),
    "dam / levee": _Look("line", _draw_dam),
    "pipes": _Look("line", _draw_pipes),
    "bridge": _Look("object", _draw_bridge, (140, 220, 140, 220)),
    "building": _Look("object", _draw_building, (90, 160, 80, 140)),
    "water tower": _Look("object", _draw_water_tower, (70, 110, 70, 110)),
    "wireless / radio communication towers": _Look("object", _draw_comms_tower, (60, 100, 110, 170)),
    "damage (misc)": _Look("object", _draw_damage_misc, (110, 180, 90, 150)),
    "rubble / debris": _Look("object", _draw_rubble, (90, 170, 80, 140)),
    "road washout": _Look("object", _draw_washout, (160, 240, 70, 110)),
    "aircraft": _Look("object", _draw_aircraft, (90, 130, 90, 130)),
    "boat": _Look("object", _draw_boat, (80, 120, 80, 120)),
    "car": _Look("object", _draw_car, (90, 140, 60, 100)),
    "truck": _Look("object", _draw_truck, (100, 160, 70, 110)),
    "smoke / fire": _Look("object", _draw_smoke_fire, (150, 250, 110, 170)),
    "utility or power lines / electric towers": _Look("line", _draw_power_lines),
}
assert set(_LOOKS) == set(schema.FEATURES)
_DRAW_ORDER = [name for name in _LOOKS if _LOOKS[name].kind != "region"]  # painter's order, regions first


def _draw_regions(cv: _Canvas, features: list[int], seeds_x: np.ndarray, seeds_y: np.ndarray) -> None:
    """Fill the canvas with a noisy Voronoi partition, one cell per seed (picture pixels); cell k gets
    features[k]'s texture (-1 = bare pavement, no environment class)."""
    x, y = cv.coords(cv.picture_height, cv.picture_width, 0, 0, 0.0)
    warp_x, warp_y = (90 * (cv.noise(cv.picture_height, cv.picture_width, 240) - 0.5) for _ in range(2))
    x, y = x + warp_x, y + warp_y
    distances = [(x - sx) ** 2 + (y - sy) ** 2 for sx, sy in zip(seeds_x, seeds_y, strict=True)]
    owner = np.argmin(np.stack(distances), axis=0)
    for k, feature in enumerate(features):
        cell = owner == k
        rows, cols = np.flatnonzero(cell.any(axis=1)), np.flatnonzero(cell.any(axis=0))
        if rows.size == 0:
            continue
        ry0, ry1, rx0, rx1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        texture = _tex_pavement if feature < 0 else _LOOKS[schema.FEATURES[feature]].draw
        colour = texture(cv, (ry1 - ry0) / cv.scale, (rx1 - rx0) / cv.scale)
        np.copyto(cv.rgb[ry0:ry1, rx0:rx1], colour, where=cell[ry0:ry1, rx0:rx1, None])
        if feature >= 0 and cv.cover is not None:
            cv.mark(feature, 0, 0, cell[:: cv.cover_step, :: cv.cover_step])


def _draw_objects(cv: _Canvas, features: list[int], place: Callable[[_Look], tuple[int, int, int, int]]) -> None:
    """Draw the non-region features in painter's order; place(look) -> box (x0, y0, w, h)."""
    for name in _DRAW_ORDER:
        feature = schema.FEATURES.index(name)
        if feature in features:
            look = _LOOKS[name]
            look.draw(cv, *place(look), feature)


_CLIP_LINE_BOX = (300, 800, 250, 500)  # w_min, w_max, h_min, h_max of a line feature's box in a clip scene


def _scaled_box(rng: np.random.Generator, size: tuple[float, float, float, float], scale: float) -> tuple[int, int]:
    """(w, h) pixels: uniform in size = (w_min, w_max, h_min, h_max) reference pixels, times scale, >= 8."""
    w, h = rng.uniform(size[0], size[1]), rng.uniform(size[2], size[3])
    return max(8, int(w * scale)), max(8, int(h * scale))


def _region_features(features: list[int]) -> list[int]:
    return [j for j in features if _LOOKS[schema.FEATURES[j]].kind == "region"]


def render_image(labels: np.ndarray, rng: np.random.Generator, width: int = 640, height: int = 480,
                 render_scale: float = RENDER_SCALE) -> np.ndarray:
    """A uint8 (height, width, 3) aerial-looking scene showing exactly the features set in labels (37,),
    drawn at render_scale x the output resolution and upsampled."""
    cv = _Canvas(rng, height, width, track_cover=False, scale=render_scale)
    features = list(np.flatnonzero(labels[: schema.NUM_FEATURES]))
    cells = _region_features(features) or [-1]
    cells = cells + [-1] * int(rng.integers(0, 2))
    _draw_regions(cv, cells, rng.uniform(0, width, len(cells)), rng.uniform(0, height, len(cells)))
    scale = min(width / 640, height / 480)

    def place(look: _Look) -> tuple[int, int, int, int]:
        if look.kind == "line":
            return 0, 0, width, height
        w, h = _scaled_box(rng, look.size, scale)
        x0 = int(rng.integers(-w // 5, max(1, width - w * 4 // 5)))
        return x0, int(rng.integers(-h // 5, max(1, height - h * 4 // 5))), w, h

    _draw_objects(cv, features, place)
    return cv.picture()


# ---------------------------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipScene:
    """A rendered clip: frames are crops of `scene` (H, W, 3) uint8 at `offsets` (frames, 2: x, y);
    `visible` (frames, 32) bool says which features each frame shows."""

    scene: np.ndarray
    offsets: np.ndarray
    visible: np.ndarray
    width: int
    height: int


def render_clip(features: np.ndarray, rng: np.random.Generator, duration_s: float,
                width: int = 640, height: int = 360, fps: int = CLIP_FPS,
                render_scale: float = RENDER_SCALE) -> ClipScene:
    """Pan a (width x height) viewport in a straight line over a large scene holding the given features (32,).

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

    cv = _Canvas(rng, scene_h, scene_w, track_cover=True, scale=render_scale)
    present = list(np.flatnonzero(features))
    cells = _region_features(present) + [-1] * int(rng.integers(1, 3 + scene_w // 1200))
    _draw_regions(cv, cells, rng.uniform(0, scene_w, len(cells)), rng.uniform(0, scene_h, len(cells)))

    def place(look: _Look) -> tuple[int, int, int, int]:
        w, h = _scaled_box(rng, _CLIP_LINE_BOX if look.kind == "line" else look.size, scale)
        if rng.random() < 0.25:  # near the end of the pan: on screen only briefly
            end_x, end_y = offsets[-1]
            toward = 1 if travel_x >= 0 else -1
            cx = (end_x + width if toward > 0 else end_x) - toward * rng.uniform(0, 0.6) * speed
            cy = end_y + rng.uniform(0, height)
        else:
            cx, cy = rng.uniform(0, scene_w), rng.uniform(0, scene_h)
        return int(cx - w / 2), int(cy - h / 2), w, h

    _draw_objects(cv, present, place)
    visible = np.zeros((n_frames, schema.NUM_FEATURES), bool)
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


def encode_clip(clip: ClipScene, path: Path, fps: int = CLIP_FPS, ffmpeg: str | None = None) -> None:
    """Write the clip's frames as H.264 MP4 (libx264, yuv420p, 30 fps) with the ffmpeg binary; atomic.

    The scene is converted to YUV 4:2:0 once (BT.601 limited range, as ffmpeg's own RGB input path does)
    and each frame's planes are piped raw: this halves the encoder's work compared with piping RGB.
    x264 runs on one thread so that the bytes depend only on the seed, not on the machine's cores."""
    path = Path(path)
    luma, blue, red = _yuv420_planes(clip.scene)
    cw, ch = clip.width // 2, clip.height // 2
    with atomic_output(path) as tmp:
        command = [ffmpeg or imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
                   "-pix_fmt", "yuv420p", "-s", f"{clip.width}x{clip.height}", "-r", str(fps), "-i", "-",
                   "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-threads", "1", "-pix_fmt", "yuv420p",
                   "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for x, y in clip.offsets:
                process.stdin.write(luma[y: y + clip.height, x: x + clip.width].tobytes())
                process.stdin.write(blue[y // 2: y // 2 + ch, x // 2: x // 2 + cw].tobytes())
                process.stdin.write(red[y // 2: y // 2 + ch, x // 2: x // 2 + cw].tobytes())
        finally:
            process.stdin.close()
            error = process.stderr.read().decode(errors="replace")
            process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {error.strip()}")


def _yuv420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3), H and W even -> BT.601 limited-range planes Y (H, W), Cb and Cr (H/2, W/2), uint8."""
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    luma = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    blue = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    red = 128 + 0.439 * r - 0.368 * g - 0.071 * b

    def to_uint8(plane: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(plane), 0, 255).astype(np.uint8)

    def quarter(plane: np.ndarray) -> np.ndarray:
        return (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) / 4

    return to_uint8(luma), to_uint8(quarter(blue)), to_uint8(quarter(red))


def visible_runs(visible: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a (frames,) bool array as (first, last + 1) frame indices."""
    padded = np.concatenate([[False], visible, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


# ---------------------------------------------------------------------------------------------- world


def _write_atomic(path: Path, write: Callable[[io.StringIO], None]) -> None:
    """Atomically write the text that ``write`` puts into a buffer."""
    buffer = io.StringIO()
    write(buffer)
    write_text_atomic(path, buffer.getvalue())


def shot_id(index: int, shots_per_video: int = 10) -> str:
    """Clip index 0.. -> TRECVID-like shot id 'Shot1_001', 'Shot1_002', ... 'Shot2_001' ..."""
    return f"Shot{index // shots_per_video + 1}_{index % shots_per_video + 1:03d}"


def build_world(out_dir: str | Path, n_images: int = 1000, n_clips: int = 60, seed: int = 0, *,
                image_size: tuple[int, int] = (640, 480), clip_size: tuple[int, int] = (640, 360),
                clip_seconds: tuple[float, float] = (3.0, 12.0), miss_rate: float = 0.2,
                false_rate: float = 0.02, workers_per_category: tuple[int, int] = (3, 6),
                min_per_feature: int = 3) -> World:
    """Render the synthetic world into out_dir (layout in the module docstring) and return its paths.
    Sizes are (width, height) in pixels; clip_seconds is the (min, max) clip duration."""
    if n_images < 0 or n_clips < 0:
        raise InputError(f"--images and --clips must be >= 0 (got {n_images} and {n_clips})")
    if not (0.0 <= miss_rate <= 1.0 and 0.0 <= false_rate <= 1.0):
        raise InputError(f"miss and false rates must lie in [0, 1] (got {miss_rate} and {false_rate})")
    if min(image_size) < 32 or min(clip_size) < 32 or any(v % 2 for v in clip_size):
        raise InputError(f"sizes must be >= 32 px and clip sizes even (got {image_size}, {clip_size})")
    if not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise InputError(f"clip durations must satisfy 0 < min <= max (got {clip_seconds})")
    if not 1 <= workers_per_category[0] <= workers_per_category[1]:
        raise InputError(f"workers per category must satisfy 1 <= min <= max (got {workers_per_category})")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory: choose another OUT_DIR")
    world = World(root, root / "images", root / ANNOTATIONS_NAME, root / "true_labels.csv", root / "clips",
                  root / "qrels.txt", root / "clip_truth.csv", root / "clips.csv")
    world.images_dir.mkdir(parents=True, exist_ok=True)
    world.clips_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*world.images_dir.glob("img_*.jpg"), *world.clips_dir.glob("Shot*_*.mp4")]:
        stale.unlink()

    labels = sample_labels(n_images, np.random.default_rng([seed, _SEED_LABELS]), min_per_feature=min_per_feature)
    names = [f"img_{i:06d}.jpg" for i in range(n_images)]
    image_ids = [URL_PREFIX + name for name in names]
    with progress_bar("images") as bar:
        task = bar.add_task("synth images", total=n_images, info="")
        for i, (name, truth) in enumerate(zip(names, labels, strict=True)):
            pixels = render_image(truth, np.random.default_rng([seed, _SEED_IMAGES, i]), *image_size)
            with atomic_output(world.images_dir / name) as tmp:
                Image.fromarray(pixels).save(tmp, format="JPEG", quality=90)
            bar.update(task, advance=1)
    table = pd.DataFrame(labels, columns=list(schema.CLASSES))
    table.insert(0, "image_id", image_ids)
    _write_atomic(world.true_labels, lambda out: table.to_csv(out, index=False))
    answers = simulate_annotations(image_ids, labels, np.random.default_rng([seed, _SEED_WORKERS]), miss_rate,
                                   false_rate, workers_per_category)
    _write_atomic(world.annotations, lambda out: answers.to_csv(out, sep="\t", index=False))

    _build_clips(world, n_clips, seed, clip_size, clip_seconds)
    return world


def _build_clips(world: World, n_clips: int, seed: int, clip_size: tuple[int, int],
                 clip_seconds: tuple[float, float]) -> None:
    """Render, encode and write the truth files of n_clips clips."""
    rng = np.random.default_rng([seed, _SEED_CLIPS])
    clip_features = sample_labels(n_clips, rng, feature_probabilities(*CLIP_FEATURE_PROBABILITY),
                                  min_per_feature=CLIP_MIN_PER_FEATURE)
    durations = clip_seconds[0] + (clip_seconds[1] - clip_seconds[0]) * rng.random(n_clips) ** 3  # mostly short
    fnums = schema.load_feature_numbers()
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    clip_rows, truth_rows, sampled_any = [], [], np.zeros((n_clips, schema.NUM_FEATURES), bool)
    with progress_bar("clips") as bar:
        task = bar.add_task("synth clips", total=n_clips, info="")
        for i in range(n_clips):
            clip = render_clip(clip_features[i, : schema.NUM_FEATURES], np.random.default_rng([seed, _SEED_CLIPS, i]),
                               float(durations[i]), *clip_size)
            shot = shot_id(i)
            path = world.clips_dir / f"{shot}.mp4"
            encode_clip(clip, path, ffmpeg=ffmpeg)
            n_frames = len(clip.offsets)
            clip_rows.append((shot, f"clips/{path.name}", n_frames / CLIP_FPS, n_frames, CLIP_FPS, *clip_size))
            for j, name in enumerate(schema.FEATURES):
                for first, end in visible_runs(clip.visible[:, j]):
                    sampled = bool(-(-first // 3) * 3 < end)  # a multiple of 3 (t = 0, 0.1, ...) in the run
                    sampled_any[i, j] |= sampled
                    truth_rows.append((shot, name, fnums[name], first / CLIP_FPS, end / CLIP_FPS, end - first,
                                       int(sampled)))
            bar.update(task, advance=1)
    pd_kwargs = {"index": False, "float_format": "%.4f"}
    clips_table = pd.DataFrame(clip_rows, columns=["shot_id", "clip_path", "duration_s", "frames", "fps", "width",
                                                   "height"])
    _write_atomic(world.clips_table, lambda out: clips_table.to_csv(out, **pd_kwargs))
    truth = pd.DataFrame(truth_rows, columns=["shot_id", "feature", "fnum", "start_s", "end_s", "frames", "sampled"])
    _write_atomic(world.clip_truth, lambda out: truth.to_csv(out, **pd_kwargs))

    def write_qrels(out: io.StringIO) -> None:
        for name in sorted(schema.FEATURES, key=fnums.get):
            for i in range(n_clips):
                out.write(f"{fnums[name]} 0 {shot_id(i)} {int(sampled_any[i, schema.FEATURES.index(name)])}\n")

    _write_atomic(world.qrels, write_qrels)


__all__ = ["World", "build_world", "feature_probabilities", "sample_labels", "with_none_classes",
           "simulate_annotations", "render_image", "render_clip", "encode_clip", "visible_runs", "shot_id",
           "ClipScene"]
