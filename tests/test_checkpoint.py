"""Checkpoints rebuild their model from the file alone and refuse a foreign class schema or a file that is no
checkpoint, with one line naming the file."""

import pickle

import pytest
import torch
from conftest import tiny_checkpoint

from dsdi.errors import InputError
from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import CLASSES
from dsdi.models.backbones import backbone_preprocessing, create_backbone
from dsdi.models.checkpoint import checkpoint_epoch, checkpoint_payload, load_model, read_checkpoint
from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, model_preprocessing


class Opaque:
    """A class weights_only unpickling refuses to build."""


def test_payload_holds_the_documented_keys():
    model = create_backbone("lcnet_050")
    payload = checkpoint_payload(model, backbone="lcnet_050", img_size=64, epoch=3, val_lrap=0.25, config={"lr": 1})
    assert set(payload) == {"model", "backbone", "classes", "img_size", "epoch", "val_lrap", "config", "mean", "std",
                            "interpolation", "labelset"}
    assert payload["classes"] == list(CLASSES) and payload["config"] == {"lr": 1} and payload["epoch"] == 3
    assert checkpoint_payload(model, backbone="lcnet_050", img_size=64)["config"] == {}


def test_checkpoint_file_rebuilds_identical_model(tmp_path):
    model = tiny_checkpoint(tmp_path, epoch=2, val_lrap=0.5)
    rebuilt, info = load_model(tmp_path / "best.pt")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), model(images))
    assert (info.backbone, info.img_size, info.epoch) == ("lcnet_050", 64, 2)
    assert not list(tmp_path.glob("*.tmp"))
    assert checkpoint_epoch(tmp_path / "best.pt") == 2


def test_training_state_travels_as_extra_keys(tmp_path):
    tiny_checkpoint(tmp_path / "last.pt", epoch=2, optimizer={"state": {}}, rng=[1, 2])
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    assert checkpoint["optimizer"] == {"state": {}} and checkpoint["rng"] == [1, 2] and checkpoint["epoch"] == 2


def test_foreign_schema_and_missing_files_are_refused(tmp_path):
    tiny_checkpoint(tmp_path / "old.pt", classes=list(CLASSES[:36]))
    with pytest.raises(InputError, match=r"old.pt: its 36 classes are not those of label set ladi-v1 \(37\)"):
        load_model(tmp_path / "old.pt")
    for read in (read_checkpoint, checkpoint_epoch, load_model):
        with pytest.raises(InputError, match="absent.pt: file not found"):
            read(tmp_path / "absent.pt")


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
        for read in (read_checkpoint, checkpoint_epoch, load_model):
            with pytest.raises(InputError, match=f"{name}: {says}") as caught:
                read(tmp_path / name)
            message = str(caught.value)
            assert "\n" not in message and len(message) < 400, (name, message)


@pytest.mark.parametrize("backbone", ["lcnet_050", "test_convnext", "se_ibn_resnet50"])
def test_checkpoint_records_the_models_timm_normalisation(tmp_path, backbone):
    """mean/std are the model's timm pretrained_cfg values (test_convnext: 0.5 / 0.5, not ImageNet's), the
    interpolation bilinear (what dsdi resizes with), read back by load_model; backbone_preprocessing, which
    training normalises with, agrees without building weights."""
    model = tiny_checkpoint(tmp_path, backbone=backbone, img_size=48)
    _, info = load_model(tmp_path / "best.pt")
    expected = Preprocessing(48, tuple(model.pretrained_cfg["mean"]), tuple(model.pretrained_cfg["std"]), "bilinear")
    assert info.preprocessing == expected == backbone_preprocessing(backbone, 48)
    assert (expected.mean == (0.5, 0.5, 0.5)) == (backbone == "test_convnext")
    del model.pretrained_cfg  # a model without a timm config: ImageNet's values
    assert model_preprocessing(model, 48) == Preprocessing(48, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def test_a_checkpoint_without_preprocessing_or_labelset_keys_loads_as_imagenet_input_and_ladi_v1(tmp_path):
    tiny_checkpoint(tmp_path / "new.pt", backbone="test_convnext")
    old = {key: value for key, value in read_checkpoint(tmp_path / "new.pt").items()
           if key not in ("mean", "std", "interpolation", "labelset")}
    torch.save(old, tmp_path / "old.pt")
    _, info = load_model(tmp_path / "old.pt")
    assert info.preprocessing == Preprocessing(64, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    assert info.labelset == LADI_V1


@pytest.mark.parametrize(("values", "says"), [
    ({"std": [0.2, 0.0, 0.2]}, "must be positive"), ({"mean": "abc"}, "three finite numbers"),
    ({"mean": [0.5, 0.5]}, "three finite numbers"), ({"interpolation": "lanczos"}, "interpolation 'lanczos'"),
    ({"std": 3}, "not numbers")])
def test_unusable_preprocessing_values_are_refused_on_one_line(tmp_path, values, says):
    tiny_checkpoint(tmp_path / "bad.pt", **values)
    with pytest.raises(InputError, match=f"bad.pt: .*{says}") as caught:
        load_model(tmp_path / "bad.pt")
    assert "\n" not in str(caught.value)
