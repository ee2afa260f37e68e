"""What the claims study trains and compares, fixed before anything runs: its size, the head recipes, the members
(recipe x split) every seed trains, the ensembles, and the pre-registered headline comparisons (the only rows that
get a verdict; Holm's correction runs over exactly these).

Every recipe differs from the baseline (``focal``: focal loss on the LADI-noise crowd's soft labels, none weight 1,
no outliers, HEAD_EPOCHS epochs) in exactly the setting its claim is about. Member ``m`` of a seed trains on its own
80% split of the training images (``dsdi.study.heads``), so an ensemble's members differ in split as the paper's do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dsdi.study.heads import HeadRecipe


@dataclass(frozen=True)
class StudySize:
    """How big the study is. The defaults fit ``make study`` in well under 90 minutes on 2 CPU cores; tests shrink
    them. Images are rendered at ``image_size`` (width, height) and seen by the trunk at ``img_size`` px."""

    seeds: tuple[int, ...] = tuple(range(10))
    train_images: int = 4000
    holdout_images: int = 3000
    outliers: int = 444
    """Outlier images among the training images (10% of 4444: paper Fig. 5's kind, crowd-labelled as normal)."""
    holdout_min_positives: int = 20
    clips: int = 100
    image_size: tuple[int, int] = (192, 144)
    clip_size: tuple[int, int] = (320, 180)
    clip_seconds: tuple[float, float] = (3.0, 6.0)
    world_seed: int = 0
    trunk_images: int = 6000
    trunk_epochs: int = 6
    backbone: str = "resnet10t"
    img_size: int = 96
    views: int = 5
    """Cached features per training image: the plain view and views - 1 augmented ones."""
    head_epochs: int = 40
    """The paper's 40 epochs: near the plateau of a head's hold-out mAP here (48 epochs: 0.734, 96: 0.744)."""
    long_factor: int = 4
    """The long run (paper C10: the last epoch of a 300-epoch run beside 40-epoch members) is this many times longer."""
    snapshot_cycles: int = 4


CROWDS = ("ladi", "independent")
"""The world's two crowds: ``ladi`` (workers with LADI's kind of noise, ``dsdi.synth.annotators``) and ``independent``
(every worker misses 20% and imagines 2% of features independently: the model that cannot favour soft labels)."""
LABEL_MODES = ("soft", "hard", "majority")


def recipes(size: StudySize) -> dict[str, HeadRecipe]:
    """Every recipe of the study by name."""
    base = HeadRecipe("focal", epochs=size.head_epochs)
    listed = [base, replace(base, name="bce", loss="bce"), replace(base, name="cbfl", loss="cbfl"),
              replace(base, name="rfl", loss="rfl"),
              replace(base, name="none0.1", loss_settings={"none_weight": 0.1}),
              replace(base, name="none0.01", loss_settings={"none_weight": 0.01}),
              replace(base, name="dropmax", loss_settings={"drop_max": True}),
              replace(base, name="long", epochs=size.head_epochs * size.long_factor),
              replace(base, name="snapshots", snapshots=size.snapshot_cycles),
              replace(base, name="outliers-focal", outliers=True),
              replace(base, name="outliers-dropmax", outliers=True, loss_settings={"drop_max": True}),
              replace(base, name="tiles", tiles=True)]
    listed += [replace(base, name=f"{crowd}-{mode}", labels=f"{crowd}-{mode}")
               for crowd in CROWDS for mode in LABEL_MODES if (crowd, mode) != ("ladi", "soft")]
    return {recipe.name: recipe for recipe in listed}


Member = tuple[str, int]
"""(recipe name, split number)."""

TRIO = (("focal", 0), ("focal", 1), ("focal", 2))
"""The reference ensemble of claims 3-5: three baseline members on three splits."""
ADDED_MEMBER = {"none0.01": ("none0.01", 2), "long": ("long", 2)}
"""Claims 3 and 5: the trio with its third member replaced by this recipe on the same split."""
OUTLIER_TRIO = (("outliers-focal", 0), ("outliers-focal", 1), ("outliers-focal", 2))
OUTLIER_ADDED = ("outliers-dropmax", 2)
PAPER_POOL = (("focal", 0), ("cbfl", 1), ("rfl", 2), ("none0.1", 3), ("none0.01", 4), ("dropmax", 5), ("long", 6))
"""Claim 6's ensemble, as the paper's: members of different recipes, each on its own split, equal weights."""


def members(size: StudySize) -> list[Member]:
    """Every (recipe, split) each seed trains, each once: every recipe on split 0, then the ensembles' others."""
    wanted = [(name, 0) for name in recipes(size)] + list(TRIO) + list(ADDED_MEMBER.values())
    wanted += list(OUTLIER_TRIO) + [OUTLIER_ADDED] + list(PAPER_POOL)
    return list(dict.fromkeys(wanted))


SMALL_OBJECT_FEATURES = ("car", "truck", "boat", "aircraft", "water tower", "pipes")
INFERENCE_OPTIONS = ("plain", "flip", "tiles")
"""How a clip frame is scored (``dsdi rank``'s views): the whole frame; mean with its mirror; max over it and its
2 x 2 tiles."""


@dataclass(frozen=True)
class Headline:
    """A pre-registered comparison: the claim it decides, its row (comparison, measure) and whether the paper
    makes the claim (False: a technique beyond the paper)."""

    claim: int
    comparison: str
    measure: str
    in_paper: bool = True


HEADLINES = (
    Headline(1, "soft − majority", "image mAP, LADI-noise crowd"),
    Headline(2, "focal − bce", "image mAP, rarest third"),
    Headline(3, "trio with a none ×0.01 member − trio", "image mAP"),
    Headline(4, "outlier trio with a drop-max member − outlier trio", "image mAP, 10% outliers"),
    Headline(5, "trio with a long-run member − trio", "image mAP"),
    Headline(6, "paper ensemble − best single member", "image mAP, judging half"),
    Headline(7, "snapshot ensemble − one run", "image mAP"),
    Headline(8, "max − mean", "clip mAP, features on screen < 1 s"),
    Headline(9, "greedy selection − equal weights", "image mAP, judging half", in_paper=False),
    Headline(10, "--tiles 2x2 − plain", "clip mAP, small objects", in_paper=False),
)
