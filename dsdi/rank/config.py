"""``RankConfig``: every option of ``dsdi rank``, declared once (the command's flags are made from it).

:meth:`RankConfig.resolved` checks every value and reads no file; ``dsdi.rank.models.resolve_models`` fills the
defaults that need files (the models found in ``runs_dir`` or named by an ``--ensemble`` file, equal model weights,
``submissions/<run_id>``). ``dsdi.rank.scoring.rank(RankConfig(...))`` calls both, so from Python it does exactly
what the command does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dsdi import options
from dsdi.errors import InputError
from dsdi.index.scores import AGGREGATIONS
from dsdi.models.ort import ENGINES, PRECISIONS
from dsdi.options import option
from dsdi.runtime import check_device_choice
from dsdi.trecvid.submission import TR_TYPES
from dsdi.video.decode import BACKENDS, CHUNK_FRAMES
from dsdi.workspace import RUNS_DIR, SUBMISSIONS_DIR

TTA_CHOICES = ("none", "flip")
MAX_TILES = 8  # tiles per side
MAX_TILE_OVERLAP = 0.9


def check_model_weights(weights: list[float], count: int) -> list[float]:
    """``weights`` unchanged if there is one non-negative weight per model and their sum is positive."""
    if len(weights) != count or min(weights, default=0) < 0 or sum(weights) <= 0:
        raise InputError(f"--model-weights {' --model-weights '.join(f'{w:g}' for w in weights)}: need {count} "
                         "non-negative weights (one per model), sum > 0")
    return weights


def parse_fuse_spec(text: str) -> tuple[Path, float]:
    """'submissions/other:0.5' -> (Path('submissions/other'), 0.5): another rank output and its weight."""
    folder, sep, weight = text.rpartition(":")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not sep or not folder or value <= 0:
        raise InputError(f"--fuse {text!r}: write OTHER_OUT_DIR:WEIGHT with WEIGHT > 0 (paper 2:1 -> OTHER:0.5)")
    return Path(folder), value


def parse_tiles(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'3x2' (or (3, 2)) -> (3, 2): rows x columns of tiles, each from 1 to MAX_TILES; 'none' or None -> None.
    InputError naming --tiles otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        parts = value.lower().split("x") if isinstance(value, str) else list(value)
        rows, cols = (int(str(part).strip()) for part in parts)
    except (TypeError, ValueError):  # not two whole numbers
        rows = cols = 0
    if not (1 <= rows <= MAX_TILES and 1 <= cols <= MAX_TILES):
        raise InputError(f"--tiles {value!r}: write ROWSxCOLS, whole numbers 1-{MAX_TILES}, e.g. 2x2 or 3x2")
    return rows, cols


@dataclasses.dataclass
class RankConfig:
    """Everything ``dsdi rank`` needs; see :meth:`resolved` for the defaults that depend on other options."""

    clips: Path | None = option(None, help="folder of shot clips (recursive; shot id = file stem)")
    shots: Path | None = option(None, help="master shot table CSV video,shot_id,start,end (seconds), "
                                           "instead of --clips")
    models: list[Path] = option([], help="run dirs, .pt files, Hugging Face classifier folders or cached hub "
                                         "names: --models runs/A --models MITLL/LADI-v2-classifier-small",
                                shown_default="every finished run in --runs-dir")
    ensemble: Path | None = option(None, help="ensemble file (runs/ensembles/NAME.toml): members, checkpoints, "
                                              "weights, agg, fuse; not with --models/--model-weights; "
                                              "--agg/--fuse/--run-id override the file's")
    model_weights: list[float] | None = option(None, help="one weight per model, in --models order: "
                                                          "--model-weights 2 --model-weights 1",
                                               shown_default="equal")
    fuse: list[tuple[Path, float]] = option([], help="OTHER_OUT_DIR:W mixes another rank output in: "
                                                     "(this + W*other)/(1+W); paper 2:1 -> :0.5",
                                            parse=parse_fuse_spec)
    embed_model: Path | None = option(None, help="the model of --models whose pooled features make each clip's "
                                                 "embedding (stored in the index, for dsdi search by example)",
                                      shown_default="the highest-weight model")
    labelset: str | None = option(None, help="label set of the ranking (a built-in name or a TOML file): its "
                                             "features are ranked; models of another label set join by class name "
                                             "when they have every ranked class",
                                  shown_default="the first model's")
    topk: int = option(1000, help="clips kept per feature (NIST: at most 1000)", minimum=1)
    fps: float = option(10.0, help="frames sampled per second of clip", above=0.0)
    agg: str | None = option(None, help="clip score per class over its frames", choices=AGGREGATIONS,
                             shown_default="max, or the --ensemble's")
    tta: str = option("none", choices=TTA_CHOICES,
                      help="test-time augmentation: flip = each frame (or tile) scored as the mean of its and its "
                           "horizontal mirror's sigmoids; scores stored under their own model key")
    tiles: tuple[int, int] | None = option(None, parse=parse_tiles, shown_default="none",
                                           help="RxC, e.g. 2x2: each frame scored whole and as R rows x C columns of "
                                                "overlapping tiles, each at the model's input size; per class the "
                                                "max; scores stored under their own model key")
    tile_overlap: float = option(0.25, minimum=0.0, help="with --tiles: the fraction of a tile shared with each "
                                                         f"neighbour, below {MAX_TILE_OVERLAP:g}")
    out: Path | None = option(None, help="output folder", shown_default=f"{SUBMISSIONS_DIR}/<run-id>")
    run_id: str | None = option(None, help="run name: OUT/<run-id>.xml and .trec (no whitespace)",
                                shown_default="dsdi_run, or the --ensemble's name")
    tr_type: str = option("L", help="L = trained on LADI only, O = other data too", choices=TR_TYPES)
    priority: int = option(1, help="submission priority", minimum=1)
    pid: str = option("dsdi", help="team id written into the XML")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    engine: str = option("torch", choices=ENGINES,
                         help="what runs the models: torch (PyTorch on --device; fp16 on a GPU) or onnxruntime (ONNX "
                              "Runtime on the CPU, about 1.2-2x PyTorch's speed there: each model's ONNX export, made "
                              "into RUN/export/ on first use, a Hugging Face model's into the export cache); scores "
                              "stored under their own model key")
    precision: str = option("fp32", choices=PRECISIONS,
                            help="with --engine onnxruntime: fp32, or int8 (the export quantised; calibrated on the "
                                 "run's training images, or see dsdi export --images)")
    batch_size: int = option(64, minimum=1, help="images per forward pass (packed across clips); a frame is 1 "
                                                 "image, with --tta flip 2, with --tiles RxC 1+R*C (times 2 with "
                                                 "flip); PyTorch on the CPU takes at most 16 at a time")
    runs_dir: Path = option(RUNS_DIR, help="where the default models and an --ensemble's members are looked for")
    decode_threads: int | None = option(None, help="clip decoding threads", minimum=1,
                                        shown_default="CPU cores per process, at most 8")
    chunk_frames: int = option(CHUNK_FRAMES, minimum=1,
                               help="sampled frames a decoding thread holds at a time (memory per thread); "
                                    "with --tiles RxC divided by 1+R*C")
    decoder: str = option("pyav", choices=BACKENDS,
                          help="video decoder: pyav decodes frame-threaded and converts each sampled frame to RGB at "
                               "the model's input size in one exact BT.601 pass; decord converts at the decoded size "
                               "(the model input is resized in torch), and hands a file it cannot decode, or one "
                               "with a display rotation, to pyav")

    def updated(self, overrides: dict, source: str = "overrides") -> RankConfig:
        """A copy with ``overrides`` applied (keys must be fields; values of the field's type)."""
        return options.updated(self, overrides, source)

    def resolved(self) -> RankConfig:
        """A checked copy (``tiles`` parsed); InputError names the flag of a value no run can use, and refuses
        ``models`` or ``model_weights`` beside ``ensemble`` (an ensemble file names both). Reads no file: the
        defaults that need files are ``dsdi.rank.models.resolve_models``'s."""
        options.check_values(self)
        check_device_choice(self.device)
        if self.precision != "fp32" and self.engine != "onnxruntime":
            raise InputError(f"--precision {self.precision} needs --engine onnxruntime (PyTorch ranks in fp32 on the "
                             "CPU, fp16 on a GPU)")
        if self.engine == "onnxruntime" and self.device.startswith("cuda"):
            raise InputError(f"--engine onnxruntime runs on the CPU: drop --device {self.device}, or rank on the "
                             "GPU with --engine torch")
        if self.tile_overlap >= MAX_TILE_OVERLAP:
            raise InputError(f"--tile-overlap must be below {MAX_TILE_OVERLAP:g}, got {self.tile_overlap!r}")
        if self.clips is None and self.shots is None:
            raise InputError("give --clips DIR (a folder of shot clips) or --shots TABLE (a master shot table)")
        if self.ensemble is not None and (self.models or self.model_weights is not None):
            raise InputError(f"--ensemble {self.ensemble} names the models and their weights: drop --models and "
                             "--model-weights (or edit the ensemble file)")
        if not self.pid.strip() or (self.run_id is not None and self.run_id.split() != [self.run_id]):
            raise InputError("--pid must not be empty and --run-id must be one word without whitespace")
        if self.models and self.model_weights is not None:
            check_model_weights(self.model_weights, len(self.models))
        return dataclasses.replace(self, tiles=parse_tiles(self.tiles))
