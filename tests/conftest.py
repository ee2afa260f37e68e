"""Shared test setup: offline hub, few threads (the suite runs on 2 cores), an ffmpeg binary."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary dsdi runs (dsdi.ffmpeg_cli: the one shipped by the imageio-ffmpeg wheel)."""
    from dsdi.ffmpeg_cli import ffmpeg_exe

    return ffmpeg_exe()
