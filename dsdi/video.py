"""Shot clips and 10 fps frame sampling (paper section 2.5): discovery, shot tables, decord/PyAV decoding."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".ts")
BACKENDS = ("decord", "pyav")
PYAV_FIRST_SUFFIXES = (".ts", ".mpg")  # decord's frame indexing skips frames in MPEG program/transport streams
CHUNK_FRAMES = 16  # sampled frames per chunk: a decord batch of them takes about 3x their bytes (1080p: 0.3 GB)


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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise InputError(f"{path}: cannot read shot table ({reason}); need a CSV video,shot_id,start,end") from None
    clips = []
    with io.StringIO(text, newline="") as handle:
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


def _sample_count(duration: float, fps: float) -> int:
    """Samples at t = 0, 1/fps, ... < duration seconds; at least one."""
    return max(1, math.ceil(duration * fps - 1e-6))


def _sample_times(frame_starts: np.ndarray, begin: float, duration: float, fps: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the frames shown at begin + t for t = 0, 1/fps, ... < duration, and those t; at least one."""
    times = np.arange(_sample_count(duration, fps), dtype=np.float64) / fps
    indices = np.searchsorted(frame_starts, begin + times + 1e-6, side="right") - 1
    return np.clip(indices, 0, len(frame_starts) - 1), times


@dataclass
class _PyavStream:
    """What decoding the first video stream told: declared duration (s), frame interval (s; None when the
    stream has no rate) and the error that stopped decoding ("" if none)."""

    declared: float = 0.0
    frame_step: float | None = None
    note: str = ""


def _pyav_decode(path: Path, begin: float, end: float | None, seek: bool, info: _PyavStream) -> Iterator[tuple]:
    """(start s from the stream start, av.VideoFrame) of the first video stream in order, from the keyframe before
    begin when seek, until the first frame starting at or after end; a decoding error ends it (info.note)."""
    import av

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
        rate = stream.average_rate or stream.guessed_rate
        info.declared, info.frame_step, info.note = declared, 1.0 / float(rate) if rate else None, ""
        first = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        try:
            if seek:
                container.seek(int((begin + first) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                start = float(frame.pts * frame.time_base) - first
                if end is not None and start >= end:
                    break
                yield start, frame
        except Exception as exc:  # noqa: BLE001 - keep the decodable part
            info.note = f"decoding stopped: {exc}"


def _pyav_frames(path: Path, begin: float, end: float | None, info: _PyavStream) -> Iterator[tuple]:
    """As _pyav_decode, seeking to begin, or decoding from the file start when that seek lands after begin.
    Raises VideoDecodeError when no frame is decodable."""
    frames = _pyav_decode(path, begin, end, begin > 0, info)
    first = next(frames, None)
    if begin > 0 and (first is None or first[0] > begin + 1e-6):
        frames.close()
        frames = _pyav_decode(path, begin, end, False, info)
        first = next(frames, None)
    if first is None:
        raise VideoDecodeError(path, info.note or "no decodable video frames")
    yield first
    yield from frames


def open_decord_reader(path: Path, size: tuple[int, int] | None) -> tuple[object, np.ndarray, float]:
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


class ClipChunks:
    """The frames of one clip shown at t = 0, 1/fps, ... < its duration, decoded chunk by chunk.

    Iterating yields (frames uint8 (n,H,W,3) RGB, timestamps float64 (n,) seconds from the clip start) with
    1 <= n <= chunk_frames: only the chunk yielded and the next one being gathered are held, however long the clip.
    Once iteration has ended, truncated and note describe the clip (decoding stopped early or fell short of the
    clip's end / the declared duration by more than 1.5 frames at fps). backend: "decord", "pyav" or None
    (decord, then PyAV when decord fails, going on from the first sample decord did not deliver; PyAV for
    MPEG-TS/PS). size = (width, height). Raises VideoDecodeError, before the first chunk, when nothing is
    decodable."""

    def __init__(self, clip: Clip, fps: float = 10.0, chunk_frames: int = CHUNK_FRAMES,
                 size: tuple[int, int] | None = None, backend: str | None = None) -> None:
        if backend not in (None, *BACKENDS):
            raise InputError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if chunk_frames < 1:
            raise InputError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.clip, self.fps, self.chunk_frames, self.size, self.backend = clip, fps, chunk_frames, size, backend
        self.truncated, self.note = False, ""

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        path = Path(self.clip.path)
        if not path.is_file() or path.stat().st_size == 0:
            raise VideoDecodeError(path, "missing or zero-byte file")
        backend = self.backend
        if backend is None and path.suffix.lower() in PYAV_FIRST_SUFFIXES:
            backend = "pyav"
        delivered = 0
        if backend in (None, "decord"):
            try:
                for frames, times in self._decord_chunks(path):
                    yield frames, times
                    delivered += len(times)
                return
            except Exception as exc:  # noqa: BLE001 - decord failing mid-file: PyAV goes on with the decodable part
                if backend == "decord":
                    if isinstance(exc, VideoDecodeError):
                        raise
                    raise VideoDecodeError(path, f"decord: {exc}") from None
        yield from self._pyav_chunks(path, delivered)

    def _decord_chunks(self, path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """decord: the sampled frame indices fetched chunk_frames at a time."""
        reader, starts, duration = open_decord_reader(path, self.size)
        begin, end = self._span(duration)
        indices, times = _sample_times(starts, begin, end - begin, self.fps)
        self._finish(end, duration, "")
        for lo in range(0, len(indices), self.chunk_frames):
            wanted = indices[lo:lo + self.chunk_frames]
            frames = reader.get_batch(list(wanted)).asnumpy()
            if len(frames) != len(wanted):
                raise VideoDecodeError(path, f"decoded {len(frames)} frames, expected {len(wanted)}")
            yield np.ascontiguousarray(frames, dtype=np.uint8), times[lo:lo + self.chunk_frames]

    def _pyav_chunks(self, path: Path, first_sample: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """PyAV, streaming: the decoder's frames pass through one at a time; the frame on screen is converted to
        RGB once a sample time shows it (sample k at begin + k/fps shows the last frame starting at or before it,
        the first frame if none). Samples before first_sample are skipped."""
        begin, fps, info = self.clip.start or 0.0, self.fps, _PyavStream()
        resize = {"width": self.size[0], "height": self.size[1]} if self.size else {}
        shown, shown_rgb = None, None  # the latest frame: on screen at every sample not yet assigned

        def on_screen() -> np.ndarray:
            nonlocal shown_rgb
            shown_rgb = shown.to_ndarray(format="rgb24", **resize) if shown_rgb is None else shown_rgb
            return shown_rgb

        sampled: list[np.ndarray] = []  # RGB (H,W,3) of samples first_sample + emitted, ... (one per sample)
        starts: list[float] = []  # frame starts from the last one at or before begin on (for a rate-less stream)
        emitted, sample = 0, first_sample  # samples yielded after first_sample; the next sample to assign
        for start, frame in _pyav_frames(path, begin, self.clip.end, info):
            while shown is not None and begin + sample / fps + 1e-6 < start:
                sampled.append(on_screen())
                sample += 1
            shown, shown_rgb = frame, None
            if starts and start <= begin:
                starts.pop()
            starts.append(start)
            # full chunks of samples the final count surely includes (it counts up to the decodable end, after
            # start), keeping one back so that the last chunk comes once truncated / note are known
            surely = min(sample, _sample_count(start - begin, fps)) - first_sample
            while surely - emitted > self.chunk_frames:
                yield from self._chunks(sampled[:self.chunk_frames], first_sample + emitted)
                del sampled[:self.chunk_frames]
                emitted += self.chunk_frames
        frame_step = info.frame_step or (float(np.median(np.diff(starts))) if len(starts) > 1 else 0.04)
        end = self._span(starts[-1] + frame_step)[1]
        count = _sample_count(end - begin, fps)
        self._finish(end, info.declared, info.note)
        if count > sample:
            sampled += [on_screen()] * (count - sample)
        yield from self._chunks(sampled[:max(0, count - first_sample - emitted)], first_sample + emitted)

    def _chunks(self, sampled: list[np.ndarray], first: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Sample arrays (H,W,3) numbered first, first + 1, ... stacked chunk_frames at a time with their times."""
        for lo in range(0, len(sampled), self.chunk_frames):
            part = sampled[lo:lo + self.chunk_frames]
            yield np.stack(part), np.arange(first + lo, first + lo + len(part), dtype=np.float64) / self.fps

    def _span(self, decodable_end: float) -> tuple[float, float]:
        """(begin, end) seconds of the clip that can be sampled, end clamped to the decodable end."""
        begin = self.clip.start or 0.0
        end = min(self.clip.end, decodable_end) if self.clip.end is not None else decodable_end
        if end <= begin:
            raise VideoDecodeError(self.clip.path,
                                   f"shot {self.clip.shot_id} starts at {begin:.3f}s, after the decodable end")
        return begin, end

    def _finish(self, end: float, declared: float, note: str) -> None:
        """Set truncated / note: decoding stopped with an error, or the sampled end falls short of the clip's end
        (or the declared duration) by more than 1.5 / fps."""
        begin = self.clip.start or 0.0
        wanted_end = self.clip.end if self.clip.end is not None else declared
        self.truncated = bool(note) or wanted_end - end > 1.5 / self.fps
        shortfall = f"only {end - begin:.2f}s of {wanted_end - begin:.2f}s decodable" if self.truncated else ""
        self.note = note or shortfall


def decode_clip(clip: Clip, fps: float = 10.0, size: tuple[int, int] | None = None,
                backend: str | None = None) -> DecodedClip:
    """Every frame of ClipChunks(clip, fps, size=size, backend=backend) at once (memory grows with the clip)."""
    chunks = ClipChunks(clip, fps, size=size, backend=backend)
    frames, times = zip(*chunks, strict=True)
    return DecodedClip(np.concatenate(frames), np.concatenate(times), chunks.truncated, chunks.note)


def sample_frames(path: str | Path, fps: float = 10.0, size: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 (N,H,W,3), timestamps float64 seconds (N,)) at fps from the whole file."""
    decoded = decode_clip(Clip(Path(path).stem, Path(path)), fps=fps, size=size)
    return decoded.frames, decoded.timestamps


def frame_at(path: str | Path, time_s: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The frame shown at time_s seconds, uint8 (H,W,3)."""
    decoded = decode_clip(Clip(Path(path).stem, Path(path), start=time_s, end=time_s + 1e-3), fps=1e3, size=size)
    return decoded.frames[0]
