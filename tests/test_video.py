"""dsdi.video.decode against the ffmpeg CLI: real H.264 clips whose colour changes at known instants."""

import math
from pathlib import Path

import colour_clips
import numpy as np
import pytest
from colour_clips import make_colour_clip, make_pattern_clip, make_tone_clip

import dsdi.video.decode
from dsdi.errors import InputError
from dsdi.video.clip import Clip, discover_clips, read_shot_table
from dsdi.video.decode import VideoDecodeError, decode_clip, frame_at, sample_frames

COLOURS = [("red", 1.0), ("blue", 1.25), ("green", 0.8)]  # segments (colour, seconds) at 30 fps
W, H = 64, 48


def make_clip(ffmpeg: str, out: Path, segments=COLOURS, rate: int = 30, extra: tuple = ()) -> Path:
    """A W x H clip of solid-colour segments (default COLOURS)."""
    return make_colour_clip(ffmpeg, out, segments, (W, H), rate=rate, extra=extra)


def ffmpeg_fps10(ffmpeg: str, path: Path) -> np.ndarray:
    """The ffmpeg CLI's own `fps=10` extraction of a W x H clip, rgb24 frames (N,H,W,3)."""
    return colour_clips.ffmpeg_fps10(ffmpeg, path, (W, H))


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ffmpeg_exe):
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    return {
        "main": make_clip(ffmpeg_exe, root / "shot1_1.mp4"),
        "odd": make_clip(ffmpeg_exe, root / "sub" / "shot1_2.mkv", [("white", 0.37), ("black", 0.5)], rate=25),
        "ts": make_clip(ffmpeg_exe, root / "long.ts", [("red", 1.5), ("blue", 1.5), ("green", 1.5)]),
        "faststart": make_clip(ffmpeg_exe, root / "faststart.mov", extra=("-movflags", "+faststart")),
    }


def decode_in_chunks(clip: Clip, chunk_frames: int, backend: str | None = None) -> tuple:
    """(frames (N,H,W,3), timestamps (N,), truncated, note) of ClipChunks, checking every chunk's length."""
    chunks = dsdi.video.decode.ClipChunks(clip, chunk_frames=chunk_frames, backend=backend)
    frames, times = zip(*chunks, strict=True)
    lengths = [len(t) for t in times]
    assert lengths == [len(f) for f in frames] and set(lengths[:-1]) <= {chunk_frames} and 1 <= lengths[-1]
    assert lengths[-1] <= chunk_frames
    return np.concatenate(frames), np.concatenate(times), chunks.truncated, chunks.note


@pytest.mark.parametrize("chunk_frames", [7, 10**6])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_sampling_matches_ffmpeg_fps10(clips, ffmpeg_exe, backend, chunk_frames):
    for key in ("main", "odd", "ts") if backend == "pyav" else ("main", "odd"):
        decoded = decode_clip(Clip(key, clips[key]), backend=backend)
        frames, times, truncated, _ = decode_in_chunks(Clip(key, clips[key]), chunk_frames, backend)
        np.testing.assert_array_equal(frames, decoded.frames)
        np.testing.assert_array_equal(times, decoded.timestamps)
        reference = ffmpeg_fps10(ffmpeg_exe, clips[key])
        assert not decoded.truncated and not truncated
        assert abs(len(decoded.frames) - len(reference)) <= 1
        common = min(len(decoded.frames), len(reference))
        diff = np.abs(decoded.frames[:common].astype(int) - reference[:common].astype(int)).max(axis=(1, 2, 3))
        assert diff.max() <= 6, diff
        np.testing.assert_allclose(decoded.timestamps, np.arange(len(decoded.frames)) / 10.0)


def test_frame_count_and_colour_changes(clips):
    frames, times = sample_frames(clips["main"])
    duration = 92 / 30  # 30 + 38 + 24 frames at 30 fps
    assert len(frames) == math.ceil(duration * 10) == len(times)
    red, blue, green = frames[5, 0, 0], frames[15, 0, 0], frames[28, 0, 0]
    assert red[0] > 200 and blue[2] > 200 and green[1] > 100
    np.testing.assert_array_equal(frames[:10, 0, 0], np.broadcast_to(red, (10, 3)))  # t < 1.0 s is red
    np.testing.assert_array_equal(frames[10, 0, 0], blue)  # t = 1.0 s shows the first blue frame
    frames_odd, _ = sample_frames(clips["odd"])  # 10 + 13 frames at 25 fps = 0.92 s -> 10 samples
    assert len(frames_odd) == 10 and frames_odd[3, 0, 0].min() > 200 and frames_odd[4, 0, 0].max() < 40


def test_size_and_frame_at(clips, ffmpeg_exe):
    frames, _ = sample_frames(clips["main"], fps=2.0, size=(32, 24))
    assert frames.shape == (7, 24, 32, 3) and frames.dtype == np.uint8
    assert decode_clip(Clip("ts", clips["ts"]), fps=2.0, size=(32, 24), backend="pyav").frames.shape == (9, 24, 32, 3)
    assert frame_at(clips["main"], 1.5)[0, 0, 2] > 200  # blue at 1.5 s
    assert frame_at(clips["main"], 0.2).shape == (H, W, 3)
    reference = ffmpeg_fps10(ffmpeg_exe, clips["ts"])  # PyAV path: seeks inside an MPEG-TS file
    for time_s in (1.4, 1.5, 2.9, 3.0, 4.4):
        assert np.abs(frame_at(clips["ts"], time_s).astype(int) - reference[round(time_s * 10)]).max() <= 6


def test_discover_and_shot_table(clips, tmp_path):
    root = clips["main"].parent
    (root / "notes.txt").write_text("not a clip")
    found = discover_clips(root)
    assert [c.shot_id for c in found] == ["faststart", "long", "shot1_1", "shot1_2"]
    table = tmp_path / "shots.csv"
    table.write_text(f"video,shot_id,start,end\n{clips['ts']},s7_1,1.5,3.0\n{clips['main']},s1_1,1.0,2.2\n")
    shots = read_shot_table(table)
    assert [s.shot_id for s in shots] == ["s7_1", "s1_1"]
    for shot, backend in [(shots[0], None), (shots[0], "pyav"), (shots[1], "decord"), (shots[1], "pyav")]:
        cut = decode_clip(shot, backend=backend)
        assert len(cut.frames) == round((shot.end - shot.start) * 10) and not cut.truncated
        np.testing.assert_allclose(cut.timestamps, np.arange(len(cut.frames)) / 10.0)
        assert (cut.frames[:, 0, 0, 2] > 200).all() and (cut.frames[:, 0, 0, 0] < 40).all()  # blue segment only
    table.write_text("video,shot_id,start,end\nx.mp4,s1,0,1\nx.mp4,s2,abc,2\n")
    with pytest.raises(InputError, match=r"shots.csv: line 3"):
        read_shot_table(table)
    with pytest.raises(InputError):
        discover_clips(tmp_path / "missing")


def test_broken_files(clips, tmp_path, ffmpeg_exe):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, not a video\n" * 50)
    audio = tmp_path / "audio.mp4"
    make_tone_clip(ffmpeg_exe, audio)
    for name in ("zero.mp4", "text.mp4", "audio.mp4"):
        for backend in (None, "pyav"):
            with pytest.raises(VideoDecodeError) as info:
                decode_clip(Clip(name, tmp_path / name), backend=backend)
            assert info.value.path.endswith(name) and info.value.reason
    data = clips["faststart"].read_bytes()  # index first, so the cut file still opens
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 4 // 5])
    for backend in (None, "pyav"):
        decoded = decode_clip(Clip("cut", cut), backend=backend)
        assert 3 <= len(decoded.frames) < 28 and decoded.truncated and decoded.note


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_chunks_equal_whole_decoding_of_files_and_shots(clips, backend):
    shots = [Clip("main", clips["main"]), Clip("odd", clips["odd"]), Clip("faststart", clips["faststart"]),
             Clip("s1", clips["main"], 1.0, 2.2), Clip("s2", clips["odd"], 0.3, 0.6),
             Clip("past_end", clips["main"], 0.55, 9.0)]  # truncated: the file ends at 3.07 s
    if backend == "pyav":
        shots += [Clip("ts", clips["ts"]), Clip("s3", clips["ts"], 1.5, 3.0), Clip("s4", clips["ts"], 2.95, 4.4)]
    for shot in shots:
        whole = decode_in_chunks(shot, 10**6, backend)
        for chunk_frames in (1, 7):
            frames, times, truncated, note = decode_in_chunks(shot, chunk_frames, backend)
            np.testing.assert_array_equal(frames, whole[0])
            np.testing.assert_array_equal(times, whole[1])
            assert (truncated, note) == whole[2:]
        assert whole[2] == (shot.shot_id == "past_end") and whole[3].startswith("only 2.52s of 8.45s") == whole[2]


def test_decord_failing_mid_file_hands_over_to_pyav(clips, monkeypatch):
    open_decord, batches = dsdi.video.decode.open_decord_reader, []

    def reader_failing_after_two_batches(path, size):
        reader, starts, duration = open_decord(path, size)

        class Failing:
            def get_batch(self, indices):
                batches.append(len(indices))
                if len(batches) > 2:
                    raise RuntimeError("corrupt packet")
                return reader.get_batch(indices)

        return Failing(), starts, duration

    monkeypatch.setattr(dsdi.video.decode, "open_decord_reader", reader_failing_after_two_batches)
    clip = Clip("main", clips["main"])
    frames, times, truncated, note = decode_in_chunks(clip, 7, "decord")
    assert batches == [7, 7, 7]  # samples 14 on come from PyAV
    reference = decode_clip(clip, backend="pyav")
    np.testing.assert_array_equal(times, reference.timestamps)
    assert np.abs(frames.astype(int) - reference.frames.astype(int)).max() <= 6 and not truncated and not note


def count_decoded(monkeypatch) -> list[float]:
    """The start times of the frames the PyAV decoder puts out from now on."""
    starts, decode = [], dsdi.video.decode._pyav_decode

    def counting(*args, **kwargs):
        for start, frame in decode(*args, **kwargs):
            starts.append(start)
            yield start, frame

    monkeypatch.setattr(dsdi.video.decode, "_pyav_decode", counting)
    return starts


def test_unsampled_non_reference_frames_are_skipped_and_samples_stay_identical(tmp_path, ffmpeg_exe, monkeypatch):
    size = (160, 120)
    clip = make_pattern_clip(ffmpeg_exe, tmp_path / "pattern.mp4", size, 4.0, gop=60)  # x264: B-frames
    reference = colour_clips.ffmpeg_fps10(ffmpeg_exe, clip, size)
    decoded = count_decoded(monkeypatch)
    for shot in (Clip("all", clip), Clip("cut", clip, 1.05, 3.3), Clip("fast", clip, 0.0, 1.0)):
        fps = 25.0 if shot.shot_id == "fast" else 10.0  # 25 fps of a 30 fps clip: most frames are sampled
        skipping = decode_clip(shot, fps=fps)
        skipped = len(decoded)
        decoded.clear()
        with monkeypatch.context() as patch:
            patch.setattr(dsdi.video.decode.ClipChunks, "_needed", lambda self, start, next_start: True)
            every = decode_clip(shot, fps=fps)
        assert len(decoded) == 120 if shot.shot_id == "all" else len(decoded) >= skipped
        if shot.shot_id != "fast":
            assert skipped < 0.85 * len(decoded), (skipped, len(decoded))  # a third of the frames is sampled
        decoded.clear()
        np.testing.assert_array_equal(skipping.frames, every.frames)
        np.testing.assert_array_equal(skipping.timestamps, every.timestamps)
        assert (skipping.truncated, skipping.note) == (every.truncated, every.note) == (False, "")
        if shot.shot_id != "fast":
            first = round((shot.start or 0.0) * 10)
            expected = reference[first:first + len(skipping.frames)]
            assert len(expected) == len(skipping.frames)
            for k, frame in enumerate(skipping.frames):  # the CLI's frame k is the closest (edges differ: its
                # rgb24 conversion interpolates chroma differently), not its neighbour in time
                near = range(max(0, first + k - 1), min(len(reference), first + k + 2))
                closest = min(near, key=lambda j: np.abs(frame.astype(int) - reference[j]).mean())
                assert closest == first + k, (shot.shot_id, k, closest)


@pytest.mark.slow
def test_shrink_to_converts_like_the_bt601_equations_at_each_size(tmp_path):
    """On a synthetic aerial clip (320x180, limited range), each shrink_to size equals the float64 BT.601 conversion
    resized in torch to within rounding (the full-resolution path sits ~1.1 levels dark: swscale's unscaled
    converter)."""
    from dsdi.synth import build_world

    world = build_world(tmp_path / "world", n_images=0, n_clips=1, clip_size=(320, 180), clip_seconds=(2.0, 2.0))
    clip = Clip("p", sorted(world.clips_dir.glob("*.mp4"))[0])
    chunks = dsdi.video.decode.ClipChunks(clip, chunk_frames=7, shrink_to=[(64, 64), (96, 96), (200, 200)])
    parts, times = zip(*chunks, strict=True)
    np.testing.assert_array_equal(np.concatenate(times), np.arange(20) / 10.0)
    references = colour_clips.bt601_rgb_at(clip.path, [(64, 64), (96, 96), None])
    for k, (expected_shape, mean_limit, p99_limit) in enumerate((
            ((64, 64), 0.6, 4.0), ((96, 96), 0.6, 4.0),
            ((180, 320), 0.4, 1.0))):  # 200 px is taller than the 180 px frame: left at its own size
        frames = np.concatenate([part[k] for part in parts])
        assert frames.shape == (20, *expected_shape, 3)
        diff = frames.astype(np.float32) - references[k]
        assert abs(diff.mean()) < 0.1, (expected_shape, diff.mean())
        assert np.abs(diff).mean() < mean_limit and np.percentile(np.abs(diff), 99) < p99_limit, (
            expected_shape, np.abs(diff).mean(), np.percentile(np.abs(diff), 99))
    full = decode_clip(clip).frames.astype(np.float32) - references[-1]
    assert -1.5 < full.mean() < -0.7  # the native path: as the ffmpeg CLI converts
    with pytest.raises(InputError):
        dsdi.video.decode.ClipChunks(clip, size=(64, 64), shrink_to=[(64, 64)])
