"""Every model dsdi can score, loaded one way: ``load_classifier(ref) -> Classifier``.

``ref`` is a dsdi checkpoint file (``dsdi.models.checkpoint``), a Hugging Face image-classification folder
(``config.json`` with ``id2label``, the weights, ``preprocessor_config.json``: the published LADI v2 classifiers) or
a Hugging Face hub name (``MITLL/LADI-v2-classifier-small``), found in the user's Hugging Face cache only: dsdi never
downloads. A Hugging Face model runs through transformers' ``AutoModelForImageClassification`` and its outputs are
read as independent sigmoids (multi-label, as the LADI v2 classifiers are trained); its label set is the built-in
one with its ``id2label`` classes in order (``ladi-v2a`` for the published ones) or one named after the model; its
input is made as its image processor says (``hf_preprocessing``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dsdi.errors import InputError
from dsdi.files import file_sha256
from dsdi.labels.labelset import LabelSet, labelset_for_outputs
from dsdi.models.checkpoint import load_model
from dsdi.models.preprocess import Preprocessing

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""``owner/name``: a Hugging Face hub model id (taken as one only where no such path exists)."""
HF_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")
HF_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's resampling numbers, as image processors store them


@dataclass(frozen=True)
class Classifier:
    """A model ready to score: ``module`` maps float32 (N, 3, S, S) images made by ``preprocessing`` to (N, C)
    logits of ``labelset``'s C classes (eval mode; the caller applies the sigmoid). ``name``: the backbone or
    Hugging Face architecture; ``path``: the checkpoint file or the model folder (a hub name's cached snapshot);
    ``digest``: SHA-256 hex of its content (the checkpoint file; a Hugging Face folder's config, preprocessor
    config and weight files), which keys its scores in an index."""

    module: nn.Module
    preprocessing: Preprocessing
    labelset: LabelSet
    name: str
    path: Path
    digest: str


class _Logits(nn.Module):
    """A transformers image classifier as a plain module: pixel_values (N, 3, S, S) -> logits (N, C)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def is_hf_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Hugging Face ``config.json``."""
    return path.is_dir() and (path / "config.json").is_file()


def is_hub_name(ref: str | Path) -> bool:
    """Whether ``ref`` names a hub model (``owner/name``) rather than a path: no such path exists, nor a local folder
    ``owner`` (``runs/A`` with a ``runs/`` folder here is a mistyped run folder, not a hub name)."""
    return bool(HUB_NAME.match(str(ref))) and not Path(ref).exists() and not Path(ref).parent.is_dir()


def classifier_digest(path: Path) -> str:
    """SHA-256 hex of a classifier's content: a checkpoint file's own; for a Hugging Face folder one over the
    names and SHA-256s of config.json, preprocessor_config.json and its weight files (HF_WEIGHT_FILES)."""
    if path.is_file():
        return file_sha256(path)
    files = sorted({file for pattern in HF_WEIGHT_FILES for file in path.glob(pattern)})
    hasher = hashlib.sha256()
    configs = [file for file in (path / "config.json", path / "preprocessor_config.json") if file.is_file()]
    for file in [*configs, *files]:  # a missing config: loading the folder says so
        hasher.update(f"{file.name}\0{file_sha256(file)}\n".encode())
    return hasher.hexdigest()


def load_classifier(ref: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """The classifier ``ref`` names (a checkpoint file, a Hugging Face folder or a cached hub name), in eval mode on
    ``device``. InputError, one line naming ``ref``, for anything else, a hub name not in the cache (with the
    command that downloads it), or a folder that is no usable image classifier."""
    path = classifier_path(ref)
    if path.is_file():
        module, info = load_model(path, device)
        return Classifier(module, info.preprocessing, info.labelset, info.backbone, path, file_sha256(path))
    return _load_hf_folder(path, str(ref), torch.device(device))


def classifier_path(ref: str | Path) -> Path:
    """The file or folder ``ref`` names: a checkpoint file, a Hugging Face folder, or a hub name's snapshot folder
    in the cache (``cached_hub_folder``); InputError naming ``ref`` otherwise."""
    path = Path(ref)
    if path.is_file() or is_hf_folder(path):
        return path
    if is_hub_name(ref):
        return cached_hub_folder(str(ref))
    if not path.is_dir():
        raise InputError(f"{ref}: no such checkpoint file, model folder or Hugging Face hub name (owner/name)")
    raise InputError(f"{ref}: no config.json in this folder; pass a dsdi checkpoint (.pt) or a Hugging Face "
                     "image-classification model folder")


def cached_hub_folder(name: str) -> Path:
    """The snapshot folder of hub model ``name`` in the Hugging Face cache (never downloading); InputError saying
    how to fetch it when it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise InputError(f"{name}: not in the Hugging Face cache and dsdi never downloads; on a connected machine "
                         f"run huggingface-cli download {name} (then copy its cache folder here), or pass the model "
                         "folder") from None


def _load_hf_folder(path: Path, ref: str, device: torch.device) -> Classifier:
    """A Hugging Face image-classification folder as a Classifier (float32, eval mode, on device)."""
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar on stderr, once per model
    config = _read_json(path / "config.json", ref)
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise InputError(f"{ref}: config.json has no id2label; dsdi needs the model to name its outputs (an "
                         "image-classification model saved by transformers)")
    try:
        class_names = [str(id2label[str(k)]) for k in range(len(id2label))]
    except KeyError:
        raise InputError(f"{ref}: config.json's id2label keys are not 0..{len(id2label) - 1}") from None
    preprocessing = hf_preprocessing(path, ref)
    try:
        model = AutoModelForImageClassification.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise InputError(f"{ref}: transformers cannot load it as an image classifier ({reason})") from None
    architecture = (config.get("architectures") or [type(model).__name__])[0]
    labelset = labelset_for_outputs(class_names, Path(ref).name)
    module = _Logits(model).to(device).eval()
    return Classifier(module, preprocessing, labelset, architecture, path, classifier_digest(path))


def _read_json(path: Path, ref: str) -> dict:
    """A JSON object file of a model folder; InputError naming it when missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{ref}: no {path.name} in the model folder; save the model's image processor there "
                         "(image_processor.save_pretrained(FOLDER))") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{ref}: cannot read {path.name} ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{ref}: {path.name} is not a JSON object")
    return data


def hf_preprocessing(path: Path, ref: str | None = None) -> Preprocessing:
    """The model input a Hugging Face folder's image processor (``preprocessor_config.json``, with its class's
    defaults for what it leaves out) makes, as a Preprocessing: ``size`` {height, width} (equal) is a square
    resize, {shortest_edge} a shortest-edge resize that needs a square centre crop (``crop_size``); resample 2
    (bilinear) or 3 (bicubic); rescale by 1/255; mean/std when ``do_normalize`` (else 0 and 1). InputError naming
    the setting for anything else."""
    from transformers import AutoImageProcessor

    ref = ref or str(path)
    _read_json(path / "preprocessor_config.json", ref)
    try:
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{ref}: transformers cannot read its preprocessor_config.json ({error})") from None
    setting = {key: getattr(processor, key, None) for key in (
        "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
        "do_normalize", "image_mean", "image_std")}
    preprocessing = _preprocessing_of(setting, f"{ref}: preprocessor_config.json")
    problem = preprocessing.problem()
    if problem:
        raise InputError(f"{ref}: preprocessor_config.json: {problem}")
    return preprocessing


def _sizes(size: object) -> dict[str, int]:
    """The set entries of an image processor's size (a SizeDict or a dict)."""
    items = size.items() if isinstance(size, dict) else vars(size).items() if size is not None else ()
    return {key: value for key, value in items if value is not None}


def _preprocessing_of(setting: dict, source: str) -> Preprocessing:
    """A Preprocessing from an image processor's settings (``hf_preprocessing``); InputError naming ``source``."""
    size, crop = _sizes(setting["size"]), _sizes(setting["crop_size"]) if setting["do_center_crop"] else {}
    if not setting["do_resize"]:
        raise InputError(f"{source}: do_resize is false; dsdi needs a fixed-size model input")
    if setting["resample"] not in HF_RESAMPLE:
        raise InputError(f"{source}: resample {setting['resample']!r} is not 2 (bilinear) or 3 (bicubic)")
    if not setting["do_rescale"] or abs(float(setting["rescale_factor"]) - 1 / 255) > 1e-9:
        raise InputError(f"{source}: dsdi needs do_rescale with rescale_factor 1/255")
    if crop and (set(crop) != {"height", "width"} or crop["height"] != crop["width"]):
        raise InputError(f"{source}: crop_size {crop} is not a square height = width")
    if set(size) == {"shortest_edge"} and crop:
        mode, target = "shortest_edge", int(size["shortest_edge"])
    elif set(size) == {"height", "width"} and size["height"] == size["width"]:
        mode, target = "square", int(size["height"])
    else:
        raise InputError(f"{source}: size {size} is neither a square height = width nor a shortest_edge with a "
                         "square centre crop")
    mean, std = (setting["image_mean"], setting["image_std"]) if setting["do_normalize"] else (0.0, 1.0)
    mean, std = ([float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v] for v in (mean, std))
    return Preprocessing(int(crop.get("height", target)), tuple(mean), tuple(std),
                         HF_RESAMPLE[setting["resample"]], mode, target)
