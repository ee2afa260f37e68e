"""Clips and their ground truth: H.264 encoding of a rendered pan, the runs of frames that show each feature,
and the clips.csv / clip_truth.csv / qrels.txt texts of a set of clips."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd

from dsdi.files import atomic_output
from dsdi.labels import schema
from dsdi.labels.labelset import LADI_V1, LabelSet
from dsdi.progress import progress_bar
from dsdi.synth.crowd import feature_probabilities, sample_labels
from dsdi.synth.scenes import CLIP_FPS, ClipScene, render_clip
from dsdi.video.ffmpeg import feed

SAMPLER_FPS = 10  # dsdi.video.decode's sampling rate: t = 0, 0.1, 0.2 ... s, every CLIP_FPS // SAMPLER_FPS-th frame
CLIP_FEATURE_PROBABILITY = (0.30, 0.04)  # (p_top, p_min) of feature_probabilities for clips
CLIP_MIN_PER_FEATURE = 2


def encode_clip(clip: ClipScene, path: Path, fps: int = CLIP_FPS) -> None:
    """Write the clip's frames as H.264 MP4 (libx264, yuv420p, 30 fps) with the ffmpeg binary; atomic.

    The scene is converted to YUV 4:2:0 once (BT.601 limited range, as ffmpeg's own RGB input path does)
    and each frame's planes are piped raw: this halves the encoder's work compared with piping RGB.
    x264 runs on one thread so that the bytes depend only on the seed, not on the machine's cores.
    A failing ffmpeg raises dsdi.video.ffmpeg.FfmpegError naming the file, with ffmpeg's message."""
    path = Path(path)
    luma, blue, red = _yuv420_planes(clip.scene)
    cw, ch = clip.width // 2, clip.height // 2

    def planes() -> Iterator[bytes]:
        for x, y in clip.offsets:
            yield luma[y: y + clip.height, x: x + clip.width].tobytes()
            yield blue[y // 2: y // 2 + ch, x // 2: x // 2 + cw].tobytes()
            yield red[y // 2: y // 2 + ch, x // 2: x // 2 + cw].tobytes()

    with atomic_output(path) as tmp:
        stream = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="yuv420p", s=f"{clip.width}x{clip.height}", r=fps)
                  .output(str(tmp), format="mp4", vcodec="libx264", preset="ultrafast", crf=23, threads=1,
                          pix_fmt="yuv420p", movflags="+faststart")
                  .global_args("-loglevel", "error").overwrite_output())
        feed(stream, planes(), f"writing {path}")


def _yuv420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3), H and W even -> BT.601 limited-range planes Y (H, W), Cb and Cr (H/2, W/2), uint8."""
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    luma = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    blue = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    red = 128 + 0.439 * r - 0.368 * g - 0.071 * b

    def to_uint8(plane: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(plane), 0, 255).astype(np.uint8)

    def quarter(plane: np.ndarray) -> np.ndarray:
        return (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) / 4

    return to_uint8(luma), to_uint8(quarter(blue)), to_uint8(quarter(red))


def visible_runs(visible: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a (frames,) bool array as (first, last + 1) frame indices."""
    padded = np.concatenate([[False], visible, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def shot_id(index: int, shots_per_video: int = 10) -> str:
    """Clip index 0.. -> TRECVID-like shot id 'Shot1_001', 'Shot1_002', ... 'Shot2_001' ..."""
    return f"Shot{index // shots_per_video + 1}_{index % shots_per_video + 1:03d}"


@dataclass(frozen=True)
class ClipDesign:
    """What a world's clips show and how they are judged: ``sample(n, rng)`` -> (n, ...) scene rows,
    ``render(row, rng, duration_s, width, height)`` -> a ClipScene whose ``visible`` columns are the label set's
    features in order; qrels and clip truth name each feature by its TREC topic (``LabelSet.topics``)."""

    labelset: LabelSet
    sample: Callable[[int, np.random.Generator], np.ndarray]
    render: Callable[[np.ndarray, np.random.Generator, float, int, int], ClipScene]

    def topic_order(self) -> list[str]:
        """The features in qrels order: by feature number where the label set numbers them, else class order."""
        numbers = self.labelset.feature_numbers
        return sorted(self.labelset.features, key=numbers.get) if numbers else list(self.labelset.features)


def _sample_feature_clips(n_clips: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 37) labels of n LADI v1 clips: the flatter clip tail, each feature in >= CLIP_MIN_PER_FEATURE clips."""
    return sample_labels(n_clips, rng, feature_probabilities(*CLIP_FEATURE_PROBABILITY),
                         min_per_feature=CLIP_MIN_PER_FEATURE)


def _render_feature_clip(labels: np.ndarray, rng: np.random.Generator, duration_s: float, width: int,
                         height: int) -> ClipScene:
    """A LADI v1 clip showing the features set in labels (37,)."""
    return render_clip(labels[: schema.NUM_FEATURES], rng, duration_s, width, height)


FEATURE_CLIPS = ClipDesign(LADI_V1, _sample_feature_clips, _render_feature_clip)


@dataclass(frozen=True)
class ClipFiles:
    """The texts of clips.csv, clip_truth.csv and qrels.txt (layout in the dsdi.synth docstring)."""

    clips_csv: str
    truth_csv: str
    qrels: str


def build_clips(clips_dir: Path, n_clips: int, seed_key: list[int], clip_size: tuple[int, int],
                clip_seconds: tuple[float, float], design: ClipDesign = FEATURE_CLIPS) -> ClipFiles:
    """Render and encode n_clips clips into clips_dir (ShotN_MMM.mp4) and return their truth files' texts.
    Random draws come from default_rng(seed_key) (scenes, durations) and default_rng([*seed_key, i]) (clip i)."""
    rng = np.random.default_rng(seed_key)
    scenes = design.sample(n_clips, rng)
    durations = clip_seconds[0] + (clip_seconds[1] - clip_seconds[0]) * rng.random(n_clips) ** 3  # mostly short
    features, topics = design.labelset.features, design.labelset.topics()
    step = CLIP_FPS // SAMPLER_FPS
    clip_rows, truth_rows, sampled_any = [], [], np.zeros((n_clips, len(features)), bool)
    with progress_bar("clips") as bar:
        task = bar.add_task("synth clips", total=n_clips, info="")
        for i in range(n_clips):
            clip = design.render(scenes[i], np.random.default_rng([*seed_key, i]), float(durations[i]), *clip_size)
            shot = shot_id(i)
            path = clips_dir / f"{shot}.mp4"
            encode_clip(clip, path)
            n_frames = len(clip.offsets)
            clip_rows.append((shot, f"clips/{path.name}", n_frames / CLIP_FPS, n_frames, CLIP_FPS, *clip_size))
            for j, name in enumerate(features):
                for first, end in visible_runs(clip.visible[:, j]):
                    sampled = bool(-(-first // step) * step < end)  # a sampled frame (t = 0, 0.1, ...) in the run
                    sampled_any[i, j] |= sampled
                    truth_rows.append((shot, name, topics[name], first / CLIP_FPS, end / CLIP_FPS, end - first,
                                       int(sampled)))
            bar.update(task, advance=1)
    csv_options = {"index": False, "float_format": "%.4f"}
    clips_table = pd.DataFrame(clip_rows, columns=["shot_id", "clip_path", "duration_s", "frames", "fps", "width",
                                                   "height"])
    topic_column = "fnum" if design.labelset.feature_numbers else "topic"
    truth = pd.DataFrame(truth_rows, columns=["shot_id", "feature", topic_column, "start_s", "end_s", "frames",
                                              "sampled"])
    qrels = "".join(f"{topics[name]} 0 {shot_id(i)} {int(sampled_any[i, features.index(name)])}\n"
                    for name in design.topic_order() for i in range(n_clips))
    return ClipFiles(clips_table.to_csv(**csv_options), truth.to_csv(**csv_options), qrels)
