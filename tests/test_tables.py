"""`dsdi table`: Table 2 rows from run folders written by hand (config.toml, metrics.csv), Table 3 rows from a
rank output folder written by hand scored against hand-made qrels, the written CSV / Markdown, and the
paper's values kept in one place that agrees with the recipes' comments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dsdi.labels.schema import CLASSES
from dsdi.report.tables import PAPER_TABLE_2_LRAP, paper_lrap, paper_submission, paper_submissions, table2, table3
from dsdi.trecvid.qrels import read_judgments

REPO = Path(__file__).resolve().parents[1]
METRICS_HEADER = "epoch,lr,train_loss,val_loss,val_lrap,val_map,seconds,images_per_s,broken_images"



def write_run(run_dir: Path, config: str, metrics: str | None) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(config)
    if metrics is not None:
        (run_dir / "metrics.csv").write_text(metrics)
    return run_dir


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    c04 = write_run(tmp_path / "runs" / "C04", (
        'backbone = "resnest50d"\nloss = "cbfl"\ngamma = 2.0\nbeta = 0.9999\nimg_size = 360\nepochs = 3\n'
        "snapshots = 0\ndrop_max_loss = false\n"
    ), METRICS_HEADER + ",holdout_lrap,holdout_map\n"
       "1,0.01,0.9,0.8,0.50,0.30,100.5,9,0,0.40,0.20\n"
       "2,0.01,0.8,0.7,0.75,0.45,110.0,9,0,0.70,0.41\n"
       "3,0.001,0.7,0.7,0.72,0.50,120.0,9,0,0.74,0.44\n")  # fmt: skip
    c09 = write_run(tmp_path / "runs" / "C09-s1", (
        'backbone = "resnest50d"\nloss = "focal"\ngamma = 2.0\nnone_weight = 0.01\nimg_size = 360\nepochs = 4\n'
        "snapshots = 2\ndrop_max_loss = true\n"
    ), METRICS_HEADER + "\n1,0.01,0.9,0.8,0.61,0.31,60,9,0\n2,0.01,0.8,0.7,0.60,0.35,61,9,0\n")
    mine = write_run(tmp_path / "runs" / "mine", 'backbone = "lcnet_050"\nloss = "focal+lovasz"\nepochs = 2\n', None)
    return [c04, c09, mine]


def test_table2_values_come_from_the_best_epoch_of_metrics_csv(runs):
    table = table2(runs).set_index("index")
    c04 = table.loc["C04"]
    assert (c04["best_epoch"], c04["val_lrap"], c04["val_map"]) == (2, 0.75, 0.45)  # max val_lrap, not the last
    assert (c04["holdout_lrap"], c04["holdout_map"]) == (0.70, 0.41)  # at the best epoch
    assert c04["train_seconds"] == pytest.approx(330.5) and c04["paper_lrap"] == 0.853
    assert (c04["backbone"], c04["loss"], c04["gamma"], c04["beta"], c04["img_size"], c04["epochs"]) == (
        "resnest50d", "cbfl", 2.0, 0.9999, 360, 3)
    c09 = table.loc["C09-s1"]
    assert (c09["best_epoch"], c09["val_lrap"], c09["epochs_done"], c09["epochs"]) == (1, 0.61, 2, 4)
    assert pd.isna(c09["holdout_lrap"]) and pd.isna(c09["holdout_map"])  # older runs: no hold-out columns
    assert c09["paper_lrap"] == 0.825  # the -s<seed> suffix is ignored
    mine = table.loc["mine"]
    assert mine["epochs_done"] == 0 and pd.isna(mine["val_lrap"]) and pd.isna(mine["paper_lrap"])


def test_table_command_prints_and_writes_csv_and_markdown(runs, tmp_path, cli):
    result = cli("table", *map(str, runs))
    shown = " ".join(result.output.split())
    for text in ("C04", "resnest50d", "cbfl", "0.9999", "0.750", "0.450", "0.700", "0.410", "5:30", "0.853",
                 "none-class x0.01, max-loss drop, 2 snapshots", "2/4", "focal+lovasz"):
        assert text in shown, text
    prefix = tmp_path / "runs" / "table2"  # default: in the folder that holds the first run folder
    written = pd.read_csv(f"{prefix}.csv")
    assert written["index"].tolist() == ["C04", "C09-s1", "mine"]
    assert written.loc[0, "val_lrap"] == 0.75 and pd.isna(written.loc[1, "holdout_map"])
    markdown = Path(f"{prefix}.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3 and lines[2].startswith("| C04 | resnest50d | cbfl | 2 | 0.9999 | - |")
    assert "| 0.750 | 0.450 | 0.700 | 0.410 | 5:30 | 0.853 |" in lines[2]
    assert lines[3].count("| - |") >= 2  # absent hold-out values
    cli("table", str(runs[0]), "--out", str(tmp_path / "elsewhere"))
    assert (tmp_path / "elsewhere" / "table2.csv").is_file() and (tmp_path / "elsewhere" / "table2.md").is_file()


def write_rank_output(out_dir: Path, run_id: str, lines: list[str], models: int) -> Path:
    """A minimal dsdi rank output folder: run.json, clip_scores.csv and the submitted TREC run."""
    out_dir.mkdir(parents=True)
    facts = {"run_id": run_id, "models": [f"runs/m{i}/best.pt" for i in range(models)], "fuse": []}
    (out_dir / "run.json").write_text(json.dumps(facts))
    shots = sorted({line.split()[2] for line in lines})
    scores = pd.DataFrame({"shot_id": shots, "clip_path": [f"{s}.mp4" for s in shots], "frames": 10, "status": "ok"})
    for name in CLASSES:
        scores[name] = 0.5
    scores.to_csv(out_dir / "clip_scores.csv", index=False)
    (out_dir / f"{run_id}.trec").write_text("".join(f"{line} {run_id}\n" for line in lines))
    return out_dir


def test_table3_scores_rank_outputs_against_qrels_and_names_the_paper_submission(tmp_path, cli):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 a 1\n1 0 b 1\n1 0 c 0\n2 0 c 1\n")
    # feature 1: a (relevant), c, b (relevant) -> AP (1/1 + 2/3) / 2; feature 2: a, c (relevant) -> AP 1/2
    vas2 = write_rank_output(tmp_path / "rank" / "ten-plus-one", "VAS2", [
        "1 Q0 a 1 0.9", "1 Q0 c 2 0.8", "1 Q0 b 3 0.7", "2 Q0 a 1 0.9", "2 Q0 c 2 0.8"], models=10)
    # the folder's name matches NII_UIT 2 when the run id does not
    d13 = write_rank_output(tmp_path / "rank" / "nii_uit2", "d13", ["1 Q0 b 1 0.9", "2 Q0 c 1 0.9"], models=1)
    table = table3([vas2, d13], read_judgments(qrels), ensembles_dir=REPO / "runs" / "ensembles").set_index("run")
    assert table.loc["ten-plus-one", "map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert (table.loc["ten-plus-one", "models"], table.loc["ten-plus-one", "paper_map"]) == (10, 0.383)
    assert table.loc["nii_uit2", "map"] == pytest.approx((1 / 2 + 1) / 2)
    assert (table.loc["nii_uit2", "paper_submission"], table.loc["nii_uit2", "paper_map"]) == ("NII_UIT2", 0.248)
    assert table.loc["nii_uit2", "paper_description"] == "Model-D13 (single model)"

    ensembles = tmp_path / "ensembles"  # the paper's values come from the ensemble files given
    ensembles.mkdir()
    (ensembles / "VAS2.toml").write_text('name = "VAS2"\ndescription = "ten + one"\npaper_map = 0.383\n'
                                         'members = [{run = "A01"}]\n')
    result = cli("table", "--rank", str(vas2), "--rank", str(d13), "--qrels", str(qrels), "--out", str(tmp_path / "t"),
                 "--ensembles", str(ensembles))
    shown = " ".join(result.output.split())
    assert "ten-plus-one │ VAS2 │ 10 │ 0.667 │ VAS2 │ 0.383 │ ten + one" in shown
    assert "nii_uit2 │ d13 │ 1 │ 0.750 │ - │ - │ -" in shown
    assert pd.read_csv(tmp_path / "t" / "table3.csv")["run"].tolist() == ["ten-plus-one", "nii_uit2"]
    assert "Table 3: submissions (TREC mAP at depth 1000)" in shown

    sampled = tmp_path / "sample_qrels.txt"  # the same judgments as NIST sample qrels, every pooled shot judged
    sampled.write_text("1 0 a 1 1\n1 0 b 1 1\n1 0 c 1 0\n2 0 c 1 1\n")
    result = cli("table", "--rank", str(vas2), "--qrels", str(sampled), "--out", str(tmp_path / "s"))
    shown = " ".join(result.output.split())
    assert "Table 3: submissions (mean xinfAP at depth 1000)" in shown and "ten-plus-one │ VAS2 │ 10 │ 0.667" in shown
    assert "mean xinfAP at depth 1000" in (tmp_path / "s" / "table3.md").read_text()

    run = write_run(tmp_path / "runs" / "A01", 'backbone = "regnety_064"\nloss = "focal"\nepochs = 1\n',
                    METRICS_HEADER + "\n1,0.01,0.9,0.8,0.61,0.31,60,9,0\n")
    cli("table", str(run), "--rank", str(vas2), "--qrels", str(qrels), "--out", str(tmp_path / "both"))
    assert pd.read_csv(tmp_path / "both" / "table2.csv")["index"].tolist() == ["A01"]
    assert pd.read_csv(tmp_path / "both" / "table2.rank.csv")["run"].tolist() == ["ten-plus-one"]
    assert (tmp_path / "both" / "table2.md").read_text().count("## Table") == 2


def test_table_refuses_bad_arguments_with_exit_2(runs, tmp_path, cli):
    cli("table", "--rank", str(tmp_path), expect=2)  # no --qrels
    cli("table", expect=2)
    result = cli("table", str(tmp_path / "missing"), expect=2)
    assert "config.toml" in result.output


def test_paper_values_are_table_2_and_3_and_agree_with_the_recipes_comments():
    assert len(PAPER_TABLE_2_LRAP) == 13
    for recipe in sorted((REPO / "runs").glob("*.toml")):
        quoted = re.search(r"Table 2 LRAP (0\.\d+)", recipe.read_text())
        assert quoted and float(quoted.group(1)) == PAPER_TABLE_2_LRAP[recipe.stem], recipe.name
        assert paper_lrap(f"{recipe.stem}-s3") == PAPER_TABLE_2_LRAP[recipe.stem]
    assert paper_lrap("C04x") is None
    shipped = paper_submissions(REPO / "runs" / "ensembles")  # Table 3 of the paper, as the ensemble files state it
    assert {(s.name, s.paper_map) for s in shipped.values()} == {
        ("VAS1", 0.359), ("VAS2", 0.383), ("VAS3", 0.355), ("VAS4", 0.360), ("NII_UIT1", 0.374), ("NII_UIT2", 0.248)}
    assert paper_submission(shipped, "vas 4").paper_map == 0.360
    assert paper_submission(shipped, "x", "NII-UIT 1").name == "NII_UIT1"
    assert paper_submission(shipped, "VAS", "") is None and paper_submissions(REPO / "no such folder") == {}
