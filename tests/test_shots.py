"""`dsdi shots` through the real CLI on H.264 videos made by concatenating known shots (ffmpeg's lavfi sources,
each with moving content and noise) with hard cuts at known frames, and one cross-fade; then `dsdi rank --shots`
on the table it wrote."""

import shutil
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_checkpoint

from dsdi.video.ffmpeg import run
from dsdi.video.shots import detect_shots

W, H, RATE, MIN_SHOT = 160, 96, 25, 0.6
# (lavfi source, frames): every shot at least MIN_SHOT long; neighbours look different. Every source must draw the
# same frames every time: sierpinski gets a seed, and yuvtestsrc replaced gradients, whose seed this ffmpeg
# ignores (its videos differed run to run, and the adaptive detector missed a cut now and then)
YUV_PATTERN, SIERPINSKI = "yuvtestsrc", "sierpinski:seed=1"
CUTS = [("testsrc2", 30), ("mandelbrot", 22), ("smptebars", 40), (YUV_PATTERN, 25), (SIERPINSKI, 35),
        ("testsrc2", 20), ("zoneplate", 28), ("rgbtestsrc", 27), ("mandelbrot", 24)]
SHORT = [("testsrc2", 30), ("smptebars", 8), ("mandelbrot", 30), (YUV_PATTERN, 30), ("rgbtestsrc", 8)]  # 0.32 s shots
FADE_AT, FADE_FRAMES = 30, 25  # the cross-fade starts FADE_AT frames into its first shot and lasts 1 s


def shot_source(source: str, frames: int, skip: int) -> ffmpeg.nodes.FilterableStream:
    """``frames`` frames of a lavfi source ("name" or "name:options") from its frame ``skip`` on, with temporal
    noise, W x H yuv420p."""
    name, _, options = source.partition(":")
    video = ffmpeg.input(f"{name}=s={W}x{H}:r={RATE}" + (f":{options}" if options else ""), format="lavfi")
    video = video.trim(start_frame=skip, end_frame=skip + frames).setpts("PTS-STARTPTS")
    return video.filter("noise", alls=12, allf="t+u").filter("setsar", 1).filter("format", "yuv420p")


def encode(video: ffmpeg.nodes.FilterableStream, out: Path, ffmpeg_exe: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    command = video.output(str(out), vcodec="libx264", g=50).global_args("-v", "error").overwrite_output()
    run(command, f"making {out}", cmd=ffmpeg_exe)
    return out


def make_cut_video(ffmpeg_exe: str, out: Path, shots: list[tuple[str, int]]) -> list[int]:
    """A video of ``shots`` joined by hard cuts; returns the frames the cuts are at."""
    parts = [shot_source(source, frames, skip=k) for k, (source, frames) in enumerate(shots)]
    encode(ffmpeg.concat(*parts, v=1, a=0), out, ffmpeg_exe)
    return list(np.cumsum([frames for _, frames in shots])[:-1])


def make_fade_video(ffmpeg_exe: str, out: Path) -> tuple[list[int], tuple[int, int]]:
    """smptebars 30 | testsrc2 -(1 s cross-fade)- mandelbrot | gradients 30 frames: the two hard cuts' frames
    and the fade's [first, last] frame."""
    first, second = shot_source("testsrc2", 60, 0), shot_source("mandelbrot", 60, 0)
    fade = ffmpeg.filter([first, second], "xfade", transition="fade", duration=FADE_FRAMES / RATE,
                         offset=FADE_AT / RATE)
    video = ffmpeg.concat(shot_source("smptebars", 30, 0), fade, shot_source(YUV_PATTERN, 30, 0), v=1, a=0)
    encode(video, out, ffmpeg_exe)
    return [30, 30 + FADE_AT + 60], (30 + FADE_AT, 30 + FADE_AT + FADE_FRAMES)


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"video": str, "shot_id": str})


def cut_frames(table: pd.DataFrame, video: str) -> list[float]:
    """Where the video's shots after the first start, in frames."""
    return list(table[table.video == video].start.to_numpy()[1:] * RATE)


def assert_cuts_within(found: list[float], truth: list[int], frames: float = 2) -> None:
    assert len(found) == len(truth), (found, truth)
    assert np.abs(np.asarray(found) - np.asarray(truth)).max() <= frames, (found, truth)


@pytest.fixture(scope="module")
def footage(tmp_path_factory, ffmpeg_exe, cli):
    """root/flights/: the test videos (two same-named ones in a/ and b/, one with a space in its name, garbage
    and zero-byte files), and root/shots.csv written by one `dsdi shots flights/` run."""
    root = tmp_path_factory.mktemp("shots")
    flights = root / "flights"
    truth = {"cuts": make_cut_video(ffmpeg_exe, flights / "cuts.mp4", CUTS),
             "short": make_cut_video(ffmpeg_exe, flights / "short.mp4", SHORT)}
    truth["fade"], fade_window = make_fade_video(ffmpeg_exe, flights / "fade.mp4")
    for copy in ("a/dup.mp4", "b/dup.mp4", "flight two.mp4"):
        (flights / copy).parent.mkdir(exist_ok=True)
        shutil.copy(flights / "short.mp4", flights / copy)
    (flights / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (flights / "empty.mov").write_bytes(b"")
    result = cli("shots", flights, "--out", root / "shots.csv", "--min-shot", MIN_SHOT, expect=None)
    return {"root": root, "flights": flights, "truth": truth, "fade_window": fade_window, "result": result,
            "table": read_table(root / "shots.csv")}


def test_every_hard_cut_found_within_two_frames(footage):
    table = footage["table"]
    assert_cuts_within(cut_frames(table, "flights/cuts.mp4"), footage["truth"]["cuts"])
    shots = table[table.video == "flights/cuts.mp4"]
    assert shots.start.iloc[0] == 0 and shots.end.iloc[-1] == pytest.approx(sum(f for _, f in CUTS) / RATE)
    assert (shots.start.to_numpy()[1:] == shots.end.to_numpy()[:-1]).all()  # contiguous


def test_content_detector_finds_the_same_cuts(footage, tmp_path):
    result = detect_shots([footage["flights"] / "cuts.mp4"], tmp_path / "shots.csv", "content", MIN_SHOT, False)
    assert not result.failures and result.frames == sum(f for _, f in CUTS)
    assert_cuts_within(cut_frames(read_table(tmp_path / "shots.csv"), str(footage["flights"] / "cuts.mp4")),
                       footage["truth"]["cuts"])


def test_no_shot_shorter_than_min_shot(footage, tmp_path):
    table = footage["table"]
    assert (table.end - table.start >= MIN_SHOT - 1e-6).all()
    # short.mp4's 8-frame shots merge into their neighbours; the last one into the shot before it
    assert_cuts_within(cut_frames(table, "flights/short.mp4"), [30, 68])
    assert table[table.video == "flights/short.mp4"].end.iloc[-1] == pytest.approx(106 / RATE)
    # with a shorter minimum they are shots of their own
    detect_shots([footage["flights"] / "short.mp4"], tmp_path / "shots.csv", min_shot=0.2, progress=False)
    small = read_table(tmp_path / "shots.csv")
    assert_cuts_within(cut_frames(small, str(footage["flights"] / "short.mp4")), footage["truth"]["short"])
    assert (small.end - small.start >= 0.2 - 1e-6).all()


def test_cross_fade_is_not_a_boundary(footage):
    """Measured: a 1 s cross-fade gives no boundary (both detectors compare neighbouring frames); its two sides
    stay in one shot. At most one boundary inside it would be acceptable too."""
    found = cut_frames(footage["table"], "flights/fade.mp4")
    first, last = footage["fade_window"]
    in_fade = [f for f in found if first - 2 <= f <= last + 2]
    assert len(in_fade) <= 1
    assert_cuts_within([f for f in found if f not in in_fade], footage["truth"]["fade"])


def test_ids_are_trecvid_style_unique_and_stable(footage, tmp_path, cli):
    table = footage["table"]
    assert table.shot_id.is_unique
    assert not table.shot_id.str.contains(r"\s").any()
    names = {video: ids.iloc[0].rsplit("_", 1)[0] for video, ids in table.groupby("video").shot_id}
    assert names == {"flights/cuts.mp4": "Shotcuts", "flights/short.mp4": "Shotshort", "flights/fade.mp4": "Shotfade",
                     "flights/a/dup.mp4": "Shotdup", "flights/b/dup.mp4": "Shotb-dup",
                     "flights/flight two.mp4": "Shotflight_two"}
    for _, shots in table.groupby("video"):
        assert list(shots.shot_id.str.rsplit("_", n=1).str[1].astype(int)) == list(range(1, len(shots) + 1))
    again = tmp_path / "shots.csv"  # the same folder again, into a table beside the first
    shutil.copytree(footage["flights"], tmp_path / "flights")
    assert cli("shots", tmp_path / "flights", "--out", again, expect=None).exit_code == 0
    assert again.read_text() == (footage["root"] / "shots.csv").read_text()


def test_unreadable_files_listed_and_skipped(footage, tmp_path, cli):
    result = footage["result"]
    assert result.exit_code == 0, result.output
    assert "2 unreadable videos skipped" in cli.said(result)
    assert "empty.mov: empty (zero-byte) file" in cli.said(result)
    assert "garbage.mp4: VideoOpenFailure: Invalid data found" in cli.said(result)
    assert set(footage["table"].video) == {f"flights/{n}.mp4" for n in
                                           ("cuts", "short", "fade", "a/dup", "b/dup", "flight two")}
    only_bad = cli("shots", footage["flights"] / "garbage.mp4", footage["flights"] / "empty.mov",
                   "--out", tmp_path / "shots.csv", expect=None)
    assert only_bad.exit_code == 2 and "2 unreadable videos skipped" in cli.said(only_bad)
    assert not (tmp_path / "shots.csv").exists()
    assert cli("shots", tmp_path / "missing", "--out", tmp_path / "shots.csv", expect=None).exit_code == 2


def test_rerun_skips_videos_already_in_the_table(footage, tmp_path, cli):
    folder = tmp_path / "flights"
    folder.mkdir()
    shutil.copy(footage["flights"] / "short.mp4", folder / "one.mp4")
    table = tmp_path / "shots.csv"
    assert cli("shots", folder, "--out", table, expect=None).exit_code == 0
    before = table.read_text()
    rerun = cli("shots", folder, "--out", table, expect=None)
    assert rerun.exit_code == 0 and "skipped 1 videos already in" in cli.said(rerun), rerun.output
    assert table.read_text() == before
    shutil.copy(footage["flights"] / "short.mp4", folder / "two.mp4")
    added = cli("shots", folder, "--out", table, expect=None)
    assert "skipped 1 videos" in cli.said(added) and "of 1 videos" in cli.said(added), added.output
    assert table.read_text().startswith(before)
    assert set(read_table(table).shot_id.str.rsplit("_", n=1).str[0]) == {"Shotone", "Shottwo"}


def test_rank_ranks_every_shot_of_the_table(footage, tmp_path, cli):
    run_dir = tmp_path / "runs" / "tiny"
    tiny_checkpoint(run_dir, img_size=32)
    table = footage["table"]
    out = tmp_path / "out"
    result = cli("rank", "--shots", footage["root"] / "shots.csv", "--models", run_dir / "best.pt", "--out", out,
                 "--run-id", "shots", "--topk", 1000, expect=None)
    assert result.exit_code == 0 and f"ranked {len(table)}, failed 0" in cli.said(result), result.output
    scores = pd.read_csv(out / "clip_scores.csv", dtype={"shot_id": str})
    assert set(scores.shot_id) == set(table.shot_id)
