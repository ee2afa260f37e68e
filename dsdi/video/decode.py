"""Shot clips and 10 fps frame sampling (paper section 2.5): discovery, shot tables, decord/PyAV decoding."""

from __future__ import annotations

import functools
import math
import operator
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.models.preprocess import Resize
from dsdi.video.clip import Clip
from dsdi.video.orientation import UPRIGHT, Orientation, frame_orientation, stream_turns

BACKENDS = ("pyav", "decord")
CHUNK_FRAMES = 16  # sampled frames per chunk: a decord batch of them takes about 3x their bytes (1080p: 0.3 GB)
MODEL_SCALER_FLAGS = ("BILINEAR", "ACCURATE_RND", "FULL_CHR_H_INT")  # swscale flags of the one pass from YUV to
# RGB at a model's input size: bilinear widened with the ratio (antialiased, like PIL / torch), full-resolution chroma
# and exact rounding. Against a float64 BT.601 conversion resized in torch it is the closest path measured (bias
# 0.00, mean |diff| 0.35 levels on a limited-range 720p aerial pan at 224 px), closer than converting the whole frame
# with the unscaled converter and then scaling (bias -1.14, 1.14; that converter sits ~1 level low), and 5x faster.
# A bicubic model (Resize interpolation "bicubic") gets the same pass with BICUBIC in place of BILINEAR
LOOKAHEAD_PACKETS = 16  # packets demuxed ahead (and kept behind) to find a frame's successor in display order


class VideoDecodeError(Exception):
    """Nothing decodable in a video file (zero-byte, not a video, audio-only, unreadable)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class DecodedClip:
    """frames uint8 (N,H,W,3) RGB; timestamps float64 seconds (N,) from the clip start."""

    frames: np.ndarray
    timestamps: np.ndarray
    truncated: bool = False
    note: str = ""


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


def _with_successors(packets: Iterator, first: float) -> Iterator[tuple[object, float | None, float | None]]:
    """(packet, its start s, the next start in display order s) in decode order; a start is None without pts.

    The next start is the smallest start above the packet's among the LOOKAHEAD_PACKETS packets demuxed before
    and after it (None when there is none): never earlier than the true successor's, so an interval
    [start, next start) always covers the frame's time on screen."""
    window: deque[tuple[object, float | None]] = deque()  # up to 2 x LOOKAHEAD + 1 packets around the next one
    behind = 0  # packets of window already yielded

    def emit(i: int) -> tuple[object, float | None, float | None]:
        packet, start = window[i]
        later = [s for _, s in window if s is not None and start is not None and s > start]
        return packet, start, min(later) if later else None

    for packet in packets:
        start = float(packet.pts * packet.time_base) - first if packet.pts is not None else None
        window.append((packet, start))
        if len(window) - behind > LOOKAHEAD_PACKETS:
            yield emit(behind)
            behind += 1
            if behind > LOOKAHEAD_PACKETS:
                window.popleft()
                behind -= 1
    for i in range(behind, len(window)):
        yield emit(i)


def _pyav_decode(path: Path, begin: float, end: float | None, seek: bool, info: _PyavStream,
                 needed: Callable[[float, float], bool] | None = None) -> Iterator[tuple]:
    """(start s from the stream start, av.VideoFrame) of the first video stream in order, from the keyframe before
    begin when seek, until the first frame starting at or after end; a decoding error ends it (info.note).

    Frame-threaded, as the ffmpeg CLI decodes. needed(start, next_start): whether a frame on screen from start
    until next_start (s) is sampled; with it (and a stream rate) the decoder skips each non-reference frame that
    is not (skip_frame NONREF for that packet alone: nothing else depends on it), once it has put out a frame
    (and never for interlaced video)."""
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - any open failure means "not decodable"
        raise VideoDecodeError(path, f"cannot open: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame (and slice) threads: several frames decode at once
        codec = stream.codec_context
        declared = float(stream.duration * stream.time_base) if stream.duration else 0.0
        if not declared and container.duration:
            declared = container.duration / 1e6
        rate = stream.average_rate or stream.guessed_rate
        info.declared, info.frame_step, info.note = declared, 1.0 / float(rate) if rate else None, ""
        first = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        skipping, shown_any = needed is not None and rate is not None, False
        try:
            if seek:
                container.seek(int((begin + first) / stream.time_base), stream=stream, backward=True)
            for packet, start, next_start in _with_successors(container.demux(stream), first):
                if skipping and shown_any:
                    skip = start is not None and next_start is not None and not needed(start, next_start)
                    codec.skip_frame = "NONREF" if skip else "DEFAULT"
                for frame in codec.decode(packet):
                    if frame.pts is None:
                        continue
                    if not shown_any and frame.interlaced_frame:  # field pictures: a packet may be half a frame
                        skipping = False
                    shown_any = True
                    start = float(frame.pts * frame.time_base) - first
                    if end is not None and start >= end:
                        return
                    yield start, frame
        except Exception as exc:  # noqa: BLE001 - keep the decodable part
            info.note = f"decoding stopped: {exc}"


def _pyav_frames(path: Path, begin: float, end: float | None, info: _PyavStream,
                 needed: Callable[[float, float], bool] | None = None) -> Iterator[tuple]:
    """As _pyav_decode, seeking to begin, or decoding from the file start when that seek lands after begin.
    Raises VideoDecodeError when no frame is decodable."""
    frames = _pyav_decode(path, begin, end, begin > 0, info, needed)
    first = next(frames, None)
    if begin > 0 and (first is None or first[0] > begin + 1e-6):
        frames.close()
        frames = _pyav_decode(path, begin, end, False, info, needed)
        first = next(frames, None)
    if first is None:
        raise VideoDecodeError(path, info.note or "no decodable video frames")
    yield first
    yield from frames


@functools.cache
def _model_scaler(interpolation: str = "bilinear") -> object:
    """MODEL_SCALER_FLAGS, with ``interpolation`` (bilinear | bicubic) as the filter, as one PyAV Interpolation
    value (worked out once: every sampled frame asks)."""
    from av.video.reformatter import Interpolation

    flags = (interpolation.upper(), *MODEL_SCALER_FLAGS[1:])
    return functools.reduce(operator.or_, (Interpolation[flag] for flag in flags))


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


Size = tuple[int, int]
Target = Size | Resize  # a ClipChunks shrink_to entry: a fixed (width, height), or a model's resize


def _stack_rgb(frames: Sequence, orientation: Orientation) -> np.ndarray:
    """rgb24 av.VideoFrames of one size as shown (orientation applied), uint8 (n, H, W, 3): each frame's pixels
    copied once, straight from the scaler's output (to_ndarray and a stack would copy them twice)."""
    height, width = frames[0].height, frames[0].width
    shown_width, shown_height = orientation.turned((width, height))
    out = np.empty((len(frames), shown_height, shown_width, 3), np.uint8)
    for i, frame in enumerate(frames):
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8, count=height * plane.line_size).reshape(height, plane.line_size)
        out[i] = orientation.apply(rows[:, :width * 3].reshape(height, width, 3))
    return out


class ClipChunks:
    """The frames of one clip shown at t = 0, 1/fps, ... < its duration, decoded chunk by chunk.

    Iterating yields (frames uint8 (n,H,W,3) RGB, timestamps float64 (n,) seconds from the clip start) with
    1 <= n <= chunk_frames: only the chunk yielded and the next one being gathered are held, however long the clip.
    Once iteration has ended, truncated and note describe the clip (decoding stopped early or fell short of the
    clip's end / the declared duration by more than 1.5 frames at fps). backend: "pyav" (None: the default;
    frame-threaded, only the sampled frames converted to RGB) or "decord" (PyAV goes on from the first sample
    decord did not deliver when decord fails, and decodes the whole clip of a file whose stream has a display
    matrix or a rotate tag: decord 0.6 turns those by itself, quarter turns into frames of the wrong shape).
    size = (width, height) of every frame.

    Frames come upright: turned and mirrored as the stream's display matrix says, as the ffmpeg command line
    does by default (dsdi.video.orientation; orientation holds it once iteration has begun), and every size is
    the shown picture's (width, height): a phone's portrait clip coded 640x272 comes out 272 wide, 640 high.

    shrink_to: several targets instead of size, each a (width, height) or a model's ``Resize`` (its
    ``scaled_size`` of the shown picture: the resize before its centre crop, which the caller takes); frames is
    then a tuple of arrays, one per target, each from the same decoded frame: converted from YUV to RGB at that
    size in one pass of FFmpeg's scaler (PyAV: swscale in C, MODEL_SCALER_FLAGS: antialiased bilinear, or bicubic
    for a bicubic Resize, exact BT.601 colours) when the frame is at least that large on both sides, else converted
    the same way at the decoded size (the caller resizes; decord: always its own converter). Raises
    VideoDecodeError, before the first chunk, when nothing is decodable."""

    def __init__(self, clip: Clip, fps: float = 10.0, chunk_frames: int = CHUNK_FRAMES,
                 size: Size | None = None, backend: str | None = None, shrink_to: Sequence[Target] = ()) -> None:
        if backend not in (None, *BACKENDS):
            raise InputError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if chunk_frames < 1:
            raise InputError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if size is not None and shrink_to:
            raise InputError("give ClipChunks a size or shrink_to sizes, not both")
        self.clip, self.fps, self.chunk_frames, self.size, self.backend = clip, fps, chunk_frames, size, backend
        self.shrink_to = tuple(shrink_to)
        self.truncated, self.note, self.orientation = False, "", UPRIGHT

    def __iter__(self) -> Iterator[tuple[np.ndarray | tuple[np.ndarray, ...], np.ndarray]]:
        for frames, times in self._samples():
            yield (frames if self.shrink_to else frames[0]), times

    def _samples(self) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray]]:
        """(frames per output size, times) chunk by chunk."""
        path = Path(self.clip.path)
        if not path.is_file() or path.stat().st_size == 0:
            raise VideoDecodeError(path, "missing or zero-byte file")
        delivered = 0
        if self.backend == "decord" and not stream_turns(path):
            try:
                for frames, times in self._decord_chunks(path):
                    yield frames, times
                    delivered += len(times)
                return
            except Exception:  # noqa: BLE001, S110 - decord failing mid-file: PyAV goes on from the first sample it lacks
                pass
        yield from self._pyav_chunks(path, delivered)

    def _decord_chunks(self, path: Path) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray]]:
        """decord: the sampled frame indices fetched chunk_frames at a time (at size, or decoded size)."""
        reader, starts, duration = open_decord_reader(path, self.size)
        begin, end = self._span(duration)
        indices, times = _sample_times(starts, begin, end - begin, self.fps)
        self._finish(end, duration, "")
        for lo in range(0, len(indices), self.chunk_frames):
            wanted = indices[lo:lo + self.chunk_frames]
            frames = reader.get_batch(list(wanted)).asnumpy()
            if len(frames) != len(wanted):
                raise VideoDecodeError(path, f"decoded {len(frames)} frames, expected {len(wanted)}")
            frames = np.ascontiguousarray(frames, dtype=np.uint8)
            yield (frames,) * max(1, len(self.shrink_to)), times[lo:lo + self.chunk_frames]

    def _convert(self, frame: object) -> tuple[object, ...]:
        """An av.VideoFrame as rgb24 av.VideoFrames, one per output size (each distinct conversion done once)."""
        # one thread: the decoder's frame threads (and rank's decoding threads) keep the cores busy; swscale's
        # own slice threads only add hand-overs (720p to RGB: 2.0 ms a frame vs 5.4 on 2 cores)
        # sizes are the shown picture's: the scaler works on the coded one (_stack_rgb turns it)
        if not self.shrink_to:  # size: PyAV's default scaler (bilinear, one pass), as before shrink_to existed
            size = dict(zip(("width", "height"), self.orientation.turned(self.size), strict=True)) if self.size else {}
            return (frame.reformat(format="rgb24", threads=1, **size),)
        shown = self.orientation.turned((frame.width, frame.height))
        targets = []
        for target in self.shrink_to:
            size = self.orientation.turned(target.scaled_size(*shown) if isinstance(target, Resize) else target)
            fits = frame.width >= size[0] and frame.height >= size[1]
            interpolation = target.interpolation if isinstance(target, Resize) else "bilinear"
            targets.append((size if fits else None, interpolation))
        done: dict[tuple[Size | None, str], object] = {}
        for size, interpolation in targets:  # None: smaller than the target, RGB at its own size (caller resizes)
            if (size, interpolation) not in done:
                sides = {"width": size[0], "height": size[1]} if size else {}
                done[size, interpolation] = frame.reformat(format="rgb24", interpolation=_model_scaler(interpolation),
                                                           threads=1, **sides)
        return tuple(done[target] for target in targets)

    def _needed(self, start: float, next_start: float) -> bool:
        """Whether a sample time begin + k/fps (k >= 0) shows a frame on screen from start until next_start: the
        same comparisons as _pyav_chunks' assignment."""
        begin, fps = self.clip.start or 0.0, self.fps
        k = max(0, math.floor((start - begin) * fps) - 1)
        while begin + k / fps + 1e-6 < start:
            k += 1
        return begin + k / fps + 1e-6 < next_start

    def _pyav_chunks(self, path: Path, first_sample: int) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray]]:
        """PyAV, streaming: the decoder's frames pass through one at a time; the frame on screen is converted to
        RGB once a sample time shows it (sample k at begin + k/fps shows the last frame starting at or before it,
        the first frame if none); non-reference frames no sample shows are not decoded. Samples before
        first_sample are skipped."""
        begin, fps, info = self.clip.start or 0.0, self.fps, _PyavStream()
        shown, shown_rgb = None, None  # the latest frame: on screen at every sample not yet assigned

        def on_screen() -> tuple[object, ...]:
            nonlocal shown_rgb
            shown_rgb = self._convert(shown) if shown_rgb is None else shown_rgb
            return shown_rgb

        sampled: list[tuple[object, ...]] = []  # rgb24 frames of samples first_sample + emitted, ... (one per sample)
        starts: list[float] = []  # frame starts from the last one at or before begin on (for a rate-less stream)
        emitted, sample = 0, first_sample  # samples yielded after first_sample; the next sample to assign
        for start, frame in _pyav_frames(path, begin, self.clip.end, info, self._needed):
            if shown is None:
                self.orientation = frame_orientation(frame)
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

    def _chunks(self, sampled: list[tuple[object, ...]], first: int
                ) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray]]:
        """Samples (an rgb24 av.VideoFrame per output size) numbered first, first + 1, ... as arrays of
        chunk_frames samples with their times."""
        for lo in range(0, len(sampled), self.chunk_frames):
            part = sampled[lo:lo + self.chunk_frames]
            frames = tuple(_stack_rgb(frames, self.orientation) for frames in zip(*part, strict=True))
            yield frames, np.arange(first + lo, first + lo + len(part), dtype=np.float64) / self.fps

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
    """Every frame of ClipChunks(clip, fps, size=size, backend=backend) at once, as one chunk (memory grows with
    the clip; each frame copied once into the result)."""
    chunks = ClipChunks(clip, fps, chunk_frames=2**31, size=size, backend=backend)
    frames, times = zip(*chunks, strict=True)
    if len(frames) == 1:
        return DecodedClip(frames[0], times[0], chunks.truncated, chunks.note)
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
