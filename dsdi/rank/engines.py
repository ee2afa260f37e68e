"""The engine that runs a model for ``dsdi rank --engine``: PyTorch (the model's module on the rank device: a dsdi
checkpoint or a Hugging Face classifier, ``dsdi.models.classifier``) or ONNX Runtime on the CPU (the model's ONNX
export at ``--precision``: a checkpoint's in its ``export/`` folder, a Hugging Face model's in the export cache; made
on first use: ``dsdi.train.export``).

Scores of an engine other than PyTorch are stored under model keys of their own (``key_suffix``): '+ort' for ONNX
Runtime fp32, '+ort-int8-<first 8 hex digits of the int8 model's SHA-256>' for int8 (its calibration images shape
it); PyTorch's keys stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsdi.errors import InputError
from dsdi.files import file_sha256
from dsdi.labels.labelset import LabelSet
from dsdi.models.classifier import classifier_digest, classifier_path, load_classifier
from dsdi.models.ort import OrtModel
from dsdi.models.preprocess import Preprocessing
from dsdi.progress import stderr_console
from dsdi.rank.models import model_file
from dsdi.train.export import current_export, export_model


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score: ``run`` maps float32 (N, 3, S, S) normalised images on the rank device to (N, C)
    logits of ``labelset``'s C classes; ``key_suffix`` ends its index key."""

    run: Callable[[torch.Tensor], torch.Tensor]
    backbone: str
    preprocessing: Preprocessing
    key_suffix: str
    labelset: LabelSet


def load_for_engine(checkpoint: Path, digest: str, engine: str, precision: str, device: torch.device) -> LoadedModel:
    """The model ``checkpoint`` names (a checkpoint file, a Hugging Face folder or hub name: ``load_classifier``) on
    ``engine`` (torch | onnxruntime) at ``precision``; ``digest``: its content hash (``classifier_digest``).
    ONNX Runtime runs the model's current export (``current_export``), exporting it first when there is none."""
    if engine == "torch":
        classifier = load_classifier(checkpoint, device)
        if device.type == "cuda":  # fp16 tensor-core convolutions run fastest on NHWC
            classifier.module.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # full batches: one shape, tuned once
        return LoadedModel(classifier.module, classifier.name, classifier.preprocessing, "", classifier.labelset)
    exported = current_export(checkpoint, precision, digest) or _export_now(checkpoint, precision)
    suffix = "+ort" if precision == "fp32" else f"+ort-{precision}-{file_sha256(exported.path)[:8]}"
    labelset = LabelSet.from_dict(exported.info.labelset, f"{exported.path}'s sidecar")
    session = OrtModel(exported.path, threads=1)  # rank runs passes side by side, one per core (ForwardPasses)
    return LoadedModel(session, exported.info.backbone, exported.info.preprocessing, suffix, labelset)


def _export_now(checkpoint: Path, precision: str):
    """Export on first use, saying so on stderr; an int8 export needs the run's training images (a Hugging Face
    model has none: ``dsdi export --images`` makes its int8 export)."""
    if precision != "fp32" and not Path(checkpoint).is_file():
        raise InputError(f"--models {checkpoint}: no {precision} export of this Hugging Face model yet; make it "
                         f"with dsdi export {checkpoint} --precision {precision} --images DIR (images to calibrate "
                         "on)")
    stderr_console.print(f"exporting {checkpoint} for ONNX Runtime ({precision}): first use", markup=False,
                         highlight=False, soft_wrap=True)
    try:
        return export_model(checkpoint, precision)
    except InputError as error:
        if precision == "fp32":
            raise
        raise InputError(f"--models {checkpoint}: no int8 export yet, and making one failed ({error}); make it "
                         f"with dsdi export {checkpoint} --precision int8 --images DIR") from None


def choose_embed_model(named: Path | None, models: Sequence[Any], weights: Sequence[float]) -> Any | None:
    """Of the loaded ``models`` (each with ``sha256``, ``module`` and ``checkpoint``), the one whose pooled features
    make the clip embeddings: the one ``named`` (--embed-model, as --models takes them) by content, else the first
    of the highest weight; None when that one runs on ONNX Runtime (it gives no features) and none was named.
    InputError for a named model not among them, or on ONNX Runtime."""
    if named is None:
        chosen = models[int(np.argmax(weights))]
        return chosen if isinstance(chosen.module, torch.nn.Module) else None
    digest = classifier_digest(classifier_path(model_file(named)))
    chosen = next((model for model in models if model.sha256 == digest), None)
    if chosen is None:
        raise InputError(f"--embed-model {named}: not among the --models ranked "
                         f"({', '.join(str(m.checkpoint) for m in models)}); name one of them")
    if not isinstance(chosen.module, torch.nn.Module):
        raise InputError(f"--embed-model {named}: embeddings need --engine torch (ONNX Runtime gives the logits "
                         "only)")
    return chosen
