"""The learning-rate schedules of ``dsdi train`` (``--schedule``) and the epochs that end a snapshot cycle.

- ``cosine``: from ``lr`` to 0, per optimizer step; with ``snapshots = N`` it restarts every ceil(epochs / N)
  epochs (Huang et al. 2017, eq. 2, snapshot ensembles). It depends on the total ``epochs``: raising
  ``--epochs`` on ``--resume`` re-spreads the cosine over the new total from the current step.
- ``step`` (IBN-Net's ``lr * 0.1 ** (epoch // 30)``): ``lr`` times ``lr_step_factor`` for every ``lr_steps``
  epoch already completed. It depends on the epoch alone: raising ``--epochs`` on ``--resume`` continues at the
  current rate and applies the later ``lr_steps`` when their epochs come.
"""

from __future__ import annotations

import math

from dsdi.train.config import TrainConfig


def learning_rate(step: int, steps_per_epoch: int, epochs: int, snapshots: int, base_lr: float) -> float:
    """Cosine learning rate at optimizer step ``step`` (0-based), restarting every cycle.

    Cycle length ceil(epochs / max(1, snapshots)) epochs; within a cycle at fraction t in [0, 1):
    lr = base_lr / 2 * (1 + cos(pi t)) (Huang et al. 2017, eq. 2).
    """
    cycle_steps = math.ceil(epochs / max(1, snapshots)) * steps_per_epoch
    position = (step % cycle_steps) / cycle_steps
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * position))


def step_learning_rate(step: int, steps_per_epoch: int, lr_steps: list[int], factor: float, base_lr: float) -> float:
    """Step learning rate at optimizer step ``step`` (0-based): ``base_lr * factor ** k``, k = how many of
    ``lr_steps`` are <= the epochs completed before the step (IBN-Net: ``lr * 0.1 ** (epoch // 30)``)."""
    completed = step // steps_per_epoch
    return base_lr * factor ** sum(1 for epoch in lr_steps if epoch <= completed)


def scheduled_lr(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of ``config``'s schedule at optimizer step ``step`` (0-based)."""
    if config.schedule == "step":
        return step_learning_rate(step, steps_per_epoch, config.lr_steps, config.lr_step_factor, config.lr)
    return learning_rate(step, steps_per_epoch, config.epochs, config.snapshots, config.lr)


def snapshot_index(epoch: int, epochs: int, snapshots: int) -> int | None:
    """The 1-based snapshot number saved after ``epoch`` (1-based), or None when no cycle ends there."""
    if snapshots < 1:
        return None
    cycle_epochs = math.ceil(epochs / snapshots)
    if epoch % cycle_epochs == 0 or epoch == epochs:
        return math.ceil(epoch / cycle_epochs)
    return None
