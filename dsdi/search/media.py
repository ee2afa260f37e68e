"""What ``dsdi serve`` reads from pictures: an uploaded example checked and decoded, and the peak-frame thumbnails of
clips, each decoded once and kept in memory."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dsdi.errors import InputError
from dsdi.report.html import thumbnail_jpeg
from dsdi.video.decode import VideoDecodeError, frame_at

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""The largest example image accepted (bytes of the file as uploaded)."""
MAX_UPLOAD_PIXELS = 50_000_000
"""The most pixels an example may decode to (width x height; a small file can hold a huge image)."""
THUMBNAIL_WIDTH = 240
THUMBNAILS_KEPT = 4096
"""Thumbnails kept in memory (about 10 KB each), the least recently shown dropped first."""


class UploadRefused(InputError):
    """An upload that is not taken: ``status`` the HTTP status (413 too large, 415 not an image)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def too_large(size: int) -> UploadRefused:
    """The refusal of an upload of ``size`` bytes (over MAX_UPLOAD_BYTES)."""
    return UploadRefused(413, f"the example is {size / 2**20:.1f} MB or more; the limit is "
                              f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB: send a smaller image (a frame grab or a photo)")


def example_pixels(data: bytes, name: str = "the upload") -> np.ndarray:
    """An uploaded example image -> uint8 RGB (H, W, 3), turned upright by its EXIF orientation.

    UploadRefused (413) above MAX_UPLOAD_BYTES or MAX_UPLOAD_PIXELS, (415) for anything Pillow cannot verify and
    decode as an image."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise too_large(len(data))
    refused = UploadRefused(415, f"{name} is not an image Pillow can read (JPEG, PNG, WebP...): drop a photo or a "
                                 "frame grab")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise UploadRefused(413, f"{name} is {image.width}x{image.height} pixels; the limit is "
                                         f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels")
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise refused from None


class Thumbnails:
    """JPEG thumbnails (THUMBNAIL_WIDTH px wide) of clip frames, by (clip file, time in s); thread-safe."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[Path, float], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def jpeg(self, clip_path: Path, time_s: float) -> bytes:
        """The JPEG of the frame shown at ``time_s`` (rounded to ms) of ``clip_path``; VideoDecodeError or
        InputError when it cannot be decoded."""
        key = (clip_path, round(max(time_s, 0.0), 3))
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        data = thumbnail_jpeg(frame_at(clip_path, key[1]), width=THUMBNAIL_WIDTH)
        with self._lock:
            self._kept[key] = data
            while len(self._kept) > THUMBNAILS_KEPT:
                self._kept.popitem(last=False)
        return data


FRAME_ERRORS = (VideoDecodeError, InputError, OSError, IndexError)
"""What decoding a thumbnail's frame may raise (a clip that went missing or is damaged)."""
