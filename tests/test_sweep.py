"""`dsdi sweep` on a tiny world (coloured-square JPEGs, test_convnext at 32 px): trains recipes in turn, skips
finished runs, resumes a run whose last.pt holds epoch 1 of 2, carries on past a failing recipe and exits 1
listing it, seeds and --out name the folders, --set is checked before anything trains, torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dsdi.errors import InputError
from dsdi.labels.schema import CLASSES
from dsdi.models.checkpoint import read_checkpoint
from dsdi.options import read_toml
from dsdi.train.sweep import parse_overrides, sweep

SIDE = 32
PALETTE = [(230, 20, 20), (20, 210, 30), (30, 40, 240)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """images/*.jpg (a coloured square on grey noise) and labels.csv following the square's colour."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    rows = []
    for index in range(40):
        pattern = index % len(PALETTE)
        pixels = rng.normal(128, 30, (SIDE, SIDE, 3))
        top, left = rng.integers(0, SIDE // 2, size=2)
        pixels[top : top + SIDE // 2, left : left + SIDE // 2] = PALETTE[pattern]
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / f"{index}.jpg")
        target = np.zeros(len(CLASSES))
        target[pattern], target[pattern + 10] = 1.0, 0.5
        rows.append([f"{index}.jpg", *target])
    pd.DataFrame(rows, columns=["image_id", *CLASSES]).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv", root / "images"


def recipe(tmp_path: Path, world: tuple[Path, Path], name: str, backbone: str = "test_convnext",
           epochs: int = 2) -> Path:
    labels, images = world
    path = tmp_path / "recipes" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f'out = "{tmp_path / "runs" / name}"\nlabels = "{labels}"\nimages = "{images}"\nbackbone = "{backbone}"\n'
        f'loss = "focal"\ngamma = 2.0\nimg_size = {SIDE}\nepochs = {epochs}\nbatch_size = 8\noptimizer = "adamw"\n'
        'lr = 0.003\nworkers = 0\ndevice = "cpu"\nseed = 7\n'
    )
    return path




def epochs_in(run_dir: Path) -> list[int]:
    return pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist()


@pytest.mark.slow
def test_sweep_carries_on_past_a_failing_recipe_lists_it_and_skips_finished_runs(world, tmp_path, cli):
    good, bad = recipe(tmp_path, world, "good"), recipe(tmp_path, world, "bad", backbone="no_such_net")
    late = recipe(tmp_path, world, "late")  # after the failure: the sweep carries on
    result = cli("sweep", str(good), str(bad), str(late), "--set", "epochs=1", expect=1)
    text = cli.said(result)
    assert "[1/3] good: training" in text and "[2/3] bad: failed:" in text and "no_such_net" in text
    assert "[3/3] late: trained, 1/1 epochs" in text
    assert "failed: bad (" in text and "Traceback" not in result.output
    assert epochs_in(tmp_path / "runs" / "good") == [1] and epochs_in(tmp_path / "runs" / "late") == [1]
    summary = text[text.index("dsdi sweep: 3 run(s)"):]
    assert "good │ - │ trained │ 1/1" in summary and "bad │ - │ failed │ 0/1" in summary

    again = cli.said(cli("sweep", str(good), str(bad), "--set", "epochs=1", "--traceback", expect=1))
    assert "[1/2] good: skipped, finished (1/1 epochs)" in again and "good │ - │ skipped │ 1/1" in again
    assert "Traceback" in again  # asked for
    done = sweep([good], overrides={"epochs": 1})
    assert done.ok and [run.status for run in done.runs] == ["skipped"]


@pytest.mark.slow
def test_sweep_resumes_a_run_whose_last_pt_holds_epoch_1_of_2(world, tmp_path, cli):
    good = recipe(tmp_path, world, "good", epochs=2)
    run_dir = tmp_path / "runs" / "good"
    first = sweep([good], overrides={"epochs": 1})
    assert [run.status for run in first.runs] == ["trained"] and read_checkpoint(run_dir / "last.pt")["epoch"] == 1
    text = cli.said(cli("sweep", str(good)))  # the recipe's 2 epochs
    assert "[1/1] good: resuming after epoch 1" in text and "good │ - │ resumed │ 2/2" in text
    assert epochs_in(run_dir) == [1, 2] and read_checkpoint(run_dir / "last.pt")["epoch"] == 2
    outcome = sweep([good]).runs[0]
    assert (outcome.status, outcome.epochs_done, outcome.epochs) == ("skipped", 2, 2)
    assert outcome.best_val_lrap == pytest.approx(pd.read_csv(run_dir / "metrics.csv")["val_lrap"].max())


@pytest.mark.slow
def test_seeds_and_out_root_name_the_run_folders(world, tmp_path):
    good = recipe(tmp_path, world, "good")
    result = sweep([good], seeds=[0, 1], overrides={"epochs": 1}, out_root=tmp_path / "seeded")
    assert [(run.name, run.seed, run.status) for run in result.runs] == [("good-s0", 0, "trained"),
                                                                         ("good-s1", 1, "trained")]
    for seed in (0, 1):
        config = read_toml(tmp_path / "seeded" / f"good-s{seed}" / "config.toml")
        assert (config["seed"], config["epochs"], config["backbone"]) == (seed, 1, "test_convnext")
    assert not (tmp_path / "runs").exists()  # the recipe's own out is not used


def test_set_values_are_toml_checked_against_train_config_before_anything_trains(world, tmp_path, cli):
    assert parse_overrides(["epochs=2", 'backbone="lcnet_050"', "loss=focal+lovasz", "lr=5e-3", "drop-max-loss=true",
                            "lr_steps=[10, 20]", "gamma=2"]) == {
        "epochs": 2, "backbone": "lcnet_050", "loss": "focal+lovasz", "lr": 0.005, "drop_max_loss": True,
        "lr_steps": [10, 20], "gamma": 2.0}  # fmt: skip
    for bad, words in [("epochs=two", "epochs must be an integer"), ("nope=1", "unknown option(s) nope"),
                       ("out=x", "use --out DIR"), ("epochs", "KEY=VALUE"), ("epochs=0", "at least 1"),
                       ("device=tpu", "choose one of")]:
        with pytest.raises(InputError, match=None) as raised:
            parse_overrides([bad])
        assert words in str(raised.value), (bad, str(raised.value))
    good = recipe(tmp_path, world, "good")
    assert "Invalid value for '--seeds'" in cli.said(cli("sweep", str(good), "--seeds", "0", "--seeds", "x", expect=2,
                                                           env={"COLUMNS": "200"}))
    assert "several runs would train into" in cli.said(cli("sweep", str(good), "--seeds", "1", "--seeds", "1",
                                                           expect=2))
    assert "must be an integer" in cli.said(cli("sweep", str(good), "--set", "epochs=two", expect=2))
    assert "not found" in cli.said(cli("sweep", str(good), str(tmp_path / "missing.toml"), expect=2))
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_torchrun_two_processes_walk_the_same_sweep_and_process_0_reports(world, tmp_path):
    good, bad = recipe(tmp_path, world, "good"), recipe(tmp_path, world, "bad", backbone="no_such_net")
    later = recipe(tmp_path, world, "later")  # the process group is joined again after a finished and a failed run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dsdi",
               "sweep", str(good), str(bad), str(later), "--set", "epochs=1"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stdout[-3000:] + done.stderr[-3000:]  # a run failed
    assert done.stdout.count("dsdi sweep: 3 run(s)") == 1, done.stdout + done.stderr[-3000:]
    assert done.stderr.count("[2/3] bad: failed") == 1
    assert epochs_in(tmp_path / "runs" / "good") == [1] and epochs_in(tmp_path / "runs" / "later") == [1]
