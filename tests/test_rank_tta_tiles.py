"""`dsdi rank --tta flip` and `--tiles RxC`: the tile boxes, each class's stored score against the views computed
by hand with the same model, one index key per option set, and bad flags.

Real H.264 clips of ffmpeg's moving test pattern and a tiny random resnet10t (tests/rank_models.py). The hand
computation decodes the clips itself (dsdi.video.decode.ClipChunks at the sizes written out below, which test_rank.py
checks against full-resolution frames), cuts the tiles, mirrors with torch.flip and runs a plain timm copy of
the model on each view separately.
"""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch
from colour_clips import make_pattern_clip
from conftest import tiny_checkpoint
from rank_models import IMG, model_sigmoids, save_pattern_model

from dsdi.files import file_sha256
from dsdi.index.store import ScoreIndex
from dsdi.labels.schema import CLASSES
from dsdi.models.preprocess import frames_to_tensor, resize_unit
from dsdi.rank.config import parse_tiles
from dsdi.rank.scoring import model_key
from dsdi.rank.views import tile_boxes
from dsdi.video.clip import Clip
from dsdi.video.decode import ClipChunks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pattern(tmp_path_factory, ffmpeg_exe):
    """Two 1 s pattern clips, one larger than every tile source size below (the decoder scales it) and one
    smaller (tiles are cut at its own size), and the model at IMG px."""
    root = tmp_path_factory.mktemp("views")
    clips = root / "clips"
    clips.mkdir()
    for name, size in (("Pat_320", (320, 180)), ("Pat_96", (96, 64))):
        make_pattern_clip(ffmpeg_exe, clips / f"{name}.mp4", size, 1.0)
    model = save_pattern_model(root / "runs" / "P", seed=0, side=IMG)
    return {"clips": clips, "model": model, "sha": file_sha256(model / "best.pt")}


def rank(cli, pattern, out, *flags):
    return cli("rank", "--clips", pattern["clips"], "--models", pattern["model"], "--out", out, "--device", "cpu",
               *flags)


@pytest.mark.parametrize(("width", "height", "rows", "cols", "overlap"), [
    (112, 112, 2, 2, 0.25), (320, 180, 3, 2, 0.25), (101, 67, 3, 4, 0.3), (1920, 1080, 3, 3, 0.1),
    (96, 64, 1, 3, 0.0), (7, 5, 2, 3, 0.5), (333, 100, 2, 5, 0.75)])
def test_tile_boxes_cover_the_frame_with_the_stated_overlap(width, height, rows, cols, overlap):
    boxes = np.array(tile_boxes(width, height, rows, cols, overlap)).reshape(rows, cols, 4)  # x0, y0, x1, y1
    covered = np.zeros((height, width), dtype=int)
    for x0, y0, x1, y1 in boxes.reshape(-1, 4):
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    assert (boxes[:, 0, 0] == 0).all() and (boxes[:, -1, 2] == width).all()  # first and last columns at the edges
    assert (boxes[0, :, 1] == 0).all() and (boxes[-1, :, 3] == height).all()
    assert (boxes[:, :, [0, 2]] == boxes[:1, :, [0, 2]]).all() and (boxes[:, :, [1, 3]] == boxes[:, :1, [1, 3]]).all()
    tile_w, tile_h = width / (cols - (cols - 1) * overlap), height / (rows - (rows - 1) * overlap)
    assert np.abs(boxes[..., 2] - boxes[..., 0] - tile_w).max() <= 1
    assert np.abs(boxes[..., 3] - boxes[..., 1] - tile_h).max() <= 1
    shared_x = boxes[:, :-1, 2] - boxes[:, 1:, 0]  # columns neighbouring tiles share
    shared_y = boxes[:-1, :, 3] - boxes[1:, :, 1]
    assert np.abs(shared_x - overlap * tile_w).max(initial=0) <= 1
    assert np.abs(shared_y - overlap * tile_h).max(initial=0) <= 1


def test_tile_boxes_refuse_impossible_grids():
    for args in ((3, 8, 1, 4, 0.0), (8, 8, 0, 2, 0.0), (8, 8, 2, 2, 1.0)):
        with pytest.raises(ValueError):
            tile_boxes(*args)


def frames_at(path, sizes, backend=None):
    """The clip's 10 fps frames as ClipChunks decodes them at each (width, height) of sizes (a frame smaller
    than a size on a side stays at its own size; decord: always): one uint8 (N, h, w, 3) array per size."""
    chunks = ClipChunks(Clip(path.stem, path), 10.0, shrink_to=sizes, backend=backend)
    return [np.concatenate(parts) for parts in zip(*(frames for frames, _ in chunks), strict=True)]


def by_hand(run_dir, whole, source, tiles, overlap, flip, mean_std=None):
    """(frame scores (N, 37), whole-frame sigmoids (N, 37)): per class the max over the whole frames and their
    tiles (cut from source) of each view's sigmoid, with flip the mean of the view's and its mirror's. Each view
    normalised by frames_to_tensor (ImageNet's mean/std), or with mean_std = (mean, std) in float64."""
    def view(frames):
        if mean_std is None:
            return frames_to_tensor(frames, IMG)
        mean, std = (torch.tensor(values, dtype=torch.float64).view(3, 1, 1) for values in mean_std)
        return ((resize_unit(frames, IMG).double() - mean) / std).float()

    views = [view(whole)]
    if tiles:
        height, width = source.shape[1:3]
        views += [view(source[:, y0:y1, x0:x1]) for x0, y0, x1, y1 in tile_boxes(width, height, *tiles, overlap)]
    scores = [model_sigmoids(run_dir, view) for view in views]
    if flip:
        scores = [(s + model_sigmoids(run_dir, torch.flip(view, dims=[3]))) / 2 for s, view in zip(scores, views,
                                                                                                   strict=True)]
    return np.max(scores, axis=0), model_sigmoids(run_dir, views[0])


# tile source sizes written out: 64 px tiles, 2 columns at overlap 0.25 -> 64 * 1.75 = 112 wide, 3 rows -> 64 *
# 2.5 = 160 high; 2 x 2 at overlap 0.4 -> 64 * 1.6 = 102.4, rounded up to 103
@pytest.mark.slow
@pytest.mark.parametrize(("flags", "flip", "tiles", "overlap", "source_size"), [
    (["--tta", "flip"], True, None, 0.25, None),
    (["--tiles", "3x2"], False, (3, 2), 0.25, (112, 160)),
    (["--tta", "flip", "--tiles", "2x2", "--tile-overlap", "0.4", "--batch-size", "25"], True, (2, 2), 0.4,
     (103, 103)),
    (["--tiles", "3x2", "--decoder", "decord"], False, (3, 2), 0.25, (112, 160)),
], ids=["flip", "tiles3x2", "flip+tiles2x2o0.4", "tiles3x2+decord"])
def test_stored_scores_equal_the_views_computed_by_hand(pattern, tmp_path, flags, flip, tiles, overlap, source_size,
                                                      cli):
    """The index's max, mean and peak frame per class equal the hand computation over every frame: the same
    decoded pixels, so only float32 noise of other batch compositions separates them (1e-5, as test_rank's
    decoding test for this model). --decoder decord: its frames (always at the decoded size), not PyAV's."""
    out, backend = tmp_path / "out", "decord" if "decord" in flags else "pyav"
    rank(cli, pattern, out, *flags)
    key = model_key(pattern["sha"], 10.0, "flip" if flip else "none", tiles, overlap, backend)
    index = ScoreIndex(out)
    stored = index.model_scores(key)
    index.close()
    assert sorted(stored) == ["Pat_320", "Pat_96"]
    for path in sorted(pattern["clips"].glob("*.mp4")):
        decoded = frames_at(path, [(IMG, IMG), *([source_size] if tiles else [])], backend)
        if tiles:  # PyAV scales to the tile source size only a frame at least that large on both sides; decord never
            scaled = path.stem == "Pat_320" and backend == "pyav"
            own_size = {"Pat_320": (180, 320), "Pat_96": (64, 96)}[path.stem]
            assert decoded[1].shape[1:3] == ((source_size[1], source_size[0]) if scaled else own_size)
        frames, whole = by_hand(pattern["model"], decoded[0], decoded[-1], tiles, overlap, flip)
        assert np.abs(frames - whole).max() > 0.01  # the views change the scores: the test can tell
        clip = stored[path.stem]
        assert clip.frames == len(frames) == 10
        np.testing.assert_allclose(clip.max_scores, frames.max(axis=0), atol=1e-5)
        np.testing.assert_allclose(clip.mean_scores, frames.mean(axis=0), atol=1e-5)
        peak_frames = np.round(clip.peak_times * 10).astype(int)
        np.testing.assert_allclose(frames[peak_frames, np.arange(len(CLASSES))], frames.max(axis=0), atol=1e-5)


def test_a_checkpoints_own_mean_and_std_feed_the_model_and_its_tiles(pattern, tmp_path, cli):
    """A model whose timm config normalises with mean 0.5 / std 0.5 (test_convnext), ranked with flip and tiles: the
    stored scores are those of every view normalised with its checkpoint's values (re-derived in float64), not
    with ImageNet's."""
    run = tmp_path / "convnext"
    tiny_checkpoint(run, backbone="test_convnext", img_size=IMG, head_std=(3.0, None))
    out, half = tmp_path / "out", ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    rank(cli, {**pattern, "model": run / "best.pt"}, out, "--tta", "flip", "--tiles", "2x2")
    index = ScoreIndex(out)
    stored = index.model_scores(model_key(file_sha256(run / "best.pt"), 10.0, "flip", (2, 2), 0.25))
    index.close()
    for path in sorted(pattern["clips"].glob("*.mp4")):
        whole, source = frames_at(path, [(IMG, IMG), (112, 112)])  # tile source: 64 px x 1.75
        frames, _ = by_hand(run, whole, source, (2, 2), 0.25, True, mean_std=half)
        imagenet, _ = by_hand(run, whole, source, (2, 2), 0.25, True)
        assert np.abs(frames - imagenet).max() > 0.01  # ImageNet's values would score otherwise: the test can tell
        np.testing.assert_allclose(stored[path.stem].max_scores, frames.max(axis=0), atol=1e-5)
        np.testing.assert_allclose(stored[path.stem].mean_scores, frames.mean(axis=0), atol=1e-5)


def test_each_option_set_keeps_its_own_index_key(pattern, tmp_path, cli):
    sha16, out = pattern["sha"][:16], tmp_path / "out"
    plain, flip = f"{sha16}@10fps", f"{sha16}@10fps+flip"
    assert model_key(pattern["sha"], 10.0) == plain and model_key(pattern["sha"], 10, "flip") == flip
    assert model_key(pattern["sha"], 10.0, "flip", (2, 2), 0.25) == f"{sha16}@10fps+flip+tiles2x2o0.25"
    assert model_key(pattern["sha"], 5.0, "none", (3, 2), 0.3) == f"{sha16}@5fps+tiles3x2o0.3"
    assert model_key(pattern["sha"], 10.0, decoder="decord") == f"{sha16}@10fps+decord"
    assert model_key(pattern["sha"], 10.0, "flip", decoder="pyav") == flip
    rank(cli, pattern, out, "--run-id", "p")
    with sqlite3.connect(out / "scores.sqlite") as db:
        plain_rows = db.execute("SELECT * FROM model_scores ORDER BY shot_id").fetchall()
    result = rank(cli, pattern, out, "--tta", "flip", "--run-id", "f")
    assert "scored 2 new clips" in result.output  # the flip key's clips only
    facts = json.loads((out / "run.json").read_text())
    assert (facts["model_keys"], facts["tta"], facts["tiles"], facts["tile_overlap"]) == ([flip], "flip", None, None)
    with sqlite3.connect(out / "scores.sqlite") as db:
        assert db.execute("SELECT * FROM model_scores WHERE model_key = ? ORDER BY shot_id",
                          (plain,)).fetchall() == plain_rows  # untouched by the flip run
    index = ScoreIndex(out)
    scores = {key: index.model_scores(key) for key in (plain, flip)}
    index.close()
    for shot in ("Pat_320", "Pat_96"):
        assert np.abs(scores[plain][shot].max_scores - scores[flip][shot].max_scores).max() > 1e-3
    assert "scored 0 new clips" in rank(cli, pattern, out, "--run-id", "p").output  # plain again: all from the index

    mixed = tmp_path / "mixed"  # dsdi fuse picks keys the index holds beyond run.json's
    result = cli("fuse", out, "--models", plain, "--models", flip, "--out", mixed)
    facts = json.loads((mixed / "run.json").read_text())
    assert facts["model_keys"] == [plain, flip] and "tta" not in facts and facts["weights"] == [1.0, 1.0]
    fused = pd.read_csv(mixed / "clip_scores.csv", dtype={"shot_id": str}).set_index("shot_id")
    for shot in ("Pat_320", "Pat_96"):
        expected = (scores[plain][shot].max_scores + scores[flip][shot].max_scores) / 2
        np.testing.assert_allclose(fused.loc[shot, list(CLASSES)].to_numpy(float), expected, atol=1e-6)
    cli("fuse", out, "--models", f"{plain}+tiles2x2o0.25", expect=2)


@pytest.mark.parametrize(("flags", "says"), [
    (["--tiles", "2x"], "--tiles '2x'"), (["--tiles", "0x2"], "--tiles"), (["--tiles", "2x2x2"], "--tiles"),
    (["--tiles", "axb"], "--tiles"), (["--tiles", "9x1"], "--tiles"), (["--tiles", "2.5x2"], "--tiles"),
    (["--tile-overlap", "0.9"], "--tile-overlap"), (["--tile-overlap=-0.1"], "--tile-overlap"),
    (["--tta", "mirror"], "--tta"),
])
def test_bad_flags_exit_2_with_one_line(pattern, tmp_path, flags, says, cli):
    result = cli("rank", "--clips", pattern["clips"], "--models", pattern["model"], "--out", tmp_path / "o",
                 *flags, expect=2)
    assert says in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "o").exists()


def test_tiles_text_and_help(cli):
    assert parse_tiles("3x2") == (3, 2) and parse_tiles(" 2X4 ") == (2, 4) and parse_tiles((1, 1)) == (1, 1)
    assert parse_tiles("none") is None and parse_tiles(None) is None
    shown = " ".join(cli("rank", "--help", env={"COLUMNS": "250"}, terminal_width=250).output.split())
    assert "--tta" in shown and "--tiles" in shown and "--tile-overlap" in shown and "own model key" in shown
