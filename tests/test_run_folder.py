"""The training run folder (dsdi.train.run_folder) on real tiny trainings (test_train's world and flags): a finished
run, one killed after epoch 1 of 2 and one killed while saving its last epoch; the one metrics.csv parser against
pandas and against the files the loop writes; and dsdi rank's models: only finished runs by default (each skipped
one named), an unfinished run folder refused, the same checkpoint twice scored once."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from colour_clips import make_colour_clip
from test_train import tiny_args, write_world

import dsdi.rank.scoring
from dsdi.errors import InputError
from dsdi.rank.config import RankConfig
from dsdi.rank.models import resolve_models
from dsdi.report.tables import table2_row
from dsdi.train import loop as train_module
from dsdi.train.run_folder import (
    BEST_NAME,
    CONFIG_NAME,
    LAST_NAME,
    METRIC_COLUMNS,
    METRICS_NAME,
    RunFolder,
    read_metrics,
    runs_in,
)
from dsdi.train.sweep import _progress

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli) -> dict[str, Path]:
    """runs/A: 2 of 2 epochs; runs/B: killed after epoch 1 of 2; runs/C: A's files with B's last.pt (epoch 1), as a
    kill between metrics.csv and last.pt of the last epoch leaves them; runs/ensembles: no run."""
    root = tmp_path_factory.mktemp("run_folder")
    labels, images = write_world(root / "world", n_images=24)
    folder = root / "runs"
    cli(*tiny_args(labels, images, folder / "A", "--epochs", "2"))
    save_epoch = train_module.save_epoch

    def save_then_die(*args, **kwargs):
        save_epoch(*args, **kwargs)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "save_epoch", save_then_die)
        cli(*tiny_args(labels, images, folder / "B", "--epochs", "2"), expect=None)
    shutil.copytree(folder / "A", folder / "C")
    shutil.copyfile(folder / "B" / LAST_NAME, folder / "C" / LAST_NAME)
    (folder / "ensembles").mkdir()
    (folder / "ensembles" / "E.toml").write_text('members = [{run = "A"}]\n')
    return {"root": root, "runs": folder, "labels": labels, "images": images,
            **{name: folder / name for name in "ABC"}}


def test_is_finished_follows_what_the_training_loop_leaves(runs):
    a, b, c = (RunFolder(runs[name]) for name in "ABC")
    assert a.is_finished() and a.unfinished_reason() == ""
    assert b.unfinished_reason() == "1 of 2 epochs in metrics.csv" and not b.is_finished()
    assert c.unfinished_reason() == "last.pt holds epoch 1 of 2 (stopped while saving the last epoch)"
    assert a.unfinished_reason(epochs=3) == "2 of 3 epochs in metrics.csv"  # a sweep that raised --epochs
    assert b.is_finished(epochs=1)
    assert a.model_checkpoint() == a.best and b.model_checkpoint() == b.best
    finished, unfinished = runs_in(runs["runs"])
    assert finished == [a] and unfinished == [(b, b.unfinished_reason()), (c, c.unfinished_reason())]
    assert runs_in(runs["root"] / "absent") == ([], [])


def test_folders_not_written_by_training_count_as_unfinished(runs, tmp_path):
    only_best = RunFolder(tmp_path / "only_best")
    only_best.path.mkdir()
    shutil.copyfile(RunFolder(runs["A"]).best, only_best.best)
    assert only_best.unfinished_reason() == "no config.toml: not a run of dsdi train"
    damaged = RunFolder(tmp_path / "damaged")
    shutil.copytree(runs["A"], damaged.path)
    damaged.last.write_bytes(damaged.last.read_bytes()[:1000])
    assert damaged.unfinished_reason().startswith(f"{damaged.last}: not a dsdi checkpoint")
    damaged.metrics_csv.write_text("epoch,val_lrap\nfirst,0.5\n")
    assert damaged.unfinished_reason().startswith(f"{damaged.metrics_csv}: not a dsdi metrics table")
    with pytest.raises(InputError, match="no best.pt or last.pt"):
        RunFolder(tmp_path).model_checkpoint()


def test_resuming_finishes_an_interrupted_run(runs, tmp_path, cli):
    resumed = tmp_path / "B"
    shutil.copytree(runs["B"], resumed)
    cli(*tiny_args(runs["labels"], runs["images"], resumed, "--epochs", "2", "--resume"))
    assert RunFolder(resumed).is_finished()


def test_metrics_csv_is_parsed_in_one_place(runs, tmp_path):
    path = RunFolder(runs["A"]).metrics_csv
    table, raw = read_metrics(path), pd.read_csv(path)
    assert list(raw.columns) == list(METRIC_COLUMNS) and [row.epoch for row in table.rows] == [1, 2]
    for column in METRIC_COLUMNS:
        np.testing.assert_array_equal([getattr(row, column) for row in table.rows], raw[column].to_numpy(float))
    best = table.best()
    assert best.epoch == raw.loc[raw["val_lrap"].idxmax(), "epoch"] and table.epochs_done == 2
    assert table.train_seconds == pytest.approx(raw["seconds"].sum(), rel=1e-12)
    copy = RunFolder(tmp_path / "copy")
    copy.write_metrics(table.rows)
    assert copy.metrics_csv.read_text() == path.read_text()  # what the loop wrote, byte for byte
    row = table2_row(runs["A"])  # dsdi table and dsdi sweep read it through the same parser
    assert (row["best_epoch"], row["val_lrap"], row["epochs_done"]) == (best.epoch, best.val_lrap, 2)
    assert _progress(runs["A"]) == (2, best.val_lrap)
    done, best_lrap = _progress(tmp_path)  # no metrics.csv yet
    assert done == 0 and np.isnan(best_lrap)


def test_metrics_csv_of_older_runs_and_malformed_ones(tmp_path):
    older = tmp_path / "older.csv"
    older.write_text("epoch,lr,train_loss,val_loss,val_lrap,val_map,seconds\n1,0.01,0.9,0.8,0.5,0.3,60\n"
                     "2,0.01,0.8,0.7,0.5,0.35,61\n")
    table = read_metrics(older)
    assert np.isnan(table.rows[0].holdout_lrap) and table.rows[1].broken_images == 0
    assert table.best().epoch == 1 and table.train_seconds == 121  # ties: the first epoch, as best.pt keeps it
    assert read_metrics(tmp_path / "older.csv").up_to(1) == [table.rows[0]]
    for text, reason in (("lr,val_lrap\n0.1,0.5\n", "no column 'epoch'"), ("epoch\n1.5\n", "not a whole number"),
                         ("epoch\n0\n", "not a whole number"), ("", "No columns")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(InputError, match=rf"bad.csv: not a dsdi metrics table \(.*{reason}"):
            read_metrics(tmp_path / "bad.csv")


def test_only_the_run_folder_names_its_files():
    names = {CONFIG_NAME, METRICS_NAME, BEST_NAME, LAST_NAME, "predictions"}
    found = []
    for path in sorted((REPO / "dsdi").rglob("*.py")):
        if path.name != "run_folder.py":
            found += [f"{path.relative_to(REPO)}:{node.lineno} {node.value}" for node in ast.walk(ast.parse(
                path.read_text(encoding="utf-8"))) if isinstance(node, ast.Constant) and node.value in names]
    assert found == []


# ---- dsdi rank: which models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(runs, ffmpeg_exe) -> Path:
    folder = runs["root"] / "clips"
    folder.mkdir()
    for k, colours in enumerate((("0x2040A0", "0xE0C010"), ("0x10A040", "0x803020"), ("0xE01010", "0x1010E0"))):
        make_colour_clip(ffmpeg_exe, folder / f"shot{k}_1.mp4", [(colours[0], 0.4), (colours[1], 0.4)], (48, 32))
    return folder


def test_rank_without_models_takes_the_finished_runs_and_names_those_it_skips(runs, clips, cli, tmp_path):
    result = cli("rank", "--clips", clips, "--runs-dir", runs["runs"], "--out", tmp_path / "out", "--device", "cpu")
    said = cli.said(result)
    for name, reason in (("B", "1 of 2 epochs in metrics.csv"),
                         ("C", "last.pt holds epoch 1 of 2 (stopped while saving the last epoch)")):
        assert (f"skipping {runs[name]}: not a finished run ({reason}); resume it with dsdi train --out "
                f"{runs[name]} --resume") in said
    assert "ensembles" not in said and said.count("skipping") == 2
    facts = json.loads((tmp_path / "out" / "run.json").read_text())
    assert facts["models"] == [str(runs["A"] / BEST_NAME)] and facts["weights"] == [1.0]


def test_rank_refuses_an_unfinished_run_folder_but_takes_its_checkpoint_file(runs, clips, cli, tmp_path):
    for name, reason in (("B", "1 of 2 epochs in metrics.csv"), ("C", "last.pt holds epoch 1 of 2")):
        result = cli("rank", "--clips", clips, "--models", runs[name], "--out", tmp_path / name, "--device", "cpu",
                     expect=2)
        assert (f"--models {runs[name]}: not a finished run ({reason}") in cli.said(result)
        assert (f"resume its training with dsdi train --out {runs[name]} --resume, or pass "
                f"{runs[name] / BEST_NAME} to rank that checkpoint as it is") in cli.said(result)
        assert not (tmp_path / name).exists()
    given = resolve_models(RankConfig(clips=clips, models=[runs["B"] / LAST_NAME, runs["A"]]))
    assert given.models == [runs["B"] / LAST_NAME, runs["A"] / BEST_NAME] and given.model_weights == [1.0, 1.0]


def test_default_models_are_the_finished_runs_checkpoints(runs, clips, tmp_path):
    only_b = tmp_path / "runs"
    shutil.copytree(runs["B"], only_b / "B")
    with pytest.raises(InputError, match=r"no models: pass --models RUN_DIR ... or train one into .*runs/ "
                                         r"\(1 unfinished skipped\)"):
        resolve_models(RankConfig(clips=clips, runs_dir=only_b))
    config = resolve_models(RankConfig(clips=clips, runs_dir=runs["runs"], run_id="r1"))
    assert config.models == [runs["A"] / BEST_NAME] and config.model_weights == [1.0]
    assert (config.agg, config.out) == ("max", Path("submissions/r1"))


def rank_files(out: Path, run_id: str = "r") -> dict[str, str]:
    """A rank output's files, the XML without its elapsed times (wall clock)."""
    files = {name: (out / name).read_text() for name in ("clip_scores.csv", "peak_frames.csv", f"{run_id}.xml",
                                                         f"{run_id}.trec")}
    files[f"{run_id}.xml"] = re.sub(r'elapsedTime="[0-9.]+"', "", files[f"{run_id}.xml"])
    return files


def test_the_same_checkpoint_twice_is_scored_once_with_its_weights_added(runs, clips, tmp_path):
    copy = tmp_path / "A_copy"
    shutil.copytree(runs["A"], copy)  # another run folder, byte-identical checkpoints

    def ranked(name: str, models: list[Path], weights: list[float] | None = None) -> dict:
        dsdi.rank.scoring.rank(RankConfig(clips=clips, models=models, model_weights=weights, out=tmp_path / name,
                                          run_id="r", device="cpu", topk=2))
        return json.loads((tmp_path / name / "run.json").read_text())

    alone = ranked("alone", [runs["A"]])
    twice = ranked("twice", [runs["A"], runs["A"]])
    copies = ranked("copies", [runs["A"], copy / BEST_NAME], [1.0, 3.0])
    assert rank_files(tmp_path / "twice") == rank_files(tmp_path / "alone")
    assert rank_files(tmp_path / "copies") == rank_files(tmp_path / "alone")
    assert alone["models"] == twice["models"] == copies["models"] == [str(runs["A"] / BEST_NAME)]
    assert (alone["weights"], twice["weights"], copies["weights"]) == ([1.0], [2.0], [4.0])
    assert alone["model_keys"] == twice["model_keys"] == copies["model_keys"]
