"""The training loop (`dsdi train`): ``train(config) -> run dir``, in named parts.

What a run writes into ``runs/NAME/``, in which order, and when it is finished: ``dsdi.train.run_folder``
(``config.toml``: the fully resolved config, read back with ``TrainConfig.from_toml``; ``metrics.csv``;
``last.pt``: the last completed epoch plus optimizer, scheduler and RNG state, for ``--resume``; ``best.pt``: the
epoch with the highest validation LRAP; ``snapshot_K.pt`` with ``snapshots = N``: the model at the end of each of
the N cosine cycles; ``predictions/``: the validation and hold-out sigmoids of every kept checkpoint, and the images'
soft targets).

Images: the common hold-out (``holdout_fraction`` of the labels file's ids, chosen by ``holdout_seed`` alone, so
the same for every recipe: ensembles are judged on images no member saw) is set aside first; the readable rest
is split ``1 - val_fraction`` / ``val_fraction`` by ``split_seed`` (each Table 2 recipe has its own split).

Choices (paper 3 says "other hyper-parameters: same as IBN-Net"):

- Optimizer: SGD, momentum 0.9, weight decay 1e-4 as in IBN-Net; IBN-Net's lr 0.1 at batch 256 scaled
  linearly to batch 28 gives 0.011, so the default lr is 0.01. Nesterov momentum by default (``nesterov``;
  IBN-Net and the recipes: off). ``optimizer = "adamw"`` is offered too.
- Learning rate, set every step (``dsdi.train.schedule``): ``cosine`` (default) from ``lr`` to 0 over all epochs, or
  restarting every ceil(epochs / N) epochs with ``snapshots = N`` (Huang et al. 2017, eq. 2; the model is saved
  at the end of each cycle); ``step`` (IBN-Net, the recipes): ``lr`` x ``lr_step_factor`` after each
  ``lr_steps`` epoch (IBN-Net: x0.1 after epoch 30). Raising ``--epochs`` on ``--resume`` re-spreads a cosine
  over the new total from the current step; a step schedule continues at its current rate.
- Validation LRAP and mAP (``dsdi.trecvid.evaluation``, scikit-learn) use hard labels ``soft target >= 0.5`` (soft
  labels are max-normalised, so every image keeps its top class); mAP is the mean per-class average
  precision over classes with at least one positive validation image. A best.pt needs a finite LRAP.
- ``batch_size`` is per process: under ``torchrun --nproc-per-node N`` the global batch is N times it.
- AMP only on CUDA: bfloat16 where the GPU supports it, else float16 with a gradient scaler.

The parts: :func:`make_loaders` (the splits and their loaders), :func:`build_state` (model, optimiser, scaler),
:func:`restore_state` (from ``last.pt``), :func:`train_one_epoch`, :func:`validate`, :func:`save_epoch`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from dsdi.errors import InputError
from dsdi.models.backbones import backbone_preprocessing, create_backbone
from dsdi.models.checkpoint import checkpoint_payload, read_checkpoint, save_checkpoint
from dsdi.models.preprocess import Preprocessing
from dsdi.options import plain_values
from dsdi.progress import progress_bar
from dsdi.runtime import ProcessGroup, join_process_group, pick_device, rng_state, seed_everything, set_rng_state
from dsdi.train.config import TrainConfig
from dsdi.train.data import (
    Augmentation,
    LabelledImageDataset,
    collate_skip_broken,
    training_batch,
)
from dsdi.train.losses import create_loss
from dsdi.train.metrics import lrap, per_class_average_precision
from dsdi.train.predictions import write_predictions, write_targets
from dsdi.train.run_folder import LAST_NAME, EpochMetrics, RunFolder
from dsdi.train.schedule import scheduled_lr, snapshot_index
from dsdi.train.splits import split_labels

AUGMENTATION = Augmentation()  # paper section 3, on each training batch on the device (dsdi.train.data.training_batch)

console = Console(stderr=True)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def validation_scores(targets: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(LRAP, mAP) of scores (N, 37) against soft targets (N, 37) binarised at 0.5 (``dsdi.trecvid.evaluation``);
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
    metrics: list[EpochMetrics] = field(default_factory=list)
    """One metrics.csv row per completed epoch (process 0 only)."""


@dataclass
class Loaders:
    """The splits' loaders; ``train_sampler`` shards (and reshuffles per epoch) across processes; ``preprocessing``
    the model input's (its mean/std normalise every batch); ``holdout`` is None when the hold-out is empty."""

    train: DataLoader
    val: DataLoader
    train_sampler: DistributedSampler
    preprocessing: Preprocessing
    holdout: DataLoader | None = None

    @property
    def train_images(self) -> int:
        """Training images this process sees per epoch."""
        return len(self.train_sampler)


@dataclass
class Evaluation:
    """A validation or hold-out pass on process 0: loss, LRAP, mAP and the sigmoids (N, 37) of the N images scored
    (``image_ids``); NaN and None in the other processes, or when no image was scored."""

    loss: float = math.nan
    lrap: float = math.nan
    map: float = math.nan
    image_ids: list[str] | None = None
    sigmoids: np.ndarray | None = None


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
    labelset = config.label_set()
    loaders = make_loaders(config, device, group)
    state = build_state(config, device, amp_dtype)
    loss_fn = create_loss(config.loss, none_mask=labelset.none_mask,
                          class_counts=labelset.counts or training_counts(loaders.train.dataset.targets),
                          **config.loss_params()).to(device)
    if checkpoint is not None:
        restore_state(state, checkpoint, config, run_dir, group)
    if state.epoch >= config.epochs:
        _say(group, f"{run_dir}: already trained {state.epoch} epochs; raise --epochs to extend")
        return run_dir
    if group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_toml(RunFolder(run_dir).config_toml)
        _write_targets(run_dir, loaders, labelset.class_names)
    amp_text = f" amp {amp_dtype}" if amp_dtype else ""
    held = len(loaders.holdout.dataset) if loaders.holdout is not None else 0
    _say(group, f"training {config.backbone} ({config.loss}) on {len(loaders.train.dataset)} images, validating on "
                f"{len(loaders.val.dataset)}, holding out {held}, {config.img_size} px, {device}{amp_text}, "
                f"{group.world_size} process(es) -> {run_dir}")
    net = (nn.parallel.DistributedDataParallel(state.model, device_ids=[device.index] if device.type == "cuda"
                                               else None, broadcast_buffers=False) if group.active else state.model)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        epoch_lr = scheduled_lr(config, state.step, len(loaders.train))
        stats = train_one_epoch(net, loss_fn, state, loaders, config, epoch, device, amp_dtype, group)
        val = validate(state.model, loss_fn, loaders.val, device, amp_dtype, group)
        holdout = (validate(state.model, loss_fn, loaders.holdout, device, amp_dtype, group)
                   if loaders.holdout is not None else Evaluation())
        state.epoch = epoch
        if not group.is_main:
            continue
        if stats.broken:
            _report_broken(epoch, stats)
        state.metrics.append(EpochMetrics(
            epoch=epoch, lr=epoch_lr, train_loss=stats.train_loss, val_loss=val.loss, val_lrap=val.lrap,
            val_map=val.map, holdout_lrap=holdout.lrap, holdout_map=holdout.map,
            seconds=time.perf_counter() - started, images_per_s=stats.images / max(stats.seconds, 1e-9),
            broken_images=stats.broken,
        ))
        save_epoch(run_dir, state, config, val, holdout)
        held_text = f" holdout_lrap {holdout.lrap:.4f}" if loaders.holdout is not None else ""
        _say(group, f"epoch {epoch}: train_loss {stats.train_loss:.4f} val_loss {val.loss:.4f} val_lrap {val.lrap:.4f} "
                    f"val_map {val.map:.4f}{held_text} ({state.metrics[-1].images_per_s:.1f} images/s)")
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
    last = RunFolder(run_dir).last
    if not last.is_file():
        if resume:
            _say(group, f"{run_dir}: no {LAST_NAME} yet, starting from scratch")
        return None
    if not resume:
        raise InputError(f"{run_dir} already holds a run ({LAST_NAME}); pass --resume to continue or extend it, "
                         "or choose another --out")
    checkpoint = read_checkpoint(last)
    saved = {**checkpoint.get("config", {}), "backbone": checkpoint["backbone"], "img_size": checkpoint["img_size"]}
    for key in ("backbone", "img_size", "split_seed", "val_fraction", "holdout_fraction", "holdout_seed"):
        if key in saved and saved[key] != getattr(config, key):
            keeps = "its model" if key in ("backbone", "img_size") else "its training, validation and hold-out images"
            raise InputError(f"{last} was trained with {key} {saved[key]!r}, not {getattr(config, key)!r}: "
                             f"a resumed run keeps {keeps}; start a new run with another --out instead")
    return checkpoint


def training_counts(targets: torch.Tensor) -> tuple[int, ...]:
    """Images with a positive label (> 0) per class (C,) of the training targets (N, C): the class-balanced
    loss's n_c for a label set without published counts."""
    return tuple(int(n) for n in (targets > 0).sum(dim=0).tolist())


def make_loaders(config: TrainConfig, device: torch.device, group: ProcessGroup) -> Loaders:
    """The hold-out and train/validation split of the labelled images (:func:`split_labels`) and this process's
    loaders, normalising with the backbone's mean/std (its timm data config: ``backbone_preprocessing``)."""
    train_rows, val_rows, holdout_rows = split_labels(config)
    preprocessing = backbone_preprocessing(config.backbone, config.img_size)
    classes = config.label_set().class_names
    train_set = LabelledImageDataset(train_rows, config.images, config.img_size, train=True, class_names=classes)
    train_sampler = DistributedSampler(train_set, num_replicas=group.world_size, rank=group.world_rank,
                                       shuffle=True, seed=config.seed)
    loader_args = {"batch_size": config.batch_size, "num_workers": config.workers, "collate_fn": collate_skip_broken,
                   "pin_memory": device.type == "cuda", "persistent_workers": config.workers > 0}

    def evaluation_loader(rows: pd.DataFrame) -> DataLoader:
        dataset = LabelledImageDataset(rows, config.images, config.img_size, train=False, mean=preprocessing.mean,
                                       std=preprocessing.std, class_names=classes)
        sampler = DistributedSampler(dataset, num_replicas=group.world_size, rank=group.world_rank, shuffle=False)
        return DataLoader(dataset, sampler=sampler, **loader_args)

    drop_last = len(train_sampler) > config.batch_size  # a batch of 1 breaks BatchNorm in train mode
    return Loaders(DataLoader(train_set, sampler=train_sampler, drop_last=drop_last, **loader_args),
                   evaluation_loader(val_rows), train_sampler, preprocessing,
                   evaluation_loader(holdout_rows) if len(holdout_rows) else None)


def build_state(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None) -> TrainingState:
    """A fresh model (random, ``pretrained`` or ``weights``) with one output per class of the config's label set on
    ``device``, its optimizer and gradient scaler."""
    classes = config.label_set().class_names
    model = create_backbone(config.backbone, num_classes=len(classes), pretrained=config.pretrained,
                            weights=config.weights or None).to(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov)
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
        configured = [{k: v for k, v in param_group.items() if k != "params"}
                      for param_group in state.optimizer.param_groups]
        state.optimizer.load_state_dict(checkpoint["optimizer"])
        for param_group, values in zip(state.optimizer.param_groups, configured, strict=True):
            param_group.update(values)  # momentum, nesterov, weight decay as configured now, not as saved
    else:
        _say(group, f"optimizer changed to {config.optimizer}: its state starts afresh")
    if "scaler" in checkpoint:
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = int(checkpoint["epoch"]), int(checkpoint["scheduler"]["step"])
    state.best_val_lrap = float(checkpoint.get("best_val_lrap", -math.inf))
    set_rng_state(checkpoint["rng"])
    table = RunFolder(run_dir).read_metrics()
    if table is not None:
        state.metrics = table.up_to(state.epoch)
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
            lr = scheduled_lr(config, state.step, len(loaders.train))
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
            images = training_batch(batch.images.to(device, non_blocking=True), AUGMENTATION,
                                    loaders.preprocessing.mean, loaders.preprocessing.std)
            targets = batch.targets.to(device, non_blocking=True)
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
    kept = (f"the last good checkpoint is {RunFolder(run_dir).last} (epoch {epoch - 1}); lower --lr or check the "
            "labels, then continue with --resume" if epoch > 1
            else "no epoch completed, so no checkpoint was written; lower --lr or check the labels")
    return f"the training loss became {loss} at epoch {epoch}, step {step} (lr {lr:.3g}); training stopped: {kept}"


@torch.no_grad()
def validate(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None, group: ProcessGroup) -> Evaluation:
    """Loss, LRAP, mAP and sigmoids over the whole validation (or hold-out) set of ``loader``, on process 0.

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
        return Evaluation()
    logits, targets, indices = (torch.cat(parts) for parts in zip(*shards, strict=True))
    rows, first = np.unique(indices.numpy(), return_index=True)
    logits, targets = logits[first], targets[first]
    sigmoids = torch.sigmoid(logits).numpy()
    loss = float(loss_fn(logits.to(device), targets.to(device)))
    image_ids = [loader.dataset.image_ids[row] for row in rows]
    return Evaluation(loss, *validation_scores(targets.numpy(), sigmoids), image_ids=image_ids, sigmoids=sigmoids)


def _write_targets(run_dir: Path, loaders: Loaders, classes: tuple[str, ...]) -> None:
    """predictions/targets.{val,holdout}.csv: the soft targets of the validation and hold-out images."""
    for part, loader in (("val", loaders.val), ("holdout", loaders.holdout)):
        if loader is not None:
            write_targets(run_dir, part, loader.dataset.image_ids, loader.dataset.targets.numpy(), classes)


def _save_with_predictions(path: Path, payload: dict, val: Evaluation, holdout: Evaluation) -> None:
    """The checkpoint ``path`` and, just before it, its stored validation and hold-out sigmoids."""
    for part, evaluation in (("val", val), ("holdout", holdout)):
        if evaluation.sigmoids is not None:
            write_predictions(path.parent, path.stem, part, evaluation.image_ids, evaluation.sigmoids,
                              tuple(payload["classes"]))
    save_checkpoint(path, payload)


def save_epoch(run_dir: Path, state: TrainingState, config: TrainConfig, val: Evaluation,
               holdout: Evaluation) -> None:
    """Write metrics.csv, then best.pt, snapshot_K.pt and last.pt, each after its predictions (last.pt last, so a
    kill leaves a consistent run: an epoch whose last.pt was not written is trained again on --resume)."""
    folder = RunFolder(run_dir)
    folder.write_metrics(state.metrics)
    payload = checkpoint_payload(state.model, backbone=config.backbone, img_size=config.img_size, epoch=state.epoch,
                                 val_lrap=val.lrap, config=plain_values(config), labelset=config.label_set())
    if val.lrap > state.best_val_lrap:
        state.best_val_lrap = val.lrap
        _save_with_predictions(folder.best, payload, val, holdout)
    snapshot = snapshot_index(state.epoch, config.epochs, config.snapshots)
    if snapshot is not None:
        _save_with_predictions(folder.checkpoint(f"snapshot_{snapshot}"), payload, val, holdout)
    training_state = {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"step": state.step, "kind": config.schedule, "snapshots": config.snapshots},
        "rng": rng_state(),
        "best_val_lrap": state.best_val_lrap,
    }
    if state.scaler.is_enabled():
        training_state["scaler"] = state.scaler.state_dict()
    _save_with_predictions(folder.last, {**payload, **training_state}, val, holdout)
