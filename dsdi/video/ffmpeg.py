"""The ffmpeg command line: the binary shipped by the imageio-ffmpeg wheel, running ffmpeg-python stream graphs.

Every ffmpeg command of dsdi, its tests and its benchmark is built with ffmpeg-python
(``ffmpeg.input(...).output(...)``, which also writes filter graphs) and run here, so the binary is found in
one place and a failure raises FfmpegError carrying ffmpeg's own message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import ffmpeg
import imageio_ffmpeg


class FfmpegError(RuntimeError):
    """ffmpeg exited with an error: the message says what it was doing and ends with ffmpeg's stderr."""

    def __init__(self, what: str, stderr: bytes | None):
        super().__init__(f"ffmpeg failed {what}: {(stderr or b'').decode(errors='replace').strip()}")


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's; the IMAGEIO_FFMPEG_EXE environment variable overrides it)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def run(stream: ffmpeg.nodes.OutputStream, what: str, *, stdin: bytes | None = None, cmd: str | None = None) -> bytes:
    """Run the command of ``stream`` (an ffmpeg-python output) with ``cmd`` (default: ffmpeg_exe()), feeding it
    ``stdin`` when given; returns what it wrote to stdout (the bytes of a ``pipe:`` output). A non-zero exit
    raises FfmpegError("ffmpeg failed <what>: <stderr>")."""
    try:
        stdout, _ = stream.run(cmd=cmd or ffmpeg_exe(), input=stdin, capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        raise FfmpegError(what, error.stderr) from None
    return stdout


def feed(stream: ffmpeg.nodes.OutputStream, chunks: Iterable[bytes], what: str, *, cmd: str | None = None) -> None:
    """Run the command of ``stream``, whose input is ``pipe:``, writing the chunks to its stdin as they come
    (nothing is held whole); a non-zero exit raises FfmpegError as ``run``. stderr is read after the input
    ends, so the command should log at most errors (``-loglevel error``)."""
    process = stream.run_async(cmd=cmd or ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True)
    try:
        for chunk in chunks:
            process.stdin.write(chunk)
    except BrokenPipeError:
        pass  # ffmpeg stopped reading: its exit status and stderr say why
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        stderr = process.stderr.read()
        process.wait()
    if process.returncode != 0:
        raise FfmpegError(what, stderr)
