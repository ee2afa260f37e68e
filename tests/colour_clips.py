"""Test clips made with the ffmpeg CLI: solid colours changing at known instants, and ffmpeg's own 10 fps sampling."""

import subprocess
from pathlib import Path

import numpy as np


def make_colour_clip(ffmpeg: str, out: Path, segments: list[tuple[str, float]], size: tuple[int, int],
                     rate: int = 30, gop: int = 15, extra: tuple = ()) -> Path:
    """An H.264 clip of ``size`` (width, height): one solid colour per (colour, seconds) segment, in order."""
    width, height = size
    inputs, labels = [], ""
    for i, (colour, seconds) in enumerate(segments):
        inputs += ["-f", "lavfi", "-i", f"color={colour}:s={width}x{height}:r={rate}:d={seconds}"]
        labels += f"[{i}]"
    graph = f"{labels}concat=n={len(segments)}:v=1:a=0,format=yuv420p"
    subprocess.run([ffmpeg, "-v", "error", "-y", *inputs, "-filter_complex", graph, "-c:v", "libx264", "-g", str(gop),
                    *extra, str(out)], check=True)
    return out


def ffmpeg_fps10(ffmpeg: str, path: Path, size: tuple[int, int]) -> np.ndarray:
    """The ffmpeg CLI's own `-vf fps=10` extraction of a clip of ``size`` (width, height): rgb24 (N, H, W, 3)."""
    width, height = size
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-vf", "fps=10", "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
