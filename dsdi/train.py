"""The training loop (`dsdi train`): one config dataclass, one function ``train(config) -> run dir``.

What a run writes into ``runs/NAME/``:

- ``config.toml``   the fully resolved config (flat TOML; read back with ``TrainConfig.from_toml``)
- ``metrics.csv``   one row per epoch: epoch, lr (at the epoch's first step), train_loss, val_loss,
                    val_lrap, val_map, seconds (train + validation wall time), images_per_s (training
                    images per second, all processes), broken_images (rewritten atomically each epoch)
- ``last.pt``       the last completed epoch plus optimizer, scheduler and RNG state (for ``--resume``)
- ``best.pt``       the epoch with the highest validation LRAP
- ``snapshot_K.pt`` with ``snapshots = N``: the model at the end of each of the N cosine cycles

Choices (paper 3 says "other hyper-parameters: same as IBN-Net"):

- Optimizer: SGD, momentum 0.9, weight decay 1e-4 as in IBN-Net; IBN-Net's lr 0.1 at batch 256 scaled
  linearly to batch 28 gives 0.011, so the default lr is 0.01. ``optimizer = "adamw"`` is offered too.
- Learning rate: cosine from ``lr`` to 0, updated every step. Without snapshots the cosine spans all
  epochs; with ``snapshots = N`` it restarts every ceil(epochs / N) epochs (Huang et al. 2017, eq. 2) and
  the model is saved at the end of each cycle. Raising ``--epochs`` on ``--resume`` re-spreads the
  schedule over the new total from the current step.
- Validation LRAP and mAP (``dsdi.metrics``, scikit-learn) use hard labels ``soft target >= 0.5`` (soft
  labels are max-normalised, so every image keeps its top class); mAP is the mean per-class average
  precision over classes with at least one positive validation image. A best.pt needs a finite LRAP.
- ``batch_size`` is per process: under ``torchrun --nproc-per-node N`` the global batch is N times it.
- AMP only on CUDA: bfloat16 where the GPU supports it, else float16 with a gradient scaler.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from rich.console import Console
from torch.utils.data import DataLoader, DistributedSampler

from dsdi.backbones import create_backbone, default_img_size
from dsdi.checkpoint import BEST_NAME, LAST_NAME, save_checkpoint
from dsdi.data import (
    LabelledImageDataset,
    collate_skip_broken,
    find_unreadable_images,
    read_labels_csv,
    train_val_split,
)
from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.losses import create_loss
from dsdi.metrics import lrap, per_class_average_precision
from dsdi.progress import progress_bar
from dsdi.schema import CLASSES
from dsdi.workspace import IMAGES_DIR, LABELS_CSV, RUNS_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.csv"
METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_lrap",
    "val_map",
    "seconds",
    "images_per_s",
    "broken_images",
)

console = Console(stderr=True)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainConfig:
    """Every option of a training run; ``None`` loss params mean "the loss's own default"."""

    labels: str = str(LABELS_CSV)
    images: str = str(IMAGES_DIR)
    out: str = ""
    """Run directory; empty means ``runs/<backbone>-<loss>-<timestamp>``."""
    backbone: str = "resnest50d"
    loss: str = "cbfl"
    gamma: float | None = None
    beta: float | None = None
    th: float | None = None
    none_weight: float | None = None
    drop_max_loss: bool = False
    epochs: int = 40
    batch_size: int = 28
    img_size: int = 0
    """Square input side in pixels; 0 means the backbone's default (360, HRNet 448)."""
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    snapshots: int = 0
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    device: str = "auto"
    amp: str = "auto"
    """auto (bf16 if supported, else fp16; CUDA only) | bf16 | fp16 | off."""
    pretrained: bool = False
    weights: str = ""
    """A local state dict or dsdi checkpoint to start from; empty means none."""
    seed: int = 0
    val_fraction: float = 0.2
    skip_missing: bool = False

    def resolved(self) -> TrainConfig:
        """A copy with the image size and run directory filled in, validated (InputError when invalid)."""
        values = asdict(self)
        if not values["img_size"]:
            values["img_size"] = default_img_size(self.backbone)
        if not values["out"]:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            values["out"] = str(RUNS_DIR / f"{self.backbone}-{self.loss}-{stamp}")
        config = TrainConfig(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise InputError naming the option for values no run can use."""
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive finite number"),
            (0 <= self.snapshots <= self.epochs, "--snapshots must be between 0 and --epochs"),
            (0 < self.val_fraction < 1, "--val-fraction must be between 0 and 1 (exclusive)"),
            (self.optimizer in ("sgd", "adamw"), "--optimizer must be sgd or adamw"),
            (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
            (self.amp in ("auto", "bf16", "fp16", "off"), "amp must be auto, bf16, fp16 or off"),
            (self.workers >= 0, "--workers must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        try:
            create_loss(self.loss, **self.loss_params())
        except (TypeError, ValueError) as error:
            raise InputError(f"--loss {self.loss}: {error}") from None

    def loss_params(self) -> dict[str, Any]:
        """Keyword arguments for ``create_loss`` (None values are dropped there)."""
        return {
            "gamma": self.gamma,
            "beta": self.beta,
            "th": self.th,
            "none_weight": self.none_weight,
            "drop_max": True if self.drop_max_loss else None,
        }

    def to_toml(self, path: str | Path) -> None:
        """Write the config as flat TOML, atomically; None values are left out (TOML has no null)."""
        lines = [f"{key} = {_toml_value(value)}" for key, value in asdict(self).items() if value is not None]
        write_text_atomic(Path(path), "\n".join(lines) + "\n")

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a config or recipe file; unknown keys raise InputError naming them."""
        return cls().updated(read_toml(path), source=str(path))

    def updated(self, overrides: dict[str, Any], source: str = "overrides") -> TrainConfig:
        """A copy with ``overrides`` applied (keys must be config fields; ints are accepted for floats)."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise InputError(f"{source}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        values = asdict(self)
        for key, value in overrides.items():
            values[key] = _typed_value(key, value, str(known[key].type), source)
        return TrainConfig(**values)


_SCALAR_TYPES = {"str": ((str,), "text"), "int": ((int,), "an integer"), "float": ((int, float), "a number"),
                 "bool": ((bool,), "true or false")}  # fmt: skip


def _typed_value(key: str, value: Any, type_text: str, source: str) -> Any:
    """``value`` checked against a field's annotation text (``"float | None"``...); ints become floats."""
    base = type_text.replace(" | None", "")
    if value is None and base != type_text:
        return None
    types, wanted = _SCALAR_TYPES[base]
    if not isinstance(value, types) or (base in ("int", "float") and isinstance(value, bool)):
        raise InputError(f"{source}: {key} must be {wanted}, got {value!r}")
    return float(value) if base == "float" else value


def read_toml(path: str | Path) -> dict[str, Any]:
    """The top-level table of a TOML file; InputError when missing or malformed."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML ({error})") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def learning_rate(step: int, steps_per_epoch: int, epochs: int, snapshots: int, base_lr: float) -> float:
    """Cosine learning rate at optimizer step ``step`` (0-based), restarting every cycle.

    Cycle length ceil(epochs / max(1, snapshots)) epochs; within a cycle at fraction t in [0, 1):
    lr = base_lr / 2 * (1 + cos(pi t)) (Huang et al. 2017, eq. 2).
    """
    cycle_steps = math.ceil(epochs / max(1, snapshots)) * steps_per_epoch
    position = (step % cycle_steps) / cycle_steps
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * position))


def snapshot_index(epoch: int, epochs: int, snapshots: int) -> int | None:
    """The 1-based snapshot number saved after ``epoch`` (1-based), or None when no cycle ends there."""
    if snapshots < 1:
        return None
    cycle_epochs = math.ceil(epochs / snapshots)
    if epoch % cycle_epochs == 0 or epoch == epochs:
        return math.ceil(epoch / cycle_epochs)
    return None


def validation_scores(targets: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(LRAP, mAP) of scores (N, 37) against soft targets (N, 37) binarised at 0.5 (``dsdi.metrics``);
    NaN for both when a score is not finite."""
    if not np.isfinite(scores).all():
        return math.nan, math.nan
    return lrap(targets, scores), per_class_average_precision(targets, scores)[1]


@dataclass
class _Dist:
    """Where this process stands in a (possibly single-process) run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _init_distributed(device_kind: str) -> _Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    state = _Dist(world_size, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device_kind == "cuda":
        torch.cuda.set_device(state.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return state


def _pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "fp16" or (config.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a checkpoint round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    return table[table["epoch"] <= up_to_epoch].to_dict("records")


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).to_csv(index=False))


def _labelled_images(config: TrainConfig) -> pd.DataFrame:
    """The labels table, with unreadable images refused (InputError) or dropped (``skip_missing``)."""
    labels = read_labels_csv(config.labels)
    unreadable = find_unreadable_images(labels, config.images)
    if unreadable and not config.skip_missing:
        shown = "\n".join(f"  {image_id}: {path} ({reason})" for image_id, path, reason in unreadable[:20])
        more = f"\n  ... and {len(unreadable) - 20} more" if len(unreadable) > 20 else ""
        raise InputError(
            f"{len(unreadable)} of {len(labels)} images in {config.labels} are missing or unreadable under "
            f"{config.images}:\n{shown}{more}\nfix the files or pass --skip-missing to train without them"
        )
    if unreadable:
        bad_ids = {image_id for image_id, _, _ in unreadable}
        console.print(
            f"skipping {len(bad_ids)} missing/unreadable images (--skip-missing)", highlight=False, soft_wrap=True
        )
        labels = labels[~labels["image_id"].isin(bad_ids)].reset_index(drop=True)
    if len(labels) < 2:
        raise InputError(f"{config.labels}: at least 2 readable labelled images are needed to train and validate")
    return labels


def _checkpoint_payload(model: torch.nn.Module, config: TrainConfig, epoch: int, val_lrap: float | None) -> dict:
    return {
        "model": model.state_dict(),
        "backbone": config.backbone,
        "classes": list(CLASSES),
        "img_size": config.img_size,
        "epoch": epoch,
        "val_lrap": val_lrap,
        "config": asdict(config),
    }


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train a classifier per ``config`` and return the run directory (see the module docstring).

    ``resume``: continue from ``<out>/last.pt`` (model, optimizer, scheduler step, RNG, metrics); a run
    whose ``epochs`` were raised is extended. Raises InputError for bad input and NonFiniteLossError when
    the loss stops being finite (the last completed epoch's checkpoints are kept).
    """
    if resume and not config.out:
        raise InputError("--resume needs --out RUN_DIR (the run to continue)")
    dist_state = _init_distributed(_pick_device(config.device, 0).type)
    try:
        return _train(config, resume, dist_state)
    finally:
        if dist_state.active and dist.is_initialized():
            dist.destroy_process_group()


def _resumable_checkpoint(run_dir: Path, config: TrainConfig) -> dict | None:
    """``last.pt`` of ``run_dir`` (None when absent); InputError when it cannot continue under ``config``."""
    if not (run_dir / LAST_NAME).is_file():
        return None
    checkpoint = torch.load(run_dir / LAST_NAME, map_location="cpu", weights_only=True)
    for key in ("backbone", "img_size"):
        if checkpoint[key] != getattr(config, key):
            raise InputError(
                f"{run_dir / LAST_NAME} was trained with {key} {checkpoint[key]!r}, not {getattr(config, key)!r}: "
                "a resumed run keeps its model; start a new run with another --out instead"
            )
    return checkpoint


def _train(config: TrainConfig, resume: bool, dist_state: _Dist) -> Path:
    config = config.resolved()
    if dist_state.active:  # one run directory for all ranks (the timestamp is rank 0's)
        shared = [config.out]
        dist.broadcast_object_list(shared, src=0)
        config = config.updated({"out": shared[0]})
    run_dir = Path(config.out)
    checkpoint = _resumable_checkpoint(run_dir, config) if resume else None
    if (run_dir / LAST_NAME).is_file() and not resume:
        raise InputError(
            f"{run_dir} already holds a run ({LAST_NAME}); pass --resume to continue or extend it, "
            "or choose another --out"
        )
    if resume and checkpoint is None and dist_state.is_main:
        console.print(f"{run_dir}: no {LAST_NAME} yet, starting from scratch", highlight=False, soft_wrap=True)

    device = _pick_device(config.device, dist_state.local_rank)
    amp_dtype = _amp_dtype(config, device)
    random.seed(config.seed + dist_state.rank)
    np.random.seed(config.seed + dist_state.rank)
    torch.manual_seed(config.seed + dist_state.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    labels = _labelled_images(config)
    image_ids = labels["image_id"].tolist()
    train_ids, val_ids = train_val_split(image_ids, val_fraction=config.val_fraction, seed=config.seed)
    train_rows = labels[labels["image_id"].isin(set(train_ids))].reset_index(drop=True)
    val_rows = labels[labels["image_id"].isin(set(val_ids))].reset_index(drop=True)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise InputError(f"{config.labels}: the {config.val_fraction} split left an empty train or validation set")
    train_set = LabelledImageDataset(train_rows, config.images, config.img_size, train=True)
    val_set = LabelledImageDataset(val_rows, config.images, config.img_size, train=False)
    train_sampler = DistributedSampler(
        train_set, num_replicas=dist_state.world_size, rank=dist_state.rank, shuffle=True, seed=config.seed
    )
    val_sampler = DistributedSampler(val_set, num_replicas=dist_state.world_size, rank=dist_state.rank, shuffle=False)
    drop_last = len(train_sampler) > config.batch_size  # a batch of 1 breaks BatchNorm in train mode
    loader_args = {
        "batch_size": config.batch_size,
        "num_workers": config.workers,
        "collate_fn": collate_skip_broken,
        "pin_memory": device.type == "cuda",
        "persistent_workers": config.workers > 0,
    }
    train_loader = DataLoader(train_set, sampler=train_sampler, drop_last=drop_last, **loader_args)
    val_loader = DataLoader(val_set, sampler=val_sampler, **loader_args)
    steps_per_epoch = len(train_loader)

    model = create_backbone(
        config.backbone, num_classes=len(CLASSES), pretrained=config.pretrained, weights=config.weights or None
    ).to(device)
    loss_fn = create_loss(config.loss, **config.loss_params()).to(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, step, best_lrap = 0, 0, -math.inf
    metrics: list[dict[str, Any]] = []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        if checkpoint["config"].get("optimizer") == config.optimizer:
            optimizer.load_state_dict(checkpoint["optimizer"])
        elif dist_state.is_main:
            console.print(
                f"optimizer changed to {config.optimizer}: its state starts afresh", highlight=False, soft_wrap=True
            )
        start_epoch, step = int(checkpoint["epoch"]), int(checkpoint["scheduler"]["step"])
        best_lrap = float(checkpoint.get("best_val_lrap", -math.inf))
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"])
        metrics = _read_metrics(run_dir / METRICS_NAME, start_epoch)
        if dist_state.is_main:
            console.print(
                f"resuming {run_dir} after epoch {start_epoch} of {config.epochs}", highlight=False, soft_wrap=True
            )
    if start_epoch >= config.epochs:
        if dist_state.is_main:
            console.print(
                f"{run_dir}: already trained {start_epoch} epochs; raise --epochs to extend",
                highlight=False,
                soft_wrap=True,
            )
        return run_dir

    if dist_state.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_toml(run_dir / CONFIG_NAME)
        console.print(
            f"training {config.backbone} ({config.loss}) on {len(train_rows)} images, validating on {len(val_rows)}, "
            f"{config.img_size} px, {device}{f' amp {amp_dtype}' if amp_dtype else ''}, "
            f"{dist_state.world_size} process(es) -> {run_dir}",
            highlight=False,
            soft_wrap=True,
        )
    net = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
        if dist_state.active
        else model
    )

    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        train_sampler.set_epoch(epoch)
        epoch_lr = learning_rate(step, steps_per_epoch, config.epochs, config.snapshots, config.lr)
        net.train()
        loss_sum, seen, unreadable, broken_paths = 0.0, 0, 0, []
        with progress_bar("images", console=console) as bar:
            task = bar.add_task(
                f"epoch {epoch}/{config.epochs}", total=len(train_sampler), info="", visible=dist_state.is_main
            )
            for batch_index, batch in enumerate(train_loader):
                lr = learning_rate(step, steps_per_epoch, config.epochs, config.snapshots, config.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step += 1
                if batch is None:  # every image of the batch was unreadable
                    unreadable += min(config.batch_size, len(train_sampler) - batch_index * config.batch_size)
                else:
                    unreadable += len(batch.broken)
                    broken_paths.extend(item.path for item in batch.broken)
                if not _every_rank_has(batch is not None, dist_state):  # DDP ranks take or skip a step together
                    continue
                images, targets = (
                    batch.images.to(device, non_blocking=True),
                    batch.targets.to(device, non_blocking=True),
                )
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = loss_fn(net(images), targets)
                batch_loss = _all_mean(loss.detach(), dist_state)
                if not math.isfinite(batch_loss):
                    raise NonFiniteLossError(_non_finite_message(batch_loss, epoch, step, lr, run_dir))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += batch_loss * len(images)
                seen += len(images)
                bar.update(task, advance=len(images), info=f"loss {loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - started
        broken = int(_all_sum(torch.tensor(float(unreadable)), dist_state))
        images_total = _all_sum(torch.tensor(float(seen)), dist_state)

        val_loss, val_lrap, val_map = _validate(model, loss_fn, val_loader, device, amp_dtype, dist_state)
        if not dist_state.is_main:
            continue
        if broken:
            named = f" (this process: {', '.join(broken_paths[:5])}{' ...' if len(broken_paths) > 5 else ''})"
            console.print(
                f"epoch {epoch}: {broken} unreadable images were skipped{named if broken_paths else ''}",
                highlight=False,
                soft_wrap=True,
            )
        metrics.append(
            {
                "epoch": epoch,
                "lr": epoch_lr,
                "train_loss": loss_sum / max(1, seen),
                "val_loss": val_loss,
                "val_lrap": val_lrap,
                "val_map": val_map,
                "seconds": time.perf_counter() - started,
                "images_per_s": images_total / max(train_seconds, 1e-9),
                "broken_images": broken,
            }
        )
        best_lrap = _save_epoch(run_dir, model, optimizer, scaler, config, epoch, step, val_lrap, best_lrap, metrics)
        console.print(
            f"epoch {epoch}: train_loss {metrics[-1]['train_loss']:.4f} val_loss {val_loss:.4f} "
            f"val_lrap {val_lrap:.4f} val_map {val_map:.4f} ({metrics[-1]['images_per_s']:.1f} images/s)",
            highlight=False,
            soft_wrap=True,
        )
    return run_dir


def _save_epoch(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    epoch: int,
    step: int,
    val_lrap: float,
    best_lrap: float,
    metrics: list[dict[str, Any]],
) -> float:
    """Write metrics.csv, best.pt, snapshot_K.pt and last.pt (last, so a kill leaves a consistent run)."""
    _write_metrics(run_dir / METRICS_NAME, metrics)
    payload = _checkpoint_payload(model, config, epoch, val_lrap)
    if val_lrap > best_lrap:
        best_lrap = val_lrap
        save_checkpoint(run_dir / BEST_NAME, payload)
    snapshot = snapshot_index(epoch, config.epochs, config.snapshots)
    if snapshot is not None:
        save_checkpoint(run_dir / f"snapshot_{snapshot}.pt", payload)
    training_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": {"step": step, "kind": "cosine", "snapshots": config.snapshots},
        "rng": _rng_state(),
        "best_val_lrap": best_lrap,
    }
    if scaler.is_enabled():
        training_state["scaler"] = scaler.state_dict()
    save_checkpoint(run_dir / LAST_NAME, {**payload, **training_state})
    return best_lrap


def _non_finite_message(loss: float, epoch: int, step: int, lr: float, run_dir: Path) -> str:
    kept = (
        f"the last good checkpoint is {run_dir / LAST_NAME} (epoch {epoch - 1}); lower --lr or check the labels, "
        "then continue with --resume"
        if epoch > 1
        else "no epoch completed, so no checkpoint was written; lower --lr or check the labels"
    )
    return f"the training loss became {loss} at epoch {epoch}, step {step} (lr {lr:.3g}); training stopped: {kept}"


def _every_rank_has(flag: bool, dist_state: _Dist) -> bool:
    """True when ``flag`` holds on every rank, so that all ranks skip or take a DDP step together."""
    if not dist_state.active:
        return flag
    return _all_sum(torch.tensor(float(flag)), dist_state) == dist_state.world_size


def _all_mean(value: torch.Tensor, dist_state: _Dist) -> float:
    if dist_state.active:
        value = value.float().clone()
        dist.all_reduce(value)
        value /= dist_state.world_size
    return float(value)


def _all_sum(value: torch.Tensor, dist_state: _Dist) -> float:
    if dist_state.active:
        value = value.clone().to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(value)
    return float(value)


@torch.no_grad()
def _validate(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    dist_state: _Dist,
) -> tuple[float, float, float]:
    """(val_loss, val_lrap, val_map) over the whole validation set, on rank 0 (NaN on other ranks).

    Each rank scores its shard; rank 0 gathers logits, targets and row indices and drops the padding
    duplicates of DistributedSampler.
    """
    model.eval()
    logits_parts, target_parts, index_parts = [], [], []
    for batch in loader:
        if batch is None:
            continue
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(batch.images.to(device, non_blocking=True))
        logits_parts.append(logits.float().cpu())
        target_parts.append(batch.targets.float())
        index_parts.append(batch.indices)
    shard = (torch.cat(logits_parts), torch.cat(target_parts), torch.cat(index_parts)) if logits_parts else None
    shards = [shard]
    if dist_state.active:
        shards = [None] * dist_state.world_size
        dist.all_gather_object(shards, shard)
    if not dist_state.is_main:
        return math.nan, math.nan, math.nan
    shards = [s for s in shards if s is not None]
    if not shards:
        return math.nan, math.nan, math.nan
    logits, targets, indices = (torch.cat(parts) for parts in zip(*shards, strict=True))
    _, first = np.unique(indices.numpy(), return_index=True)
    logits, targets = logits[first], targets[first]
    val_loss = float(loss_fn(logits.to(device), targets.to(device)))
    val_lrap, val_map = validation_scores(targets.numpy(), torch.sigmoid(logits).numpy())
    return val_loss, val_lrap, val_map
