"""Test clips made with the ffmpeg CLI (through ffmpeg-python and dsdi.ffmpeg_cli): solid colours changing at
known instants, a moving test pattern, a tone without video; and ffmpeg's own 10 fps sampling."""

from pathlib import Path

import ffmpeg
import numpy as np

from dsdi.ffmpeg_cli import run


def _h264(video: ffmpeg.nodes.FilterableStream, out: Path, gop: int | None, extra: tuple) -> ffmpeg.nodes.OutputStream:
    """The command writing ``video`` to ``out`` as H.264, a keyframe every ``gop`` frames (None: x264's default),
    with ``extra`` output options as flag, value pairs: ("-movflags", "+faststart")."""
    options = {flag.lstrip("-"): value for flag, value in zip(extra[::2], extra[1::2], strict=True)}
    if gop is not None:
        options["g"] = gop
    return video.output(str(out), vcodec="libx264", **options).global_args("-v", "error").overwrite_output()


def make_colour_clip(ffmpeg_exe: str, out: Path, segments: list[tuple[str, float]], size: tuple[int, int],
                     rate: int = 30, gop: int | None = 15, extra: tuple = ()) -> Path:
    """An H.264 clip of ``size`` (width, height): one solid colour per (colour, seconds) segment, in order
    (gop and extra as _h264's)."""
    width, height = size
    parts = [ffmpeg.input(f"color={colour}:s={width}x{height}:r={rate}:d={seconds}", format="lavfi")
             for colour, seconds in segments]
    video = ffmpeg.concat(*parts, v=1, a=0).filter("format", "yuv420p")
    run(_h264(video, out, gop, extra), f"making {out}", cmd=ffmpeg_exe)
    return out


def make_pattern_clip(ffmpeg_exe: str, out: Path, size: tuple[int, int], seconds: float, rate: int = 30,
                      gop: int | None = None, extra: tuple = ()) -> Path:
    """An H.264 yuv420p clip of ffmpeg's moving testsrc2 pattern, ``size`` (width, height) (gop and extra as
    _h264's)."""
    width, height = size
    video = ffmpeg.input(f"testsrc2=s={width}x{height}:r={rate}:d={seconds}", format="lavfi")
    run(_h264(video, out, gop, ("-pix_fmt", "yuv420p", *extra)), f"making {out}", cmd=ffmpeg_exe)
    return out


def make_tone_clip(ffmpeg_exe: str, out: Path) -> Path:
    """A 1 s AAC sine tone: a media file that has no video stream."""
    command = ffmpeg.input("sine=d=1", format="lavfi").output(str(out), acodec="aac").global_args("-v", "error")
    run(command.overwrite_output(), f"making {out}", cmd=ffmpeg_exe)
    return out


def ffmpeg_fps10(ffmpeg_exe: str, path: Path, size: tuple[int, int]) -> np.ndarray:
    """The ffmpeg CLI's own `fps=10` extraction of a clip of ``size`` (width, height): rgb24 (N, H, W, 3)."""
    width, height = size
    command = (ffmpeg.input(str(path)).filter("fps", 10).output("pipe:", format="rawvideo", pix_fmt="rgb24")
               .global_args("-v", "error"))
    raw = run(command, f"sampling {path} at 10 fps", cmd=ffmpeg_exe)
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
