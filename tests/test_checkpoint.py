"""Checkpoints rebuild their model from the file alone and refuse a foreign class schema."""

import pytest
import torch

from dsdi.backbones import create_backbone
from dsdi.checkpoint import load_model, save_checkpoint
from dsdi.schema import CLASSES


def _payload(model, classes=CLASSES):
    return {"model": model.state_dict(), "backbone": "lcnet_050", "classes": list(classes), "img_size": 64,
            "epoch": 2, "val_lrap": 0.5, "config": {}}


def test_run_directory_rebuilds_identical_model(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("lcnet_050").eval()
    save_checkpoint(tmp_path / "best.pt", _payload(model))
    rebuilt, info = load_model(tmp_path)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), model(images))
    assert (info.backbone, info.img_size, info.epoch) == ("lcnet_050", 64, 2)
    assert not list(tmp_path.glob("*.tmp"))


def test_foreign_schema_and_missing_files_are_refused(tmp_path):
    model = create_backbone("lcnet_050")
    save_checkpoint(tmp_path / "old.pt", _payload(model, classes=CLASSES[:36]))
    with pytest.raises(ValueError, match="class schema"):
        load_model(tmp_path / "old.pt")
    unfinished_run = tmp_path / "run"
    unfinished_run.mkdir()
    with pytest.raises(FileNotFoundError, match="no best.pt"):
        load_model(unfinished_run)
