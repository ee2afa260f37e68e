"""Shared test setup: offline hub, few threads (the suite runs on 2 cores), an ffmpeg binary."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary dsdi runs (dsdi.video.ffmpeg: the one shipped by the imageio-ffmpeg wheel)."""
    from dsdi.video.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tiny models (on the shared 2 cores, 2 threads oversubscribe and
    make steps 3-10x slower); the previous count is restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
