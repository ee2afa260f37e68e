"""Display orientation: the turn or mirror a video stream's display matrix asks for (phones, some drones store the
picture sideways and say so there), applied the way the ffmpeg command line does by default (autorotate).

The command line reads the angle as fftools' get_rotation does (-round(av_display_rotation_get), in [0, 360)) and
inserts transpose=clock or cclock (clock_flip / cclock_flip when the matrix mirrors) near 90 and 270 degrees,
hflip and / or vflip near 180 (as the matrix's diagonal says) and vflip near 0 for a matrix that flips upside down.
Those are the eight right-angle orientations, written here as an optional transpose, then a left-right and an
upside-down mirror. Any other angle (the command line's rotate filter, corners filled black) is left unturned.
A ``rotate`` metadata tag without a display matrix is not turned either: ffmpeg 5 and later ignore it, too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Size = tuple[int, int]


@dataclass(frozen=True)
class Orientation:
    """How decoded (coded) pixels become the picture shown: transpose rows and columns, then mirror left-right
    (hflip), then upside down (vflip)."""

    transpose: bool = False
    hflip: bool = False
    vflip: bool = False

    @property
    def upright(self) -> bool:
        """The coded picture is the one shown."""
        return self == UPRIGHT

    def turned(self, size: Size) -> Size:
        """A (width, height) with its sides swapped by a transpose: the coded size of a shown one and back."""
        return (size[1], size[0]) if self.transpose else size

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Coded frames (..., H, W, C) as shown: (..., H, W, C) or transposed (..., W, H, C); a view, no copy."""
        if self.transpose:
            frames = frames.swapaxes(-3, -2)
        if self.hflip:
            frames = frames[..., :, ::-1, :]
        if self.vflip:
            frames = frames[..., ::-1, :, :]
        return frames


UPRIGHT = Orientation()
_CLOCK, _CCLOCK = Orientation(True, True, False), Orientation(True, False, True)  # a quarter turn each way
_CLOCK_FLIP, _CCLOCK_FLIP = Orientation(True, True, True), Orientation(True, False, False)  # then vflip


def display_rotation(matrix: Sequence[int]) -> float:
    """av_display_rotation_get: the counter-clockwise turn in degrees of a 3x3 display matrix (9 int32, 16.16
    fixed point, row by row); NaN for a degenerate one."""
    a, b, c, d = (value / 65536.0 for value in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return math.nan
    return -math.degrees(math.atan2(b / scale_y, a / scale_x))


def matrix_orientation(matrix: Sequence[int]) -> Orientation:
    """The orientation the ffmpeg command line gives frames with this display matrix (see the module docstring)."""
    rotation = display_rotation(matrix)
    if math.isnan(rotation):
        return UPRIGHT
    theta = -math.copysign(math.floor(abs(rotation) + 0.5), rotation)  # -round(): C rounds halves away from 0
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return _CCLOCK_FLIP if matrix[3] > 0 else _CLOCK
    if abs(theta - 180) < 1:
        return Orientation(False, matrix[0] < 0, matrix[4] < 0)
    if abs(theta - 270) < 1:
        return _CLOCK_FLIP if matrix[3] < 0 else _CCLOCK
    if abs(theta) < 1:
        return Orientation(False, False, matrix[4] < 0)
    return UPRIGHT


def _display_matrix(frame: object) -> list[int] | None:
    """The 9 int32 of an av.VideoFrame's display matrix side data (the decoder attaches the stream's), or None."""
    side = frame.side_data.get("DISPLAYMATRIX")
    if side is None or side.buffer_size < 36:
        return None
    return np.frombuffer(bytes(side), dtype=np.int32, count=9).tolist()


def frame_orientation(frame: object) -> Orientation:
    """The orientation of an av.VideoFrame, from its display matrix; UPRIGHT without one."""
    matrix = _display_matrix(frame)
    return UPRIGHT if matrix is None else matrix_orientation(matrix)


def stream_turns(path: str | Path) -> bool:
    """Whether the first video stream asks for any turn or mirror, by a display matrix (its first decodable
    frame's) other than the identity's orientation and angle or by a ``rotate`` tag other than 0: what a decoder
    with its own rotation (decord) may turn. False when PyAV cannot open it or decode a frame (the decoder that
    tries next says why)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tags = [value for key, value in stream.metadata.items() if key.lower() == "rotate"]
            if any(value.strip() not in ("", "0") for value in tags):
                return True
            for frame in container.decode(stream):
                matrix = _display_matrix(frame)
                return matrix is not None and (matrix_orientation(matrix) != UPRIGHT
                                               or not abs(display_rotation(matrix)) < 0.5)
    except Exception:  # noqa: BLE001 - an unreadable file: reported by the decoding itself
        pass
    return False
