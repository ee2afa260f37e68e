"""Shot clips: what one ranked unit of footage is, found in a folder of clips or read from a master shot table."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from dsdi.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".ts")


@dataclass(frozen=True)
class Clip:
    """One shot: a whole file, or the [start, end) seconds of a longer video."""

    shot_id: str
    path: Path
    start: float | None = None
    end: float | None = None



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
