"""Forward passes for ``dsdi rank``: the model a rank scores with (``ScoringModel``), the scorer that packs frames
of consecutive clips into passes (``BatchScorer``), where the passes run (``ForwardPasses``: on the CPU side by
side, one single-thread pass per core) and, on the CPU, the turns decoding and the model take (``Turns``).
``dsdi.rank.scoring`` drives them; the measurements behind each choice are in docs/benchmarks.md.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsdi.labels.labelset import LabelSet
from dsdi.models.preprocess import Preprocessing
from dsdi.rank.config import RankConfig
from dsdi.rank.views import Views
from dsdi.video.decode import ClipChunks

CPU_FORWARD_IMAGES = 16  # at most this many images per PyTorch forward pass on the CPU, whatever --batch-size says


def forward_images(config: RankConfig, device: torch.device) -> int:
    """Images per forward pass: --batch-size, at most CPU_FORWARD_IMAGES for PyTorch on the CPU. There, with the
    passes side by side (ForwardPasses) and the decoding threads sharing the cores, shorter passes score faster
    (rank in alternating runs on 2 cores, 600 frames of lcnet_050 at 224 px, median over 6: passes of 8 images
    1.06x passes of 16, 32 0.90x, 64 0.69x), though the model alone prefers longer ones; the scores are the same
    (each image's logits do not depend on what else is in its pass on the CPU)."""
    cap = CPU_FORWARD_IMAGES if device.type == "cpu" and config.engine == "torch" else config.batch_size
    return min(config.batch_size, cap)


@dataclass
class ScoringModel:
    """A model as rank runs it: its index key, content digest, what --models named, and the engine's module."""

    key: str
    sha256: str  # classifier_digest: its index key's first 16 hex digits
    checkpoint: Path  # as --models named it: a checkpoint file, a Hugging Face folder or hub name
    backbone: str
    img_size: int
    module: Callable[[torch.Tensor], torch.Tensor]  # the engine's model: normalised images -> logits
    preprocessing: Preprocessing  # the model's: its Resize makes the decoded frames' crops, its mean/std normalise
    labelset: LabelSet  # the model's classes, in output order
    features: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # the embedding model's
    # module returning (logits, pooled features): dsdi.models.features.with_features


def rank_views(config: RankConfig) -> Views:
    """The views --tta / --tiles / --tile-overlap ask for."""
    return Views(config.tta == "flip", config.tiles, config.tile_overlap)


def chunk_frames(config: RankConfig) -> int:
    """Frames per decoded chunk: --chunk-frames / crops per frame (at least one), so that a chunk's bytes stay
    about the same with --tiles."""
    return max(1, config.chunk_frames // rank_views(config).crops)


class ForwardPasses:
    """Where the scorers' forward passes run: on the GPU (workers 0) inline, in the calling thread; on the CPU in
    ``workers`` threads (one per core: torch's thread count) that each run whole passes on one intra-op thread
    (torch.set_num_threads is per thread under OpenMP), side by side instead of one pass split across the cores.
    A decoding thread that takes a core then delays one pass, not a parallel region whose other threads wait at
    its barrier; and one pass per core wastes no time in hand-overs. Measured on 2 cores (docs/benchmarks.md):
    the model alone 1.15-1.9x faster in PyTorch, 1.0-1.3x in ONNX Runtime; rank end to end 1.45x (lcnet_050 at
    224 px) and 1.19x (resnet10t at 160 px) against one caller's passes on both threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.threads_before = torch.get_num_threads()
        self.pool = (ThreadPoolExecutor(workers, thread_name_prefix="forward", initializer=torch.set_num_threads,
                                        initargs=(1,)) if workers else None)

    def submit(self, forward: Callable[[torch.Tensor], tuple], batch: torch.Tensor) -> Future:
        if self.pool is not None:
            return self.pool.submit(forward, batch)
        done: Future = Future()
        done.set_result(forward(batch))
        return done

    def in_flight(self) -> int:
        """Passes a scorer keeps submitted before it waits for its oldest: one running and one queued per
        worker, so that a worker that finishes starts the next at once (none inline)."""
        return 2 * self.workers

    def close(self) -> None:
        """Wait for the running passes and end the threads; restore the thread count that new threads inherit
        (torch.set_num_threads in a worker also sets it)."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            torch.set_num_threads(self.threads_before)


class BatchScorer:
    """Packs frames of consecutive clips into full batches for one model, a batch of batch_size images (at least
    one frame), and runs them through ``passes``; returns (slot, frame scores (n, C)) in the order frames came."""

    def __init__(self, model: ScoringModel, batch_size: int, device: torch.device, views: Views,
                 passes: ForwardPasses) -> None:
        self.model, self.device, self.views, self.passes = model, device, views, passes
        self.batch_size = max(1, batch_size // views.images)  # frames
        self.queue: deque[tuple[int, torch.Tensor]] = deque()
        self.pending = 0
        self.running: deque[tuple[list[tuple[int, int]], Future]] = deque()  # (owners, pass) in submission order

    def add(self, slot: int, frames: torch.Tensor) -> None:
        self.queue.append((slot, frames))
        self.pending += len(frames)

    def run(self, flush: bool, wait: bool = False) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        """Submit every full batch (and, with flush, the remainder) and return the finished passes' results in
        order: (slot, frame scores (n, C), the embedding model's frame features (n, D) or None) per batch part.
        Waits for the oldest pass while more than passes.in_flight() run; with flush or wait, for all of them."""
        results = []
        while self.pending >= self.batch_size or (flush and self.pending):
            parts, owners, room = [], [], self.batch_size
            while room and self.queue:
                slot, frames = self.queue.popleft()
                if len(frames) > room:
                    self.queue.appendleft((slot, frames[room:]))
                    frames = frames[:room]
                parts.append(frames)
                owners.append((slot, len(frames)))
                room -= len(frames)
            self.pending -= self.batch_size - room
            self.running.append((owners, self.passes.submit(self._forward, parts)))
            while len(self.running) > self.passes.in_flight():
                results += self._finish_oldest()
        while self.running and (flush or wait or self.running[0][1].done()):
            results += self._finish_oldest()
        return results

    def _finish_oldest(self) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        owners, running = self.running.popleft()
        probs, features = running.result()
        results, start = [], 0
        for slot, count in owners:
            results.append((slot, probs[start:start + count],
                            None if features is None else features[start:start + count]))
            start += count
        return results

    @torch.inference_mode()
    def _forward(self, parts: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame scores float64 (B, C) of the B frames of parts, each (n, crops, 3, S, S) pixels (Views.frame_tensors:
        uint8, or float32 in [0, 1]), made the model's input in this pass (``model_input``); for the embedding
        model also the pooled features float32 (B, D) of each whole frame (crop 0, not mirrored), from the same
        pass."""
        on_gpu = self.device.type == "cuda"
        layout = torch.channels_last if on_gpu else torch.contiguous_format
        frames = sum(len(part) for part in parts)
        images = self.views.with_mirrors(model_input(parts, self.model.preprocessing, self.device))
        images = images.contiguous(memory_format=layout)
        features = None
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=on_gpu):
            if self.model.features is None:
                logits = self.model.module(images)
            else:
                logits, features = self.model.features(images)
                features = features[:frames * self.views.crops].view(frames, -1, features.shape[-1])[:, 0]
                features = features.cpu().numpy()
        # float64: float32 sigmoids saturate to ties at 1.0; torch's sigmoid does not overflow for large -logits
        return self.views.frame_scores(torch.sigmoid(logits.cpu().double()), frames).numpy(), features


def model_input(parts: list[torch.Tensor], preprocessing: Preprocessing, device: torch.device) -> torch.Tensor:
    """Frames' crops in parts, each (n, crops, 3, S, S) uint8 or float32 in [0, 1], as one normalised float32
    batch (sum n x crops, 3, S, S) on device: each part converted into its rows (uint8 / 255), then the model's
    mean/std applied in place. The same values as as_unit and Preprocessing.normalise, with one float copy of
    the frames, made in the pass (on the CPU in its forward worker, not on the main thread)."""
    batch = torch.empty((sum(len(part) for part in parts), *parts[0].shape[1:]), device=device)
    start = 0
    for part in parts:
        rows = batch[start:start + len(part)].copy_(part.to(device))  # uint8 crosses to a GPU as bytes
        if part.dtype == torch.uint8:
            rows.div_(255.0)
        start += len(part)
    return preprocessing.normalise(batch.flatten(0, 1), in_place=True)


FEED_CHUNKS = 2  # resized chunks queued per clip decoding ahead (at least)
TURN_BYTES = 256 * 2**20  # on the CPU: decoded frames (uint8 crops at the models' input sizes) that decoding fills
# in its turn; with the feeds of the clips decoding ahead (half a turn each, 2 x workers clips) rank holds at most
# about 3 x this (4x that for footage smaller than a model's input: its frames are resized to float32)


class Turns:
    """On the CPU, decoding and the model take turns, each on every core: the decoding threads decode until the
    scorers hold ``frames`` frames, then wait while the forward passes score them all. Side by side on 2 cores the
    two slow each other down by more than their sum (each evicts the other's caches every time slice). In
    alternating runs on 2 cores (docs/benchmarks.md) rank with turns of 445 lcnet_050 frames at 224 px ran 1.10x
    rank with both at once (resnet10t at 160 px 1.05x), and turns of TURN_BYTES of uint8 frames (1783 of them)
    1.07x turns of 445; no turns at all 0.77x. frames 0 (on a GPU, where the model has its own device): no turns,
    decoding goes on beside the model."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.decoding = threading.Event()  # set: decoding's turn (or no turns)
        self.decoding.set()

    @classmethod
    def for_models(cls, models: list[ScoringModel], config: RankConfig, device: torch.device) -> Turns:
        """TURN_BYTES of the models' uint8 input per turn, at least two passes per forward worker."""
        if device.type != "cpu":
            return cls(0)
        views = rank_views(config)
        frame_bytes = sum(views.crops * 3 * size.img_size ** 2 for size in {m.preprocessing.resize
                                                                                for m in models})
        return cls(max(TURN_BYTES // frame_bytes, 2 * torch.get_num_threads() * forward_images(config, device)))

    def feed_chunks(self, config: RankConfig) -> int:
        """Chunks a clip decoding ahead may queue: half a turn, so that every decoding thread decodes through
        decoding's turn while the main thread takes the frames of the clip before (at least FEED_CHUNKS)."""
        return max(FEED_CHUNKS, -(-self.frames // (2 * chunk_frames(config))))

    def wait_to_decode(self, cancelled: threading.Event) -> bool:
        """Block while the models have their turn; False when cancelled meanwhile."""
        while not self.decoding.wait(0.1):
            if cancelled.is_set():
                return False
        return True

    @contextmanager
    def models_turn(self) -> Iterator[None]:
        """The models' turn: decoding waits until it ends (without turns, it goes on)."""
        if self.frames:
            self.decoding.clear()
        try:
            yield
        finally:
            self.decoding.set()

    def due(self, frames_waiting: int) -> bool:
        """Whether the models' turn has come with frames_waiting frames decoded (always, without turns)."""
        return not self.frames or frames_waiting >= self.frames


NO_TURNS = Turns(0)


def in_turn(chunks: ClipChunks, turns: Turns, cancelled: threading.Event) -> Iterator:
    """The chunks, each decoded only in decoding's turn; ends early when cancelled."""
    decoded = iter(chunks)
    while turns.wait_to_decode(cancelled) and (chunk := next(decoded, None)) is not None:
        yield chunk
