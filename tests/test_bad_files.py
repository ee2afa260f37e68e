"""No traceback for a bad file: a command given a corrupt, refused or garbage input file exits with code 2 and a
short message naming the file (rich may wrap it over a few lines)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import tiny_checkpoint
from test_train import tiny_args, write_world

from dsdi.errors import InputError
from dsdi.models.checkpoint import read_checkpoint

GARBAGE = bytes(range(256)) * 16
"""Binary garbage: every byte value, NULs and invalid UTF-8 included."""


class Opaque:
    """An object weights_only unpickling refuses to build."""


def refused(cli, args: list, path: Path) -> None:
    """The command exits 2 with a few lines naming ``path`` and no traceback."""
    output = cli(*args, expect=2).output
    assert path.name in " ".join(output.split()).replace(" ", "") or path.name in output, output
    assert "Traceback" not in output and len(output.splitlines()) <= 6, output


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A truncated checkpoint, one holding a custom class instance and a plain pickle of an object."""
    root = tmp_path_factory.mktemp("checkpoints")
    good = root / "good.pt"
    tiny_checkpoint(good, backbone="test_convnext", img_size=32)
    (root / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({**torch.load(good, weights_only=True), "extra": Opaque()}, root / "custom_class.pt")
    (root / "plain_pickle.pt").write_bytes(pickle.dumps(Opaque()))
    return {name: root / f"{name}.pt" for name in ("truncated", "custom_class", "plain_pickle")}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    return write_world(tmp_path_factory.mktemp("world"), n_images=8)


def test_rank_refuses_unreadable_checkpoints(bad_checkpoints, tmp_path, cli):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.mp4").write_bytes(b"")  # models are loaded before any clip is decoded
    for path in bad_checkpoints.values():
        refused(cli, ["rank", "--clips", clips, "--models", path, "--out", tmp_path / "out", "--device", "cpu"], path)


def test_train_refuses_bad_weights(bad_checkpoints, world, tmp_path, cli):
    labels, images = world
    for name, path in bad_checkpoints.items():
        refused(cli, tiny_args(labels, images, tmp_path / name, "--weights", str(path), "--epochs", "1"), path)


def test_resume_refuses_a_corrupt_last_pt(bad_checkpoints, world, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(bad_checkpoints["truncated"].read_bytes())
    with pytest.raises(InputError, match="last.pt: not a dsdi checkpoint") as caught:
        read_checkpoint(run / "last.pt")
    assert "\n" not in str(caught.value)
    labels, images = world
    refused(cli, [*tiny_args(labels, images, run, "--epochs", "1"), "--resume"], run / "last.pt")


def test_train_refuses_malformed_recipe_and_garbage_labels(world, tmp_path, cli):
    labels, images = world
    malformed, garbage = tmp_path / "bad.toml", tmp_path / "garbage.toml"
    malformed.write_text('backbone = "resnet10t\nepochs = [\n')
    garbage.write_bytes(GARBAGE)
    for recipe in (malformed, garbage):
        refused(cli, [*tiny_args(labels, images, tmp_path / "r"), "--config", recipe], recipe)
    garbage_labels = tmp_path / "labels.csv"
    garbage_labels.write_bytes(GARBAGE)
    refused(cli, tiny_args(garbage_labels, images, tmp_path / "l"), garbage_labels)


def test_garbage_shot_table_qrels_and_rank_outputs(tmp_path, cli):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(GARBAGE)
    model = tmp_path / "model.pt"
    tiny_checkpoint(model, backbone="test_convnext", img_size=32)
    refused(cli, ["rank", "--shots", garbage, "--models", model, "--out", tmp_path / "o", "--device", "cpu"], garbage)
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 shot1 1 0.9 r\n")
    refused(cli, ["eval", "--run", run, "--qrels", garbage], garbage)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_scores.csv").write_bytes(GARBAGE)
    refused(cli, ["report", out], out / "clip_scores.csv")
    refused(cli, ["fuse", out], out / "run.json")
