"""``TrainConfig``: every option of a training run, declared once (the ``dsdi train`` flags are made from it).

Precedence, lowest first: the field defaults < the run's own ``config.toml`` when resuming < a recipe TOML
(``--config runs/C04.toml``) < the flags given. :meth:`TrainConfig.layered` applies it; the command and Python
callers use the same function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from dsdi import options
from dsdi.errors import InputError
from dsdi.labels.labelset import DEFAULT_LABELSET, LabelSet, builtin_labelset_names, load_labelset
from dsdi.models.backbones import default_img_size
from dsdi.options import option
from dsdi.runtime import DEVICE_CHOICES, default_workers
from dsdi.train.losses import LOSSES, create_loss
from dsdi.train.run_folder import RunFolder
from dsdi.workspace import IMAGES_DIR, LABELS_CSV, RUNS_DIR

TRAIN_WORKERS_CAP = 4
SCHEDULES = ("cosine", "step")


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; ``None`` loss parameters mean "the loss's own default"."""

    labels: Path = option(LABELS_CSV, help="labels CSV: image_id, optionally split (train/val/test), then one "
                                           "column per class of --labelset")
    labelset: str = option(DEFAULT_LABELSET, help="label set: a built-in name (" + ", ".join(builtin_labelset_names())
                           + ") or a label set TOML file")
    images: Path = option(IMAGES_DIR, help="image root (ids are resolved to files under it)")
    out: Path | None = option(None, help="run folder to write", shown_default=f"{RUNS_DIR}/<backbone>-<loss>-<time>")
    backbone: str = option("resnest50d", help="timm model name or dsdi backbone")
    loss: str = option("cbfl", help=f"loss, or several joined by + (C12: focal+lovasz): {' | '.join(sorted(LOSSES))}")
    gamma: float | None = option(None, help="focal gamma", shown_default="the loss's")
    beta: float | None = option(None, help="class-balanced beta (cbfl)", shown_default="the loss's")
    th: float | None = option(None, help="reduced-focal threshold (rfl)", shown_default="the loss's")
    none_weight: float | None = option(None, help="factor on the none-class losses (paper 0.1, 0.01)",
                                       shown_default="1")
    drop_max_loss: bool = option(False, help="outlier removal: drop each batch's largest sample loss")
    epochs: int = option(40, help="total epochs; raise it with --resume to extend a run", minimum=1)
    batch_size: int = option(28, help="images per batch and process", minimum=1)
    img_size: int = option(0, help="square input side in px (0: the backbone's)", minimum=0,
                           shown_default="the backbone's: 360, HRNet 448")
    optimizer: str = option("sgd", help="optimizer", choices=("sgd", "adamw"))
    lr: float = option(0.01, help="initial (peak) learning rate", above=0.0)
    schedule: str = option("cosine", help="learning rate per step: cosine to 0 (restarting with --snapshots) or "
                                          "step (x --lr-step-factor after each --lr-steps epoch)",
                           choices=SCHEDULES)
    lr_steps: list[int] = option([30], help="step schedule: the epochs after which the lr is multiplied by "
                                            "--lr-step-factor (IBN-Net: 30; --lr-steps 30 --lr-steps 35)")
    lr_step_factor: float = option(0.1, help="step schedule: lr factor at each --lr-steps epoch", above=0.0)
    momentum: float = option(0.9, help="SGD momentum", minimum=0.0)
    nesterov: bool = option(True, help="SGD with Nesterov momentum (IBN-Net: off)")
    weight_decay: float = option(1e-4, help="weight decay", minimum=0.0)
    snapshots: int = option(0, help="N cosine cycles, snapshot_K.pt after each (0: one cosine, no snapshots)",
                            minimum=0)
    workers: int = option(help="data loader worker processes", factory=lambda: default_workers(TRAIN_WORKERS_CAP),
                          minimum=0, shown_default=f"CPU cores, at most {TRAIN_WORKERS_CAP}")
    device: str = option("auto", help="training device", choices=DEVICE_CHOICES)
    amp: str = option("auto", help="mixed precision on CUDA; auto: bf16 where supported, else fp16",
                      choices=("auto", "bf16", "fp16", "off"))
    pretrained: bool = option(False, help="start from timm's ImageNet weights (downloads them)")
    weights: Path | None = option(None, help="a local state dict or dsdi checkpoint to start from")
    seed: int = option(0, help="init and augmentation seed (and the split's, unless --split-seed)")
    split_seed: int = option(-1, help="train/validation split seed (-1: --seed); each recipe has its own",
                             minimum=-1, shown_default="-1 (= --seed)")
    val_fraction: float = option(0.2, help="validation share of the images left after the hold-out, between 0 "
                                           "and 1 (a labels split column with val rows replaces it)")
    holdout_fraction: float = option(0.05, help="common hold-out share of all labelled images, kept out of training "
                                                "and validation for ensemble selection (0: none; a labels split "
                                                "column replaces it: its test rows are the hold-out)", minimum=0.0)
    holdout_seed: int = option(0, help="hold-out seed (the same for every run that is to be ensembled)")
    skip_missing: bool = option(False, help="train without missing/unreadable images instead of failing")

    def resolved(self) -> TrainConfig:
        """A copy with the image size and run directory filled in, validated (InputError when invalid)."""
        config = self
        if not config.img_size:
            config = dataclasses.replace(config, img_size=default_img_size(self.backbone))
        if config.split_seed == -1:
            config = dataclasses.replace(config, split_seed=config.seed)
        if not config.out:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            config = dataclasses.replace(config, out=RUNS_DIR / f"{self.backbone}-{self.loss}-{stamp}")
        config.validate()
        return config

    def validate(self) -> None:
        """Raise InputError naming the option for values no run can use."""
        options.check_values(self)
        if self.snapshots > self.epochs:
            raise InputError(f"--snapshots must be between 0 and --epochs ({self.epochs}), got {self.snapshots}")
        if self.snapshots and self.schedule != "cosine":
            raise InputError(f"--snapshots {self.snapshots} needs --schedule cosine (snapshot cycles are cosine "
                             f"restarts), got --schedule {self.schedule}")
        if any(epoch < 1 for epoch in self.lr_steps) or self.lr_steps != sorted(set(self.lr_steps)):
            raise InputError(f"--lr-steps must be increasing epoch numbers >= 1, got {self.lr_steps}")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise InputError("--nesterov needs --momentum above 0: pass --no-nesterov for plain SGD")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if not self.holdout_fraction < 1:
            raise InputError(f"--holdout-fraction must be at least 0 and below 1, got {self.holdout_fraction}")
        labelset = self.label_set()
        if self.none_weight not in (None, 1.0) and not labelset.none_classes:
            raise InputError(f"--none-weight {self.none_weight:g}: label set {labelset.name} has no none classes to "
                             "weigh; leave the option out")
        create_loss(self.loss, none_mask=labelset.none_mask, class_counts=(1,) * len(labelset.class_names),
                    **self.loss_params())  # InputError for an unknown loss or a parameter it lacks

    def label_set(self) -> LabelSet:
        """The ``--labelset`` (InputError for an unknown name or a bad file)."""
        return load_labelset(self.labelset)

    def loss_params(self) -> dict[str, Any]:
        """Keyword arguments for ``create_loss`` (None values are dropped there)."""
        return {"gamma": self.gamma, "beta": self.beta, "th": self.th, "none_weight": self.none_weight,
                "drop_max": True if self.drop_max_loss else None}

    def to_toml(self, path: str | Path) -> None:
        """Write the config as flat TOML, atomically; None values are left out (TOML has no null)."""
        options.write_toml(path, self)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a config or recipe file; unknown keys and values of the wrong type raise InputError naming them."""
        return cls().updated(options.read_toml(path), source=str(path))

    def updated(self, overrides: Mapping[str, Any], source: str = "overrides") -> TrainConfig:
        """A copy with ``overrides`` applied (keys must be fields; ints are accepted for floats)."""
        return options.updated(self, overrides, source)

    @classmethod
    def layered(cls, flags: Mapping[str, Any] | None = None, recipe: str | Path | None = None,
                resume: bool = False) -> TrainConfig:
        """The config ``dsdi train`` runs: defaults < the run's own config.toml (with ``resume``; the run directory
        is ``out`` of the flags, else of the recipe) < ``recipe`` < ``flags`` (field name -> value, as given)."""
        flags = dict(flags or {})
        recipe_values = options.read_toml(recipe) if recipe is not None else {}
        config = cls()
        run_dir = flags.get("out") or recipe_values.get("out")
        own_toml = RunFolder(run_dir).config_toml if resume and run_dir else None
        if own_toml is not None and own_toml.is_file():
            own = options.read_toml(own_toml)
            own.setdefault("holdout_fraction", 0.0)  # a run from before the common hold-out keeps its images
            config = config.updated(own, source=str(own_toml))
        if recipe is not None:
            config = config.updated(recipe_values, source=str(recipe))
        return config.updated(flags, source="command line")

