"""`dsdi train` end to end on a tiny synthetic world: real JPEGs whose colour encodes their labels, a tiny
timm model (test_convnext at 32 px: LayerNorm, so no BatchNorm running statistics to settle in a few
steps), the real CLI. References: scikit-learn LRAP, the paper's Table 2, the cosine formula of Huang et
al. and IBN-Net's step schedule re-derived, and the files on disk."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from sklearn.metrics import label_ranking_average_precision_score

from dsdi.labels.schema import CLASSES
from dsdi.models.backbones import create_backbone
from dsdi.models.checkpoint import load_model
from dsdi.runtime import ProcessGroup, rng_state
from dsdi.train import loop as train_module
from dsdi.train import splits as splits_module
from dsdi.train.config import TrainConfig
from dsdi.train.losses import create_loss
from dsdi.train.predictions import read_predictions, read_targets
from dsdi.train.run_folder import METRIC_COLUMNS
from dsdi.train.schedule import learning_rate, scheduled_lr, snapshot_index, step_learning_rate
from dsdi.train.splits import holdout_split, split_labels, train_val_split

REPO = Path(__file__).resolve().parents[1]
PALETTE = [(230, 20, 20), (20, 210, 30), (30, 40, 240)]
"""Image colour k <-> label pattern k: class k is 1.0 and class k + 10 is 0.5."""
N_IMAGES = 96
SIDE = 32
"""Image side in pixels, for the files and the model input."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_world(root: Path, n_images: int = N_IMAGES, seed: int = 0) -> tuple[Path, Path]:
    """images/*.jpg (SIDE x SIDE: a coloured square at a random place on grey noise) and labels.csv whose
    labels follow the square's colour."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    for index in range(n_images):
        pattern = index % len(PALETTE)
        pixels = rng.normal(128, 30, (SIDE, SIDE, 3))
        top, left = rng.integers(0, SIDE // 2, size=2)
        pixels[top : top + SIDE // 2, left : left + SIDE // 2] = PALETTE[pattern]
        name = f"img_{index:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / name, quality=90)
        target = np.zeros(len(CLASSES))
        target[pattern] = 1.0
        target[pattern + 10] = 0.5
        rows.append([name, *target])
    labels = root / "labels.csv"
    pd.DataFrame(rows, columns=["image_id", *CLASSES]).to_csv(labels, index=False)
    return labels, images


def tiny_args(labels: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--labels", str(labels), "--images", str(images), "--out", str(out),
        "--backbone", "test_convnext", "--loss", "focal", "--gamma", "1.0", "--img-size", str(SIDE),
        "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.003", "--workers", "0", "--device", "cpu",
        "--seed", "0", *extra,
    ]  # fmt: skip




def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_ids(labels: Path, split_seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(train, val, hold-out) ids as a default run splits them: 5% hold-out (seed 0) first, then 80/20."""
    rest, holdout = holdout_split(pd.read_csv(labels)["image_id"].tolist(), fraction=0.05, seed=0)
    train, val = train_val_split(rest, val_fraction=0.2, seed=split_seed)
    return train, val, holdout


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    return write_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def two_epoch_run(world, tmp_path_factory, cli) -> Path:
    labels, images = world
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cli(*tiny_args(labels, images, out, "--epochs", "2"))
    return out


def test_two_epochs_write_config_metrics_and_checkpoints(two_epoch_run):
    out = two_epoch_run
    assert {p.name for p in out.iterdir()} == {"config.toml", "metrics.csv", "last.pt", "best.pt", "predictions"}
    assert {p.name for p in (out / "predictions").iterdir()} == {
        f"{stem}.{part}.csv" for stem in ("best", "last", "targets") for part in ("val", "holdout")}
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["epoch"].tolist() == [1, 2]
    scores = ["train_loss", "val_loss", "val_lrap", "val_map", "holdout_lrap", "holdout_map", "images_per_s"]
    assert np.isfinite(metrics[scores].to_numpy()).all()
    assert (metrics["broken_images"] == 0).all()

    config = TrainConfig.from_toml(out / "config.toml")
    resolved = (config.backbone, config.loss, config.gamma, config.img_size, config.epochs)
    assert resolved == ("test_convnext", "focal", 1.0, SIDE, 2)
    defaults = (config.split_seed, config.holdout_fraction, config.holdout_seed, config.schedule, config.nesterov)
    assert defaults == (0, 0.05, 0, "cosine", True)  # split_seed -1 resolves to --seed and is recorded
    assert config.beta is None and "beta" not in (out / "config.toml").read_text()  # unset loss params stay unset

    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["classes"] == list(CLASSES) and last["backbone"] == "test_convnext"
    assert {"optimizer", "scheduler", "rng"} <= set(last)
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["val_lrap"] == pytest.approx(metrics["val_lrap"].max())
    assert "optimizer" not in best
    model, info = load_model(out / "best.pt")  # rank's path: rebuild from the file alone
    assert info.img_size == SIDE and model(torch.zeros(2, 3, SIDE, SIDE)).shape == (2, len(CLASSES))


@pytest.mark.slow
def test_val_lrap_beats_a_shuffled_label_baseline(two_epoch_run, world, tmp_path, cli):
    labels, images = world
    table = pd.read_csv(labels)
    shuffled = table.copy()
    shuffled[list(CLASSES)] = table[list(CLASSES)].sample(frac=1.0, random_state=1).to_numpy()
    shuffled_csv = tmp_path / "shuffled.csv"
    shuffled.to_csv(shuffled_csv, index=False)
    cli(*tiny_args(shuffled_csv, images, tmp_path / "shuffled", "--epochs", "2"))
    learned = pd.read_csv(two_epoch_run / "metrics.csv")["val_lrap"].max()
    baseline = pd.read_csv(tmp_path / "shuffled" / "metrics.csv")["val_lrap"].max()
    assert learned > baseline + 0.1, (learned, baseline)

    # the logged LRAPs are scikit-learn's on the validation and hold-out images: re-score them from best.pt, and
    # the stored predictions are these sigmoids, the stored targets the labels
    model, info = load_model(two_epoch_run / "best.pt")
    timm_config = timm.data.resolve_data_config({}, model=model)  # the model's own normalisation, as timm states it
    assert (info.preprocessing.mean, info.preprocessing.std) == (tuple(timm_config["mean"]), tuple(timm_config["std"]))
    train_ids, val_ids, holdout_ids = split_ids(labels)
    assert len(holdout_ids) == round(N_IMAGES * 0.05) and len(val_ids) == round((N_IMAGES - len(holdout_ids)) * 0.2)
    best_row = pd.read_csv(two_epoch_run / "metrics.csv").sort_values("val_lrap").iloc[-1]
    for part, ids, logged in (("val", val_ids, learned), ("holdout", holdout_ids, best_row["holdout_lrap"])):
        rows = table[table["image_id"].isin(ids)].sort_values("image_id").reset_index(drop=True)
        dataset = train_module.LabelledImageDataset(rows, images, SIDE, train=False, mean=info.preprocessing.mean,
                                                    std=info.preprocessing.std)
        with torch.no_grad():
            scores = torch.sigmoid(model(torch.stack([dataset[i][0] for i in range(len(dataset))]))).numpy()
        truth = (rows[list(CLASSES)].to_numpy() >= 0.5).astype(int)
        assert label_ranking_average_precision_score(truth, scores) == pytest.approx(logged, abs=1e-6), part
        stored = read_predictions(two_epoch_run, "best", part)
        assert stored.index.tolist() == rows["image_id"].tolist()
        np.testing.assert_allclose(stored.to_numpy(), scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(read_targets(two_epoch_run, part).to_numpy(), rows[list(CLASSES)].to_numpy(),
                                   rtol=1e-6)


@pytest.mark.slow
def test_resume_extends_a_finished_run_by_exactly_one_epoch(two_epoch_run, world, tmp_path, cli):
    labels, images = world
    out = tmp_path / "extended"
    shutil.copytree(two_epoch_run, out)
    before = pd.read_csv(out / "metrics.csv")
    cli(*tiny_args(labels, images, out, "--epochs", "3", "--resume"))
    after = pd.read_csv(out / "metrics.csv")
    assert after["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(after.iloc[:2], before)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    assert TrainConfig.from_toml(out / "config.toml").epochs == 3
    cli(*tiny_args(labels, images, out, "--epochs", "3", "--resume"))  # nothing left to do
    assert len(pd.read_csv(out / "metrics.csv")) == 3
    refused = cli(*tiny_args(labels, images, out, "--epochs", "3"), expect=2)  # a fresh run never overwrites
    assert "--resume" in cli.said(refused)
    changed = cli(*tiny_args(labels, images, out, "--epochs", "4", "--resume", "--img-size", "64"), expect=2)
    assert "img_size 32" in cli.said(changed)
    resplit = cli(*tiny_args(labels, images, out, "--epochs", "4", "--resume", "--split-seed", "3"), expect=2)
    assert "split_seed 0" in cli.said(resplit) and "hold-out images" in cli.said(resplit)
    assert len(pd.read_csv(out / "metrics.csv")) == 3


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped_and_matches_an_uninterrupted_run(world, tmp_path, monkeypatch, cli):
    labels, images = world
    straight = tmp_path / "straight"
    cli(*tiny_args(labels, images, straight, "--epochs", "3", "--snapshots", "3"))

    save_epoch = train_module.save_epoch

    def save_then_die(*args, **kwargs):  # the process is killed right after epoch 1's checkpoint
        save_epoch(*args, **kwargs)
        raise KeyboardInterrupt

    killed = tmp_path / "killed"
    monkeypatch.setattr(train_module, "save_epoch", save_then_die)
    assert cli(*tiny_args(labels, images, killed, "--epochs", "3", "--snapshots", "3"), expect=None).exit_code
    monkeypatch.setattr(train_module, "save_epoch", save_epoch)
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] == 1
    cli(*tiny_args(labels, images, killed, "--epochs", "3", "--snapshots", "3", "--resume"))

    resumed_metrics, straight_metrics = pd.read_csv(killed / "metrics.csv"), pd.read_csv(straight / "metrics.csv")
    assert resumed_metrics["epoch"].tolist() == [1, 2, 3]
    columns = ["lr", "train_loss", "val_loss", "val_lrap"]
    np.testing.assert_allclose(resumed_metrics[columns], straight_metrics[columns], rtol=1e-4, atol=1e-6)
    for k in (1, 2, 3):  # snapshot ensemble: one checkpoint per cycle, the lr restarts at every cycle
        assert torch.load(killed / f"snapshot_{k}.pt", weights_only=True)["epoch"] == k
        for part in ("val", "holdout"):  # each kept checkpoint has its predictions, equal to the straight run's
            np.testing.assert_allclose(read_predictions(killed, f"snapshot_{k}", part),
                                       read_predictions(straight, f"snapshot_{k}", part), rtol=1e-4, atol=1e-6)
    assert straight_metrics["lr"].tolist() == pytest.approx([0.003] * 3)


def test_cosine_schedule_and_snapshot_epochs_follow_huang_et_al():
    base, steps_per_epoch, epochs = 0.1, 7, 10
    for snapshots in (0, 1, 2, 3, 10):
        cycle = math.ceil(epochs / max(1, snapshots)) * steps_per_epoch  # Huang et al. eq. 2: ceil(T / M)
        for step in range(epochs * steps_per_epoch):
            expected = base / 2 * (math.cos(math.pi * (step % cycle) / cycle) + 1)
            assert learning_rate(step, steps_per_epoch, epochs, snapshots, base) == pytest.approx(expected, abs=1e-15)
    saved = {s: [e for e in range(1, epochs + 1) if snapshot_index(e, epochs, s)] for s in (0, 1, 2, 3, 10)}
    assert saved == {0: [], 1: [10], 2: [5, 10], 3: [4, 8, 10], 10: list(range(1, 11))}
    assert [snapshot_index(e, 10, 3) for e in (4, 8, 10)] == [1, 2, 3]


def reference_step_lrs(base: float, factor: float, milestones: list[int], epochs: int, steps_per_epoch: int):
    """IBN-Net's step rule written independently, in float64: walk the epochs, multiply the rate by ``factor``
    when an epoch (0-based) reaches a milestone, repeat it for every step of the epoch."""
    rates, rate = [], np.float64(base)
    for epoch in range(epochs):
        rate = rate * np.float64(factor) if epoch in milestones else rate
        rates.extend([float(rate)] * steps_per_epoch)
    return rates


def test_step_schedule_follows_ibn_net_and_extends_on_resume():
    steps_per_epoch = 5
    for epochs, milestones in ((1, [30]), (29, [30]), (30, [30]), (31, [30]), (40, [30]), (90, [30, 60, 89])):
        config = TrainConfig(lr=0.1, schedule="step", lr_steps=milestones, epochs=epochs)
        got = [scheduled_lr(config, step, steps_per_epoch) for step in range(epochs * steps_per_epoch)]
        np.testing.assert_allclose(got, reference_step_lrs(0.1, 0.1, milestones, epochs, steps_per_epoch),
                                   rtol=1e-12)
    # IBN-Net (imagenet.py): lr = 0.1 * 0.1 ** (epoch // 30), epoch 0-based; the paper's 40 epochs: one step
    ibn = [0.1 * 0.1 ** (epoch // 30) for epoch in range(40)]
    ours = [step_learning_rate(epoch * 3 + 2, 3, [30], 0.1, 0.1) for epoch in range(40)]
    assert ours == pytest.approx(ibn, rel=1e-12)
    # --resume --epochs 50 after 40: a step schedule is a function of the epoch alone, so the first 40 epochs'
    # rates are unchanged and epochs 41-50 continue at 0.01 (a cosine is re-spread over the new total instead)
    forty, fifty = (TrainConfig(lr=0.1, schedule="step", epochs=e) for e in (40, 50))
    assert [scheduled_lr(fifty, s, 4) for s in range(160)] == [scheduled_lr(forty, s, 4) for s in range(160)]
    assert [scheduled_lr(fifty, s, 4) for s in range(160, 200)] == pytest.approx([0.01] * 40, rel=1e-12)
    cosine = TrainConfig(lr=0.1, epochs=40), TrainConfig(lr=0.1, epochs=50)
    assert scheduled_lr(cosine[1], 100, 4) > scheduled_lr(cosine[0], 100, 4)


@pytest.mark.slow
def test_step_run_resumed_with_more_epochs_continues_its_rates(world, tmp_path, cli):
    labels, images = world
    out = tmp_path / "step"
    step_args = ("--schedule", "step", "--lr-steps", "1", "--lr-steps", "2")
    cli(*tiny_args(labels, images, out, "--epochs", "1", *step_args))
    cli(*tiny_args(labels, images, out, "--epochs", "3", "--resume"))  # schedule and steps from config.toml
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["lr"].tolist() == pytest.approx([0.003, 0.0003, 0.00003], rel=1e-9)
    assert torch.load(out / "last.pt", weights_only=True)["scheduler"]["kind"] == "step"
    bad_step = cli(*tiny_args(labels, images, out, "--lr-steps", "3", "--lr-steps", "x"), expect=2)
    assert "--lr-steps" in cli.said(bad_step)
    refused = cli.said(cli(*tiny_args(labels, images, tmp_path / "no", *step_args, "--epochs", "2", "--snapshots", "2"),
                           expect=2))
    assert "--snapshots" in refused and "--schedule" in refused


def test_sgd_takes_nesterov_and_momentum_from_the_config_also_on_resume(tmp_path):
    config = TrainConfig(backbone="test_convnext", optimizer="sgd", img_size=SIDE, device="cpu", workers=0)
    state = train_module.build_state(config, torch.device("cpu"), None)
    assert state.optimizer.param_groups[0]["nesterov"] is True  # the default, as before
    checkpoint = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(), "epoch": 1,
                  "scheduler": {"step": 7}, "rng": rng_state(), "config": {"optimizer": "sgd"}}
    ibn = config.updated({"nesterov": False, "momentum": 0.8, "weight_decay": 5e-4})
    resumed = train_module.build_state(ibn, torch.device("cpu"), None)
    train_module.restore_state(resumed, checkpoint, ibn, tmp_path, ProcessGroup())
    group = resumed.optimizer.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"], resumed.step) == (False, 0.8, 5e-4, 7)


def test_holdout_is_common_to_every_split_seed_and_to_unreadable_images(world, tmp_path):
    labels, images = world
    splits = {seed: split_ids(labels, seed) for seed in (1, 2, 3)}
    assert len({tuple(holdout) for _, _, holdout in splits.values()}) == 1
    assert len({tuple(val) for _, val, _ in splits.values()}) == 3  # each recipe its own validation images
    config = TrainConfig(labels=str(labels), images=str(images), split_seed=2, skip_missing=True)
    train_rows, val_rows, holdout_rows = split_labels(config)
    assert [sorted(r["image_id"]) for r in (train_rows, val_rows, holdout_rows)] == [sorted(i) for i in splits[2]]
    broken = tmp_path / "images"
    shutil.copytree(images, broken)
    (broken / splits[2][0][0]).write_bytes(b"")  # one unreadable training image does not move the hold-out
    _, _, held = split_labels(config.updated({"images": str(broken)}))
    assert sorted(held["image_id"]) == sorted(splits[2][2])
    assert len(split_labels(config.updated({"holdout_fraction": 0.0}))[2]) == 0


@pytest.mark.slow
def test_non_finite_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(world, tmp_path, cli):
    labels, images = world
    out = tmp_path / "diverge"
    cli(*tiny_args(labels, images, out, "--epochs", "1"))
    kept = file_digest(out / "last.pt")
    args = tiny_args(labels, images, out, "--epochs", "2", "--resume", "--lr", "1e30")
    result = cli(*args, expect=1)
    assert "training loss became" in cli.said(result) and "epoch 2" in cli.said(result)
    assert file_digest(out / "last.pt") == kept
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1]


def test_missing_image_is_listed_and_exits_2_unless_skip_missing(tmp_path, cli):
    labels, images = write_world(tmp_path / "world", n_images=30)
    (images / "img_007.jpg").unlink()
    (images / "img_011.jpg").write_bytes(b"not a jpeg")
    result = cli(*tiny_args(labels, images, tmp_path / "refused", "--epochs", "1"), expect=2)
    shown = cli.said(result)
    assert "img_007.jpg" in shown and "img_011.jpg" in shown and "--skip-missing" in shown
    assert not (tmp_path / "refused").exists()
    cli(*tiny_args(labels, images, tmp_path / "skipped", "--epochs", "1", "--skip-missing"))
    assert len(pd.read_csv(tmp_path / "skipped" / "metrics.csv")) == 1


def test_a_file_breaking_mid_run_is_counted_not_fatal(tmp_path, monkeypatch, cli):
    labels, images = write_world(tmp_path / "world", n_images=30)
    train_ids, _, _ = split_ids(labels)
    (images / train_ids[0]).write_bytes(b"")  # breaks after the pre-flight check (simulated as passing)
    monkeypatch.setattr(splits_module, "find_unreadable_images", lambda labels, root: [])
    result = cli(*tiny_args(labels, images, tmp_path / "run", "--epochs", "1", "--batch-size", "4"))
    assert "1 unreadable images were skipped" in cli.said(result) and train_ids[0] in cli.said(result)
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["broken_images"].tolist() == [1]


PAPER_TABLE_2 = {  # index: (backbone, loss, gamma, beta, th, none_weight, drop_max_loss, img_size, epochs, snapshots)
    "A01": ("regnety_064", "focal", 2.0, None, None, None, False, 360, 40, 0),
    "B02": ("hrnet_w18", "focal", 2.0, None, None, None, False, 448, 40, 0),
    "C03": ("resnest50d", "cbfl", 2.0, 0.999, None, None, False, 360, 40, 0),
    "C04": ("resnest50d", "cbfl", 2.0, 0.9999, None, None, False, 360, 40, 0),
    "C05": ("resnest50d", "rfl", 2.0, None, 0.3, None, False, 360, 40, 0),
    "C06": ("resnest50d", "rfl", 2.0, None, 0.5, None, False, 360, 40, 0),
    "C07": ("resnest50d", "rfl", 2.0, None, 0.7, None, False, 360, 40, 0),
    "C08": ("resnest50d", "focal", 2.0, None, None, 0.1, False, 360, 40, 0),
    "C09": ("resnest50d", "focal", 2.0, None, None, 0.01, False, 360, 40, 0),
    "C10": ("resnest50d", "focal", 2.0, None, None, 0.01, False, 360, 300, 6),
    "C11": ("resnest50d", "focal", 2.0, None, None, None, True, 360, 40, 0),
    "C12": ("resnest50d", "focal+lovasz", 2.0, None, None, None, False, 360, 40, 0),
    "D13": ("se_ibn_resnet50", "focal", 2.0, None, None, None, False, 360, 40, 0),
}


@pytest.mark.slow
def test_recipes_match_table_2_and_build_their_model_and_loss():
    recipes = {path.stem: TrainConfig.from_toml(path) for path in sorted((REPO / "runs").glob("*.toml"))}
    assert set(recipes) == set(PAPER_TABLE_2)
    built: dict[str, torch.Size] = {}
    for name, config in recipes.items():
        config = config.resolved()
        fields = ("backbone", "loss", "gamma", "beta", "th", "none_weight", "drop_max_loss", "img_size", "epochs")
        assert (*(getattr(config, f) for f in fields), config.snapshots) == PAPER_TABLE_2[name], name
        assert (config.batch_size, config.out) == (28, Path(f"runs/{name}"))
        # IBN-Net's optimizer (plain momentum, x0.1 after epoch 30), C10's snapshot cycles cosine; the common hold-out
        schedule = ("cosine",) if config.snapshots else ("step", [30], 0.1)
        optimizer = (config.optimizer, config.lr, config.momentum, config.nesterov, config.weight_decay)
        assert optimizer == ("sgd", 0.01, 0.9, False, 1e-4), name
        assert (config.schedule, config.lr_steps, config.lr_step_factor)[: len(schedule)] == schedule, name
        assert (config.val_fraction, config.holdout_fraction, config.holdout_seed) == (0.2, 0.05, 0), name
        logits = torch.zeros(2, len(CLASSES))
        assert torch.isfinite(create_loss(config.loss, **config.loss_params())(logits, logits.sigmoid()))
        if config.backbone not in built:  # shape only, at a tiny input, no download
            model = create_backbone(config.backbone, pretrained=False).eval()
            with torch.no_grad():
                built[config.backbone] = model(torch.zeros(1, 3, 64, 64)).shape
    assert set(built.values()) == {torch.Size([1, len(CLASSES)])}
    split_seeds = [config.split_seed for config in recipes.values()]  # each model its own split (Table 2 caption)
    assert len(set(split_seeds)) == len(recipes) and all(seed != -1 for seed in split_seeds)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_one_set_of_outputs(world, tmp_path):
    labels, images = world
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "dsdi", *tiny_args(labels, images, out, "--epochs", "1"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.toml", "last.pt", "metrics.csv", "predictions"]
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1] and np.isfinite(metrics[["val_lrap", "holdout_lrap"]]).all().all()
    _, val_ids, holdout_ids = split_ids(labels)  # process 0 gathered every image once
    assert sorted(read_predictions(out, "last", "val").index) == sorted(val_ids)
    assert sorted(read_predictions(out, "last", "holdout").index) == sorted(holdout_ids)
    assert done.stderr.count("epoch 1: train_loss") == 1  # only rank 0 reports
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]


def test_config_toml_round_trip_and_bad_configs_exit_2(tmp_path, cli):
    config = TrainConfig(labels=Path('a "quoted"\\path.csv'), backbone="hrnet_w18", loss="rfl", gamma=2.0, th=0.3,
                         drop_max_loss=True, lr=1e-30, weight_decay=0.0, snapshots=3, workers=0).resolved()  # fmt: skip
    config.to_toml(tmp_path / "config.toml")
    assert TrainConfig.from_toml(tmp_path / "config.toml") == config
    assert config.img_size == 448 and str(config.out).startswith("runs/hrnet_w18-rfl-")
    old_run = tmp_path / "old"  # a run from before the hold-out and split seed: resumed on the images it had
    old_run.mkdir()
    (old_run / "config.toml").write_text("seed = 3\nepochs = 2\n")
    resumed = TrainConfig.layered({"out": str(old_run)}, resume=True).resolved()
    assert (resumed.holdout_fraction, resumed.split_seed) == (0.0, 3)
    assert TrainConfig.layered({"out": str(old_run)}).holdout_fraction == 0.05

    cases = {
        "unknown.toml": ('epochs = 2\nfrobnicate = 1\n', "unknown option(s) frobnicate"),
        "type.toml": ('epochs = "many"\n', "epochs must be an integer"),
        "syntax.toml": ("epochs = \n", "not valid TOML"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        assert message in cli.said(cli("train", "--config", str(tmp_path / name), expect=2))
    assert "does not take beta" in cli.said(cli("train", "--loss", "focal", "--beta", "0.9", expect=2))
    assert "--snapshots" in cli.said(cli("train", "--epochs", "2", "--snapshots", "3", expect=2))
    assert "config file not found" in cli.said(cli("train", "--config", str(tmp_path / "absent.toml"), expect=2))
