"""Test clips made with the ffmpeg CLI (through ffmpeg-python and dsdi.video.ffmpeg): solid colours changing at
known instants, a moving test pattern, a tone without video; and ffmpeg's own 10 fps sampling."""

from pathlib import Path

import ffmpeg
import numpy as np

from dsdi.video.ffmpeg import run


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


def _linear(plane: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """plane read at fractional positions along axis, linearly between its two neighbours (positions clipped to
    the plane)."""
    positions = np.clip(positions, 0, plane.shape[axis] - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, plane.shape[axis] - 1)
    weight = (positions - low).reshape([-1 if a == axis else 1 for a in range(plane.ndim)])
    return np.take(plane, low, axis=axis) * (1 - weight) + np.take(plane, high, axis=axis) * weight


def bt601_rgb_at(path: Path, sizes: list[tuple[int, int] | None], every: int = 3) -> list[np.ndarray]:
    """Every `every`-th decoded frame of a yuv420p clip converted by the BT.601 equations in float64 (limited or full
    range, as the stream says; chroma upsampled linearly from H.264's default siting: horizontally on the even luma
    columns, vertically between two luma rows), then resized to each of sizes (width, height; None: kept) with
    torch's antialiased bilinear: one float32 (N, H, W, 3) array on the 0..255 scale per size, from one decoding.
    The outside reference for decoding to the model input."""
    import av
    import torch
    import torch.nn.functional as F

    frames: list[list[np.ndarray]] = [[] for _ in sizes]
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every:
                continue
            height, width = frame.height, frame.width
            planes = frame.to_ndarray(format="yuv420p").astype(np.float64)
            luma = planes[:height]
            cb, cr = (_linear(_linear(part.reshape(height // 2, width // 2), np.arange(width) / 2, axis=1),
                              (np.arange(height) + 0.5) / 2 - 0.5, axis=0) - 128
                      for part in np.split(planes[height:].ravel(), 2))
            if int(frame.color_range) != 2:  # limited (MPEG) range: Y 16..235, Cb/Cr 16..240
                luma, cb, cr = (luma - 16) * 255 / 219, cb * 255 / 224, cr * 255 / 224
            rgb = np.stack([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb])
            pixels = torch.from_numpy(rgb).clamp(0, 255)[None]
            for out, size in zip(frames, sizes, strict=True):
                resized = pixels if size is None else F.interpolate(pixels, size=size[::-1], mode="bilinear",
                                                                     antialias=True, align_corners=False)
                out.append(resized[0].permute(1, 2, 0).float().numpy())
    return [np.stack(out) for out in frames]
