"""What the claims study trains: its synthetic worlds, its size, and the training variants (one recipe each).

Every variant differs from the baseline (focal loss, soft labels, the default noise, no technique) in exactly
the setting its claim is about; everything else (backbone, size, optimiser, epochs, hold-out) is shared, so a
difference between two variants of the same seed is the effect of that setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsdi.options import updated, write_toml
from dsdi.train.config import TrainConfig
from dsdi.train.run_folder import BEST_NAME


@dataclass(frozen=True)
class WorldSpec:
    """One synthetic world of the study (``dsdi synth`` arguments that differ between worlds)."""

    name: str
    miss_rate: float = 0.2
    false_rate: float = 0.02
    outlier_rate: float = 0.0
    with_clips: bool = False
    label_modes: tuple[str, ...] = ("soft",)


WORLDS = (
    WorldSpec("default", with_clips=True, label_modes=("soft", "hard", "majority")),
    WorldSpec("heavy-noise", miss_rate=0.4, false_rate=0.05, label_modes=("soft", "hard", "majority")),
    WorldSpec("outliers", outlier_rate=0.1),
)
"""The same seed draws the same normal images in every world (and the default world's clips rank every model):
``heavy-noise`` changes only the crowd answers, ``outliers`` appends 10% outlier images with crowd answers."""


@dataclass(frozen=True)
class StudySize:
    """How big the study is: worlds, training and seeds. The defaults fit ``make study`` in under 90 minutes on
    2 CPU cores; tests shrink them."""

    images: int = 1500
    clips: int = 60
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 5
    backbone: str = "resnet10t"
    img_size: int = 64
    batch_size: int = 32
    image_size: tuple[int, int] = (320, 240)
    clip_size: tuple[int, int] = (320, 180)
    clip_seconds: tuple[float, float] = (3.0, 6.0)
    holdout_fraction: float = 0.2
    world_seed: int = 0


@dataclass(frozen=True)
class Variant:
    """One training recipe of the study: the world and label mode it learns from and its own settings."""

    name: str
    world: str
    labels: str = "soft"
    settings: dict[str, Any] = field(default_factory=dict)


BASELINE = "default-focal"
VARIANTS = (
    Variant(BASELINE, "default"),
    Variant("default-hard", "default", labels="hard"),
    Variant("default-majority", "default", labels="majority"),
    Variant("default-bce", "default", settings={"loss": "bce"}),
    Variant("default-cbfl", "default", settings={"loss": "cbfl"}),
    Variant("default-rfl", "default", settings={"loss": "rfl"}),
    Variant("default-none0.1", "default", settings={"none_weight": 0.1}),
    Variant("default-none0.01", "default", settings={"none_weight": 0.01}),
    Variant("default-dropmax", "default", settings={"drop_max_loss": True}),
    Variant("default-snapshots", "default", settings={"snapshots": -1}),  # -1: one snapshot per epoch
    Variant("heavy-noise-focal", "heavy-noise"),
    Variant("heavy-noise-hard", "heavy-noise", labels="hard"),
    Variant("heavy-noise-majority", "heavy-noise", labels="majority"),
    Variant("outliers-focal", "outliers"),
    Variant("outliers-dropmax", "outliers", settings={"drop_max_loss": True}),
)
ENSEMBLE_POOL = tuple(v.name for v in VARIANTS if v.world == "default")
"""Claim 6's candidates: every model trained on the default world (one seed's pool per ensemble)."""

SMALL_OBJECT_FEATURES = ("car", "truck", "boat", "aircraft", "water tower", "pipes")

INFERENCE_OPTIONS = {"plain": {}, "flip": {"tta": "flip"}, "tiles": {"tiles": (2, 2)}}
"""Claim 8's rank calls over the baseline models (rank/<option>): option name -> RankConfig fields."""


def variant(name: str) -> Variant:
    """The variant called ``name`` (KeyError for a name the study does not train)."""
    return {v.name: v for v in VARIANTS}[name]


def labels_path(root: Path, world: str, mode: str) -> Path:
    return root / "labels" / f"{world}-{mode}.csv"


def world_path(root: Path, world: str) -> Path:
    return root / "worlds" / world


def recipe_values(v: Variant, size: StudySize, root: Path) -> dict[str, Any]:
    """The TrainConfig fields of variant ``v`` (the seed comes from the sweep; the split follows the seed and the
    hold-out is common to every run of a world)."""
    settings = dict(v.settings)
    if settings.get("snapshots") == -1:
        settings["snapshots"] = size.epochs
    return {
        "labels": str(labels_path(root, v.world, v.labels)), "images": str(world_path(root, v.world) / "images"),
        "backbone": size.backbone, "loss": "focal", "img_size": size.img_size, "epochs": size.epochs,
        "batch_size": size.batch_size, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "workers": 1,
        "device": "cpu", "pretrained": False, "split_seed": -1, "holdout_fraction": size.holdout_fraction,
        "holdout_seed": 0, **settings,
    }


def write_recipes(root: Path, size: StudySize) -> list[Path]:
    """Write ``root/recipes/<variant>.toml`` for every variant and return their paths (in VARIANTS order)."""
    paths = []
    for v in VARIANTS:
        path = root / "recipes" / f"{v.name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_toml(path, updated(TrainConfig(), recipe_values(v, size, root), source=f"study variant {v.name}"))
        paths.append(path)
    return paths


def run_dir(root: Path, name: str, seed: int) -> Path:
    """Where ``dsdi sweep --out root/models`` trains variant ``name`` with ``seed``."""
    return root / "models" / f"{name}-s{seed}"


def ranked_checkpoints(root: Path, size: StudySize) -> list[Path]:
    """Every run's best.pt, then the snapshot variants' snapshot_K.pt files (rank/all's models, in this order)."""
    checkpoints = [run_dir(root, v.name, seed) / BEST_NAME for v in VARIANTS for seed in size.seeds]
    for v in VARIANTS:
        if v.settings.get("snapshots"):
            checkpoints += [run_dir(root, v.name, seed) / f"snapshot_{k}.pt"
                            for seed in size.seeds for k in range(1, size.epochs + 1)]
    return checkpoints
