"""Shot clips and 10 fps frame sampling (paper section 2.5): discovery, shot tables, decord/PyAV decoding."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".ts")
BACKENDS = ("decord", "pyav")
PYAV_FIRST_SUFFIXES = (".ts", ".mpg")  # decord's frame indexing skips frames in MPEG program/transport streams


class VideoDecodeError(Exception):
    """Nothing decodable in a video file (zero-byte, not a video, audio-only, unreadable)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Clip:
    """One shot: a whole file, or the [start, end) seconds of a longer video."""

    shot_id: str
    path: Path
    start: float | None = None
    end: float | None = None


@dataclass
class DecodedClip:
    """frames uint8 (N,H,W,3) RGB; timestamps float64 seconds (N,) from the clip start."""

    frames: np.ndarray
    timestamps: np.ndarray
    truncated: bool = False
    note: str = ""


def discover_clips(root: str | Path) -> list[Clip]:
    """All video files under root (recursive), shot id = file stem, sorted by (shot id, path)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: clip folder does not exist; pass a folder of video clips")
    paths = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    return sorted((Clip(p.stem, p) for p in paths), key=lambda c: (c.shot_id, str(c.path)))


def read_shot_table(path: str | Path) -> list[Clip]:
    """Master shot table CSV with columns video, shot_id, start, end (seconds); relative videos resolve
    against the table's folder."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read shot table ({exc})") from exc
    clips = []
    with handle:
        reader = csv.DictReader(handle)
        missing = {"video", "shot_id", "start", "end"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: line 1: missing columns {sorted(missing)}; need video,shot_id,start,end")
        for row in reader:
            line = reader.line_num
            try:
                start, end = float(row["start"]), float(row["end"])
            except (TypeError, ValueError):
                raise InputError(f"{path}: line {line}: start/end must be numbers in seconds") from None
            if not row["shot_id"] or not row["video"] or not (0 <= start < end):
                raise InputError(f"{path}: line {line}: need a video, a shot id and 0 <= start < end")
            video = Path(row["video"])
            clips.append(Clip(row["shot_id"], video if video.is_absolute() else path.parent / video, start, end))
    return clips


def _sample_times(frame_starts: np.ndarray, begin: float, duration: float, fps: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the frames shown at begin + t for t = 0, 1/fps, ... < duration, and those t; at least one."""
    count = max(1, math.ceil(duration * fps - 1e-6))
    times = np.arange(count, dtype=np.float64) / fps
    indices = np.searchsorted(frame_starts, begin + times + 1e-6, side="right") - 1
    return np.clip(indices, 0, len(frame_starts) - 1), times


def _decode_pyav(path: Path, begin: float = 0.0, end: float | None = None,
                 seek: bool = True) -> tuple[list, np.ndarray, float, float, str]:
    """Frames of the first video stream around [begin, end) s (seeking to the keyframe before begin, or
    decoding from the start when that seek lands late).
    Returns av.VideoFrames, start times (s), frame interval (s), declared duration (s), error note."""
    import av

    frames, starts, note = [], [], ""
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - any open failure means "not decodable"
        raise VideoDecodeError(path, f"cannot open: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        declared = float(stream.duration * stream.time_base) if stream.duration else 0.0
        if not declared and container.duration:
            declared = container.duration / 1e6
        first = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        try:
            if seek and begin > 0:
                container.seek(int((begin + first) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                start = float(frame.pts * frame.time_base) - first
                if end is not None and start >= end:
                    break
                if starts and start <= begin:  # keep only the last frame shown before begin
                    starts.pop()
                    frames.pop()
                starts.append(start)
                frames.append(frame)  # converted to RGB only if sampled
        except Exception as exc:  # noqa: BLE001 - keep the decodable part
            note = f"decoding stopped: {exc}"
    if seek and begin > 0 and (not starts or starts[0] > begin + 1e-6):
        return _decode_pyav(path, begin, end, seek=False)
    rate = stream.average_rate or stream.guessed_rate
    frame_step = 1.0 / float(rate) if rate else float(np.median(np.diff(starts))) if len(starts) > 1 else 0.04
    return frames, np.asarray(starts, dtype=np.float64), frame_step, declared, note


def _decode_decord(path: Path, size: tuple[int, int] | None) -> tuple[object, np.ndarray, float]:
    """decord reader, frame start times (s) and the stream's duration (s)."""
    import decord

    kwargs = {"width": size[0], "height": size[1]} if size else {}
    try:
        reader = decord.VideoReader(str(path), **kwargs)
        rate = float(reader.get_avg_fps())
    except Exception as exc:  # noqa: BLE001
        raise VideoDecodeError(path, f"decord cannot open: {exc}") from None
    if len(reader) == 0 or rate <= 0:
        raise VideoDecodeError(path, "no video frames")
    # decord's per-frame timestamps are unreliable for MPEG-TS; frame index / average rate is not
    return reader, np.arange(len(reader)) / rate, len(reader) / rate


def decode_clip(clip: Clip, fps: float = 10.0, size: tuple[int, int] | None = None,
                backend: str | None = None) -> DecodedClip:
    """Frames shown at t = 0, 1/fps, ... < clip duration. backend: "decord", "pyav" or None (decord, then
    PyAV when decord cannot open the file; PyAV for MPEG-TS/PS). size = (width, height)."""
    if backend not in (None, *BACKENDS):
        raise InputError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(clip.path)
    if not path.is_file() or path.stat().st_size == 0:
        raise VideoDecodeError(path, "missing or zero-byte file")
    if backend is None and path.suffix.lower() in PYAV_FIRST_SUFFIXES:
        backend = "pyav"
    if backend in (None, "decord"):
        try:
            reader, starts, duration = _decode_decord(path, size)
            fetch = lambda idx: reader.get_batch(list(idx)).asnumpy()  # noqa: E731
            return _cut(clip, starts, duration, fps, fetch, duration, "")
        except Exception as exc:  # noqa: BLE001 - decord failing mid-file: PyAV keeps the decodable part
            if backend == "decord":
                raise exc if isinstance(exc, VideoDecodeError) else VideoDecodeError(path, f"decord: {exc}") from None
    frames, starts, frame_step, declared, note = _decode_pyav(path, clip.start or 0.0, clip.end)
    if not frames:
        raise VideoDecodeError(path, note or "no decodable video frames")
    resize = {"width": size[0], "height": size[1]} if size else {}

    def fetch(indices: np.ndarray) -> np.ndarray:
        return np.stack([frames[i].to_ndarray(format="rgb24", **resize) for i in indices])

    return _cut(clip, starts, float(starts[-1] + frame_step), fps, fetch, declared, note)


def _cut(clip: Clip, starts: np.ndarray, decoded: float, fps: float, fetch, declared: float,
         note: str) -> DecodedClip:
    """Sample [clip.start, clip.end) of the decoded frames; flag truncation against the declared length."""
    begin = clip.start or 0.0
    end = min(clip.end, decoded) if clip.end is not None else decoded
    if end <= begin:
        raise VideoDecodeError(clip.path, f"shot {clip.shot_id} starts at {begin:.3f}s, after the decodable end")
    indices, times = _sample_times(starts, begin, end - begin, fps)
    wanted_end = clip.end if clip.end is not None else declared
    truncated = bool(note) or wanted_end - end > 1.5 / fps
    if truncated and not note:
        note = f"only {end - begin:.2f}s of {wanted_end - begin:.2f}s decodable"
    frames = np.ascontiguousarray(fetch(indices), dtype=np.uint8)
    if len(frames) != len(times):
        raise VideoDecodeError(clip.path, f"decoded {len(frames)} frames, expected {len(times)}")
    return DecodedClip(frames, times, truncated, note)


def sample_frames(path: str | Path, fps: float = 10.0, size: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 (N,H,W,3), timestamps float64 seconds (N,)) at fps from the whole file."""
    decoded = decode_clip(Clip(Path(path).stem, Path(path)), fps=fps, size=size)
    return decoded.frames, decoded.timestamps


def frame_at(path: str | Path, time_s: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The frame shown at time_s seconds, uint8 (H,W,3)."""
    decoded = decode_clip(Clip(Path(path).stem, Path(path), start=time_s, end=time_s + 1e-3), fps=1e3, size=size)
    return decoded.frames[0]
