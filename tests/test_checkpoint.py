"""Checkpoints rebuild their model from the file alone and refuse a foreign class schema or a file that is no
checkpoint, with one line naming the file."""

import pickle

import pytest
import torch
from conftest import tiny_checkpoint

from dsdi.errors import InputError
from dsdi.labels.schema import CLASSES
from dsdi.models.backbones import create_backbone
from dsdi.models.checkpoint import checkpoint_payload, load_model, read_checkpoint


class Opaque:
    """A class weights_only unpickling refuses to build."""


def test_payload_holds_the_documented_keys():
    model = create_backbone("lcnet_050")
    payload = checkpoint_payload(model, backbone="lcnet_050", img_size=64, epoch=3, val_lrap=0.25, config={"lr": 1})
    assert set(payload) == {"model", "backbone", "classes", "img_size", "epoch", "val_lrap", "config"}
    assert payload["classes"] == list(CLASSES) and payload["config"] == {"lr": 1} and payload["epoch"] == 3
    assert checkpoint_payload(model, backbone="lcnet_050", img_size=64)["config"] == {}


def test_run_directory_rebuilds_identical_model(tmp_path):
    model = tiny_checkpoint(tmp_path, epoch=2, val_lrap=0.5)
    rebuilt, info = load_model(tmp_path)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), model(images))
    assert (info.backbone, info.img_size, info.epoch) == ("lcnet_050", 64, 2)
    assert not list(tmp_path.glob("*.tmp"))


def test_training_state_travels_as_extra_keys(tmp_path):
    tiny_checkpoint(tmp_path / "last.pt", epoch=2, optimizer={"state": {}}, rng=[1, 2])
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    assert checkpoint["optimizer"] == {"state": {}} and checkpoint["rng"] == [1, 2] and checkpoint["epoch"] == 2


def test_foreign_schema_and_missing_files_are_refused(tmp_path):
    tiny_checkpoint(tmp_path / "old.pt", classes=list(CLASSES[:36]))
    with pytest.raises(InputError, match="old.pt: the checkpoint's class schema"):
        load_model(tmp_path / "old.pt")
    unfinished_run = tmp_path / "run"
    unfinished_run.mkdir()
    with pytest.raises(InputError, match="run: no best.pt"):
        load_model(unfinished_run)
    with pytest.raises(InputError, match="absent.pt: no such checkpoint file"):
        load_model(tmp_path / "absent.pt")
    with pytest.raises(InputError, match="absent.pt: file not found"):
        read_checkpoint(tmp_path / "absent.pt")


def _bad_files(tmp_path):
    """name -> (path of a file no checkpoint reader may accept, what the one-line message says)."""
    good = tmp_path / "good.pt"
    model = tiny_checkpoint(good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({**torch.load(good, weights_only=True), "extra": Opaque()}, tmp_path / "custom_class.pt")
    (tmp_path / "plain_pickle.pt").write_bytes(pickle.dumps(Opaque()))
    torch.save(model.state_dict(), tmp_path / "state_dict.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    return {
        "truncated.pt": "not a dsdi checkpoint", "garbage.pt": "not a dsdi checkpoint",
        "empty.pt": "not a dsdi checkpoint", "custom_class.pt": r"not a dsdi checkpoint \(.*Opaque",
        "plain_pickle.pt": "not a dsdi checkpoint",
        "state_dict.pt": "not a dsdi checkpoint: it lacks model, backbone, classes, img_size",
        "list.pt": "not a dsdi checkpoint: it holds a list, not a dict",
    }


def test_unreadable_files_raise_one_line_naming_the_file(tmp_path):
    for name, says in _bad_files(tmp_path).items():
        for read in (read_checkpoint, load_model):
            with pytest.raises(InputError, match=f"{name}: {says}") as caught:
                read(tmp_path / name)
            message = str(caught.value)
            assert "\n" not in message and len(message) < 400, (name, message)
