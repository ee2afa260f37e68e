"""Run folders around hand-made checkpoints, for the tests that need a particular model (a colour model, a pattern
model) where dsdi rank wants a finished run: what a finished dsdi train run leaves besides its checkpoints."""

import shutil
from pathlib import Path

from dsdi.models.checkpoint import read_checkpoint
from dsdi.train.config import TrainConfig
from dsdi.train.run_folder import EpochMetrics, RunFolder


def finish_run(run_dir: Path) -> Path:
    """Give run_dir, whose best.pt holds epoch E, what a finished E-epoch run has too: config.toml planning E epochs
    (with the checkpoint's backbone and input size), metrics.csv rows 1..E and, unless present, last.pt (a copy of
    best.pt). Returns run_dir."""
    run = RunFolder(run_dir)
    checkpoint = read_checkpoint(run.best)
    epochs = int(checkpoint["epoch"])
    TrainConfig(backbone=checkpoint["backbone"], img_size=int(checkpoint["img_size"]), epochs=epochs).to_toml(
        run.config_toml)
    run.write_metrics([EpochMetrics(epoch, val_lrap=0.5) for epoch in range(1, epochs + 1)])
    if not run.last.is_file():
        shutil.copyfile(run.best, run.last)
    return run_dir
