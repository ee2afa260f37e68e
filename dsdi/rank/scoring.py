"""Shot-clip ranking (paper section 2.5): clips -> 10 fps frames -> per-model sigmoids -> clip scores -> fused
top-k per feature -> TRECVID XML and TREC run.

A frame's sigmoids are those of the whole frame, or with ``--tta flip`` / ``--tiles RxC`` the combination of several
views of it (``dsdi.rank.views``), stored under a model key of their own (``model_key``). Per model and clip the frame
sigmoids are aggregated three ways (max over frames as in the paper, mean, mean of the top 3) and stored in the
score index (``dsdi.index.store``) as each clip finishes, so a killed run resumes where it stopped, new clips are scored
incrementally and ``dsdi fuse`` re-ranks with other weights or aggregation without decoding. Fusing the models'
scores and writing the output folder (``dsdi.rank.output``) is ``dsdi.rank.fusion``'s.

Under torchrun (WORLD_SIZE > 1) process 0 alone opens scores.sqlite: it merges the shards a killed run left,
registers the run and sends every process the work list over gloo; process r scores every world-th clip of it,
starting at the r-th, appending each finished clip to its own shard file (OUT/scores.<r>.shard); after the
barrier process 0 merges the shards, fuses and writes every output, so the result equals a one-process run's.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsdi.errors import InputError
from dsdi.index.embeddings import clip_embedding
from dsdi.index.scores import ClipScores
from dsdi.index.store import ScoreIndex
from dsdi.labels.labelset import load_labelset
from dsdi.models.classifier import classifier_digest, classifier_path
from dsdi.models.features import with_features
from dsdi.models.preprocess import Resize
from dsdi.progress import progress_bar
from dsdi.rank.config import TTA_CHOICES, RankConfig
from dsdi.rank.engines import choose_embed_model, load_for_engine
from dsdi.rank.fusion import fuse_and_write, fusion_labelset
from dsdi.rank.models import resolve_models
from dsdi.rank.output import FusedRun, RankOutput, RankResult, RunFacts, ViewFacts
from dsdi.rank.passes import (
    NO_TURNS,
    BatchScorer,
    ForwardPasses,
    ScoringModel,
    Turns,
    chunk_frames,
    forward_images,
    in_turn,
    rank_views,
)
from dsdi.rank.views import Views
from dsdi.runtime import ProcessGroup, default_workers, join_process_group, pick_device
from dsdi.video.clip import Clip, discover_clips, read_shot_table
from dsdi.video.decode import ClipChunks, VideoDecodeError

RANK_DECODE_WORKERS_CAP = 8
def model_key(sha256: str, fps: float, tta: str = "none", tiles: tuple[int, int] | None = None,
              overlap: float = 0.25, decoder: str = "pyav", engine: str = "") -> str:
    """The score index key of a checkpoint's scores: its SHA-256's first 16 hex digits, the sampling rate, then
    '+flip' for tta 'flip', '+tiles<R>x<C>o<overlap>' for tiles (rows, cols), '+decord' for frames decoded by
    decord (its colour conversion differs from PyAV's by about a level) and ``engine``, the engine's key suffix
    (``dsdi.rank.engines``: '' for PyTorch, '+ort', '+ort-int8-<digest>'), e.g. '0123456789abcdef@10fps',
    '0123456789abcdef@10fps+flip+tiles2x2o0.25' (overlap only counts with tiles). The plain key is the one
    indexes held before --tta, --tiles, --decoder and --engine existed. ValueError for a tta not in TTA_CHOICES."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta {tta!r}: choose one of {', '.join(TTA_CHOICES)}")
    decoded_by = "" if decoder == "pyav" else f"+{decoder}"
    return f"{sha256[:16]}@{fps:g}fps" + Views(tta == "flip", tiles, overlap).key_suffix() + decoded_by + engine


def _load_models(config: RankConfig, device: torch.device) -> tuple[list[ScoringModel], list[float]]:
    """Each distinct model of the resolved config (a checkpoint file, a Hugging Face folder or hub name:
    ``dsdi.models.classifier``) on device, run by --engine at --precision (``dsdi.rank.engines``), with its index
    key (``model_key``: content hash (``classifier_digest``), sampling rate, views, decoder, engine), and its weight:
    models with the same content (a file given twice, or copies) are loaded and scored once and their weights add
    up."""
    models: list[ScoringModel] = []
    weights: list[float] = []
    for checkpoint, weight in zip(config.models, config.model_weights, strict=True):
        digest = classifier_digest(classifier_path(checkpoint))
        same = next((k for k, model in enumerate(models) if model.sha256 == digest), None)
        if same is not None:
            weights[same] += weight
            continue
        loaded = load_for_engine(checkpoint, digest, config.engine, config.precision, device)
        key = model_key(digest, config.fps, config.tta, config.tiles, config.tile_overlap, config.decoder,
                        loaded.key_suffix)
        models.append(ScoringModel(key, digest, checkpoint, loaded.backbone, loaded.preprocessing.img_size,
                                   loaded.run, loaded.preprocessing, loaded.labelset))
        weights.append(weight)
    return models, weights


def _find_clips(config: RankConfig) -> list[Clip]:
    """The clips of ``--shots`` (preferred) or ``--clips``; InputError for none or a shot id used twice."""
    source = config.shots if config.shots is not None else config.clips
    clips = read_shot_table(source) if config.shots is not None else discover_clips(source)
    if not clips:
        raise InputError(f"{source}: no video clips found (looked for mp4, mkv, avi, mov, webm, mpg, ts)")
    seen: dict[str, Clip] = {}
    for clip in clips:
        if clip.shot_id in seen:
            raise InputError(f"shot id {clip.shot_id!r} appears twice ({seen[clip.shot_id].path} and {clip.path}); "
                             "shot ids must be unique: rename one file")
        seen[clip.shot_id] = clip
    return clips


@dataclass
class DecodedChunk:
    """Consecutive sampled frames of one clip: times float64 (n,) seconds from the clip start; the frames'
    crops (the whole frame, then its tiles: Views.frame_tensors) through each model's Resize to its input size S,
    (n, crops, 3, S, S) uint8 (float32 in [0, 1] when a crop needed resizing after the decoder; each model's
    forward pass makes them its input: rank.passes.model_input)."""

    times: np.ndarray
    tensors: dict[Resize, torch.Tensor]


@dataclass
class _End:
    """A clip's decoding ended: its truncated flag and note; failure: why an exception stopped it ("" if none)."""

    truncated: bool
    note: str
    failure: str = ""


@dataclass
class _Work:
    """What a clip still needs: the models whose scores the index lacks, and the embedding model when it lacks
    the clip's embedding."""

    scoring: list[ScoringModel]
    embedding: ScoringModel | None = None

    def models(self) -> list[ScoringModel]:
        """The models to run on the clip's frames."""
        extra = [self.embedding] if self.embedding is not None and self.embedding not in self.scoring else []
        return self.scoring + extra


@dataclass
class _OpenClip:
    """A clip whose frames are being decoded and scored; complete when decoding ended and every model it runs
    returned every frame. Its scores are stored for the models in ``store``, its embedding when ``embed`` is."""

    clip: Clip
    remaining: dict[str, int]  # model key -> frames added but not scored yet
    parts: dict[str, list[np.ndarray]]  # model key -> sigmoids (n, C) per scored batch part
    store: set[str]  # model keys whose scores the index lacks
    embed: str | None = None  # the embedding model's key, when the index lacks the clip's embedding
    features: list[np.ndarray] = field(default_factory=list)  # the embedding model's (n, D) per batch part
    times_s: list[np.ndarray] = field(default_factory=list)  # per chunk, seconds into the clip file
    end: _End | None = None

    def complete(self) -> bool:
        return self.end is not None and not any(self.remaining.values())

    def frames(self) -> int:
        return sum(len(times) for times in self.times_s)

    def scores(self) -> dict[str, ClipScores]:
        times = np.concatenate(self.times_s)
        return {key: ClipScores.from_frame_scores(np.concatenate(chunks), times, self.end.truncated, self.end.note)
                for key, chunks in self.parts.items() if key in self.store}

    def embedding(self) -> tuple[str, np.ndarray] | None:
        """(embedding model key, the clip's embedding) when it is to be stored."""
        return (self.embed, clip_embedding(np.concatenate(self.features))) if self.embed else None


def _failure_reason(error: Exception) -> str:
    """The failures.csv reason: a VideoDecodeError's own, else the exception's type and message."""
    return error.reason if isinstance(error, VideoDecodeError) else f"{type(error).__name__}: {error}"


def decode_clip_into(feed: queue.Queue, clip: Clip, config: RankConfig, resizes: set[Resize],
                     cancelled: threading.Event, turns: Turns = NO_TURNS) -> None:
    """Pool thread: the clip's chunks (DecodedChunk) into feed, then its _End, waiting while feed is full and,
    before each chunk, while the models have their turn (turns); gives up when cancelled is set. Each sampled
    frame is decoded once and converted from YUV to RGB at each model's resize size in one pass of the decoder's
    scaler (ClipChunks shrink_to), then centre-cropped; a frame smaller than that is converted at its own size and
    resized by the Resize. With --tiles the decoder also scales it to each resize size's Views.tile_source_size
    (unless smaller on a side: then tiles are cut at its own size); a chunk holds ``chunk_frames(config)`` frames."""
    def put(item: DecodedChunk | _End) -> bool:
        while not cancelled.is_set():
            try:
                feed.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    views, sizes = rank_views(config), list(resizes)
    wanted = [*sizes] + [views.tile_source_size(size.target) for size in sizes if views.tiles]
    chunks = ClipChunks(clip, config.fps, chunk_frames(config), shrink_to=wanted,
                        backend=config.decoder)
    try:
        for frames, times in in_turn(chunks, turns, cancelled):
            tensors = {size: views.frame_tensors(frames[i], frames[len(sizes) + i] if views.tiles else None, size)
                       for i, size in enumerate(sizes)}
            if not put(DecodedChunk(times, tensors)):
                return
    except Exception as error:  # noqa: BLE001 - one bad file never stops the run; the scorer records why
        reason = _failure_reason(error)
        put(_End(True, f"decoding stopped: {reason}", reason))
        return
    put(_End(chunks.truncated, chunks.note))


class _ClipCollector:
    """Hands each scored batch part back to its open clip and stores every clip whose frames are all scored, in
    slot order; counts clips stored and frames scored and shows the live frame rate."""

    def __init__(self, scorers: dict[str, BatchScorer], index: ScoreIndex, turns: Turns, bar, task) -> None:
        self.scorers, self.index, self.turns, self.bar, self.task = scorers, index, turns, bar, task
        self.open_clips: dict[int, _OpenClip] = {}
        self.stored = self.frames_done = 0
        self.model_frames = 0  # frames scored, summed over models: the live rate is this / models / seconds
        self.started = time.perf_counter()

    def collect(self, flush: bool) -> None:
        """Run every scorer's full batches (and with flush the remainders) when the models' turn has come, then
        store the completed clips. In the models' turn (with turns) decoding waits until every pass is done."""
        if not flush and not self.turns.due(max(scorer.pending for scorer in self.scorers.values())):
            return
        with self.turns.models_turn():
            for key, scorer in self.scorers.items():
                for slot, probs, features in scorer.run(flush, wait=self.turns.frames > 0):
                    open_clip = self.open_clips[slot]
                    open_clip.parts[key].append(probs)
                    if features is not None:
                        open_clip.features.append(features)
                    open_clip.remaining[key] -= len(probs)
                    self.model_frames += len(probs)
        rate = self.model_frames / len(self.scorers) / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, info=f"{rate:.1f} frames/s")  # moves within a long clip too
        for slot in sorted(s for s, c in self.open_clips.items() if c.complete()):
            done = self.open_clips.pop(slot)
            self.index.add_clip(done.clip, done.scores(), done.embedding())
            self.stored += 1
            self.frames_done += done.frames()
            self.bar.update(self.task, advance=1)

    def feed(self, slot: int, clip: Clip, work: _Work, feed: queue.Queue) -> None:
        """Queue the clip's decoded chunks for the models that still need it until its _End arrives; a clip
        that ends before its first chunk is recorded as a failure."""
        needed = work.models()
        open_clip = _OpenClip(clip, {m.key: 0 for m in needed}, {m.key: [] for m in needed},
                              {m.key for m in work.scoring}, work.embedding.key if work.embedding else None)
        while isinstance(item := feed.get(), DecodedChunk):
            if not open_clip.times_s:
                self.open_clips[slot] = open_clip
            open_clip.times_s.append(item.times + (clip.start or 0.0))
            for model in needed:
                self.scorers[model.key].add(slot, item.tensors[model.preprocessing.resize])
                open_clip.remaining[model.key] += len(item.times)
            self.collect(flush=False)
        if not open_clip.times_s:  # nothing decoded: a failure, never scored
            self.index.add_failure(clip, item.failure)
            self.bar.update(self.task, advance=1)
            return
        open_clip.end = item
        self.collect(flush=False)


def _score_clips(todo: list[tuple[Clip, _Work]], models: list[ScoringModel], config: RankConfig,
                 index: ScoreIndex, device: torch.device, workers: int, label: str) -> tuple[int, int]:
    """Decode clips chunk by chunk in `workers` background threads (2 x workers clips ahead, each at most
    Turns.feed_chunks preprocessed chunks queued plus the one being decoded) and score them in packed batches
    (ForwardPasses: on the CPU side by side, one pass per core), on the CPU taking turns (Turns); store each clip
    when all its frames are scored, record a clip that fails before its first chunk as a failure. Returns (clips
    stored, frames scored)."""
    ahead = 2 * workers
    passes = ForwardPasses(torch.get_num_threads() if device.type == "cpu" else 0)
    scorers = {m.key: BatchScorer(m, forward_images(config, device), device, rank_views(config), passes)
               for m in models}
    resizes = {m.preprocessing.resize for m in models}
    cancelled, turns = threading.Event(), Turns.for_models(models, config, device)

    with ThreadPoolExecutor(workers) as pool, progress_bar("clips") as bar:
        collector = _ClipCollector(scorers, index, turns, bar, bar.add_task(label, total=len(todo), info=""))

        def start_decoding(clip: Clip) -> queue.Queue:
            feed: queue.Queue = queue.Queue(turns.feed_chunks(config))
            pool.submit(decode_clip_into, feed, clip, config, resizes, cancelled, turns)
            return feed

        try:
            feeds = deque(start_decoding(clip) for clip, _ in todo[:ahead])
            for slot, (clip, work) in enumerate(todo):
                feed = feeds.popleft()
                if slot + ahead < len(todo):
                    feeds.append(start_decoding(todo[slot + ahead][0]))
                collector.feed(slot, clip, work, feed)
            collector.collect(flush=True)
        finally:  # an interrupted run: threads waiting on a full feed give up, queued clips never start
            cancelled.set()
            pool.shutdown(cancel_futures=True)
            passes.close()
    return collector.stored, collector.frames_done


def rank(config: RankConfig) -> RankResult:
    """Score every clip with every model (resuming from the index), fuse, rank and write OUT_DIR outputs.

    ``config`` is resolved first (``dsdi.rank.models.resolve_models``). Under torchrun, process r scores every world-th
    clip still to score; process 0 registers the work, fuses and writes. Raises InputError for a missing/empty
    clip folder, bad models or flags, and when no clip could be ranked (failures.csv and run.json are still
    written then)."""
    started = time.perf_counter()
    config = resolve_models(config)
    clips = _find_clips(config)
    group = join_process_group("cpu")  # gloo whatever the device: only barriers, the work list and totals travel
    device = pick_device("cpu" if config.engine == "onnxruntime" else config.device, group.local_rank)
    models, weights = _load_models(config, device)
    embedder = choose_embed_model(config.embed_model, models, weights)
    if embedder is not None:
        embedder.features = with_features(embedder.module, f"--embed-model {embedder.checkpoint}")
    labelset = fusion_labelset(load_labelset(config.labelset) if config.labelset else models[0].labelset,
                               [(f"--models {m.checkpoint} (label set {m.labelset.name})", m.labelset.class_names)
                                for m in models])
    index = ScoreIndex(config.out, shard=group.world_rank)  # only process 0 opens scores.sqlite
    try:
        todo = _work_list(index, clips, models, embedder, config.fps, group)
        clips_reused = sum(_valid_shot_id(clip) for clip in clips) - len(todo)
        label = "rank" if not group.active else f"rank {group.world_rank}/{group.world_size}"
        workers = config.decode_threads or default_workers(RANK_DECODE_WORKERS_CAP, group.world_size)
        clips_scored, frames_scored = _score_clips(todo[group.world_rank::group.world_size], models, config, index,
                                                   device, workers, label)
        index.end_shard()
        clips_scored, frames_scored = int(group.sum(clips_scored)), int(group.sum(frames_scored))  # also waits
        run_info = RunFacts(
            run_id=config.run_id, models=[str(m.checkpoint) for m in models], model_keys=[m.key for m in models],
            backbones=[m.backbone for m in models], weights=weights, agg=config.agg, fps=config.fps,
            topk=config.topk, labelset=labelset.to_dict(), fuse=[FusedRun(str(p), w) for p, w in config.fuse],
            pid=config.pid, working_dir=str(Path.cwd()), tr_type=config.tr_type, priority=config.priority,
            views=ViewFacts(config.tta, f"{config.tiles[0]}x{config.tiles[1]}" if config.tiles else None,
                            config.tile_overlap if config.tiles else None),
            embed_model=str(embedder.checkpoint) if embedder else None, embed_model_key=embedder and embedder.key)
        result = RankResult(config.out, config.run_id, 0, 0, clips_scored, frames_scored, 0.0,
                            clips_reused=clips_reused)
        if group.is_main:
            index.merge_shards()  # every process's shard: all have finished writing
            result = fuse_and_write(index, RankOutput(config.out), run_info, started, clips_scored, frames_scored,
                                    clips_reused=clips_reused)
    finally:
        index.close()
        group.barrier()
        group.leave()
    return result


def _valid_shot_id(clip: Clip) -> bool:
    """TRECVID shot ids carry no whitespace."""
    return clip.shot_id.split() == [clip.shot_id]


def _work_list(index: ScoreIndex, clips: list[Clip], models: list[ScoringModel], embedder: ScoringModel | None,
               fps: float, group: ProcessGroup) -> list[tuple[Clip, _Work]]:
    """(clip, what it still needs) for every clip with a valid shot id that needs something, the same in every
    process.

    Process 0 alone reads and writes scores.sqlite: it first merges the shards a killed run left (so that no clip
    a killed process finished is scored again), registers the models and the clip set, records shot ids with
    whitespace as failures and works the list out; the others receive it over gloo (as clip positions and a
    clip x (models + embedding) mask), with a digest of the shot ids to check that every process found the same
    clips."""
    digest = hashlib.sha256("\n".join(clip.shot_id for clip in clips).encode()).hexdigest()
    plan = None
    if group.is_main:
        index.merge_shards()
        for model in models:
            index.register_model(model.key, model.checkpoint, model.backbone, model.img_size, model.sha256, fps,
                                 model.labelset.class_names)
        index.set_clips(clips)
        for clip in clips:
            if not _valid_shot_id(clip):
                index.add_failure(clip, "shot id contains whitespace (TRECVID shot ids cannot); rename the file")
        valid = np.fromiter((_valid_shot_id(c) for c in clips), dtype=bool, count=len(clips))
        needed = np.zeros((len(clips), len(models) + 1), dtype=bool)  # last column: the embedding
        stored = [index.scored_shots(m.key) for m in models] + [index.embedded_shots(embedder.key) if embedder
                                                                 else {c.shot_id for c in clips}]
        for k, done in enumerate(stored):
            needed[:, k] = valid & np.fromiter((c.shot_id not in done for c in clips), dtype=bool, count=len(clips))
        positions = np.flatnonzero(needed.any(axis=1))
        plan = (digest, positions, np.packbits(needed[positions], axis=1))
    their_digest, positions, packed = group.broadcast(plan)
    if their_digest != digest:
        raise InputError(f"torchrun process {group.world_rank} found other clips than process 0; every process "
                         "must see the same --clips folder or --shots table")
    needed = np.unpackbits(packed, axis=1, count=len(models) + 1).astype(bool)
    return [(clips[p], _Work([m for m, need in zip(models, row[:-1], strict=True) if need],
                             embedder if row[-1] else None))
            for p, row in zip(positions.tolist(), needed, strict=True)]
