"""dsdi speed figures, each a ratio of two things measured side by side in the same run on the same machine.

    python bench/bench.py [--device cpu|cuda] [--out bench/results.json] [--only SECTION...] [--ladi-sample DIR]

Sections (each prints "n/a (reason)" instead of crashing when a part is missing):

- decode:   10 fps sampling of the same 20 s 720p30 H.264 clip vs the ffmpeg CLI (filters `fps=10[,scale=W:H]` to
            a rawvideo pipe): native RGB (video.decode.ClipChunks, chunk by chunk as rank reads, and sample_frames, the
            whole clip in one array), 640x360, and at the model's input size (ClipChunks shrink_to: the decoder
            scales) vs `fps=10,scale=224:224`; skipping unsampled non-reference frames on vs off. Frames/s.
- rank:     `dsdi rank` end to end (dsdi.rank.scoring.rank: decode + preprocess + forward + index + fuse + write) vs
            decode-only (rank's own decoding threads, decode_clip_into, to model input, no model) on the same clips and
            vs model-only forward on pre-decoded, pre-processed tensors (one caller on all threads, and passes side
            by side as rank runs them): frames/s; vs the serial bound (decode, then the faster model-only, on the
            same cores: what doing things in turn reaches), also less rank's fixed costs; cores each one kept busy.
            CPU: lcnet_050 at 224 px (decoding a large share of the work), resnet10t at 160 px (the model dominates)
            and the paper's resnest50d at 360 px with PyTorch and with ONNX Runtime fp32 (--engine onnxruntime).
- views:    `dsdi rank` end to end with --tta flip and with --tiles 2x2 vs plain, on the same 320x180 clips: sampled
            frames/s (each option scores 2x / 5x the images per frame).
- image:    dsdi.train.data.load_image (PIL draft decode) vs naive PIL full decode + resize on 4000x3000 JPEGs
            and on progressive 6000x4000 JPEGs (LADI's size and encoding), all made here, plus the real LADI
            JPEGs of --ladi-sample DIR (or $DSDI_LADI_SAMPLE) when given: images/s; with --device cuda also
            torchvision.io.decode_jpeg on the GPU vs load_image.
- train:    training steps (augmentation on the batch included) fed by the real loader (LabelledImageDataset +
            DataLoader) from 4000x3000 originals and from a `dsdi prepare` cache (360 px) vs pre-loaded tensors, at
            360 px and (CPU) 224 px.
- backbones (--device cuda): inference images/s of each paper backbone in bf16 at its input size and the
            projected time to score 180,000 frames with the models of runs/*.toml.
- cpu_inference: each paper backbone (random init) at its input size, batch 8, on the CPU: PyTorch eager vs ONNX
            Runtime fp32 and int8 as dsdi export makes them (about 5 minutes on 2 cores): images/s and ratios.
- search, search_world: dsdi search's latency, recall and index size, and whether it finds what the synthetic
            world's qrels say (bench/search_bench.py).
- gpu_decode (--device cuda): a GPU video decoder (torchcodec's CUDA decoder, else decord's GPU build) vs dsdi's
            CPU path, 10 fps of a 1080p clip at 360 px.

CPU: tiny timm model (lcnet_050 at 224 px), small batches, about 5 minutes on 2 cores. CUDA: the paper's
backbones at 360 px (HRNet 448). Figures go to the table and to results.json with the machine description.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from search_bench import bench_search, bench_search_world

REPO = Path(__file__).resolve().parents[1]
FRAMES_TO_PROJECT = 180_000
console = Console()


def machine_description(device: str) -> dict:
    """CPU count and model, torch version, accelerator name."""
    cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu_model = names[0] if names else cpu_model
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def rates_by_round(*workloads: tuple[int, Callable[[], object]], rounds: int = 2) -> list[list[float]]:
    """Items/s of each (count, run) workload in each of `rounds` rounds, the workloads called in turn within a
    round (A B A B ...) so that a change in the machine's load hits both sides of a ratio alike: rounds x
    workloads."""
    rates = []
    for _ in range(rounds):
        row = []
        for count, run in workloads:
            start = time.perf_counter()
            run()
            row.append(count / (time.perf_counter() - start))
        rates.append(row)
    return rates


def fastest_rates(*workloads: tuple[int, Callable[[], object]], repeats: int = 2) -> list[float]:
    """Items/s of each (count, run) workload: the fastest of `repeats` calls, called in turn (rates_by_round)."""
    return [max(column) for column in zip(*rates_by_round(*workloads, rounds=repeats), strict=True)]


def cores_used(run: Callable[[], object]) -> float:
    """CPU seconds (user + system, every thread of this process) per wall second of one call of run."""
    before, start = os.times(), time.perf_counter()
    run()
    after, wall = os.times(), time.perf_counter() - start
    return (after.user + after.system - before.user - before.system) / wall


def make_testsrc_clip(path: Path, width: int, height: int, seconds: float, fps: int = 30) -> Path:
    """H.264 clip of ffmpeg's testsrc2 pattern."""
    import ffmpeg

    from dsdi.video.ffmpeg import run

    pattern = ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}", format="lavfi")
    command = pattern.output(str(path), vcodec="libx264", preset="veryfast", pix_fmt="yuv420p")
    run(command.global_args("-loglevel", "error").overwrite_output(), f"making {path}")
    return path


def make_shot_clips(folder: Path, count: int, width: int, height: int, seconds: float) -> Path:
    """``count`` testsrc2 clips Shot1_000.mp4 ... in a new ``folder``; returns the folder."""
    folder.mkdir()
    for i in range(count):
        make_testsrc_clip(folder / f"Shot1_{i:03d}.mp4", width, height, seconds)
    return folder


def ffmpeg_sample(path: Path, fps: float, size: tuple[int, int] | None, native: tuple[int, int]) -> int:
    """Frames the ffmpeg CLI delivers as rgb24 on a pipe through the filters fps[,scale]; returns the frame count."""
    import ffmpeg

    from dsdi.video.ffmpeg import run

    width, height = size or native
    video = ffmpeg.input(str(path)).filter("fps", f"{fps:g}")
    if size:
        video = video.filter("scale", width, height)
    command = video.output("pipe:", format="rawvideo", pix_fmt="rgb24").global_args("-loglevel", "error")
    return len(run(command, f"sampling {path}")) // (width * height * 3)


MODEL_SIDE = 224  # the CPU bench model's input size (lcnet_050); the decode section scales to it too


def iterate_chunks(clip: Path, **kwargs: object) -> int:
    """Sampled frames dsdi.video.decode.ClipChunks delivers at 10 fps, chunk by chunk (how dsdi rank reads a clip)."""
    from dsdi.video.clip import Clip
    from dsdi.video.decode import ClipChunks

    return sum(len(times) for _, times in ClipChunks(Clip(clip.stem, clip), 10.0, **kwargs))


def bench_decode(work: Path, device: str) -> dict:
    from dsdi.video.decode import ClipChunks, sample_frames

    clip = make_testsrc_clip(work / "testsrc2_720p30.mp4", 1280, 720, 20)
    results = {"clip": "testsrc2 1280x720 30 fps 20 s H.264 (600 frames), sampled at 10 fps"}
    native, side = (1280, 720), MODEL_SIDE
    n = iterate_chunks(clip)
    counts = {size: ffmpeg_sample(clip, 10.0, size, native) for size in (None, (640, 360), (side, side))}
    chunks, whole, cli = fastest_rates((n, lambda: iterate_chunks(clip)), (n, lambda: sample_frames(clip)),
                                       (counts[None], lambda: ffmpeg_sample(clip, 10.0, None, native)), repeats=3)
    results["native"] = {"frames_dsdi": n, "frames_ffmpeg": counts[None], "dsdi_chunks_frames_per_s": chunks,
                         "dsdi_sample_frames_per_s": whole, "ffmpeg_cli_frames_per_s": cli,
                         "ratio_dsdi_over_ffmpeg": chunks / cli, "ratio_sample_frames_over_ffmpeg": whole / cli}
    dsdi_rate, cli = fastest_rates((n, lambda: sample_frames(clip, size=(640, 360))),
                                   (counts[(640, 360)], lambda: ffmpeg_sample(clip, 10.0, (640, 360), native)))
    results["640x360"] = {"dsdi_frames_per_s": dsdi_rate, "ffmpeg_cli_frames_per_s": cli,
                          "ratio_dsdi_over_ffmpeg": dsdi_rate / cli}
    dsdi_rate, cli = fastest_rates((n, lambda: iterate_chunks(clip, shrink_to=[(side, side)])),
                                   (counts[(side, side)], lambda: ffmpeg_sample(clip, 10.0, (side, side), native)),
                                   repeats=3)
    results[f"model size {side}x{side}"] = {"dsdi_frames_per_s": dsdi_rate, "ffmpeg_cli_scale_frames_per_s": cli,
                                           "ratio_dsdi_over_ffmpeg": dsdi_rate / cli}
    needed = ClipChunks._needed  # skipping unsampled non-reference frames, on vs off

    def every_frame() -> int:
        ClipChunks._needed = lambda self, start, next_start: True
        try:
            return iterate_chunks(clip)
        finally:
            ClipChunks._needed = needed

    skipping, decoding_all = fastest_rates((n, lambda: iterate_chunks(clip)), (n, every_frame), repeats=3)
    results["skip non-reference"] = {"skipping_frames_per_s": skipping, "decoding_all_frames_per_s": decoding_all,
                                     "ratio_skipping_over_all": skipping / decoding_all}
    results["load_average_after"] = os.getloadavg()[0]
    return results


def tiny_or_real(device: str) -> tuple[str, int, int]:
    """(backbone, input side px, batch) used for rank/train: tiny on CPU, a paper backbone on CUDA."""
    return ("resnest50d", 360, 64) if device == "cuda" else ("lcnet_050", 224, 32)


def write_checkpoint(run_dir: Path, backbone: str, img_size: int) -> Path:
    """A dsdi checkpoint file (random weights) of `backbone`, as the best.pt `dsdi train` would leave in run_dir."""
    from dsdi.labels.schema import CLASSES
    from dsdi.models.backbones import create_backbone
    from dsdi.models.checkpoint import checkpoint_payload, save_checkpoint
    from dsdi.train.run_folder import RunFolder

    model = create_backbone(backbone, num_classes=len(CLASSES))
    path = RunFolder(run_dir).best
    save_checkpoint(path, checkpoint_payload(model, backbone=backbone, img_size=img_size, epoch=1))
    return path


def forward_runner(model: torch.nn.Module, batches: list[torch.Tensor], device: str,
                   dtype: torch.dtype) -> Callable[[], None]:
    """A warmed-up call running inference of model on each of batches (on device) in turn, autocast to dtype."""
    def run() -> None:
        with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            for batch in batches:
                model(batch)
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up (cudnn autotune, allocator)
    return run


def decode_only_runner(clips: list, config: object, preprocessing: object, counts: list[int]) -> Callable[[], None]:
    """A call decoding the clips as dsdi rank does (its decoding threads, decode_clip_into: decode, scale, crop)
    and making each chunk the model's normalised input as its forward passes do (dsdi.rank.passes.model_input),
    with no model; appends the frames decoded to counts."""
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from dsdi.rank.passes import model_input
    from dsdi.rank.scoring import RANK_DECODE_WORKERS_CAP, DecodedChunk, decode_clip_into
    from dsdi.runtime import default_workers

    def run() -> None:
        counts.append(0)
        with ThreadPoolExecutor(default_workers(RANK_DECODE_WORKERS_CAP)) as pool:
            feeds = [queue.Queue(4) for _ in clips]
            for feed, clip in zip(feeds, clips, strict=True):
                pool.submit(decode_clip_into, feed, clip, config, {preprocessing.resize}, threading.Event())
            for feed in feeds:
                while isinstance(item := feed.get(), DecodedChunk):
                    model_input([item.tensors[preprocessing.resize]], preprocessing, torch.device("cpu"))
                    counts[-1] += len(item.times)

    return run


RANK_CPU_MODELS = (("lcnet_050", 224, 32, 12, "torch", 5), ("resnet10t", 160, 32, 6, "torch", 5),
                   ("resnest50d", 360, 8, 2, "torch", 3), ("resnest50d", 360, 8, 2, "onnxruntime", 3))
# backbone, px, batch, clips, engine, rounds: a tiny model where decoding is a large share of the work, one where
# the model dominates, and a paper backbone at its input size with each CPU engine


def bench_rank(work: Path, device: str) -> dict:
    """rank_versus_parts for each model of RANK_CPU_MODELS (CUDA: the paper backbone of tiny_or_real) on 640x360
    clips of 5 s (CUDA: 24 of 10 s)."""
    if device == "cuda":
        backbone, img_size, batch_size = tiny_or_real(device)
        models = ((backbone, img_size, batch_size, 24, "torch", 2),)
    else:
        models = RANK_CPU_MODELS
    results = {}
    for backbone, img_size, batch_size, n_clips, engine, rounds in models:
        seconds = 10 if device == "cuda" else 5
        clips_dir = work / f"clips_{backbone}"
        if not clips_dir.is_dir():
            make_shot_clips(clips_dir, n_clips, 640, 360, seconds)
        name = f"{backbone} at {img_size} px" + ("" if engine == "torch" else f", {engine}")
        results[name] = rank_versus_parts(work / f"{backbone}-{engine}", clips_dir, backbone, img_size, batch_size,
                                          device, engine, rounds)
    return results


def passes_runner(forward: Callable[[torch.Tensor], object], batches: list[torch.Tensor],
                  workers: int) -> Callable[[], None]:
    """A warmed-up call running a forward pass of each of batches side by side in `workers` threads of one
    intra-op thread each, as dsdi rank runs them on the CPU (dsdi.rank.passes.ForwardPasses)."""
    from dsdi.rank.passes import ForwardPasses

    def run() -> None:
        passes = ForwardPasses(workers)
        try:
            for running in [passes.submit(forward, batch) for batch in batches]:
                running.result()
        finally:
            passes.close()

    run()
    return run


def rank_versus_parts(work: Path, clips_dir: Path, backbone: str, img_size: int, batch_size: int,
                      device: str, engine: str = "torch", rounds: int = 2) -> dict:
    """`dsdi rank` end to end on the clips of clips_dir vs decode-only and model-only, called in turn in each of
    `rounds` rounds: the fastest frames/s of each, the serial bound of the two parts (decode, then model, on the
    same cores), the ratios (rank's over the bound: the median over rounds of each round's own ratio, so that
    the machine's swings hit both sides alike), cores kept busy.
    Model-only is measured two ways: one caller running passes of batch_size on all the engine's threads, and
    (on the CPU) rank's way, passes side by side in one single-thread worker per core; the serial bound takes the
    faster. engine onnxruntime: the checkpoint's fp32 export (made first, as dsdi export does) in rank and
    model-only."""
    from dsdi.models.checkpoint import load_model
    from dsdi.models.preprocess import frames_to_tensor
    from dsdi.rank.config import RankConfig
    from dsdi.rank.passes import CPU_FORWARD_IMAGES
    from dsdi.rank.scoring import rank
    from dsdi.video.clip import Clip
    from dsdi.video.decode import sample_frames

    checkpoint = write_checkpoint(work / "runs" / "bench", backbone, img_size)
    frames = np.concatenate([sample_frames(p)[0] for p in sorted(clips_dir.glob("*.mp4"))])
    runs = []

    def rank_fresh() -> None:  # a new OUT_DIR each time: nothing reused from a previous index
        config = RankConfig(clips=clips_dir, models=[checkpoint], out=work / f"rank_out{len(runs)}", run_id="bench",
                            device=device, batch_size=batch_size, runs_dir=work / "runs", engine=engine)
        runs.append(rank(config))

    def rank_reusing() -> None:  # the last index again: every clip reused, only model load, fuse and write
        config = RankConfig(clips=clips_dir, models=[checkpoint], out=work / f"rank_out{len(runs) - 1}",
                            run_id="bench", device=device, batch_size=batch_size, runs_dir=work / "runs",
                            engine=engine)
        if rank(config).frames_scored:
            raise RuntimeError("dsdi rank scored frames again on an index that holds them all")

    model, info = load_model(checkpoint, device)
    inputs = frames_to_tensor(frames, img_size).to(device)  # every frame its own input: none comes from the cache
    dtype = torch.float16 if device == "cuda" else torch.float32  # what dsdi.rank.scoring uses
    pass_images = min(batch_size, CPU_FORWARD_IMAGES) if engine == "torch" else batch_size  # rank's passes
    batches, passes, workers = inputs.split(batch_size), inputs.split(pass_images), torch.get_num_threads()
    if engine == "onnxruntime":
        from dsdi.models.ort import OrtModel
        from dsdi.train.export import export_model

        exported = export_model(checkpoint, "fp32").path
        one_caller = ort_runner(OrtModel(exported), batches)
        side_by_side = passes_runner(OrtModel(exported, threads=1), passes, workers)
    else:
        def infer(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(batch)

        one_caller = forward_runner(model, batches, device, dtype)
        side_by_side = passes_runner(infer, passes, workers) if device == "cpu" else None
    clips = [Clip(p.stem, p) for p in sorted(clips_dir.glob("*.mp4"))]
    config = RankConfig(clips=clips_dir, models=[checkpoint], out=work / "unused", device=device).resolved()
    decoded: list[int] = []
    decode_only = decode_only_runner(clips, config, info.preprocessing, decoded)

    workloads = [(len(frames), rank_fresh), (len(frames), decode_only), (len(frames), one_caller)]
    if side_by_side is not None:
        workloads.append((len(frames), side_by_side))
    by_round = rates_by_round(*workloads, rounds=rounds)
    end_to_end, decoding, *model_rates = (max(column) for column in zip(*by_round, strict=True))
    model_only = max(model_rates)
    cores = {name: cores_used(run) for name, run in (("rank", rank_fresh), ("decode_only", decode_only),
                                                      ("model_only", side_by_side or one_caller))}
    serial_bound = 1 / (1 / decoding + 1 / model_only)  # decode and model one after the other on the same cores
    fixed_seconds = len(frames) / fastest_rates((len(frames), rank_reusing))[0]
    scoring = len(frames) / (len(frames) / end_to_end - fixed_seconds)  # rank's frames/s less its fixed costs
    # per round: rank over the serial bound of the same round's parts (the fastest model-only), rank's scoring
    # alone (less the fixed costs) over it, and over the bound with the one caller's model-only
    rounds_strict = [rank * (1 / decode + 1 / max(models)) for rank, decode, *models in by_round]
    rounds_scoring = [ratio / (1 - fixed_seconds * rank / len(frames))
                      for ratio, (rank, *_) in zip(rounds_strict, by_round, strict=True)]
    rounds_one_caller = [rank * (1 / decode + 1 / models[0]) for rank, decode, *models in by_round]
    if any(result.frames_scored != len(frames) for result in runs) or set(decoded) != {len(frames)}:
        raise RuntimeError(f"dsdi rank scored {[r.frames_scored for r in runs]} frames, decoding alone {decoded}, "
                           f"sample_frames {len(frames)}")
    return {"engine": engine, "batch": batch_size, "clips": len(clips), "clip_size": "640x360 30 fps",
            "frames_scored": len(frames),
            "rank_call": "model load, decode, preprocess, forward, index, fuse, write",
            "rank_fixed_costs": "a rank call reusing every clip from the index: model load, fuse, write",
            "decode_only": "rank's decoding threads: decode, scale, crop; each chunk made the model's input; no model",
            "model_only": f"every frame's model input once, the faster of: one caller, passes of {batch_size} on "
                          f"{workers} threads; passes of {pass_images} side by side in {workers} single-thread "
                          "workers (rank's way)",
            "rank_end_to_end_frames_per_s": end_to_end, "decode_only_frames_per_s": decoding,
            "model_only_one_caller_frames_per_s": model_rates[0],
            "model_only_side_by_side_frames_per_s": model_rates[1] if side_by_side else None,
            "model_only_frames_per_s": model_only, "serial_bound_frames_per_s": serial_bound,
            "rank_fixed_costs_s": fixed_seconds, "rank_scoring_frames_per_s": scoring,
            "rounds": rounds, "ratio_end_to_end_over_serial_bound_by_round": rounds_strict,
            "ratio_end_to_end_over_serial_bound": statistics.median(rounds_strict),
            "ratio_scoring_over_serial_bound": statistics.median(rounds_scoring),
            "ratio_end_to_end_over_serial_bound_one_caller": statistics.median(rounds_one_caller),
            "ratio_fastest_end_to_end_over_fastest_serial_bound": end_to_end / serial_bound,
            "ratio_end_to_end_over_model_only": end_to_end / model_only,
            "ratio_end_to_end_over_decode_only": end_to_end / decoding,
            "ratio_decode_only_over_model_only": decoding / model_only,
            **{f"{name}_cores_used": used for name, used in cores.items()}, "load_average_after": os.getloadavg()[0]}


VIEW_OPTIONS = {"plain": {}, "flip": {"tta": "flip"}, "tiles_2x2": {"tiles": (2, 2)}}  # RankConfig fields


def bench_views(work: Path, device: str) -> dict:
    """`dsdi rank` end to end (dsdi.rank.scoring.rank, a new OUT_DIR each time) with each of VIEW_OPTIONS on the same
    320x180 clips: sampled frames/s, and each option's rate over plain's."""
    from dsdi.rank.config import RankConfig
    from dsdi.rank.scoring import rank

    backbone, img_size, batch_size = tiny_or_real(device)
    n_clips, seconds = (12, 10) if device == "cuda" else (6, 4)
    clips_dir = make_shot_clips(work / "clips", n_clips, 320, 180, seconds)
    checkpoint = write_checkpoint(work / "runs" / "bench", backbone, img_size)
    frames = n_clips * seconds * 10
    runs: list = []

    def ranker(options: dict) -> Callable[[], None]:
        def run() -> None:
            runs.append(rank(RankConfig(clips=clips_dir, models=[checkpoint], out=work / f"out{len(runs)}",
                                        run_id="bench", device=device, batch_size=batch_size, **options)))
        return run

    rates = dict(zip(VIEW_OPTIONS, fastest_rates(*((frames, ranker(o)) for o in VIEW_OPTIONS.values())), strict=True))
    if any(result.frames_scored != frames for result in runs):
        raise RuntimeError(f"dsdi rank scored {[r.frames_scored for r in runs]} frames, expected {frames}")
    return {"backbone": backbone, "img_size": img_size, "batch_images": batch_size, "clips": n_clips,
            "clip_size": "320x180 30 fps", "frames_scored": frames,
            **{f"{name}_frames_per_s": rate for name, rate in rates.items()},
            **{f"ratio_{name}_over_plain": rate / rates["plain"] for name, rate in rates.items() if name != "plain"},
            "load_average_after": os.getloadavg()[0]}


def make_large_jpegs(folder: Path, count: int, width: int = 4000, height: int = 3000,
                     progressive: bool = False) -> list[Path]:
    """`count` width x height JPEGs (quality 90, baseline or progressive) with smooth gradients plus noise, ~ the
    weight of aerial photos."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        base = Image.fromarray(np.roll(small, i * 7, axis=1)).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(base, dtype=np.int16) + rng.integers(-12, 13, size=(height, width, 1), dtype=np.int16)
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90, progressive=progressive)
        paths.append(path)
    return paths


def ladi_sample_images(folder: Path | None) -> list[Path]:
    """The JPEGs under ``folder`` (real LADI images; none when ``folder`` is None)."""
    if folder is None:
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def naive_load(path: Path, img_size: int) -> torch.Tensor:
    """Full PIL decode, resize, normalise: float32 (3, S, S)."""
    from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

    image = Image.open(path).convert("RGB").resize((img_size, img_size), Image.BILINEAR)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (tensor - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def bench_image(work: Path, device: str, ladi_sample: Path | None = None) -> dict:
    """load_image vs naive PIL on made JPEGs (4000x3000 baseline, 6000x4000 progressive as LADI's) and on the
    JPEGs of ``ladi_sample`` when given: images/s."""
    from dsdi.train.data import load_image

    img_size = 360
    results = {}
    sets = {"synthetic 4000x3000": make_large_jpegs(work / "jpegs", 8),
            "synthetic 6000x4000 progressive": make_large_jpegs(work / "ladi-size", 2, 6000, 4000, progressive=True),
            "ladi-sample": ladi_sample_images(ladi_sample)}
    for label, paths in sets.items():
        if not paths:
            results[label] = "n/a (no --ladi-sample DIR given)"
            continue
        with Image.open(paths[0]) as first:
            size = first.size
        draft, naive = fastest_rates((len(paths), lambda paths=paths: [load_image(p, img_size) for p in paths]),
                                     (len(paths), lambda paths=paths: [naive_load(p, img_size) for p in paths]))
        results[label] = {"images": len(paths), "image_size": list(size), "img_size": img_size,
                          "load_image_per_s": draft, "naive_pil_per_s": naive,
                          "ratio_load_image_over_naive": draft / naive}
        results[f"{label} gpu decode_jpeg"] = gpu_jpeg_rates(paths, img_size, device)
    return results


def gpu_jpeg_rates(paths: list[Path], img_size: int, device: str) -> dict | str:
    """torchvision.io.decode_jpeg on the GPU (a batch of original files, then resize and normalise there) vs
    dsdi.train.data.load_image on the CPU: images/s."""
    if device != "cuda":
        return "n/a (needs --device cuda: torchvision.io.decode_jpeg decodes on the GPU; no GPU here)"
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg, read_file

    from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from dsdi.train.data import load_image

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def on_gpu() -> None:
        images = decode_jpeg([read_file(str(p)) for p in paths], device=device)
        for image in images:
            small = F.interpolate(image[None].float().div_(255), size=(img_size, img_size), mode="bilinear",
                                  antialias=True)
            (small - mean) / std
        torch.cuda.synchronize()

    on_gpu()  # warm-up: nvjpeg handles
    gpu, cpu = fastest_rates((len(paths), on_gpu), (len(paths), lambda: [load_image(p, img_size) for p in paths]))
    return {"gpu_decode_jpeg_per_s": gpu, "cpu_load_image_per_s": cpu, "ratio_gpu_over_cpu": gpu / cpu}


def bench_gpu_decode(work: Path, device: str) -> dict:
    """A GPU video decoder (torchcodec's CUDA decoder, else decord's GPU build) sampling 10 fps of a 1080p clip
    at model size vs dsdi's CPU path (ClipChunks, PyAV)."""
    if device != "cuda":
        raise RuntimeError("needs --device cuda (NVDEC); no GPU here")
    clip = make_testsrc_clip(work / "testsrc2_1080p30.mp4", 1920, 1080, 20)
    side = 360
    n = iterate_chunks(clip, shrink_to=[(side, side)])
    times = [k / 10.0 for k in range(n)]
    try:
        from torchcodec.decoders import VideoDecoder

        def gpu() -> None:
            frames = VideoDecoder(str(clip), device="cuda").get_frames_played_at(times).data
            torch.nn.functional.interpolate(frames.float(), size=(side, side), mode="bilinear", antialias=True)
            torch.cuda.synchronize()

        backend = "torchcodec (NVDEC)"
    except ImportError:
        import decord

        def gpu() -> None:
            reader = decord.VideoReader(str(clip), ctx=decord.gpu(0), width=side, height=side)
            reader.get_batch([round(t * 30) for t in times])

        backend = "decord gpu"
    gpu()
    gpu_rate, cpu_rate = fastest_rates((n, gpu), (n, lambda: iterate_chunks(clip, shrink_to=[(side, side)])))
    return {"backend": backend, "clip": "testsrc2 1920x1080 30 fps 20 s", "frames": n, "model_size": side,
            "gpu_frames_per_s": gpu_rate, "cpu_dsdi_frames_per_s": cpu_rate, "ratio_gpu_over_cpu": gpu_rate / cpu_rate}


def train_runner(model: torch.nn.Module, batches: Iterable, device: str) -> Callable[[], None]:
    """A call running dsdi train's steps over the batches (a DataLoader or a list): the batch augmented and normalised
    on the device (dsdi.train.data.training_batch), then SGD with the focal loss."""
    from dsdi.train.data import training_batch
    from dsdi.train.loop import AUGMENTATION
    from dsdi.train.losses import create_loss

    loss_fn = create_loss("focal", gamma=2.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()

    def run() -> None:
        for batch in batches:
            images, targets = training_batch(batch[0].to(device), AUGMENTATION), batch[1].to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = loss_fn(model(images).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def bench_train(work: Path, device: str) -> dict:
    """Training steps fed by the real loader from 4000x3000 originals and from a `dsdi prepare` cache (360 px) vs
    the same steps on pre-loaded tensors, at 360 px (the cache's size, the paper's input) and, on the CPU, at 224
    px from the same cache (the loader then also resizes, for a step 2.6x cheaper)."""
    import pandas as pd

    from dsdi.labels.schema import CLASSES
    from dsdi.models.backbones import create_backbone
    from dsdi.train.data import LabelledImageDataset, collate_skip_broken, prepare_image_cache

    backbone, _, batch_size = tiny_or_real(device)
    batch_size = min(batch_size, 8) if device == "cpu" else 28
    paths = make_large_jpegs(work / "train_jpegs", 2 * batch_size)
    rng = np.random.default_rng(1)
    labels = pd.DataFrame(rng.random((len(paths), len(CLASSES))).round(2), columns=list(CLASSES))
    labels.insert(0, "image_id", [p.name for p in paths])
    labels.to_csv(work / "labels.csv", index=False)
    prepare_image_cache(work / "labels.csv", paths[0].parent, work / "cache360", img_size=360)
    workers = min(4, os.cpu_count() or 1)
    passes = 4  # the cache and pre-loaded tensors go over the images 4 times a pass: 8 steps, as in a longer epoch
    model = create_backbone(backbone, num_classes=len(CLASSES)).to(device)

    def loader(rows: pd.DataFrame, root: Path, side: int) -> torch.utils.data.DataLoader:
        dataset = LabelledImageDataset(rows, root, side, train=True)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           collate_fn=collate_skip_broken, persistent_workers=True)

    results = {"backbone": backbone, "batch": batch_size, "images": len(paths), "jpeg_size": [4000, 3000],
               "cache": "dsdi prepare --short-side 360", "loader_workers": workers,
               "step": "dsdi.train.data.training_batch (augment + normalise) + forward + focal loss + backward + SGD"}
    for side in (360, 224) if device == "cpu" else (360,):
        originals, cache = loader(labels, paths[0].parent, side), loader(pd.concat([labels] * passes),
                                                                          work / "cache360", side)
        preloaded = [(batch[0], batch[1]) for batch in cache]
        from_originals, from_cache, with_tensors = fastest_rates(
            (len(paths), train_runner(model, originals, device)),
            (passes * len(paths), train_runner(model, cache, device)),
            (passes * len(paths), train_runner(model, preloaded, device)))
        results[f"at {side} px"] = {
            "train_with_loader_images_per_s": from_originals, "train_from_cache_images_per_s": from_cache,
            "train_preloaded_images_per_s": with_tensors, "ratio_loader_over_preloaded": from_originals / with_tensors,
            "ratio_cache_over_preloaded": from_cache / with_tensors}
    results["load_average_after"] = os.getloadavg()[0]
    return results


def bench_backbones(work: Path, device: str) -> dict:
    if device != "cuda":
        raise RuntimeError("needs --device cuda (the paper's backbones run ~2 images/s on this CPU)")
    from dsdi.labels.schema import CLASSES
    from dsdi.models.backbones import PAPER_BACKBONES, create_backbone
    from dsdi.train.loop import read_toml

    rates = {}
    for name, spec in PAPER_BACKBONES.items():
        model = create_backbone(name, num_classes=len(CLASSES)).to(device).eval()
        batch = torch.randn(64, 3, spec.img_size, spec.img_size, device=device)
        [rate] = fastest_rates((len(batch) * 8, forward_runner(model, [batch] * 8, device, torch.bfloat16)))
        rates[name] = {"img_size": spec.img_size, "bf16_images_per_s": rate}
        del model
        torch.cuda.empty_cache()
    recipes = sorted((REPO / "runs").glob("*.toml"))
    backbones = [read_toml(p)["backbone"] for p in recipes]
    seconds = sum(FRAMES_TO_PROJECT / rates[b]["bf16_images_per_s"] for b in backbones if b in rates)
    return {"backbones": rates, "recipes": [p.stem for p in recipes], "frames": FRAMES_TO_PROJECT,
            "models": len(backbones), "projected_hours_all_models": seconds / 3600,
            "projected_hours_per_12_models": seconds / 3600 * 12 / max(len(backbones), 1)}


CPU_BATCH = 8
CPU_BATCHES = 2


def ort_runner(model: object, batches: list[torch.Tensor]) -> Callable[[], None]:
    """A warmed-up call running an ONNX Runtime model (dsdi.models.ort.OrtModel) on each of batches in turn."""
    def run() -> None:
        for batch in batches:
            model(batch)

    run()
    return run


def bench_cpu_inference(work: Path, device: str) -> dict:
    """Each paper backbone (random init) at its input size, batch CPU_BATCH: PyTorch eager vs ONNX Runtime fp32 and
    int8 (dsdi export's path: opset 17, static QDQ int8 calibrated on 16 images), called in turn; images/s."""
    from dsdi.labels.schema import CLASSES
    from dsdi.models.backbones import PAPER_BACKBONES, create_backbone
    from dsdi.models.ort import OrtModel, export_onnx, logit_difference, quantise_int8, sample_inputs
    from dsdi.models.preprocess import Preprocessing

    threads = torch.get_num_threads()
    rates = {}
    for name, spec in PAPER_BACKBONES.items():
        torch.manual_seed(0)
        model = create_backbone(name, num_classes=len(CLASSES)).eval()
        preprocessing = Preprocessing(spec.img_size)
        fp32, int8 = work / f"{name}.onnx", work / f"{name}.int8.onnx"
        export_onnx(model, preprocessing, fp32)
        quantise_int8(fp32, int8, sample_inputs(preprocessing, 16).numpy())
        batch = sample_inputs(preprocessing, CPU_BATCH, seed=1)
        onnx_fp32, onnx_int8 = OrtModel(fp32, threads), OrtModel(int8, threads)
        diff, scale = logit_difference(model, onnx_fp32, batch)  # an untrained HRNet's logits reach 5e7
        count = CPU_BATCH * CPU_BATCHES
        eager, ort_fp32, ort_int8 = fastest_rates(
            (count, forward_runner(model, [batch] * CPU_BATCHES, "cpu", torch.float32)),
            (count, ort_runner(onnx_fp32, [batch] * CPU_BATCHES)),
            (count, ort_runner(onnx_int8, [batch] * CPU_BATCHES)))
        rates[name] = {"img_size": spec.img_size, "torch_eager_images_per_s": eager, "ort_fp32_images_per_s": ort_fp32,
                       "ort_int8_images_per_s": ort_int8, "ratio_ort_fp32_over_torch": ort_fp32 / eager,
                       "ratio_ort_int8_over_torch": ort_int8 / eager, "ort_fp32_max_abs_logit_diff": diff,
                       "torch_max_abs_logit": scale}
        del model, onnx_fp32, onnx_int8
    return {"threads": threads, "batch": CPU_BATCH, "backbones": rates, "load_average_after": os.getloadavg()[0]}


INDEX_CLIPS = 100_000
INDEX_MODELS = 12
INDEX_PROJECT_CLIPS = 1_000_000


def bench_index(work: Path, device: str) -> dict:
    """The score index through its API (index.store.ScoreIndex, rank.fusion.fused_scores) at INDEX_CLIPS clips x
    INDEX_MODELS models (DSDI_BENCH_INDEX_CLIPS overrides the clip count): bytes on disk per clip and model,
    clip-model rows written per second (add_clip per clip, then the merge into scores.sqlite where the index has
    one), seconds to fuse all models (wall and CPU: on a shared machine the CPU seconds are the steadier figure);
    projected linearly to INDEX_PROJECT_CLIPS clips."""
    from dsdi.index.scores import ClipScores
    from dsdi.index.store import ScoreIndex
    from dsdi.labels.schema import NUM_CLASSES
    from dsdi.rank.fusion import fused_scores
    from dsdi.video.clip import Clip

    n_clips = int(os.environ.get("DSDI_BENCH_INDEX_CLIPS", INDEX_CLIPS))
    rng = np.random.default_rng(0)
    pool = []  # 997 distinct score sets, cycled: generating 1.2 million would dominate the timing
    for _ in range(997):
        probs = rng.random((int(rng.integers(5, 40)), NUM_CLASSES))
        pool.append(ClipScores.from_frame_scores(probs, np.arange(len(probs)) / 10.0, False, ""))
    keys = [f"{i:016x}@10fps" for i in range(INDEX_MODELS)]
    clips = [Clip(f"shot{i // 100:05d}_{i % 100 + 1}", work / "clips" / f"video{i // 100:05d}.mp4", i % 100 * 4.0,
                  i % 100 * 4.0 + 4.0) for i in range(n_clips)]
    index = ScoreIndex(work / "out")
    start = time.perf_counter()
    index.set_clips(clips)
    set_clips_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    for i, clip in enumerate(clips):
        index.add_clip(clip, {key: pool[(i * INDEX_MODELS + k) % len(pool)] for k, key in enumerate(keys)})
    if hasattr(index, "merge_shards"):  # the sharded index: its clip scores reach scores.sqlite here
        index.merge_shards()
    write_s, write_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    index.close()
    size = sum(p.stat().st_size for p in (work / "out").iterdir())  # scores.sqlite (and -wal, -shm if any)
    index = ScoreIndex(work / "out")
    start, cpu = time.perf_counter(), time.process_time()
    table, _ = fused_scores(index, keys, [1.0] * INDEX_MODELS, "max", [])
    fuse_s, fuse_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    index.close()
    if len(table) != n_clips:
        raise RuntimeError(f"fused {len(table)} clips of {n_clips}")
    rows = n_clips * INDEX_MODELS
    scale = INDEX_PROJECT_CLIPS / n_clips
    return {"clips": n_clips, "models": INDEX_MODELS, "rows": rows, "bytes_on_disk": size,
            "bytes_per_clip_model": size / rows, "set_clips_s": set_clips_s, "write_s": write_s,
            "write_cpu_s": write_cpu_s, "rows_written_per_s": rows / write_s,
            "rows_written_per_cpu_s": rows / write_cpu_s, "fuse_s": fuse_s, "fuse_cpu_s": fuse_cpu_s,
            "load_average_after": os.getloadavg()[0],
            f"projected_{INDEX_PROJECT_CLIPS}_clips": {"gb_on_disk": size * scale / 1e9,
                                                       "write_hours": write_s * scale / 3600,
                                                       "fuse_s": fuse_s * scale}}


SECTIONS: dict[str, Callable[[Path, str], dict]] = {
    "decode": bench_decode, "rank": bench_rank, "views": bench_views, "image": bench_image, "train": bench_train,
    "backbones": bench_backbones, "gpu_decode": bench_gpu_decode, "index": bench_index,
    "cpu_inference": bench_cpu_inference, "search": bench_search, "search_world": bench_search_world,
}


def flatten(prefix: str, value: object) -> list[tuple[str, str]]:
    """Rows (measure, text) for the table: nested dict keys joined with ' / ', floats to 4 significant digits."""
    if isinstance(value, dict):
        return [row for key, sub in value.items() for row in flatten(f"{prefix} / {key}" if prefix else key, sub)]
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return [(prefix, text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--only", nargs="*", choices=tuple(SECTIONS), help="run only these sections")
    parser.add_argument("--ladi-sample", type=Path, default=os.environ.get("DSDI_LADI_SAMPLE") or None,
                        help="a folder of real LADI JPEGs for the image section (default: $DSDI_LADI_SAMPLE)")
    args = parser.parse_args(argv)
    if args.ladi_sample is not None and not args.ladi_sample.is_dir():
        parser.error(f"--ladi-sample {args.ladi_sample}: not a folder (a folder of LADI JPEGs, or leave it out)")
    sections = {**SECTIONS, "image": functools.partial(bench_image, ladi_sample=args.ladi_sample)}
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {"machine": machine_description(args.device), "sections": {}}
    with tempfile.TemporaryDirectory(prefix="dsdi-bench-") as tmp:
        for name in args.only or SECTIONS:
            work = Path(tmp) / name
            work.mkdir()
            console.print(f"[bold]{name}[/] ...")
            start = time.perf_counter()
            try:
                results["sections"][name] = sections[name](work, args.device)
            except Exception as error:  # a missing part prints n/a, the other sections still run
                reason = f"{type(error).__name__}: {error}".splitlines()[0][:200]
                results["sections"][name] = f"n/a ({reason})"
                if os.environ.get("DSDI_BENCH_DEBUG"):
                    traceback.print_exc()
            console.print(f"  {time.perf_counter() - start:.1f} s")
            shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"dsdi bench ({args.device}, {results['machine']['cpu_count']} CPUs, "
                        f"{results['machine']['cpu_model']})")
    table.add_column("section")
    table.add_column("measure")
    table.add_column("value", justify="right", overflow="fold")
    for name, value in results["sections"].items():
        for measure, text in flatten("", value) if isinstance(value, dict) else [("", value)]:
            table.add_row(name, measure, text, style="bold" if "ratio" in measure or "projected" in measure else None)
        table.add_section()
    Console(width=max(console.width, 130)).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
