"""The LADI v2a world: pictures drawn from the v1 looks plus building damage marks and downed trees, whose 12 v2a
labels are derived from what each picture shows; three annotators per image and their majority vote; a later
event as the test split.

A scene is a 0/1 vector over ELEMENTS (the things drawn). ``SHOWS`` says which v2a classes each element shows,
and a picture's labels are the OR over its elements (``derive_labels``), so that the published hierarchy holds
in every label row: buildings_minor_or_greater => buildings_affected_or_greater => buildings_any,
flooding_structures => flooding_any (and buildings_any), roads_damage => roads_any, trees_damage => trees_any.
Buildings carry one FEMA damage level (intact, affected: stripped shingles, minor: + a blue tarp, major: + holes,
destroyed: + rubble over the lot); houses standing in flood water are affected or greater.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsdi.labels.labelset import load_labelset
from dsdi.synth.canvas import blob, rect
from dsdi.synth.clips import ClipDesign
from dsdi.synth.looks import LOOKS, Look, LookSet
from dsdi.synth.scenes import ClipScene, render_pan, render_still

LADI_V2A = load_labelset("ladi-v2a")
CLOSER = 1.8  # v2a pictures are low oblique shots: object boxes 1.8 x those of the v1 world
ANNOTATORS = 3
VAL_SHARE, TEST_SHARE = 0.1, 0.1


def _mark_damage(level: int):
    """A roof marker (looks._draw_building's damage) for FEMA damage level 1 (affected) .. 3 (major); each level
    adds its mark to the lower levels': stripped shingles, a blue tarp, dark holes."""
    def mark(cv, x0, y0, w, h, u, v, a, b, f):
        roof = rect(u, v, a, b)
        stripped = roof * (cv.noise(h, w, max(a, b) / 3) > 0.6)
        cv.paint(x0, y0, stripped, cv.colour((224, 198, 150), 10), f)
        if level >= 2:
            offset = cv.rng.uniform(-0.3, 0.3)
            cv.paint(x0, y0, rect(u - offset * a, v, a * 0.55, b * 0.75), cv.colour((35, 95, 210), 10), f)
        if level >= 3:
            cv.paint(x0, y0, roof * (cv.noise(h, w, max(a, b) / 3) < 0.3), (35, 30, 28), f)
    return mark


def _draw_damaged_buildings(level: int):
    """Draw buildings at damage level 0 (intact) .. 4 (destroyed: major damage under rubble over the lot)."""
    def draw(cv, x0, y0, w, h, f):
        LOOKS["building"].draw(cv, x0, y0, w, h, f, damage=_mark_damage(min(level, 3)) if level else None)
        if level == 4:
            LOOKS["rubble / debris"].draw(cv, x0 + w * 0.1, y0 + h * 0.1, w * 0.8, h * 0.8, f)
    return draw


def _draw_downed_trees(cv, x0, y0, w, h, f):
    """A stand of trees with browned crowns and pale fallen trunks lying across it."""
    stand = blob(cv, h, w, 0.4)
    cv.paint(x0, y0, stand, LOOKS["trees"].draw(cv, h, w), f)
    cv.paint(x0, y0, stand * (cv.noise(h, w, 14) > 0.55), cv.colour((128, 98, 62), 10), f)
    angle = cv.rng.uniform(0, np.pi)
    for _ in range(int(cv.rng.integers(8, 16))):
        cx, cy = cv.rng.uniform(0.2, 0.8) * w, cv.rng.uniform(0.2, 0.8) * h
        u, v = cv.coords(h, w, cx, cy, angle + cv.rng.uniform(-0.5, 0.5))
        trunk = rect(u, v, cv.rng.uniform(0.08, 0.16) * w, 2.2) * stand
        cv.paint(x0, y0, trunk, cv.colour((205, 186, 156), 10), f)


def _closer(look: Look) -> Look:
    """The look with its object box CLOSER x larger."""
    return dataclasses.replace(look, size=tuple(int(side * CLOSER) for side in look.size))


BUILDING_LEVELS = ("buildings", "buildings_affected", "buildings_minor", "buildings_major", "buildings_destroyed")
_BUILDING_SIZE = (90, 160, 80, 140)
# The drawn elements in id order: regions, then objects in painter's order.
_LOOKS: dict[str, Look] = {
    "trees": LOOKS["trees"], "grass": LOOKS["grass"], "dirt": LOOKS["dirt"], "sand": LOOKS["sand"],
    "ocean": LOOKS["ocean"], "lake": _closer(LOOKS["lake / pond"]), "river": LOOKS["river / stream"],
    "flooding": _closer(LOOKS["flooding"]), "flooded_buildings": _closer(LOOKS["flooding / water damage"]),
    "downed_trees": _closer(Look("object", _draw_downed_trees, (160, 280, 130, 220))),
    "road": LOOKS["road"], "washout": _closer(LOOKS["road washout"]), "bridge": _closer(LOOKS["bridge"]),
    **{name: _closer(Look("object", _draw_damaged_buildings(level), _BUILDING_SIZE))
       for level, name in enumerate(BUILDING_LEVELS)},
    "rubble": _closer(LOOKS["rubble / debris"]), "car": _closer(LOOKS["car"]), "truck": _closer(LOOKS["truck"]),
}
ELEMENTS = tuple(_LOOKS)
V2A_LOOKS = LookSet(tuple(_LOOKS.values()),
                    tuple(k for k, look in enumerate(_LOOKS.values()) if look.kind != "region"))

_AFFECTED = ("buildings_any", "buildings_affected_or_greater")
_MINOR = (*_AFFECTED, "buildings_minor_or_greater")
_SHOWS: dict[str, tuple[str, ...]] = {
    "trees": ("trees_any",), "downed_trees": ("trees_any", "trees_damage"),
    "ocean": ("water_any",), "lake": ("water_any",), "river": ("water_any",),
    "flooding": ("flooding_any",), "flooded_buildings": ("flooding_any", "flooding_structures", *_AFFECTED),
    "road": ("roads_any",), "washout": ("roads_any", "roads_damage"), "bridge": ("bridges_any",),
    "buildings": ("buildings_any",), "buildings_affected": _AFFECTED, "buildings_minor": _MINOR,
    "buildings_major": _MINOR, "buildings_destroyed": (*_MINOR, "debris_any"), "rubble": ("debris_any",),
}
SHOWS = np.zeros((len(ELEMENTS), len(LADI_V2A.class_names)), np.int32)  # (elements, 12): element shows class
for _element, _classes in _SHOWS.items():
    SHOWS[ELEMENTS.index(_element), [LADI_V2A.class_names.index(name) for name in _classes]] = 1
# The element added to a scene that lacks a class so that it shows it (min_per_class forcing).
_FORCE = {"bridges_any": "bridge", "buildings_any": "buildings", "buildings_affected_or_greater": "buildings_affected",
          "buildings_minor_or_greater": "buildings_minor", "debris_any": "rubble", "flooding_any": "flooding",
          "flooding_structures": "flooded_buildings", "roads_any": "road", "roads_damage": "washout",
          "trees_any": "trees", "trees_damage": "downed_trees", "water_any": "lake"}


@dataclass(frozen=True)
class Event:
    """The priors of a set of pictures: independent element probabilities, the chance of buildings and their
    damage levels (BUILDING_LEVELS order, summing to 1), and a per-channel colour gain plus haze (0..255)."""

    probabilities: dict[str, float]
    buildings: float
    levels: tuple[float, float, float, float, float]
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    haze: float = 0.0


# Chosen to look like LADI v2a (no per-label counts were found published): buildings, roads and trees dominate;
# bridges and every kind of damage are rare. The later event (the test split) floods more, on sandier ground,
# under a warm haze: a mild shift like LADI v2's 2023 test events. Clips hold fewer of the common classes, so
# that a random ranking scores a low mAP.
EARLIER = Event({"trees": 0.7, "grass": 0.6, "dirt": 0.3, "sand": 0.05, "ocean": 0.05, "lake": 0.1, "river": 0.12,
                 "flooding": 0.12, "flooded_buildings": 0.05, "downed_trees": 0.06, "road": 0.62, "washout": 0.04,
                 "bridge": 0.05, "rubble": 0.08, "car": 0.3, "truck": 0.12},
                buildings=0.7, levels=(0.76, 0.12, 0.06, 0.03, 0.03))
LATER = Event({**EARLIER.probabilities, "grass": 0.25, "dirt": 0.45, "sand": 0.35, "flooding": 0.25,
               "flooded_buildings": 0.12, "river": 0.2},
              buildings=0.7, levels=(0.66, 0.16, 0.09, 0.05, 0.04), gain=(1.06, 1.0, 0.88), haze=14.0)
CLIP_EVENT = Event({"trees": 0.3, "grass": 0.5, "dirt": 0.3, "ocean": 0.05, "lake": 0.08, "river": 0.08,
                    "flooding": 0.12, "flooded_buildings": 0.08, "downed_trees": 0.08, "road": 0.3, "washout": 0.08,
                    "bridge": 0.08, "rubble": 0.1, "car": 0.2, "truck": 0.1},
                   buildings=0.35, levels=(0.5, 0.2, 0.15, 0.1, 0.05))
CLIP_MIN_PER_CLASS = 2


def derive_labels(shown: np.ndarray) -> np.ndarray:
    """(n, elements) 0/1 elements shown (a scene, or the elements visible in a frame) -> (n, 12) uint8 labels."""
    return (shown.astype(np.int32) @ SHOWS > 0).astype(np.uint8)


def sample_scenes(n: int, rng: np.random.Generator, event: Event, min_per_class: int = 3) -> np.ndarray:
    """(n, elements) uint8 scenes: independent elements, at most one building element (its damage level), then
    each v2a class forced into >= min_per_class scenes (an element that shows it added to scenes that lack it)."""
    probabilities = np.array([event.probabilities.get(name, 0.0) for name in ELEMENTS])
    scenes = (rng.random((n, len(ELEMENTS))) < probabilities).astype(np.uint8)
    built = np.flatnonzero(rng.random(n) < event.buildings)
    levels = rng.choice(len(BUILDING_LEVELS), size=len(built), p=event.levels)
    scenes[built, [ELEMENTS.index(BUILDING_LEVELS[k]) for k in levels]] = 1
    building_ids = [ELEMENTS.index(name) for name in BUILDING_LEVELS]
    for k, class_name in enumerate(LADI_V2A.class_names):
        lacking = np.flatnonzero(derive_labels(scenes)[:, k] == 0)
        missing = min(min_per_class, n) - (n - len(lacking))
        if missing > 0:
            rows = rng.choice(lacking, size=missing, replace=False)
            element = ELEMENTS.index(_FORCE[class_name])
            if element in building_ids:  # one damage level per scene: this one replaces a lower one
                scenes[np.ix_(rows, building_ids)] = 0
            scenes[rows, element] = 1
    return scenes


def assign_splits(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) 'train' / 'val' / 'test': the last TEST_SHARE of the images are the later event's test split, a
    random VAL_SHARE of all images among the others validation, the rest training."""
    n_test = int(round(TEST_SHARE * n))
    splits = np.array(["train"] * (n - n_test) + ["test"] * n_test, dtype=object)
    splits[rng.choice(n - n_test, size=min(int(round(VAL_SHARE * n)), n - n_test), replace=False)] = "val"
    return splits


def vote(scenes: np.ndarray, rng: np.random.Generator, miss_rate: float, false_rate: float) -> np.ndarray:
    """(n, 12) uint8 majority labels of ANNOTATORS annotators. Each misses every drawn element with miss_rate
    and imagines every absent one with false_rate, and labels what he saw (derive_labels); a class is 1 when
    most of them gave it (so the vote keeps the hierarchy every annotator's labels keep)."""
    given = np.zeros((len(scenes), len(LADI_V2A.class_names)), np.int32)
    for _ in range(ANNOTATORS):
        draws = rng.random(scenes.shape)
        given += derive_labels(np.where(scenes == 1, draws >= miss_rate, draws < false_rate))
    return (2 * given > ANNOTATORS).astype(np.uint8)


def render_picture(scene: np.ndarray, rng: np.random.Generator, width: int, height: int,
                   event: Event) -> np.ndarray:
    """uint8 (height, width, 3): the scene's elements (ids into ELEMENTS) drawn, then the event's colour grade."""
    picture = render_still(list(np.flatnonzero(scene)), rng, width, height, looks=V2A_LOOKS)
    graded = picture * np.float32(event.gain) + np.float32(event.haze) * (1.0 - picture / np.float32(255))
    return np.clip(np.rint(graded), 0, 255).astype(np.uint8)


def labels_csv(image_ids: list[str], splits: np.ndarray, labels: np.ndarray) -> str:
    """A labels CSV: image_id, split, then the 12 v2a class columns in label set order (0/1)."""
    table = pd.DataFrame(labels, columns=list(LADI_V2A.class_names))
    table.insert(0, "split", splits)
    table.insert(0, "image_id", image_ids)
    return table.to_csv(index=False)


def _render_clip(scene: np.ndarray, rng: np.random.Generator, duration_s: float, width: int,
                 height: int) -> ClipScene:
    """A pan over the scene; visible (frames, 12): the classes the elements visible in each frame show."""
    clip = render_pan(list(np.flatnonzero(scene)), rng, duration_s, width, height, looks=V2A_LOOKS)
    return dataclasses.replace(clip, visible=derive_labels(clip.visible).astype(bool))


V2A_CLIPS = ClipDesign(LADI_V2A, lambda n, rng: sample_scenes(n, rng, CLIP_EVENT, CLIP_MIN_PER_CLASS), _render_clip)
