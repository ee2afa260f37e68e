"""The training loop (`dsdi train`): ``train(config) -> run dir``, in named parts.

What a run writes into ``runs/NAME/``:

- ``config.toml``   the fully resolved config (flat TOML; read back with ``TrainConfig.from_toml``)
- ``metrics.csv``   one row per epoch: epoch, lr (at the epoch's first step), train_loss, val_loss,
                    val_lrap, val_map, seconds (train + validation wall time), images_per_s (training
                    images per second, all processes), broken_images (rewritten atomically each epoch)
- ``last.pt``       the last completed epoch plus optimizer, scheduler and RNG state (for ``--resume``)
- ``best.pt``       the epoch with the highest validation LRAP
- ``snapshot_K.pt`` with ``snapshots = N``: the model at the end of each of the N cosine cycles

Choices (paper 3 says "other hyper-parameters: same as IBN-Net"):

- Optimizer: SGD, momentum 0.9 (Nesterov), weight decay 1e-4 as in IBN-Net; IBN-Net's lr 0.1 at batch 256
  scaled linearly to batch 28 gives 0.011, so the default lr is 0.01. ``optimizer = "adamw"`` is offered too.
- Learning rate: cosine from ``lr`` to 0, updated every step. Without snapshots the cosine spans all
  epochs; with ``snapshots = N`` it restarts every ceil(epochs / N) epochs (Huang et al. 2017, eq. 2) and
  the model is saved at the end of each cycle. Raising ``--epochs`` on ``--resume`` re-spreads the
  schedule over the new total from the current step.
- Validation LRAP and mAP (``dsdi.metrics``, scikit-learn) use hard labels ``soft target >= 0.5`` (soft
  labels are max-normalised, so every image keeps its top class); mAP is the mean per-class average
  precision over classes with at least one positive validation image. A best.pt needs a finite LRAP.
- ``batch_size`` is per process: under ``torchrun --nproc-per-node N`` the global batch is N times it.
- AMP only on CUDA: bfloat16 where the GPU supports it, else float16 with a gradient scaler.

The parts: :func:`make_loaders` (the split and its loaders), :func:`build_state` (model, optimiser, scaler),
:func:`restore_state` (from ``last.pt``), :func:`train_one_epoch`, :func:`validate`, :func:`save_epoch`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from dsdi.backbones import create_backbone
from dsdi.checkpoint import BEST_NAME, LAST_NAME, checkpoint_payload, read_checkpoint, save_checkpoint
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
from dsdi.runtime import ProcessGroup, join_process_group, pick_device, rng_state, seed_everything, set_rng_state
from dsdi.schema import CLASSES
from dsdi.train_config import CONFIG_NAME, TrainConfig

METRICS_NAME = "metrics.csv"
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_lrap", "val_map", "seconds", "images_per_s",
                  "broken_images")

console = Console(stderr=True)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


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
class TrainingState:
    """What a run carries from epoch to epoch and keeps in ``last.pt``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimizer steps taken: the position in the learning-rate schedule."""
    best_val_lrap: float = -math.inf
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """One METRIC_COLUMNS row per completed epoch (process 0 only)."""


@dataclass
class Loaders:
    """The training split's loaders; ``train_sampler`` shards (and reshuffles per epoch) across processes."""

    train: DataLoader
    val: DataLoader
    train_sampler: DistributedSampler

    @property
    def train_images(self) -> int:
        """Training images this process sees per epoch."""
        return len(self.train_sampler)


@dataclass
class EpochStats:
    """One training epoch: mean loss over this process's images, images seen and unreadable (all processes), the
    unreadable files this process met, wall seconds of the training part."""

    train_loss: float
    images: float
    broken: int
    broken_paths: list[str]
    seconds: float


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train a classifier per ``config`` and return the run directory (see the module docstring).

    ``resume``: continue from ``<out>/last.pt`` (model, optimizer, scheduler step, RNG, metrics); a run whose
    ``epochs`` were raised is extended. Build ``config`` with ``TrainConfig.layered(flags, recipe, resume)`` to
    get the command's precedence (the run's own config.toml under the recipe and flags). Raises InputError for
    bad input and NonFiniteLossError when the loss stops being finite (the last completed epoch's
    checkpoints are kept)."""
    if resume and not config.out:
        raise InputError("--resume needs --out RUN_DIR (the run to continue)")
    group = join_process_group(pick_device(config.device).type)
    try:
        return _run(config, resume, group)
    finally:
        group.leave()


def _run(config: TrainConfig, resume: bool, group: ProcessGroup) -> Path:
    config = config.resolved()
    config = config.updated({"out": group.broadcast(config.out)})  # one run directory: process 0's timestamp
    run_dir = Path(config.out)
    checkpoint = _resumable_checkpoint(run_dir, config, resume, group)
    device = pick_device(config.device, group.local_rank)
    amp_dtype = _amp_dtype(config.amp, device)
    seed_everything(config.seed + group.world_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    loaders = make_loaders(config, device, group)
    state = build_state(config, device, amp_dtype)
    loss_fn = create_loss(config.loss, **config.loss_params()).to(device)
    if checkpoint is not None:
        restore_state(state, checkpoint, config, run_dir, group)
    if state.epoch >= config.epochs:
        _say(group, f"{run_dir}: already trained {state.epoch} epochs; raise --epochs to extend")
        return run_dir
    if group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_toml(run_dir / CONFIG_NAME)
    amp_text = f" amp {amp_dtype}" if amp_dtype else ""
    _say(group, f"training {config.backbone} ({config.loss}) on {len(loaders.train.dataset)} images, validating on "
                f"{len(loaders.val.dataset)}, {config.img_size} px, {device}{amp_text}, {group.world_size} "
                f"process(es) -> {run_dir}")
    net = (nn.parallel.DistributedDataParallel(state.model, device_ids=[device.index] if device.type == "cuda"
                                               else None, broadcast_buffers=False) if group.active else state.model)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        epoch_lr = learning_rate(state.step, len(loaders.train), config.epochs, config.snapshots, config.lr)
        stats = train_one_epoch(net, loss_fn, state, loaders, config, epoch, device, amp_dtype, group)
        val_loss, val_lrap, val_map = validate(state.model, loss_fn, loaders.val, device, amp_dtype, group)
        state.epoch = epoch
        if not group.is_main:
            continue
        if stats.broken:
            _report_broken(epoch, stats)
        state.metrics.append({
            "epoch": epoch, "lr": epoch_lr, "train_loss": stats.train_loss, "val_loss": val_loss,
            "val_lrap": val_lrap, "val_map": val_map, "seconds": time.perf_counter() - started,
            "images_per_s": stats.images / max(stats.seconds, 1e-9), "broken_images": stats.broken,
        })
        save_epoch(run_dir, state, config, val_lrap)
        _say(group, f"epoch {epoch}: train_loss {stats.train_loss:.4f} val_loss {val_loss:.4f} val_lrap "
                    f"{val_lrap:.4f} val_map {val_map:.4f} ({state.metrics[-1]['images_per_s']:.1f} images/s)")
    return run_dir


def _say(group: ProcessGroup, message: str) -> None:
    """Print on process 0 only."""
    if group.is_main:
        console.print(message, highlight=False, soft_wrap=True)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device``; None (float32) off CUDA."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _resumable_checkpoint(run_dir: Path, config: TrainConfig, resume: bool, group: ProcessGroup) -> dict | None:
    """``last.pt`` of ``run_dir`` when resuming (None when absent); InputError when a run is there without
    ``resume`` or when it cannot continue under ``config``."""
    last = run_dir / LAST_NAME
    if not last.is_file():
        if resume:
            _say(group, f"{run_dir}: no {LAST_NAME} yet, starting from scratch")
        return None
    if not resume:
        raise InputError(f"{run_dir} already holds a run ({LAST_NAME}); pass --resume to continue or extend it, "
                         "or choose another --out")
    checkpoint = read_checkpoint(last)
    for key in ("backbone", "img_size"):
        if checkpoint[key] != getattr(config, key):
            raise InputError(f"{last} was trained with {key} {checkpoint[key]!r}, not {getattr(config, key)!r}: "
                             "a resumed run keeps its model; start a new run with another --out instead")
    return checkpoint


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
        console.print(f"skipping {len(bad_ids)} missing/unreadable images (--skip-missing)", highlight=False,
                      soft_wrap=True)
        labels = labels[~labels["image_id"].isin(bad_ids)].reset_index(drop=True)
    if len(labels) < 2:
        raise InputError(f"{config.labels}: at least 2 readable labelled images are needed to train and validate")
    return labels


def make_loaders(config: TrainConfig, device: torch.device, group: ProcessGroup) -> Loaders:
    """The train/validation split of the readable labelled images (seeded) and this process's loaders."""
    labels = _labelled_images(config)
    train_ids, val_ids = train_val_split(labels["image_id"].tolist(), val_fraction=config.val_fraction,
                                         seed=config.seed)
    train_rows = labels[labels["image_id"].isin(set(train_ids))].reset_index(drop=True)
    val_rows = labels[labels["image_id"].isin(set(val_ids))].reset_index(drop=True)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise InputError(f"{config.labels}: the {config.val_fraction} split left an empty train or validation set")
    train_set = LabelledImageDataset(train_rows, config.images, config.img_size, train=True)
    val_set = LabelledImageDataset(val_rows, config.images, config.img_size, train=False)
    train_sampler = DistributedSampler(train_set, num_replicas=group.world_size, rank=group.world_rank,
                                       shuffle=True, seed=config.seed)
    val_sampler = DistributedSampler(val_set, num_replicas=group.world_size, rank=group.world_rank, shuffle=False)
    loader_args = {"batch_size": config.batch_size, "num_workers": config.workers, "collate_fn": collate_skip_broken,
                   "pin_memory": device.type == "cuda", "persistent_workers": config.workers > 0}
    drop_last = len(train_sampler) > config.batch_size  # a batch of 1 breaks BatchNorm in train mode
    return Loaders(DataLoader(train_set, sampler=train_sampler, drop_last=drop_last, **loader_args),
                   DataLoader(val_set, sampler=val_sampler, **loader_args), train_sampler)


def build_state(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None) -> TrainingState:
    """A fresh model (random, ``pretrained`` or ``weights``) on ``device``, its optimizer and gradient scaler."""
    model = create_backbone(config.backbone, num_classes=len(CLASSES), pretrained=config.pretrained,
                            weights=config.weights or None).to(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return TrainingState(model, optimizer, scaler)


def restore_state(state: TrainingState, checkpoint: dict, config: TrainConfig, run_dir: Path,
                  group: ProcessGroup) -> None:
    """Continue from a ``last.pt``: model, optimizer (unless the optimizer changed), scaler, schedule position,
    best LRAP, RNG and the metrics rows up to its epoch."""
    state.model.load_state_dict(checkpoint["model"])
    if checkpoint["config"].get("optimizer") == config.optimizer:
        state.optimizer.load_state_dict(checkpoint["optimizer"])
    else:
        _say(group, f"optimizer changed to {config.optimizer}: its state starts afresh")
    if "scaler" in checkpoint:
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = int(checkpoint["epoch"]), int(checkpoint["scheduler"]["step"])
    state.best_val_lrap = float(checkpoint.get("best_val_lrap", -math.inf))
    set_rng_state(checkpoint["rng"])
    metrics_path = run_dir / METRICS_NAME
    if metrics_path.is_file():
        table = pd.read_csv(metrics_path)
        state.metrics = table[table["epoch"] <= state.epoch].to_dict("records")
    _say(group, f"resuming {run_dir} after epoch {state.epoch} of {config.epochs}")


def train_one_epoch(net: nn.Module, loss_fn: nn.Module, state: TrainingState, loaders: Loaders, config: TrainConfig,
                    epoch: int, device: torch.device, amp_dtype: torch.dtype | None,
                    group: ProcessGroup) -> EpochStats:
    """One pass over this process's shard: the learning rate set per step, all-broken batches skipped by every
    process together, NonFiniteLossError when the loss stops being finite."""
    started = time.perf_counter()
    loaders.train_sampler.set_epoch(epoch)
    net.train()
    loss_sum, seen, unreadable, broken_paths = 0.0, 0, 0, []
    with progress_bar("images", console=console) as bar:
        task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=loaders.train_images, info="",
                            visible=group.is_main)
        for batch_index, batch in enumerate(loaders.train):
            lr = learning_rate(state.step, len(loaders.train), config.epochs, config.snapshots, config.lr)
            for param_group in state.optimizer.param_groups:
                param_group["lr"] = lr
            state.step += 1
            if batch is None:  # every image of the batch was unreadable
                unreadable += min(config.batch_size, loaders.train_images - batch_index * config.batch_size)
            else:
                unreadable += len(batch.broken)
                broken_paths.extend(item.path for item in batch.broken)
            if not group.all_have(batch is not None):  # DDP processes take or skip a step together
                continue
            images, targets = batch.images.to(device, non_blocking=True), batch.targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(net(images), targets)
            batch_loss = group.mean(float(loss.detach()))
            if not math.isfinite(batch_loss):
                raise NonFiniteLossError(_non_finite_message(batch_loss, epoch, state.step, lr, Path(config.out)))
            state.optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
            state.scaler.step(state.optimizer)
            state.scaler.update()
            loss_sum += batch_loss * len(images)
            seen += len(images)
            bar.update(task, advance=len(images), info=f"loss {loss_sum / seen:.4f}")
    return EpochStats(loss_sum / max(1, seen), group.sum(seen), int(group.sum(unreadable)), broken_paths,
                      time.perf_counter() - started)


def _report_broken(epoch: int, stats: EpochStats) -> None:
    paths = stats.broken_paths
    named = f" (this process: {', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''})" if paths else ""
    console.print(f"epoch {epoch}: {stats.broken} unreadable images were skipped{named}", highlight=False,
                  soft_wrap=True)


def _non_finite_message(loss: float, epoch: int, step: int, lr: float, run_dir: Path) -> str:
    kept = (f"the last good checkpoint is {run_dir / LAST_NAME} (epoch {epoch - 1}); lower --lr or check the labels, "
            "then continue with --resume" if epoch > 1
            else "no epoch completed, so no checkpoint was written; lower --lr or check the labels")
    return f"the training loss became {loss} at epoch {epoch}, step {step} (lr {lr:.3g}); training stopped: {kept}"


@torch.no_grad()
def validate(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None, group: ProcessGroup) -> tuple[float, float, float]:
    """(val_loss, val_lrap, val_map) over the whole validation set, on process 0 (NaN in the others).

    Each process scores its shard; process 0 gathers logits, targets and row indices and drops the padding
    duplicates of DistributedSampler."""
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
    shards = [s for s in group.gather(shard) if s is not None]
    if not group.is_main or not shards:
        return math.nan, math.nan, math.nan
    logits, targets, indices = (torch.cat(parts) for parts in zip(*shards, strict=True))
    _, first = np.unique(indices.numpy(), return_index=True)
    logits, targets = logits[first], targets[first]
    val_loss = float(loss_fn(logits.to(device), targets.to(device)))
    val_lrap, val_map = validation_scores(targets.numpy(), torch.sigmoid(logits).numpy())
    return val_loss, val_lrap, val_map


def save_epoch(run_dir: Path, state: TrainingState, config: TrainConfig, val_lrap: float) -> None:
    """Write metrics.csv, best.pt, snapshot_K.pt and last.pt (last, so a kill leaves a consistent run)."""
    write_text_atomic(run_dir / METRICS_NAME, pd.DataFrame(state.metrics, columns=list(METRIC_COLUMNS))
                      .to_csv(index=False))
    payload = checkpoint_payload(state.model, backbone=config.backbone, img_size=config.img_size, epoch=state.epoch,
                                 val_lrap=val_lrap, config=asdict(config))
    if val_lrap > state.best_val_lrap:
        state.best_val_lrap = val_lrap
        save_checkpoint(run_dir / BEST_NAME, payload)
    snapshot = snapshot_index(state.epoch, config.epochs, config.snapshots)
    if snapshot is not None:
        save_checkpoint(run_dir / f"snapshot_{snapshot}.pt", payload)
    training_state = {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"step": state.step, "kind": "cosine", "snapshots": config.snapshots},
        "rng": rng_state(),
        "best_val_lrap": state.best_val_lrap,
    }
    if state.scaler.is_enabled():
        training_state["scaler"] = state.scaler.state_dict()
    save_checkpoint(run_dir / LAST_NAME, {**payload, **training_state})
