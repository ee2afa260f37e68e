"""Models: backbones, the model input (resize and normalisation) and checkpoints, shared by training and ranking."""
