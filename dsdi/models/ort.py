"""A classifier (a dsdi checkpoint's or a Hugging Face model's logits module) as an ONNX model run by ONNX Runtime's
CPU provider: export, check, int8 quantisation, inference.

Exported models take float32 (N, 3, S, S) normalised images (input ``images``, N free) and give float32 (N, C)
logits (output ``logits``), as the PyTorch module does. Beside each model ``<file>.json`` (``ExportInfo``) records
what it was exported from (the checkpoint's SHA-256, a Hugging Face folder's content digest), its classes and
preprocessing, its precision and how far it was from PyTorch on the export's check. Where the files live is
``dsdi.train.export.export_location``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dsdi.errors import InputError
from dsdi.files import atomic_output, write_text_atomic
from dsdi.labels.labelset import LADI_V1
from dsdi.models.preprocess import Preprocessing

ENGINES = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "logits"
EXPORT_TOLERANCE = 1e-3  # largest logit difference of an fp32 export from PyTorch that export accepts (relative
# to the largest |logit| when that is above 1: an untrained HRNet's logits reach 5e7, where float32 rounding is 4)
CHECK_IMAGES = 4  # sample inputs of the export check


@dataclass(frozen=True)
class ExportInfo:
    """The sidecar of an exported model: checkpoint_sha256: the SHA-256 of the .pt it came from, or the content digest
    of the Hugging Face folder (``dsdi.models.classifier.classifier_digest``); backbone: the timm backbone or Hugging
    Face architecture; classes in output order and
    labelset, the label set (``LabelSet.to_dict``; a sidecar written before label sets were recorded: ladi-v1);
    preprocessing (side, mean, std, interpolation) its input needs; precision fp32 | int8; max_abs_diff: largest
    |logit difference| from PyTorch on the check's sample inputs (and logit_scale: PyTorch's largest |logit| there);
    quantisation: "" (fp32), "static: N images of
    SOURCE" or "dynamic"; onnxruntime: the version that wrote it."""

    checkpoint_sha256: str
    backbone: str
    classes: list[str]
    preprocessing: Preprocessing
    precision: str
    max_abs_diff: float
    logit_scale: float
    quantisation: str = ""
    onnxruntime: str = ""
    labelset: dict = dataclasses.field(default_factory=LADI_V1.to_dict)


def sidecar(model_path: Path) -> Path:
    """``best.onnx`` -> ``best.onnx.json``."""
    return model_path.with_name(model_path.name + ".json")


def write_info(model_path: Path, info: ExportInfo) -> None:
    write_text_atomic(sidecar(model_path), json.dumps(dataclasses.asdict(info), indent=2) + "\n")


def read_info(model_path: Path) -> ExportInfo | None:
    """The sidecar of ``model_path``; None when the model or its sidecar is missing or unreadable (export again)."""
    try:
        values = json.loads(sidecar(model_path).read_text(encoding="utf-8"))
        values["preprocessing"] = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in values["preprocessing"].items()})
        return ExportInfo(**values) if model_path.is_file() else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def sample_inputs(preprocessing: Preprocessing, count: int = CHECK_IMAGES, seed: int = 0) -> torch.Tensor:
    """float32 (count, 3, S, S): uniform [0, 1] pixels normalised with the model's mean/std (its input range)."""
    generator = torch.Generator().manual_seed(seed)
    side = preprocessing.img_size
    return preprocessing.normalise(torch.rand(count, 3, side, side, generator=generator))


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 to the null device inside: torch.onnx's TorchScript exporter turns its C++ log on (to
    stdout, past sys.stdout) whatever ``verbose`` says, and when an operator does not export it prints the whole
    graph there before raising."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def export_onnx(module: nn.Module, preprocessing: Preprocessing, path: Path) -> None:
    """Write ``module`` (on the CPU, eval mode) as an ONNX model (opset OPSET, TorchScript exporter, batch axis
    free) to ``path`` atomically. torch.onnx's errors (an operator without an ONNX form at OPSET:
    ``torch.onnx.errors.UnsupportedOperatorError``, a RuntimeError) pass through, with no file written."""
    with atomic_output(path) as tmp, warnings.catch_warnings(), torch.inference_mode(False), \
            native_stdout_silenced():
        warnings.simplefilter("ignore")  # the exporter's notes on the dynamo exporter and traced control flow
        torch.onnx.export(module, (sample_inputs(preprocessing, 2),), str(tmp), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def logit_difference(module: nn.Module, model: OrtModel, inputs: torch.Tensor) -> tuple[float, float]:
    """(largest |logit difference| between the PyTorch module and the ONNX model, PyTorch's largest |logit|) on
    ``inputs`` (N, 3, S, S)."""
    with torch.inference_mode():
        expected = module(inputs)
    return float((model(inputs) - expected).abs().max()), float(expected.abs().max())


class _Calibration:
    """ONNX Runtime's calibration data reader over float32 (N, 3, S, S) images, 8 at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter(np.array_split(images, max(1, len(images) // 8)))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantise_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray | None) -> None:
    """Write the int8 version of the fp32 ONNX model at ``fp32_path`` to ``out_path``: static (QDQ, int8 weights
    per channel, uint8 activations with ranges from ``calibration`` float32 (N, 3, S, S) normalised images), or,
    without calibration images, dynamic (weights int8, activation ranges computed per batch)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_output(out_path) as tmp:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        logging.disable(logging.WARNING)  # the quantiser's root-logger notes (IBN's instance norms: per-tensor)
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            if calibration is None:
                quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            else:
                quantize_static(str(prepared), str(tmp), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
        finally:
            logging.disable(logging.NOTSET)
            prepared.unlink(missing_ok=True)


def ort_threads() -> int:
    """ONNX Runtime's intra-op threads: torch's (OMP_NUM_THREADS, else the CPU cores)."""
    return max(1, torch.get_num_threads())


class OrtModel:
    """An exported model in an ONNX Runtime CPU session, called like the PyTorch module: float32 (N, 3, S, S)
    normalised images (a CPU tensor) -> float32 (N, C) logits (a CPU tensor).

    Its ``threads`` intra-op threads (default ``ort_threads``) sleep when idle unless ``spinning``: next to rank's
    decoding threads a spinning pool takes the core a decoder needs (see docs/benchmarks.md)."""

    def __init__(self, path: Path, threads: int | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or ort_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # errors only: not its notes on unused initialisers
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            reason = str(error).splitlines()[0][:160]
            raise InputError(f"{path}: ONNX Runtime cannot load it ({reason}); delete it and export again "
                             "(dsdi export)") from None
        self.path = Path(path)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().cpu().contiguous().numpy().astype(np.float32, copy=False)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
