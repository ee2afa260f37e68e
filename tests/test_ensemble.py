"""Ensemble files (the paper's Table 3 as runs/ensembles/*.toml), `dsdi rank --ensemble` and `dsdi select`.

References: the member lists are typed from the paper's section 3 text; `--ensemble` is compared with the same
models given by `--models`/`--model-weights`; every greedy selection step is compared with a brute-force
argmax over all candidates, scored by scikit-learn's average precision directly.
"""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from colour_clips import make_colour_clip
from conftest import finish_run, tiny_checkpoint
from sklearn.metrics import average_precision_score

import dsdi.rank.scoring
from dsdi.errors import InputError
from dsdi.labels.schema import CLASSES
from dsdi.rank.config import RankConfig
from dsdi.rank.ensemble import Ensemble, Member, load_ensemble, member_checkpoints, write_ensemble
from dsdi.rank.models import resolve_models
from dsdi.rank.selection import forward_selection, holdout_map
from dsdi.train.config import TrainConfig
from dsdi.train.predictions import read_predictions, write_predictions, write_targets
from dsdi.train.run_folder import RunFolder
from dsdi.video.decode import ClipChunks
from dsdi.workspace import SUBMISSIONS_DIR

ENSEMBLES = Path(__file__).resolve().parents[1] / "runs" / "ensembles"
TEN = ["A01", "B02", "C03", "C04", "C06", "C07", "C08", "C09", "C11", "C12"]
TWELVE = ["A01", "B02", "C03", "C04", "C05", "C06", "C07", "C08", "C09", "C10", "C11", "C12"]


def says(output: str, text: str) -> bool:
    """``text`` is in the command's output, whitespace ignored (rich wraps long lines, also inside paths)."""
    return "".join(text.split()) in "".join(output.split())


# ---- the shipped Table 3 files ---------------------------------------------------------------

TABLE3 = {  # name: (members, fuse, paper mAP)
    "VAS3": (TEN, [], 0.355),
    "VAS4": (TWELVE, [], 0.360),
    "VAS1": (TWELVE, [(Path("submissions/VAS3"), 1.0)], 0.359),
    "VAS2": (TEN, [(Path("submissions/NIIICT"), 0.5)], 0.383),
    "NII_UIT1": (TEN, [(Path("submissions/NIIICT"), 0.2)], 0.374),
    "NII_UIT2": (["D13"], [], 0.248),
}


def test_shipped_table3_files():
    assert sorted(p.stem for p in ENSEMBLES.glob("*.toml")) == sorted(TABLE3)
    for name, (members, fuse, paper_map) in TABLE3.items():
        ensemble = load_ensemble(ENSEMBLES / f"{name}.toml")
        assert ensemble.name == name and ensemble.agg == "max" and ensemble.paper_map == paper_map
        assert [str(m.run) for m in ensemble.members] == members
        assert {m.run.name: m.checkpoint for m in ensemble.members} == {
            run: "last" if run == "C10" else "best" for run in members}
        assert ensemble.weights == [1.0] * len(members)
        assert ensemble.fuse == fuse
    # VAS 1 fuses VAS 4's members with VAS 3's output, which ranking VAS3.toml writes by default
    vas3 = RankConfig(clips=Path("c"), ensemble=ENSEMBLES / "VAS3.toml")
    assert SUBMISSIONS_DIR / load_ensemble(ENSEMBLES / "VAS3.toml").name == TABLE3["VAS1"][1][0][0]
    assert vas3.run_id is None  # not given: resolve_models takes the ensemble's name


@pytest.mark.parametrize("text, message", [
    ('members = [{run = "A"}]\nagg = "median"', "agg 'median'"),
    ('members = [{run = "A", checkpoint = "epoch_3"}]', r"members\[0\].checkpoint 'epoch_3'"),
    ('members = [{run = "A", weight = -1}]', r"members\[0\].weight must be"),
    ('members = [{run = "A", wieght = 1}]', r"members\[0\]: unknown key\(s\) wieght"),
    ('members = [{checkpoint = "best"}]', r"members\[0\]: give run .* or model"),
    ('members = [{run = "A", model = "B"}]', r"members\[0\]: give run .* or model .*one of the two"),
    ('members = [{model = "org/m", checkpoint = "last"}]', r"members\[0\]: checkpoint goes with run"),
    ('members = [{model = "org/m"}, {model = "org/m"}]', "member org/m is listed twice"),
    ('members = []', "members is empty"),
    ('name = "x"', "lacks members"),
    ('members = [{run = "A"}, {run = "A"}]', "member A is listed twice"),
    ('members = [{run = "A", weight = 0}]', "weights sum to 0"),
    ('members = [{run = "A"}]\nfuse = [{out_dir = "o"}]', r"fuse\[0\] needs out_dir and weight"),
    ('members = [{run = "A"}]\nfuse = [{out_dir = "o", weight = 0}]', r"fuse\[0\].weight must be"),
    ('members = [{run = "A"}]\nname = "two words"', "name 'two words' must be one word"),
    ('members = [{run = "A"}]\npaper_mAP = 0.3', r"unknown key\(s\) paper_mAP"),
    ('members = [{run = "A"}', "not valid TOML"),
])
def test_malformed_file_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(InputError, match=message) as error:
        load_ensemble(path)
    assert str(path) in str(error.value)


def test_write_and_load_round_trip(tmp_path):
    ensemble = Ensemble("mine", [Member(Path("A01"), "best", 3.0), Member(Path("/abs/C10"), "snapshot_2", 1.0),
                                 Member(None, weight=2.0, model="MITLL/LADI-v2-classifier-small")],
                        agg="top3", fuse=[(Path("submissions/other"), 0.5)], description='say "hi"',
                        paper_map=0.36, holdout_map=0.41)
    write_ensemble(tmp_path / "mine.toml", ensemble, comment="two\nlines")
    loaded = load_ensemble(tmp_path / "mine.toml")
    assert loaded.path == tmp_path / "mine.toml"
    loaded.path = None
    assert loaded == ensemble
    assert (tmp_path / "mine.toml").read_text().startswith("# two\n# lines\n")


# ---- members: checkpoints, missing and unfinished ----------------------------------------------


def hand_run(runs: Path, name: str, done: int = 1, planned: int | None = None, last: bool = True) -> Path:
    """A run folder around tiny checkpoints of epoch ``done`` (conftest.finish_run): finished, or stopped after
    epoch ``done`` of ``planned``; without ``last`` its last.pt is gone."""
    run = RunFolder(runs / name)
    tiny_checkpoint(run.path, epoch=done)
    finish_run(run.path)
    if planned is not None:
        TrainConfig(backbone="lcnet_050", img_size=64, epochs=planned).to_toml(run.config_toml)
    if not last:
        run.last.unlink()
    return run.path


def test_member_checkpoints_names_every_missing_or_unfinished_member(tmp_path):
    runs = tmp_path / "runs"
    hand_run(runs, "A01", done=2)
    hand_run(runs, "C10", last=False)
    hand_run(runs, "C11", done=3, planned=40)
    hand_run(runs, "D13")
    ensemble = Ensemble("e", [Member(Path("A01")), Member(Path("B02")), Member(Path("C10"), "last"),
                              Member(Path("C11"))])
    with pytest.raises(InputError) as error:
        member_checkpoints(ensemble, runs)
    message = str(error.value)
    assert "3 of 4 members not ready" in message and "A01" not in message
    assert f"B02: no run folder {runs / 'B02'}" in message
    assert f"C10 (last): {runs / 'C10' / 'last.pt'} not found" in message
    assert f"C11: unfinished in {runs / 'C11'}: 3 of 40 epochs in metrics.csv (resume it" in message
    ready = Ensemble("e", [Member(Path("A01")), Member(Path("A01"), "last"), Member(runs / "D13")])
    assert member_checkpoints(ready, runs) == [runs / "A01/best.pt", runs / "A01/last.pt", runs / "D13/best.pt"]
    with pytest.raises(InputError, match=f"C10: unfinished in {runs / 'C10'}: no last.pt"):
        member_checkpoints(Ensemble("e", [Member(Path("C10"))]), runs)


def test_rank_ensemble_refuses_missing_member_before_decoding(tmp_path, monkeypatch, cli):
    decodes = []
    monkeypatch.setattr(dsdi.rank.scoring, "ClipChunks",
                        lambda clip, *a, **k: decodes.append(clip) or ClipChunks(clip, *a, **k))
    runs = tmp_path / "runs"
    hand_run(runs, "A01")
    write_ensemble(tmp_path / "E.toml", Ensemble("E", [Member(Path("A01")), Member(Path("C10"), "last")]))
    (tmp_path / "clips").mkdir()
    result = cli("rank", "--ensemble", tmp_path / "E.toml", "--clips", tmp_path / "clips", "--runs-dir", runs,
                 "--out", tmp_path / "out", "--device", "cpu", expect=None)
    assert result.exit_code == 2
    assert says(result.output, f"1 of 2 members not ready: C10 (last): no run folder {runs / 'C10'}")
    assert decodes == [] and not (tmp_path / "out").exists()


def test_resolved_flags_with_an_ensemble(tmp_path):
    runs = tmp_path / "runs"
    for name in ("A", "B"):
        hand_run(runs, name)
    other = tmp_path / "other"
    other.mkdir()
    (other / "clip_scores.csv").write_text("shot_id\n")
    path = tmp_path / "E.toml"
    write_ensemble(path, Ensemble("E", [Member(Path("A"), "best", 2.0), Member(Path("B"), "last", 1.0)], agg="mean",
                                  fuse=[(other, 0.5)]))
    base = RankConfig(clips=tmp_path, ensemble=path, runs_dir=runs)
    config = resolve_models(base)
    assert config.models == [runs / "A/best.pt", runs / "B/last.pt"] and config.model_weights == [2.0, 1.0]
    assert (config.agg, config.fuse, config.run_id, config.out) == ("mean", [(other, 0.5)], "E", SUBMISSIONS_DIR / "E")
    config = resolve_models(base.updated({"agg": "top3", "fuse": [(other, 0.2)], "run_id": "mine"}))
    assert (config.agg, config.fuse, config.run_id, config.out) == ("top3", [(other, 0.2)], "mine",
                                                                    SUBMISSIONS_DIR / "mine")
    for given in ({"models": [runs / "A"]}, {"model_weights": [1.0, 1.0]}):
        with pytest.raises(InputError, match="drop --models and --model-weights"):
            base.updated(given).resolved()  # a value check: no file read
    write_ensemble(path, Ensemble("E", [Member(Path("A"))], fuse=[(tmp_path / "absent", 0.5)]))
    with pytest.raises(InputError, match=rf"{path}: fuse out_dir .*absent.* --fuse OTHER_OUT_DIR:0.5"):
        resolve_models(base)
    assert resolve_models(base.updated({"fuse": [(other, 0.5)]})).fuse == [(other, 0.5)]  # --fuse replaces the file's
    plain = resolve_models(RankConfig(clips=tmp_path, runs_dir=runs))  # plain dsdi rank: every finished run
    assert (plain.models, plain.agg, plain.run_id) == ([runs / "A/best.pt", runs / "B/best.pt"], "max", "dsdi_run")


# ---- dsdi rank --ensemble on real clips ----------------------------------------------------------

W, H, IMG = 64, 48, 64


def test_rank_ensemble_equals_rank_models(tmp_path, ffmpeg_exe, cli):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clips = tmp_path / "clips"
        clips.mkdir()
        for k, colours in enumerate((("0x2040A0", "0xE0C010"), ("0x10A040", "0x803020"), ("0xF0F0F0", "0x000080"))):
            make_colour_clip(ffmpeg_exe, clips / f"shot{k}_1.mp4", [(colours[0], 0.4), (colours[1], 0.5)], (W, H),
                             gop=10)
        runs = tmp_path / "runs"
        for seed, checkpoint in enumerate(("A/best.pt", "B/best.pt", "B/last.pt")):  # the member is B's last
            tiny_checkpoint(runs / checkpoint, img_size=IMG, seed=seed, head_std=(0.3, 0.5))
        finish_run(runs / "A")
        finish_run(runs / "B")
        write_ensemble(tmp_path / "E.toml", Ensemble("E", [Member(Path("A"), "best", 2.0),
                                                           Member(Path("B"), "last", 1.0)], agg="mean"))
        common = ("--clips", clips, "--device", "cpu", "--batch-size", 5, "--topk", 2)
        by_file = cli("rank", "--ensemble", tmp_path / "E.toml", "--runs-dir", runs, "--out", tmp_path / "e",
                      *common, expect=None)
        assert by_file.exit_code == 0, by_file.output
        by_flags = cli("rank", "--models", runs / "A/best.pt", "--models", runs / "B/last.pt",
                       "--model-weights", 2, "--model-weights", 1,
                       "--agg", "mean", "--run-id", "E", "--out", tmp_path / "m", *common, expect=None)
        assert by_flags.exit_code == 0, by_flags.output
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "e" / "E.trec").read_text() == (tmp_path / "m" / "E.trec").read_text()
    scores = [pd.read_csv(tmp_path / out / "clip_scores.csv", index_col="shot_id") for out in ("e", "m")]
    pd.testing.assert_frame_equal(scores[0].drop(columns="clip_path"), scores[1].drop(columns="clip_path"))
    assert scores[0][list(CLASSES)].nunique().max() == 3  # the clips score differently
    single = cli("rank", "--models", runs / "B/best.pt", "--run-id", "E", "--out", tmp_path / "b", *common, expect=None)
    assert single.exit_code == 0 and (tmp_path / "b" / "E.trec").read_text() != (tmp_path / "e" / "E.trec").read_text()


# ---- selection -------------------------------------------------------------------------------


def sklearn_map(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes with a positive (target >= 0.5) of scikit-learn's average precision."""
    positive = targets >= 0.5
    return float(np.mean([average_precision_score(positive[:, c], scores[:, c])
                          for c in range(targets.shape[1]) if positive[:, c].any()]))


def random_case(rng: np.random.Generator, models: int, images: int = 24, classes: int = 5):
    targets = rng.choice([0.0, 0.25, 0.5, 1.0], size=(images, classes), p=[0.5, 0.15, 0.15, 0.2])
    targets[0] = 1.0  # every class has a positive
    signal = (targets >= 0.5).astype(float)
    predictions = np.stack([np.clip(signal * rng.uniform(0, 1) + rng.normal(0, rng.uniform(0.3, 1.2), signal.shape),
                                    -3, 3) for _ in range(models)])
    return 1 / (1 + np.exp(-predictions)), targets


@pytest.mark.parametrize("seed", range(12))
def test_each_greedy_step_is_the_brute_force_argmax(seed):
    rng = np.random.default_rng(seed)
    models, size = 3 + seed % 2, 2 + seed % 3
    predictions, targets = random_case(rng, models)
    selection = forward_selection(predictions, targets, size)
    chosen: list[int] = []
    for step in range(size):
        values = [sklearn_map(targets, predictions[chosen + [m]].mean(axis=0)) for m in range(models)]
        best = int(np.argmax(values))  # first on ties
        assert selection.picks[step] == best
        assert selection.scores[step] == pytest.approx(values[best], abs=1e-12)
        chosen.append(best)
    assert list(selection.counts) == [chosen.count(m) for m in range(models)]
    assert selection.picks[0] == int(np.argmax([sklearn_map(targets, p) for p in predictions]))  # best single
    # the final ensemble is among the size-multisets, scored as brute force would score it
    multisets = {tuple(sorted(c)) for c in itertools.combinations_with_replacement(range(models), size)}
    assert tuple(sorted(chosen)) in multisets
    assert holdout_map(targets, predictions[chosen].mean(axis=0)) == pytest.approx(selection.scores[-1], abs=1e-12)


def test_selection_repeats_a_model_when_that_helps_most():
    targets = np.eye(4)[[0, 1, 2, 3, 0, 1]]
    perfect, wrong = 0.45 + 0.1 * targets, 1.0 - targets  # mixing in any share of `wrong` spoils the ranking
    selection = forward_selection(np.stack([wrong, perfect]), targets, 3)
    assert selection.picks == [1, 1, 1] and list(selection.counts) == [0, 3] and selection.scores == [1.0] * 3


# ---- dsdi select -----------------------------------------------------------------------------


def holdout_runs(root: Path, count: int, seed: int = 0) -> tuple[list[Path], np.ndarray, list[np.ndarray]]:
    """`count` finished run folders with stored hold-out targets and best/last sigmoids (37 classes, 40 images)."""
    rng = np.random.default_rng(seed)
    ids = [f"img{i:03d}" for i in range(40)]
    predictions, targets = random_case(rng, 2 * count, images=len(ids), classes=len(CLASSES))
    runs = []
    for k in range(count):
        run = root / f"R{k}"
        write_targets(run, "holdout", ids, targets, CLASSES)
        write_predictions(run, "best", "holdout", ids, predictions[2 * k], CLASSES)
        write_predictions(run, "last", "holdout", ids, predictions[2 * k + 1], CLASSES)
        tiny_checkpoint(run, seed=k)
        runs.append(finish_run(run))
    return runs, targets, list(predictions)


def test_select_writes_a_loadable_ensemble(tmp_path, cli):
    runs_dir = tmp_path / "runs"
    runs, targets, predictions = holdout_runs(runs_dir, 3)
    out = tmp_path / "ensembles" / "SEL.toml"
    result = cli("select", *runs[:2], f"{runs[2]}:last", "--size", 4, "--out", out, "--runs-dir", runs_dir, expect=None)
    assert result.exit_code == 0, result.output
    ensemble = load_ensemble(out)
    assert ensemble.name == "SEL" and sum(ensemble.weights) == 4
    candidates = [read_predictions(run, stem, "holdout").to_numpy() for run, stem in
                  ((runs[0], "best"), (runs[1], "best"), (runs[2], "last"))]  # as stored (7 digits)
    np.testing.assert_allclose(candidates[2], predictions[5], rtol=1e-6)
    selection = forward_selection(np.stack(candidates), targets, 4)
    expected = {(f"R{k}", "last" if k == 2 else "best"): float(c) for k, c in enumerate(selection.counts) if c}
    assert {(str(m.run), m.checkpoint): m.weight for m in ensemble.members} == expected
    mixed = sum(w * candidates[int(str(m.run)[1])] for m, w in zip(ensemble.members, ensemble.weights, strict=True))
    assert ensemble.holdout_map == pytest.approx(sklearn_map(targets, mixed / 4), abs=1e-5)
    assert says(result.output, "best single") and says(result.output, "all runs, equal weights")
    assert says(result.output, f"wrote {out}")
    members = resolve_models(RankConfig(clips=tmp_path, ensemble=out, runs_dir=runs_dir))
    assert {Path(path).parent.name for path in members.models} <= {"R0", "R1", "R2"}


def test_select_refuses_runs_with_another_holdout(tmp_path, cli):
    runs, _, _ = holdout_runs(tmp_path / "runs", 2)
    other, _, _ = holdout_runs(tmp_path / "elsewhere", 1, seed=1)
    result = cli("select", *runs, *other, "--size", 2, "--out", tmp_path / "S.toml", expect=None)
    assert result.exit_code == 2
    assert says(result.output, f"runs {other[0]} have other hold-out images or targets than {runs[0]}")
    missing = cli("select", runs[0], f"{runs[1]}:snapshot_2", "--size", 2, "--out", tmp_path / "S.toml", expect=None)
    assert missing.exit_code == 2 and says(missing.output, "snapshot_2.holdout.csv: not found")
    assert not (tmp_path / "S.toml").exists()


def test_select_refuses_an_unfinished_run_before_selecting(tmp_path, cli):
    runs, _, _ = holdout_runs(tmp_path / "runs", 3)
    RunFolder(runs[1]).last.unlink()  # killed while saving its last epoch
    result = cli("select", *runs, "--size", 2, "--out", tmp_path / "S.toml", expect=None)
    assert result.exit_code == 2 and says(result.output, f"not finished: {runs[1]} (no last.pt)")
    assert says(result.output, "dsdi train --out RUN --resume") and not (tmp_path / "S.toml").exists()


def test_a_model_member_is_taken_as_written_and_a_missing_one_is_named(tmp_path):
    checkpoint = tmp_path / "v2a.pt"
    checkpoint.write_bytes(b"a checkpoint")
    ensemble = Ensemble("mixed", [Member(None, model=str(checkpoint)), Member(None, model=str(tmp_path / "gone.pt"))])
    with pytest.raises(InputError, match=r"1 of 2 members not ready: .*gone.pt: no such checkpoint file, Hugging Face "
                                         "model folder or hub name"):
        member_checkpoints(ensemble, tmp_path)
    assert member_checkpoints(Ensemble("one", ensemble.members[:1]), tmp_path) == [checkpoint]
