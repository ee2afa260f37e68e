"""`dsdi export` and `dsdi rank --engine onnxruntime` of Hugging Face image classifiers through the real CLI.

Tiny random BiT and SwinV2 folders (tests/test_hf_models.py) are exported into the export cache; the references are
transformers' own model on its image processor's pixel_values run by onnxruntime itself, and `dsdi rank --engine
torch` on real H.264 clips. DINOv2 with registers (bicubic antialiased resize of its position embeddings: no ONNX
operator at opset 17) is the architecture that does not export.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from PIL import Image
from test_hf_models import ID2LABEL, LADI_V2A, make_pan_clip, real_jpeg, save_bit, save_swin, swin_processor

from dsdi.files import file_sha256
from dsdi.models.classifier import classifier_digest
from dsdi.models.ort import EXPORT_TOLERANCE
from dsdi.rank.scoring import model_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WIDE = {"env": {"COLUMNS": "400"}, "terminal_width": 400}  # no line wrapping inside the paths said
INT8_TOLERANCE = 0.05  # largest clip score difference of the int8 BiT from PyTorch (measured: 0.034)
ARCHITECTURES = {"bit": "BitForImageClassification", "swin": "Swinv2ForImageClassification"}
INPUTS = {"bit": {"img_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "resize_mode": "shortest_edge", "resize_size": 64},
          "swin": {"img_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                   "interpolation": "bicubic", "resize_mode": "square", "resize_size": 64}}


def save_dinov2_with_registers(folder: Path) -> Path:
    """A tiny random Dinov2WithRegistersForImageClassification (64 px, 16 px patches) and its processor."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(image_size=64, patch_size=16, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, num_register_tokens=2,
                                       num_labels=12, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    Dinov2WithRegistersForImageClassification(config).save_pretrained(folder)
    swin_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, ffmpeg_exe):
    """Two panning clips, eight calibration JPEGs, and the model folders (the BiT with dynamic 'same' padding, as
    BiT's published weights use)."""
    root = tmp_path_factory.mktemp("hf-export")
    clips, images = root / "clips", root / "images"
    clips.mkdir()
    images.mkdir()
    for seed, (shot, seconds) in enumerate((("Shot1_001", 0.5), ("Shot1_002", 0.3))):
        make_pan_clip(ffmpeg_exe, clips / f"{shot}.mp4", seconds, seed)
    for k in range(8):
        real_jpeg(images / f"image{k}.jpg", (120 + 8 * k, 90), seed=10 + k)
    return {"clips": clips, "images": images, "swin": save_swin(root / "swin"),
            "bit": save_bit(root / "bit", global_padding="same", embedding_dynamic_padding=True),
            "dino": save_dinov2_with_registers(root / "dino")}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty export cache ($DSDI_EXPORT_CACHE) for the test."""
    monkeypatch.setenv("DSDI_EXPORT_CACHE", str(tmp_path / "exports"))
    return tmp_path / "exports"


def rank(cli, world, out: Path, *args) -> tuple[pd.DataFrame, str]:
    """(clip scores by shot id, what rank said)."""
    result = cli("rank", "--clips", world["clips"], "--out", out, "--device", "cpu", *args, **WIDE)
    return pd.read_csv(out / "clip_scores.csv").set_index("shot_id")[list(LADI_V2A.class_names)], cli.said(result)


def one_line_error(cli, *args) -> str:
    """The one-line error of a command that exits 2 (after rank's notice of an export on first use, if any)."""
    result = cli(*args, expect=2, **WIDE)
    lines = [line for line in result.output.strip().splitlines() if not line.endswith(": first use")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.mark.parametrize("name", ["bit", "swin"])
def test_export_writes_the_export_cache_and_matches_transformers(world, name, cache, cli):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = world[name]
    listed = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    said = cli.said(cli("export", folder, **WIDE))
    digest = classifier_digest(folder)
    path = cache / f"{digest[:16]}.fp32.onnx"
    assert f"-> {path} (fp32;" in said
    assert sorted(cache.iterdir()) == [path, cache / f"{path.name}.json"]
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == listed  # the folder is left as is
    info = json.loads((cache / f"{path.name}.json").read_text())
    assert info["checkpoint_sha256"] == digest and info["backbone"] == ARCHITECTURES[name]
    assert info["classes"] == list(LADI_V2A.class_names) and info["labelset"]["name"] == "ladi-v2a"
    assert info["preprocessing"] == INPUTS[name] and info["max_abs_diff"] <= EXPORT_TOLERANCE
    # the image processor's input of three real JPEGs (a batch size the export never saw) through transformers
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = processor(images=[Image.open(path) for path in sorted(world["images"].iterdir())[:3]],
                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: pixels.numpy()})[0]
    assert logits.shape == (3, 12) and np.abs(logits - expected).max() <= EXPORT_TOLERANCE


def hub_cache(folder: Path, root: Path, name: str) -> Path:
    """A Hugging Face hub cache holding ``folder`` as hub model ``name`` (models--OWNER--NAME/refs/main naming a
    snapshot folder, the cache's layout)."""
    repo = root / f"models--{name.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


@pytest.mark.parametrize("name", ["bit", "swin"])
def test_onnxruntime_ranks_a_hugging_face_model_like_torch(world, name, cache, tmp_path, cli, monkeypatch):
    torch_scores, _ = rank(cli, world, tmp_path / "torch", "--models", world[name])
    ort_scores, said = rank(cli, world, tmp_path / "ort", "--models", world[name], "--engine", "onnxruntime")
    assert f"exporting {world[name]} for ONNX Runtime (fp32): first use" in said
    digest = classifier_digest(world[name])
    assert (cache / f"{digest[:16]}.fp32.onnx").is_file()
    assert (torch_scores.iloc[0] - torch_scores.iloc[1]).abs().max() > 0.01  # the two clips score apart
    assert np.abs(ort_scores.to_numpy() - torch_scores.loc[ort_scores.index].to_numpy()).max() < 1e-4
    assert json.loads((tmp_path / "ort" / "run.json").read_text())["model_keys"] == [model_key(digest, 10.0) + "+ort"]
    # the same model as a cached hub name: its export is found by content, not made again
    from huggingface_hub import constants  # read at import: HF_HUB_CACHE set now would not be seen

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache(world[name], tmp_path / "hub", "owner/tiny")))
    hub_scores, said = rank(cli, world, tmp_path / "hub-ort", "--models", "owner/tiny", "--engine", "onnxruntime")
    assert "first use" not in said and hub_scores.equals(ort_scores)


def test_int8_export_calibrates_on_images_and_ranks(world, cache, tmp_path, cli):
    said = cli.said(cli("export", world["bit"], "--precision", "int8", "--images", world["images"], **WIDE))
    digest = classifier_digest(world["bit"])
    int8 = cache / f"{digest[:16]}.int8.onnx"
    assert f"-> {int8} (int8, static: 8 images of {world['images']};" in said
    assert (cache / f"{digest[:16]}.fp32.onnx").is_file()  # made first
    assert json.loads((cache / f"{int8.name}.json").read_text())["quantisation"].startswith("static: 8 images")
    torch_scores, _ = rank(cli, world, tmp_path / "torch", "--models", world["bit"])
    scores, said = rank(cli, world, tmp_path / "int8", "--models", world["bit"], "--engine", "onnxruntime",
                        "--precision", "int8")
    assert "first use" not in said
    keys = json.loads((tmp_path / "int8" / "run.json").read_text())["model_keys"]
    assert keys == [model_key(digest, 10.0) + f"+ort-int8-{file_sha256(int8)[:8]}"]
    assert np.abs(scores.to_numpy() - torch_scores.loc[scores.index].to_numpy()).max() < INT8_TOLERANCE



def test_int8_without_images_exits_2_on_one_line(world, cache, tmp_path, cli):
    said = one_line_error(cli, "export", world["bit"], "--precision", "int8")
    assert "needs --images DIR" in said
    said = one_line_error(cli, "rank", "--clips", world["clips"], "--models", world["bit"], "--out", tmp_path / "o",
                          "--engine", "onnxruntime", "--precision", "int8")
    assert f"dsdi export {world['bit']} --precision int8 --images DIR" in said
    assert not cache.exists()


def test_an_architecture_without_an_onnx_form_exits_2_on_one_line(world, cache, tmp_path, cli, capfd):
    for args in (("export", world["dino"]), ("rank", "--clips", world["clips"], "--models", world["dino"], "--out",
                                              tmp_path / "o", "--engine", "onnxruntime")):
        said = one_line_error(cli, *args)
        assert "Dinov2WithRegistersForImageClassification does not export to ONNX at opset 17" in said
        assert "_upsample_bicubic2d_aa" in said and "rank it with --engine torch" in said
    printed = capfd.readouterr()
    assert "graph" not in printed.out + printed.err  # the exporter's C++ log of the graph is kept off the terminal
    assert not any(path.suffix == ".onnx" for path in cache.rglob("*"))
