"""Training: configuration, the training loop, schedules, losses, image data, predictions and sweeps."""
