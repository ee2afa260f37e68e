"""Shots from raw footage: shot boundaries found by PySceneDetect, written as the master shot table
(``video,shot_id,start,end``, seconds) that ``dsdi rank --shots`` reads (``video.read_shot_table``).

- Detection: PySceneDetect 0.7's ``AdaptiveDetector`` (default) or ``ContentDetector`` on frames decoded by its
  PyAV backend, whose positions are the frames' presentation times from the stream start (right for variable
  frame rate too; the same clock as ``dsdi.video.decode``). A shot starts at its first frame's time and ends where the
  next shot starts (the last one: after the last frame).
- ``min_shot`` (seconds): the detectors' ``min_scene_len`` is ``ceil(min_shot * fps)`` frames, and boundaries
  closer than ``min_shot`` to the previous one or to the video's end are dropped afterwards, so no shot is shorter
  (a whole video shorter than ``min_shot`` stays one shot). Gradual transitions (cross-fades) are usually not
  boundaries: both sides stay in one shot.
- Shot ids: ``Shot<name>_<n>``, n = 1, 2 ... in time order; name = the file stem with whitespace and control
  characters replaced by ``_`` (run files cannot hold whitespace). A name another video already has (in the table
  or earlier in this run, videos taken in sorted path order) gets its folder names prefixed one at a time
  (``a-DJI_0001``), then ``-2``, ``-3``... So the same inputs and settings give the same ids, unique across videos.
- Paths: a video under the table's folder is written relative to it, any other absolutely.
- Resuming: videos already in the table (by resolved path) are skipped; the table is rewritten atomically after
  each video, so an interrupted run keeps what it finished. Unreadable videos are listed and skipped.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, SceneDetector, SceneManager
from scenedetect.backends.pyav import VideoStreamAv

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.progress import progress_bar
from dsdi.video.clip import VIDEO_SUFFIXES, read_shot_table

DETECTORS = ("adaptive", "content")
DEFAULT_MIN_SHOT = 0.6  # seconds
TABLE_COLUMNS = ["video", "shot_id", "start", "end"]
_TIME_EPS = 1e-6  # seconds: tolerance of shot-length comparisons
_PROGRESS_EVERY = 25  # frames between progress-bar updates
_ID_PATTERN = re.compile(r"Shot(.+)_(\d+)")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]+")
_ERRNO = re.compile(r"\[Errno -?\d+\] |: '[^']*'$")


@dataclass(frozen=True)
class Shot:
    """One detected shot: [start, end) seconds of a video, with its TRECVID-style id."""

    video: Path
    shot_id: str
    start: float
    end: float


@dataclass
class ShotsResult:
    """What ``detect_shots`` did: shots written per video in this run, videos skipped (already in the table),
    unreadable videos with the reason, frames decoded and the seconds it took."""

    table: Path
    written: dict[Path, list[Shot]] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    @property
    def shots(self) -> int:
        return sum(len(shots) for shots in self.written.values())

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def find_videos(paths: Iterable[str | Path]) -> list[Path]:
    """The video files named or found (recursively, by suffix: ``video.VIDEO_SUFFIXES``) under ``paths``, each
    once, sorted by path. A file named directly is taken whatever its suffix. Raises InputError for a missing
    path, or when nothing is found."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            candidates = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        elif path.exists():
            candidates = [path]
        else:
            raise InputError(f"{path}: no such file or folder; pass video files or folders of them")
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    if not found:
        raise InputError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {', '.join(map(str, paths))}")
    return sorted(found.values(), key=str)


def _name_candidates(path: Path) -> Iterable[str]:
    """The stem, then the stem prefixed by ever more folder names (``a-DJI_0001``), then numbered (``-2``...)."""
    stem = _UNSAFE.sub("_", path.stem) or "video"
    name = stem
    yield name
    for folder in path.resolve().parent.parts[:0:-1]:
        name = f"{_UNSAFE.sub('_', folder)}-{name}"
        yield name
    for number in range(2, 1_000_000):
        yield f"{stem}-{number}"


def video_name(path: Path, taken: set[str]) -> str:
    """The ``<name>`` of ``Shot<name>_<n>`` for ``path``: the first of its candidates not in ``taken``."""
    return next(name for name in _name_candidates(path) if name not in taken)


def _split_shots(cuts: list[float], start: float, end: float, min_shot: float) -> list[tuple[float, float]]:
    """[start, end) cut at ``cuts`` (seconds, ascending), dropping cuts that would leave a shot shorter than
    ``min_shot``: a cut too close to the previous kept one, then kept cuts too close to the end, last first."""
    kept: list[float] = []
    for cut in cuts:
        if cut - (kept[-1] if kept else start) >= min_shot - _TIME_EPS and cut < end:
            kept.append(cut)
    while kept and end - kept[-1] < min_shot - _TIME_EPS:
        kept.pop()
    bounds = [start, *kept, end]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _detector(name: str, min_frames: int) -> SceneDetector:
    if name == "adaptive":
        return AdaptiveDetector(min_scene_len=min_frames)
    return ContentDetector(min_scene_len=min_frames)


class _ReportingStream(VideoStreamAv):
    """PySceneDetect's PyAV stream (frame-threaded decoding, FFmpeg's log left quiet) that calls
    ``on_frames(n)`` every few frames read (from SceneManager's decoding thread) and with the rest at the end."""

    def __init__(self, path: Path, on_frames: Callable[[int], None] | None = None) -> None:
        super().__init__(str(path), threading_mode="AUTO", suppress_output=True)
        self._on_frames, self._unreported = on_frames, 0

    def read(self, decode: bool = True) -> np.ndarray | bool:
        frame = super().read(decode)
        if self._on_frames is not None:
            self._unreported += frame is not False
            if self._unreported >= _PROGRESS_EVERY or (frame is False and self._unreported):
                self._on_frames(self._unreported)
                self._unreported = 0
        return frame


def expected_frames(path: Path) -> int:
    """The frame count the container declares (an estimate for VFR; 0 when unknown). Raises on an unreadable
    file (what ``detect_video`` would raise)."""
    return int(_ReportingStream(path).duration.frame_num)


def detect_video(path: Path, detector: str = "adaptive", min_shot: float = DEFAULT_MIN_SHOT,
                 on_frames: Callable[[int], None] | None = None) -> tuple[list[tuple[float, float]], int]:
    """The shots of one video as [start, end) seconds in time order, and the frames decoded. ``on_frames(n)`` is
    told of decoded frames as they come. Raises (any exception) when the file is not a decodable video."""
    stream = _ReportingStream(path, on_frames)
    manager = SceneManager()
    manager.add_detector(_detector(detector, max(1, math.ceil(min_shot * float(stream.frame_rate) - _TIME_EPS))))
    frames = manager.detect_scenes(video=stream)
    scenes = manager.get_scene_list(start_in_scene=True)
    if frames <= 0 or not scenes:
        raise ValueError("no decodable video frames")
    start, end = scenes[0][0].seconds, scenes[-1][1].seconds
    return _split_shots([scene_start.seconds for scene_start, _ in scenes[1:]], start, end, min_shot), frames


def _table_video(path: Path, table_dir: Path) -> str:
    """How the table names ``path``: relative to the table's folder when under it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(table_dir.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _seconds(value: float) -> str:
    return repr(round(value, 6))


def _read_table(out: Path) -> tuple[list[str], list[dict], set[Path], set[str]]:
    """The existing table's columns, its rows as read (kept verbatim), the resolved videos and the shot ids it
    holds; empty when ``out`` does not exist. A broken table raises InputError (read_shot_table's checks)."""
    if not out.exists():
        return list(TABLE_COLUMNS), [], set(), set()
    clips = read_shot_table(out)
    with io.StringIO(out.read_text(encoding="utf-8"), newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = list(reader.fieldnames or TABLE_COLUMNS)
    return columns, rows, {Path(c.path).resolve() for c in clips}, {c.shot_id for c in clips}


def _write_table(out: Path, columns: list[str], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out, text.getvalue())


def detect_shots(paths: Iterable[str | Path], out: str | Path, detector: str = "adaptive",
                 min_shot: float = DEFAULT_MIN_SHOT, progress: bool = True) -> ShotsResult:
    """Detect the shots of every video named or found under ``paths`` (see ``find_videos``) and add them to the
    shot table ``out`` (created, or extended: videos already in it are skipped), rewriting it atomically after
    each video. Unreadable videos end up in ``result.failures`` (path, reason); the others go on. Raises
    InputError for a bad detector or min_shot, missing paths, no videos, or an existing ``out`` that is not a
    shot table."""
    out = Path(out)
    if detector not in DETECTORS:
        raise InputError(f"--detector {detector!r}: choose one of {', '.join(DETECTORS)}")
    if not min_shot >= 0:
        raise InputError(f"--min-shot {min_shot}: must be >= 0 seconds")
    videos = find_videos(paths)
    columns, rows, done, ids = _read_table(out)
    result = ShotsResult(out)
    result.skipped = [v for v in videos if v.resolve() in done]
    todo = [v for v in videos if v.resolve() not in done]
    expected: dict[Path, int] = {}
    for video in todo:
        if video.stat().st_size == 0:
            result.failures.append((video, "empty (zero-byte) file"))
            continue
        try:
            expected[video] = expected_frames(video)
        except Exception as error:  # noqa: BLE001 - any failure to open means "not a readable video"
            result.failures.append((video, _reason(error)))
    taken = {m.group(1) for m in map(_ID_PATTERN.fullmatch, ids) if m}
    started = time.perf_counter()
    with progress_bar("frames") as bar:
        task = bar.add_task("shots", total=sum(expected.values()), info="", visible=progress and bool(expected))
        for number, video in enumerate(expected, start=1):
            bar.update(task, info=f"{number}/{len(expected)} {video.name}")
            try:
                spans, frames = detect_video(video, detector, min_shot, lambda n: bar.advance(task, n))
            except Exception as error:  # noqa: BLE001 - a video failing mid-way is listed, the others go on
                result.failures.append((video, _reason(error)))
                continue
            finally:  # declared frame counts are estimates: the total follows what was decoded
                completed = next(t.completed for t in bar.tasks if t.id == task)
                bar.update(task, total=completed + sum(list(expected.values())[number:]))
            name = video_name(video, taken)
            taken.add(name)
            shots = [Shot(video, f"Shot{name}_{n}", start, end) for n, (start, end) in enumerate(spans, start=1)]
            rows += [{"video": _table_video(video, out.parent), "shot_id": s.shot_id, "start": _seconds(s.start),
                      "end": _seconds(s.end)} for s in shots]
            _write_table(out, columns, rows)
            result.written[video] = shots
            result.frames += frames
    result.seconds = time.perf_counter() - started
    result.failures.sort(key=lambda failure: str(failure[0]))
    return result


def _reason(error: BaseException) -> str:
    """One line saying why a video could not be read (FFmpeg's message without its errno and file name)."""
    text = " ".join(_ERRNO.sub("", str(error)).split()).rstrip(":")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
