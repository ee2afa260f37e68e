"""``dsdi export``: a model (a dsdi checkpoint, a Hugging Face image-classification folder or cached hub name:
``dsdi.models.classifier``) to an ONNX model for ONNX Runtime (``dsdi.models.ort``), written where rank looks for it
(``export_location``) with a sidecar naming the model content it came from.

A checkpoint's export goes to its run's ``export/`` folder (``dsdi.train.run_folder.export_file``); a Hugging Face
model's to the export cache (``export_cache``), since the hub cache and a model folder may be read-only.

fp32: checked against PyTorch on sample inputs and refused above a tolerance. int8: static quantisation calibrated
on ``--images`` or on training images of the run (its config.toml's labels and images, the training split);
dynamic for a checkpoint outside a run without ``--images``; a Hugging Face model needs ``--images``. Its cost is
measured on the run's hold-out: the mAP of the checkpoint's stored hold-out sigmoids against the int8 model's on the
same images (``dsdi.train.metrics``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsdi.errors import InputError
from dsdi.models.classifier import (
    Classifier,
    classifier_digest,
    classifier_path,
    is_hf_folder,
    is_hub_name,
    load_classifier,
)
from dsdi.models.ort import (
    EXPORT_TOLERANCE,
    OPSET,
    ExportInfo,
    OrtModel,
    export_onnx,
    logit_difference,
    quantise_int8,
    read_info,
    sample_inputs,
    write_info,
)
from dsdi.models.preprocess import Preprocessing
from dsdi.train.config import TrainConfig
from dsdi.train.data import DECODE_ERRORS, load_image, resolve_image_path
from dsdi.train.metrics import per_class_average_precision
from dsdi.train.predictions import read_predictions, read_targets
from dsdi.train.run_folder import RunFolder, export_file, model_checkpoint
from dsdi.train.splits import split_labels

CALIBRATION_IMAGES = 200
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXPORT_CACHE_VARIABLE = "DSDI_EXPORT_CACHE"
_BATCH = 16  # hold-out images per forward pass


@dataclass(frozen=True)
class HoldoutCost:
    """mAP on the run's hold-out images (those of its stored predictions that could be read): the checkpoint's
    stored sigmoids (PyTorch) and the exported model's."""

    images: int
    torch_map: float
    exported_map: float


@dataclass(frozen=True)
class Export:
    """An exported model: its file, its sidecar, whether it was already current, and (int8 export) its hold-out
    cost."""

    path: Path
    info: ExportInfo
    reused: bool = False
    holdout: HoldoutCost | None = None


def model_to_export(ref: str | Path) -> Path:
    """The model ``dsdi export`` names: a Hugging Face folder or hub name as given; a run folder's checkpoint
    (best.pt, else last.pt) or a checkpoint file (``model_checkpoint``)."""
    if is_hub_name(ref) or is_hf_folder(Path(ref)):
        return Path(ref)
    return model_checkpoint(ref)


def export_cache() -> Path:
    """The folder of Hugging Face models' exports: ``$DSDI_EXPORT_CACHE``, else ``~/.cache/dsdi/exports``."""
    return Path(os.environ.get(EXPORT_CACHE_VARIABLE) or Path.home() / ".cache" / "dsdi" / "exports")


def export_location(model: Path, digest: str, precision: str) -> Path:
    """Where rank looks for ``model``'s export at ``precision``: a checkpoint file's ``export_file``; for a Hugging
    Face folder or hub name of content ``digest`` (``classifier_digest``) ``<export_cache>/<digest[:16]>.<precision>
    .onnx``."""
    if Path(model).is_file():
        return export_file(model, precision)
    return export_cache() / f"{digest[:16]}.{precision}.onnx"


def current_export(model: Path, precision: str, digest: str | None = None) -> Export | None:
    """``model``'s export at ``precision`` when it exists and was made from this model's content (``digest``:
    its ``classifier_digest``, computed when not given)."""
    digest = digest or classifier_digest(classifier_path(model))
    path = export_location(model, digest, precision)
    info = read_info(path)
    if info is None or info.checkpoint_sha256 != digest or info.precision != precision:
        return None
    return Export(path, info, reused=True)


def export_model(model: str | Path, precision: str = "fp32", *, images: Path | None = None,
                 calibration_images: int = CALIBRATION_IMAGES, tolerance: float = EXPORT_TOLERANCE,
                 out: Path | None = None) -> Export:
    """Export ``model`` (a .pt file, a Hugging Face folder or cached hub name) at ``precision`` (fp32 | int8) to
    ``out`` (default ``export_location``, where rank looks for it).

    fp32: InputError when the architecture does not export, or when ONNX Runtime's logits differ from PyTorch's by
    more than ``tolerance`` (times PyTorch's largest |logit| when that is above 1) on sample inputs (the file is
    removed). int8: from the fp32 export (made or re-made first when not current), calibrated on
    ``calibration_images`` images of ``images`` (a folder) or of the run's training split (InputError for a
    Hugging Face model without ``images``); ``holdout`` is filled when the run stored hold-out predictions for
    this checkpoint."""
    model = Path(model)
    classifier = load_classifier(model)
    digest, preprocessing = classifier.digest, classifier.preprocessing
    if precision == "int8" and images is None and not classifier.path.is_file():
        raise InputError(f"{model}: an int8 export of a Hugging Face model needs --images DIR (images like those it "
                         "will score, to calibrate on); it has no training run to take them from")
    fp32 = current_export(model, "fp32", digest) if precision == "int8" else None
    if fp32 is None:
        fp32_path = out if precision == "fp32" and out is not None else export_location(model, digest, "fp32")
        fp32 = _export_fp32(model, fp32_path, classifier, tolerance)
    if precision == "fp32":
        return fp32
    run = RunFolder(classifier.path.parent)
    has_run = classifier.path.is_file() and run.config_toml.is_file()
    config = TrainConfig.from_toml(run.config_toml) if has_run else None
    calibration, source = calibration_set(images, config, preprocessing, calibration_images)
    path = out or export_location(model, digest, "int8")
    quantise_int8(fp32.path, path, calibration)
    exported = OrtModel(path)
    quantisation = f"static: {len(calibration)} images of {source}" if calibration is not None else "dynamic"
    diff, scale = logit_difference(classifier.module, exported, sample_inputs(preprocessing))
    info = ExportInfo(digest, classifier.name, list(classifier.labelset.class_names), preprocessing, "int8", diff,
                      scale, quantisation, _ort_version(), classifier.labelset.to_dict())
    write_info(path, info)
    holdout = holdout_cost(run, model.stem, config, exported, preprocessing) if config is not None else None
    return Export(path, info, holdout=holdout)


def _export_fp32(model: Path, path: Path, classifier: Classifier, tolerance: float) -> Export:
    preprocessing, labelset = classifier.preprocessing, classifier.labelset
    try:
        export_onnx(classifier.module, preprocessing, path)
    except RuntimeError as error:  # torch.onnx.errors.OnnxExporterError included
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise InputError(f"{model}: its architecture {classifier.name} does not export to ONNX at opset {OPSET} "
                         f"({reason}); rank it with --engine torch") from None
    diff, scale = logit_difference(classifier.module, OrtModel(path), sample_inputs(preprocessing))
    if not diff <= tolerance * max(1.0, scale):  # NaN too
        path.unlink(missing_ok=True)
        raise InputError(f"{model}: its ONNX model's logits differ from PyTorch's by {diff:.3g} on sample "
                         f"inputs (largest |logit| {scale:.3g}; more than --tolerance {tolerance:g}); rank it with "
                         "--engine torch")
    info = ExportInfo(classifier.digest, classifier.name, list(labelset.class_names), preprocessing, "fp32", diff,
                      scale, "", _ort_version(), labelset.to_dict())
    write_info(path, info)
    return Export(path, info)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _load(path: Path, preprocessing: Preprocessing) -> torch.Tensor | None:
    """float32 (3, S, S) model input of an image file, as training's validation images; None if unreadable."""
    try:
        return load_image(path, preprocessing.img_size, preprocessing.mean, preprocessing.std)
    except DECODE_ERRORS:
        return None


def calibration_set(images: Path | None, config: TrainConfig | None, preprocessing: Preprocessing,
                    count: int) -> tuple[np.ndarray | None, str]:
    """(float32 (N, 3, S, S) model inputs, where they came from): ``count`` image files of the folder ``images``
    spread evenly over its sorted files, else ``count`` of the run's training split (seed 0); (None, "") with
    neither. InputError when the folder or the run's labels hold no readable image."""
    if images is not None:
        files = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"--images {images}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
        chosen, source = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)], images
    elif config is not None:
        if not Path(config.labels).is_file():
            raise InputError(f"{config.labels}: the run's labels file is not here; pass --images DIR (training "
                             "images to calibrate int8 on)")
        train_ids = split_labels(config)[0]["image_id"].astype(str).tolist()
        picked = np.random.default_rng(0).permutation(len(train_ids))[:count]
        chosen, source = [resolve_image_path(train_ids[i], config.images) for i in sorted(picked)], config.images
    else:
        return None, ""
    loaded = [tensor for tensor in (_load(path, preprocessing) for path in chosen) if tensor is not None]
    if not loaded:
        raise InputError(f"{source}: none of the {len(chosen)} calibration images could be read; pass --images DIR")
    return torch.stack(loaded).numpy(), str(source)


def holdout_cost(run: RunFolder, stem: str, config: TrainConfig, model: OrtModel,
                 preprocessing: Preprocessing) -> HoldoutCost | None:
    """The hold-out mAP of the checkpoint's stored sigmoids and of ``model`` on the same (readable) images; None
    when the run stored no hold-out predictions for ``stem`` (or its images are not here)."""
    try:
        stored, targets = read_predictions(run.path, stem, "holdout"), read_targets(run.path, "holdout")
    except InputError:
        return None
    ids, scores = [], []
    image_ids = [image_id for image_id in stored.index if image_id in targets.index]
    for start in range(0, len(image_ids), _BATCH):
        loaded = ((i, _load(resolve_image_path(i, config.images), preprocessing))
                  for i in image_ids[start:start + _BATCH])
        batch = [(i, tensor) for i, tensor in loaded if tensor is not None]
        if batch:
            ids += [i for i, _ in batch]
            scores.append(torch.sigmoid(model(torch.stack([t for _, t in batch])).double()).numpy())
    if not ids:
        return None
    truth = targets.loc[ids].to_numpy()
    return HoldoutCost(len(ids), per_class_average_precision(truth, stored.loc[ids].to_numpy())[1],
                       per_class_average_precision(truth, np.concatenate(scores))[1])

