"""How each of the 32 features looks: region textures (environment classes fill cells of a noisy Voronoi
partition) and objects drawn in a box, in painter's order. Sizes are in picture pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsdi.labels import schema
from dsdi.synth.canvas import Canvas, blob, ellipse, inside, rect, texture


# Region textures (environment classes and bare ground): colour (h, w, 3) for a box of size (h, w).
def _tex_pavement(cv, h, w):
    grey = np.float32((172, 168, 160)) + np.float32(cv.rng.uniform(-15, 15))
    return texture(grey, (cv.noise(h, w, 60), 14.0), (cv.grain(h, w), 4.0))


def _tex_dirt(cv, h, w):
    return texture(cv.colour((150, 112, 78)), (cv.noise(h, w, 40), 40.0), (cv.grain(h, w), 7.0))


def _tex_grass(cv, h, w):
    return texture(cv.colour((96, 150, 66)), (cv.noise(h, w, 30), (10.0, 30.0, 10.0)), (cv.grain(h, w), (6, 12, 6)))


def _tex_lava(cv, h, w):
    veins = np.clip(1.0 - np.abs(cv.noise(h, w, 22) - 0.5) / 0.05, 0.0, 1.0)
    return texture(np.array((28, 24, 24), np.float32), (veins, (235.0, 105.0, 10.0)), (cv.grain(h, w), 5.0))


def _tex_rocks(cv, h, w):
    boulders = cv.noise(h, w, 7)
    shade = np.where(boulders > 0.68, -55.0, np.where(boulders < 0.25, 40.0, 0.0)).astype(np.float32)
    return texture(cv.colour((128, 124, 120), 8), (shade, 1.0), (cv.grain(h, w), 6.0))


def _tex_sand(cv, h, w):
    u, _ = cv.coords(h, w, 0, 0, cv.rng.uniform(0, np.pi))
    ripples = np.sin(u * 0.45 + 6.0 * cv.noise(h, w, 50)).astype(np.float32)
    return texture(cv.colour((226, 204, 156), 8), (ripples, 9.0), (cv.grain(h, w), 3.0))


def _tex_shrubs(cv, h, w):
    dots = np.clip((cv.noise(h, w, 5) - 0.6) * 8.0, 0.0, 1.0)
    return texture(cv.colour((150, 128, 92)), (dots, (-70.0, -30.0, -50.0)), (cv.grain(h, w), 5.0))


def _tex_snow(cv, h, w):
    shadows = np.clip((cv.noise(h, w, 50) - 0.6) * 3.0, 0.0, 1.0)
    return texture(cv.colour((242, 244, 250), 4), (shadows, (-40.0, -30.0, -12.0)), (cv.grain(h, w), 2.0))


def _tex_trees(cv, h, w):
    crowns = cv.noise(h, w, 9)
    return texture(cv.colour((30, 62, 28), 8), (crowns, (40.0, 70.0, 30.0)), (cv.grain(h, w), 5.0))


# Object features: draw(cv, x0, y0, w, h, f) inside the box at (x0, y0) of size (w, h).
def _draw_damage_misc(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    roof = rect(u, v, w * 0.35, h * 0.3)
    cv.paint(x0, y0, roof, cv.colour((120, 105, 90)), f)
    tarps = roof * (cv.noise(h, w, 14) > 0.62)
    cv.paint(x0, y0, tarps, cv.colour((30, 95, 205), 10), f)
    holes = roof * (cv.noise(h, w, 6) < 0.2)
    cv.paint(x0, y0, holes, (35, 30, 28), f)


def _draw_flood_damage(cv, x0, y0, w, h, f):
    water = blob(cv, h, w)
    cv.paint(x0, y0, water, texture(cv.colour((92, 110, 104)), (cv.noise(h, w, 25), 18.0)), f)
    for _ in range(int(cv.rng.integers(3, 7))):
        cx, cy = cv.rng.uniform(0.25, 0.75) * w, cv.rng.uniform(0.25, 0.75) * h
        u, v = cv.coords(h, w, cx, cy, cv.rng.uniform(0, np.pi))
        cv.paint(x0, y0, rect(u, v, 12, 8) * water, cv.colour((150, 60, 50), 25), f)
        cv.paint(x0, y0, inside(np.abs(v) - 0.8) * rect(u, v, 12, 8) * water, (60, 40, 35), f)


def _draw_landslide(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, 0, np.pi / 2 + cv.rng.uniform(-0.4, 0.4))
    fan = inside(np.abs(v) - (0.15 + 0.35 * np.clip(u / h, 0, 1)) * w) * inside(u - h) * inside(-u)
    streaks = np.sin(v * 0.5 + 3 * cv.noise(h, w, 30)).astype(np.float32)
    cv.paint(x0, y0, fan, texture(cv.colour((188, 132, 84)), (streaks, 22.0), (cv.grain(h, w), 8.0)), f)


def _draw_washout(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(-0.3, 0.3))
    cv.paint(x0, y0, rect(u, v, w / 2, h * 0.22), cv.colour((88, 88, 92), 6), f)
    gap = inside(np.abs(u) - w * 0.12 - 14 * (cv.noise(h, w, 10) - 0.5)) * rect(u, v, w / 2, h * 0.45)
    cv.paint(x0, y0, gap, texture(cv.colour((140, 100, 66)), (cv.grain(h, w), 14.0)), f)
    cv.paint(x0, y0, gap * inside(np.abs(u) - 4), cv.colour((70, 95, 110)), f)


def _draw_rubble(cv, x0, y0, w, h, f):
    speckle = cv.rng.integers(0, 4, size=cv.shape(h, w))
    palette = np.array([(90, 85, 80), (170, 160, 150), (230, 228, 220), (125, 95, 70)], np.float32)
    cv.paint(x0, y0, blob(cv, h, w, 0.5), palette[speckle] + 10 * cv.grain(h, w)[..., None], f)


def _draw_smoke_fire(cv, x0, y0, w, h, f):
    fx, fy = cv.rng.uniform(0.2, 0.4) * w, cv.rng.uniform(0.4, 0.6) * h
    direction = cv.rng.uniform(-0.4, 0.4)
    u, v = cv.coords(h, w, fx, fy, direction)
    plume = ellipse(u - w * 0.3, v, w * 0.4, h * 0.22) * (0.45 + 0.4 * cv.noise(h, w, 20))
    cv.paint(x0, y0, plume, texture(cv.colour((165, 165, 165), 6), (cv.noise(h, w, 15), 30.0)), f)
    flames = ellipse(u, v, 16, 11) * (0.6 + 0.4 * cv.noise(h, w, 4))
    cv.paint(x0, y0, flames, (245, 90, 20), f)
    cv.paint(x0, y0, ellipse(u, v, 7, 5), (255, 220, 90), f)


def _draw_bridge(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    cv.paint(x0, y0, rect(u, v - 8, w * 0.28, 14) * 0.6, (20, 20, 25))  # shadow
    cv.paint(x0, y0, rect(u, v, w * 0.55, 12), cv.colour((205, 203, 198), 6), f)
    joints = rect(u, v, w * 0.55, 12) * (np.sin(u * 0.35) > 0.9)
    cv.paint(x0, y0, joints + rect(u, np.abs(v) - 11, w * 0.55, 1.2), (70, 70, 72), f)


def _draw_building(cv, x0, y0, w, h, f, damage: Callable | None = None):
    """1-3 rectangular roofs with shadows and a ridge; damage(cv, x0, y0, w, h, u, v, a, b, f) then marks each
    roof (u, v: the roof's rotated coordinates over the box, a, b: its half sizes in pixels)."""
    for _ in range(int(cv.rng.integers(1, 4))):
        cx, cy = cv.rng.uniform(0.3, 0.7) * w, cv.rng.uniform(0.3, 0.7) * h
        u, v = cv.coords(h, w, cx, cy, cv.rng.choice([0.0, np.pi / 2]) + cv.rng.uniform(-0.2, 0.2))
        a, b = cv.rng.uniform(0.15, 0.3) * w, cv.rng.uniform(0.15, 0.3) * h
        cv.paint(x0, y0, rect(u - 5, v - 5, a, b) * 0.55, (25, 25, 25))
        roof = [(150, 55, 45), (75, 75, 80), (190, 185, 175), (60, 110, 115)][int(cv.rng.integers(4))]
        cv.paint(x0, y0, rect(u, v, a, b), cv.colour(roof, 15), f)
        cv.paint(x0, y0, rect(u, v, a, 1.0), (40, 35, 35), f)
        if damage is not None:
            damage(cv, x0, y0, w, h, u, v, a, b, f)


def _draw_dam(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    half = cv.rng.uniform(12, 18)
    cv.paint(x0, y0, inside(-(v + half)) * inside(np.abs(v + half) - 50) * inside(np.abs(u) - w / 2),
             cv.colour((35, 65, 100)), f)
    cv.paint(x0, y0, inside(np.abs(v) - half) * inside(np.abs(u) - w / 2),
             texture(cv.colour((198, 192, 182), 6), (np.cos(v * 0.6).astype(np.float32), 14.0)), f)


def _draw_pipes(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    for offset in (-9.0, 0.0, 9.0)[: int(cv.rng.integers(2, 4))]:
        across = np.abs(v - offset)
        shade = np.clip(1.0 - across / 3.5, 0, 1)
        cv.paint(x0, y0, inside(across - 3.5) * inside(np.abs(u) - w * 0.45),
                 texture(np.array((110, 112, 118), np.float32), (shade, 120.0)), f)
    cv.paint(x0, y0, inside(np.abs(v) - 14) * (np.sin(u * 0.2) > 0.97) * inside(np.abs(u) - w * 0.45),
             (60, 60, 60), f)


def _draw_power_lines(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    for offset in (-7.0, 0.0, 7.0):
        cv.paint(x0, y0, inside(np.abs(v - offset) - 0.8), (35, 35, 35), f)
    towers = inside(np.abs(((u + 1000) % 110) - 55) - 5) * inside(np.abs(v) - 11)
    lattice = towers * (np.abs(np.sin(u * 0.9 + v * 0.9)) > 0.6)
    cv.paint(x0, y0, lattice, (190, 190, 195), f)


def _draw_railway(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    cv.paint(x0, y0, inside(np.abs(v) - 13), cv.colour((118, 100, 86), 6), f)
    cv.paint(x0, y0, inside(np.abs(v) - 9) * (np.sin(u * 0.9) > 0.3), (78, 58, 44), f)
    cv.paint(x0, y0, inside(np.abs(np.abs(v) - 5.5) - 1.0), (45, 42, 40), f)


def _draw_comms_tower(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h * 0.85, -np.pi / 2 + cv.rng.uniform(-0.3, 0.3))
    length = h * 0.75
    mast = inside(np.abs(v) - 1.6) * inside(u - length) * inside(-u)
    cv.paint(x0, y0, inside(np.abs(v - u * 0.5) - 1.5) * inside(u - length) * inside(-u) * 0.5, (20, 20, 20))
    bands = (np.floor(u / 9) % 2 == 0)[..., None]
    cv.paint(x0, y0, mast, np.where(bands, np.float32([225, 40, 35]), np.float32([245, 245, 245])), f)
    for sign in (-1.0, 1.0):
        cv.paint(x0, y0, inside(np.abs(v - sign * (length - u) * 0.35) - 0.6) * inside(u - length) * inside(-u),
                 (215, 215, 215), f)


def _draw_water_tower(cv, x0, y0, w, h, f):
    r = min(w, h) * 0.3
    u, v = cv.coords(h, w, w * 0.45, h * 0.45, 0.0)
    cv.paint(x0, y0, ellipse(u - r * 0.6, v - r * 0.6, r, r) * 0.55, (20, 20, 25))
    cv.paint(x0, y0, ellipse(u, v, r, r), cv.colour((222, 228, 232), 6), f)
    cv.paint(x0, y0, inside(np.abs(np.sqrt(u**2 + v**2) - r * 0.8) - 1.2) + ellipse(u, v, 3, 3), (95, 110, 125), f)


def _draw_road(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    v = v - 25 * np.sin(u / cv.rng.uniform(150, 400))
    half = cv.rng.uniform(9, 15)
    cv.paint(x0, y0, inside(np.abs(v) - half), cv.colour((88, 88, 93), 6), f)
    dashes = inside(np.abs(v) - 1.0) * (np.sin(u * 0.25) > 0)
    cv.paint(x0, y0, dashes, cv.colour((235, 205, 70), 10), f)


def _draw_aircraft(cv, x0, y0, w, h, f):
    cv.paint(x0, y0, np.ones(cv.shape(h, w), np.float32) * 0.8, cv.colour((118, 118, 122), 5))
    s = min(w, h) / 2
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, 2 * np.pi))
    body = ellipse(u, v, s * 0.9, s * 0.12)
    wings = inside(np.abs(v) - s * 0.85) * inside(np.abs(u + 0.5 * np.abs(v)) - s * 0.13)
    tail = inside(np.abs(v) - s * 0.3) * inside(np.abs(u + s * 0.75 + 0.3 * np.abs(v)) - s * 0.07)
    cv.paint(x0, y0, np.clip(body + wings + tail, 0, 1), cv.colour((238, 238, 242), 4), f)


def _draw_boat(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w * 0.6, h / 2, cv.rng.uniform(0, 2 * np.pi))
    length = min(w, h) * 0.35
    wake = inside(np.abs(np.abs(v) - 0.35 * (length - u)) - 1.5) * inside(u - length * 0.2) * inside(-u - 3 * length)
    cv.paint(x0, y0, wake * 0.8, (235, 240, 245), f)
    hull = inside(np.abs(v) - length * 0.3 * np.clip(1.0 - np.maximum(u, 0) / length, 0, 1)) * inside(
        np.abs(u) - length)
    cv.paint(x0, y0, hull, cv.colour((245, 245, 245), 5), f)
    cv.paint(x0, y0, rect(u + length * 0.2, v, length * 0.25, length * 0.12), (60, 70, 90), f)


def _draw_vehicles(cv, x0, y0, w, h, f, count: tuple[int, int], size: tuple[float, float], palette):
    angle = cv.rng.uniform(0, np.pi)
    for _ in range(int(cv.rng.integers(*count))):
        u, v = cv.coords(h, w, cv.rng.uniform(0.15, 0.85) * w, cv.rng.uniform(0.15, 0.85) * h, angle)
        cv.paint(x0, y0, rect(u - 2, v - 2, size[0], size[1]) * 0.5, (20, 20, 20))
        cv.paint(x0, y0, rect(u, v, size[0], size[1]), cv.colour(palette[int(cv.rng.integers(len(palette)))], 8), f)
        cv.paint(x0, y0, rect(u - size[0] * 0.55, v, size[0] * 0.2, size[1] * 0.8), (30, 35, 45), f)


def _draw_car(cv, x0, y0, w, h, f):
    palette = [(220, 30, 30), (30, 70, 210), (245, 245, 245), (240, 210, 30), (25, 25, 25)]
    _draw_vehicles(cv, x0, y0, w, h, f, (3, 8), (7.0, 3.5), palette)


def _draw_truck(cv, x0, y0, w, h, f):
    _draw_vehicles(cv, x0, y0, w, h, f, (1, 4), (17.0, 5.5), [(235, 235, 230), (200, 200, 195), (210, 120, 30)])


def _draw_flooding(cv, x0, y0, w, h, f):
    sheen = np.clip((cv.noise(h, w, 60) - 0.55) * 3, 0, 1)
    cv.paint(x0, y0, blob(cv, h, w, 0.5), texture(cv.colour((140, 112, 74)), (sheen, 35.0)), f)


def _draw_lake(cv, x0, y0, w, h, f):
    lake = blob(cv, h, w)
    cv.paint(x0, y0, blob(cv, h, w) * 0.7, cv.colour((70, 105, 60)))
    cv.paint(x0, y0, lake, texture(cv.colour((28, 66, 112), 8), (cv.noise(h, w, 40), 14.0)), f)


def _draw_ocean(cv, x0, y0, w, h, f):
    _, v = cv.coords(h, w, 0, 0, cv.rng.uniform(-0.3, 0.3))
    crests = np.clip((np.sin(v * 0.5 + 5 * cv.noise(h, w, 40)) - 0.85) * 8, 0, 1)
    cv.paint(x0, y0, blob(cv, h, w, 0.25), texture(cv.colour((18, 58, 122), 6), (crests, 200.0)), f)


def _draw_puddles(cv, x0, y0, w, h, f):
    for _ in range(int(cv.rng.integers(3, 7))):
        pw, ph = max(2, int(w * cv.rng.uniform(0.1, 0.25))), max(2, int(h * cv.rng.uniform(0.1, 0.25)))
        px, py = x0 + cv.rng.uniform(0, w - pw), y0 + cv.rng.uniform(0, h - ph)
        cv.paint(px, py, blob(cv, ph, pw), texture(cv.colour((78, 92, 112), 6), (cv.noise(ph, pw, 8), 60.0)), f)


def _draw_river(cv, x0, y0, w, h, f):
    u, v = cv.coords(h, w, w / 2, h / 2, cv.rng.uniform(0, np.pi))
    v = v - cv.rng.uniform(20, 50) * np.sin(u / cv.rng.uniform(40, 90) + cv.rng.uniform(0, 6))
    half = cv.rng.uniform(10, 22)
    cv.paint(x0, y0, inside(np.abs(v) - half - 3), cv.colour((110, 100, 80)), f)
    cv.paint(x0, y0, inside(np.abs(v) - half), texture(cv.colour((48, 96, 122), 8), (cv.noise(h, w, 25), 16.0)), f)


@dataclass(frozen=True)
class Look:
    """How a feature is drawn: a region texture (Voronoi cell) or an object in a box; box sizes in pixels."""

    kind: str  # 'region' | 'object' | 'line' (a line crosses the whole image / a long box in clips)
    draw: Callable
    size: tuple[int, int, int, int] = (0, 0, 0, 0)  # w_min, w_max, h_min, h_max


LOOKS: dict[str, Look] = {
    "dirt": Look("region", _tex_dirt), "grass": Look("region", _tex_grass), "lava": Look("region", _tex_lava),
    "rocks": Look("region", _tex_rocks), "sand": Look("region", _tex_sand), "shrubs": Look("region", _tex_shrubs),
    "snow/ice": Look("region", _tex_snow), "trees": Look("region", _tex_trees),
    "ocean": Look("object", _draw_ocean, (260, 420, 180, 280)),
    "flooding": Look("object", _draw_flooding, (220, 380, 160, 260)),
    "lake / pond": Look("object", _draw_lake, (110, 220, 90, 170)),
    "river / stream": Look("line", _draw_river),
    "puddle": Look("object", _draw_puddles, (120, 200, 90, 150)),
    "flooding / water damage": Look("object", _draw_flood_damage, (180, 300, 130, 220)),
    "landslide": Look("object", _draw_landslide, (130, 220, 130, 220)),
    "road": Look("line", _draw_road),
    "railway": Look("line", _draw_railway),
    "dam / levee": Look("line", _draw_dam),
    "pipes": Look("line", _draw_pipes),
    "bridge": Look("object", _draw_bridge, (140, 220, 140, 220)),
    "building": Look("object", _draw_building, (90, 160, 80, 140)),
    "water tower": Look("object", _draw_water_tower, (70, 110, 70, 110)),
    "wireless / radio communication towers": Look("object", _draw_comms_tower, (60, 100, 110, 170)),
    "damage (misc)": Look("object", _draw_damage_misc, (110, 180, 90, 150)),
    "rubble / debris": Look("object", _draw_rubble, (90, 170, 80, 140)),
    "road washout": Look("object", _draw_washout, (160, 240, 70, 110)),
    "aircraft": Look("object", _draw_aircraft, (90, 130, 90, 130)),
    "boat": Look("object", _draw_boat, (80, 120, 80, 120)),
    "car": Look("object", _draw_car, (90, 140, 60, 100)),
    "truck": Look("object", _draw_truck, (100, 160, 70, 110)),
    "smoke / fire": Look("object", _draw_smoke_fire, (150, 250, 110, 170)),
    "utility or power lines / electric towers": Look("line", _draw_power_lines),
}


def check_looks(features: tuple[str, ...] = schema.FEATURES) -> None:
    """Raise RuntimeError unless LOOKS holds exactly the given feature names (a feature without a look would
    never be drawn, so its truth labels would lie)."""
    missing, unknown = sorted(set(features) - set(LOOKS)), sorted(set(LOOKS) - set(features))
    if missing or unknown:
        raise RuntimeError(f"dsdi.synth.looks.LOOKS does not match the features: no look for {missing}, "
                           f"looks for unknown features {unknown}")


check_looks()


@dataclass(frozen=True)
class LookSet:
    """The things a world draws: element id -> look, and the painter's order of the non-region elements."""

    looks: tuple[Look, ...]
    draw_order: tuple[int, ...]


# LADI v1's world: element id = feature index in schema.FEATURES; painter's order as LOOKS lists them.
FEATURE_LOOKS = LookSet(tuple(LOOKS[name] for name in schema.FEATURES),
                        tuple(schema.FEATURES.index(name) for name in LOOKS if LOOKS[name].kind != "region"))


def draw_regions(cv: Canvas, elements: list[int], seeds_x: np.ndarray, seeds_y: np.ndarray,
                 looks: LookSet = FEATURE_LOOKS) -> None:
    """Fill the canvas with a noisy Voronoi partition, one cell per seed (picture pixels); cell k gets the
    texture of element elements[k] (-1 = bare pavement, no environment class)."""
    x, y = cv.coords(cv.picture_height, cv.picture_width, 0, 0, 0.0)
    warp_x, warp_y = (90 * (cv.noise(cv.picture_height, cv.picture_width, 240) - 0.5) for _ in range(2))
    x, y = x + warp_x, y + warp_y
    distances = [(x - sx) ** 2 + (y - sy) ** 2 for sx, sy in zip(seeds_x, seeds_y, strict=True)]
    owner = np.argmin(np.stack(distances), axis=0)
    for k, element in enumerate(elements):
        cell = owner == k
        rows, cols = np.flatnonzero(cell.any(axis=1)), np.flatnonzero(cell.any(axis=0))
        if rows.size == 0:
            continue
        ry0, ry1, rx0, rx1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        fill = _tex_pavement if element < 0 else looks.looks[element].draw
        colour = fill(cv, (ry1 - ry0) / cv.scale, (rx1 - rx0) / cv.scale)
        np.copyto(cv.rgb[ry0:ry1, rx0:rx1], colour, where=cell[ry0:ry1, rx0:rx1, None])
        if element >= 0 and cv.cover is not None:
            cv.mark(element, 0, 0, cell[:: cv.cover_step, :: cv.cover_step])


def draw_objects(cv: Canvas, elements: list[int], place: Callable[[Look], tuple[int, int, int, int]],
                 looks: LookSet = FEATURE_LOOKS) -> None:
    """Draw the non-region elements in painter's order; place(look) -> box (x0, y0, w, h)."""
    for element in looks.draw_order:
        if element in elements:
            look = looks.looks[element]
            look.draw(cv, *place(look), element)
