"""Rotated footage comes out upright, as the ffmpeg CLI shows it: clips whose display matrix turns them by 90, 180
and 270 degrees (made with the ffmpeg CLI's -display_rotation), on every decoding path and both backends."""

from pathlib import Path

import colour_clips
import ffmpeg
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dsdi.video.clip import Clip
from dsdi.video.decode import ClipChunks, decode_clip, frame_at, sample_frames
from dsdi.video.ffmpeg import run
from dsdi.video.orientation import UPRIGHT, Orientation, matrix_orientation, stream_turns

ROTATIONS = (0, 90, 180, 270)  # counter-clockwise degrees the display matrix asks for
W, H = 320, 180  # the coded picture


def rotated_copy(ffmpeg_exe: str, source: Path, degrees: int, out: Path, extra: tuple = ()) -> Path:
    """source with a display matrix turning it ``degrees`` counter-clockwise (and ``extra`` input options, e.g.
    ("-display_hflip",)), the video stream copied."""
    options = {"display_rotation": degrees} | {flag.lstrip("-"): None for flag in extra}
    command = ffmpeg.input(str(source), **options).output(str(out), c="copy").global_args("-v", "error")
    run(command.overwrite_output(), f"making {out}", cmd=ffmpeg_exe)
    return out


def cli_frames(ffmpeg_exe: str, path: Path, shown: tuple[int, int]) -> np.ndarray:
    """Every third frame the ffmpeg CLI decodes from a 30 fps clip (autorotated, its default): the frames on
    screen at t = 0, 0.1, 0.2, ... s, rgb24 (N, H, W, 3) for the shown (width, height). (Its fps=10 filter
    picks the frame after those.)"""
    command = ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24").global_args("-v", "error")
    raw = run(command, f"decoding {path}", cmd=ffmpeg_exe)
    return np.frombuffer(raw, np.uint8).reshape(-1, shown[1], shown[0], 3)[::3]


def shown_size(degrees: int) -> tuple[int, int]:
    return (H, W) if degrees % 180 else (W, H)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ffmpeg_exe) -> dict[int, Path]:
    """degrees -> a 2 s synthetic aerial clip (320x180 coded, limited range) turned that much for display."""
    from dsdi.synth import build_world

    root = tmp_path_factory.mktemp("rotation")
    world = build_world(root / "world", n_images=0, n_clips=1, clip_size=(W, H), clip_seconds=(2.0, 2.0))
    upright = sorted(world.clips_dir.glob("*.mp4"))[0]
    return {degrees: rotated_copy(ffmpeg_exe, upright, degrees, root / f"turned{degrees}.mp4") for degrees in ROTATIONS}


@pytest.fixture(scope="module")
def references(clips, ffmpeg_exe) -> dict[int, np.ndarray]:
    """degrees -> the CLI's fps=10 frames of that clip; checked to be the upright clip's turned counter-clockwise
    by degrees (np.rot90), so that the float64 references below can be turned the same way."""
    frames = {degrees: cli_frames(ffmpeg_exe, path, shown_size(degrees)) for degrees, path in clips.items()}
    for degrees in ROTATIONS:
        np.testing.assert_array_equal(frames[degrees], np.rot90(frames[0], degrees // 90, axes=(1, 2)))
    return frames


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("degrees", ROTATIONS)
def test_native_frames_and_thumbnails_match_the_cli(clips, references, degrees, backend):
    reference = references[degrees]
    decoded = decode_clip(Clip("c", clips[degrees]), backend=backend)
    assert decoded.frames.shape == reference.shape == (20, *shown_size(degrees)[::-1], 3)
    assert np.abs(decoded.frames.astype(int) - reference).max() <= 6
    chunks = list(ClipChunks(Clip("c", clips[degrees]), chunk_frames=7, backend=backend))
    np.testing.assert_array_equal(np.concatenate([frames for frames, _ in chunks]), decoded.frames)
    if backend == "pyav":
        np.testing.assert_array_equal(sample_frames(clips[degrees])[0], decoded.frames)
        for time_s in (0.0, 0.7, 1.9):
            thumbnail = frame_at(clips[degrees], time_s)
            assert np.abs(thumbnail.astype(int) - reference[round(time_s * 10)]).max() <= 6


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("degrees", ROTATIONS)
def test_model_input_sizes_follow_the_shown_picture(clips, references, degrees, backend):
    """shrink_to (rank's model and tile sizes, as (width, height) of the shown picture) and size: each equals the
    float64 BT.601 conversion of the coded frames, turned as the CLI turns them and resized in torch, within the
    tolerance of the upright clip (tests/test_video.py); a size larger than the shown picture on a side stays at
    the shown size."""
    sizes = [(64, 64), (96, 72), (72, 96), (200, 150)]
    upright = colour_clips.bt601_rgb_at(clips[0], [None], every=3)[0]  # 30 fps: every 3rd frame is sampled
    turned = torch.from_numpy(np.ascontiguousarray(np.rot90(upright, degrees // 90, axes=(1, 2)))).permute(0, 3, 1, 2)
    parts = list(ClipChunks(Clip("c", clips[degrees]), chunk_frames=7, shrink_to=sizes, backend=backend))
    for k, size in enumerate(sizes):
        frames = np.concatenate([part[k] for part, _ in parts]).astype(np.float64)
        if backend == "decord" and degrees == 0:  # decord's own converter, at the decoded size (the caller resizes)
            assert frames.shape == references[0].shape and np.abs(frames - references[0]).max() <= 6
            continue
        fits = size[0] <= shown_size(degrees)[0] and size[1] <= shown_size(degrees)[1]
        expected = F.interpolate(turned, size=size[::-1], mode="bilinear", antialias=True, align_corners=False)
        expected = (expected if fits else turned).permute(0, 2, 3, 1).numpy()  # too large: at the shown size
        diff = frames - expected
        limits = (0.6, 4.0) if fits else (0.4, 1.0)  # mean and 99th percentile of |diff|, as in test_video
        assert frames.shape == (20, *expected.shape[1:])
        assert abs(diff.mean()) < 0.1 and np.abs(diff).mean() < limits[0], (size, diff.mean(), np.abs(diff).mean())
        assert np.percentile(np.abs(diff), 99) < limits[1], (size, np.percentile(np.abs(diff), 99))
    small = decode_clip(Clip("c", clips[degrees]), fps=2.0, size=(48, 64), backend=backend).frames
    assert small.shape == (4, 64, 48, 3)


def test_mirrored_matrices_and_the_decord_hand_over(clips, references, tmp_path, ffmpeg_exe):
    """A display matrix that mirrors too (-display_hflip) is applied as the CLI applies it; decord, which turns
    such files by itself (quarter turns into frames of the wrong shape), hands them to PyAV."""
    for degrees in (0, 90):
        path = rotated_copy(ffmpeg_exe, clips[0], degrees, tmp_path / f"mirror{degrees}.mp4", ("-display_hflip",))
        reference = cli_frames(ffmpeg_exe, path, shown_size(degrees))
        for backend in ("pyav", "decord"):
            frames = decode_clip(Clip("m", path), backend=backend).frames
            assert frames.shape == reference.shape and np.abs(frames.astype(int) - reference).max() <= 6
        assert not np.array_equal(reference, references[degrees])  # the mirror shows
    assert [stream_turns(clips[degrees]) for degrees in ROTATIONS] == [False, True, True, True]


def test_matrix_orientation_follows_the_cli_rules():
    """fftools' choice per display matrix (16.16 fixed point): quarter turns both ways, their mirrored forms, 180,
    a left-right mirror alone, identity, and an odd angle left unturned."""
    one = 1 << 16
    assert matrix_orientation([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == UPRIGHT
    assert matrix_orientation([0, -one, 0, one, 0, 0, 0, 0, 1 << 30]) == Orientation(True, False, True)  # ccw 90
    assert matrix_orientation([0, one, 0, -one, 0, 0, 0, 0, 1 << 30]) == Orientation(True, True, False)  # cw 90
    assert matrix_orientation([0, -one, 0, -one, 0, 0, 0, 0, 1 << 30]) == Orientation(True, True, True)
    assert matrix_orientation([0, one, 0, one, 0, 0, 0, 0, 1 << 30]) == Orientation(True, False, False)
    assert matrix_orientation([-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]) == Orientation(False, True, True)
    assert matrix_orientation([-one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == Orientation(False, True, False)
    half = round(one * 0.5**0.5)
    assert matrix_orientation([half, -half, 0, half, half, 0, 0, 0, 1 << 30]) == UPRIGHT  # 45 degrees
