"""Hugging Face image classifiers (the published LADI v2 ones are BiT and SwinV2 folders) as dsdi models.

Tiny random BiT and SwinV2 models and their image processors, saved by transformers with the published settings
(smaller sizes for speed), are the test models. References come from transformers itself: the image processor's
``pixel_values`` for the model input, and ``pipeline("image-classification", function_to_apply="sigmoid")`` for the
per-frame sigmoids, on frames decoded by dsdi.video.decode at their own size.
"""

import json
import shutil
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_checkpoint
from PIL import Image

from dsdi.errors import InputError
from dsdi.labels.labelset import load_labelset
from dsdi.models.classifier import hf_preprocessing, load_classifier
from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, frames_to_tensor
from dsdi.train.data import load_image
from dsdi.video.clip import Clip
from dsdi.video.decode import ClipChunks, decode_clip
from dsdi.video.ffmpeg import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LADI_V2A = load_labelset("ladi-v2a")
ID2LABEL = dict(enumerate(LADI_V2A.class_names))
CLIP_SIZE = (160, 96)  # wider than high: the shortest-edge resize keeps the aspect and the centre crop cuts the sides
LEVEL_TOLERANCE = 1.05  # model input vs the image processor, in 0-255 levels: it resizes uint8 in fixed point and
# rounds (measured on these JPEGs: max 1.017, mean 0.25-0.30 levels, as rounding alone gives 0.25)
SIGMOID_TOLERANCE = 1e-3
# A tiny random BiT or SwinV2 moves its sigmoids by about 0.01 per input level of difference at a head weight std of
# 1 (measured): the rank path's input differs from the image processor's by 0.23-0.26 levels on average (max 2: the
# processor rounds to uint8), so the test heads are weak enough for 1e-3 (measured: at most 4.5e-4) and still score
# the frames apart (per-class std over frames >= 0.016)
BIT_HEAD_STD, SWIN_HEAD_STD = 0.1, 0.04


def bit_processor(side: int = 64):
    """The published small classifier's image processor (shortest edge, centre crop, bilinear, mean = std = 0.5)."""
    from transformers import BitImageProcessor

    return BitImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}, resample=2,
                             image_mean=[0.5] * 3, image_std=[0.5] * 3)


def swin_processor(side: int = 64):
    """The published large classifier's image processor (square resize, bicubic, ImageNet mean/std)."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": side, "width": side}, resample=3, image_mean=list(IMAGENET_MEAN),
                             image_std=list(IMAGENET_STD))


def save_bit(folder: Path, seed: int = 0, **settings) -> Path:
    """A tiny random BitForImageClassification with the ladi-v2a id2label and its processor, saved to folder;
    ``settings``: more BitConfig settings."""
    from transformers import BitConfig, BitForImageClassification

    torch.manual_seed(seed)
    config = BitConfig(num_labels=12, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
                       hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8, num_groups=2,
                       layer_type="bottleneck", problem_type="multi_label_classification", **settings)
    model = BitForImageClassification(config)
    with torch.no_grad():  # a strong head spreads the sigmoids, so that frames score apart
        torch.nn.init.normal_(model.classifier[-1].weight, std=BIT_HEAD_STD)
    model.save_pretrained(folder)
    bit_processor().save_pretrained(folder)
    return folder


def save_swin(folder: Path, seed: int = 0) -> Path:
    """A tiny random Swinv2ForImageClassification with the ladi-v2a id2label and its processor, saved to folder."""
    from transformers import Swinv2Config, Swinv2ForImageClassification

    torch.manual_seed(seed)
    config = Swinv2Config(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4,
                          num_labels=12, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
                          problem_type="multi_label_classification")
    model = Swinv2ForImageClassification(config)
    with torch.no_grad():
        torch.nn.init.normal_(model.classifier.weight, std=SWIN_HEAD_STD)
    model.save_pretrained(folder)
    swin_processor().save_pretrained(folder)
    return folder


def real_jpeg(path: Path, size: tuple[int, int], seed: int, stripes: bool = True) -> Path:
    """A JPEG (quality 90) of smooth random colour fields, size (width, height), with stripes: every 7th row
    inverted (sharp edges, so that the resize's filter shows)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    pixels = np.array(Image.fromarray(coarse).resize(size, Image.BICUBIC))
    if stripes:
        pixels[::7] = 255 - pixels[::7]
    Image.fromarray(pixels).save(path, quality=90)
    return path


def make_pan_clip(ffmpeg_exe: str, out: Path, seconds: float, seed: int) -> Path:
    """An H.264 yuv420p clip, CLIP_SIZE at 30 fps, panning over a smooth real_jpeg three times its size (smooth:
    the decoder's one-pass YUV scaling and a resize of its RGB frames then agree to about a level)."""
    width, height = CLIP_SIZE
    still = real_jpeg(out.with_suffix(".jpg"), (3 * width, 3 * height), seed, stripes=False)
    pan = ffmpeg.input(str(still), loop=1, t=seconds, framerate=30).filter("crop", width, height, x="t*300",
                                                                           y="t*120")
    command = pan.output(str(out), vcodec="libx264", pix_fmt="yuv420p", g=10)
    run(command.global_args("-v", "error").overwrite_output(), f"making {out}", cmd=ffmpeg_exe)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, ffmpeg_exe, cli):
    """Two pattern clips, the tiny BiT and SwinV2 folders, and dsdi rank of both clips with the BiT folder."""
    root = tmp_path_factory.mktemp("hf")
    clips = root / "clips"
    clips.mkdir()
    for seed, (shot, seconds) in enumerate((("Shot1_001", 0.5), ("Shot1_002", 0.3))):
        make_pan_clip(ffmpeg_exe, clips / f"{shot}.mp4", seconds, seed)
    bit, swin = save_bit(root / "bit"), save_swin(root / "swin")
    out = root / "out"
    cli("rank", "--clips", clips, "--models", bit, "--out", out, "--run-id", "hf", "--device", "cpu", "--topk", 2)
    return {"root": root, "clips": clips, "bit": bit, "swin": swin, "out": out}


def in_levels(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Normalised model input (N, 3, S, S) back in 0-255 levels."""
    std, mean = (torch.tensor(v).view(3, 1, 1) for v in (preprocessing.std, preprocessing.mean))
    return (images * std + mean) * 255


def processor_input(processor, pixels: np.ndarray) -> torch.Tensor:
    """The image processor's pixel_values (N, 3, S, S) of uint8 (N, H, W, 3) images given as PIL images."""
    return processor(images=[Image.fromarray(p) for p in pixels], return_tensors="pt")["pixel_values"]


def test_preprocessing_read_from_the_published_image_processors(tmp_path):
    bit_processor(448).save_pretrained(tmp_path / "small")
    swin_processor(256).save_pretrained(tmp_path / "large")
    assert hf_preprocessing(tmp_path / "small") == Preprocessing(448, (0.5,) * 3, (0.5,) * 3, "bilinear",
                                                                 "shortest_edge", 448)
    assert hf_preprocessing(tmp_path / "large") == Preprocessing(256, IMAGENET_MEAN, IMAGENET_STD, "bicubic",
                                                                 "square", 256)


@pytest.mark.parametrize("published", [bit_processor(448), swin_processor(256), bit_processor(64)],
                         ids=["small-448", "large-256", "small-64"])
def test_image_path_equals_the_image_processor_on_real_jpegs(tmp_path, published):
    published.save_pretrained(tmp_path)
    preprocessing = hf_preprocessing(tmp_path)
    for k, size in enumerate([(600, 400), (300, 500), (640, 640)]):
        path = real_jpeg(tmp_path / f"image{k}.jpg", size, seed=k)
        pixels = np.asarray(Image.open(path).convert("RGB"))
        expected = processor_input(published, pixels[None])
        ours = frames_to_tensor(pixels[None], preprocessing)
        assert ours.shape == expected.shape
        levels = (in_levels(ours, preprocessing) - in_levels(expected, preprocessing)).abs()
        assert levels.max() <= LEVEL_TOLERANCE and levels.mean() <= 0.32
        if min(size) < 2 * preprocessing.resize.target:  # no JPEG draft scaling: load_image decodes all of it
            assert torch.equal(load_image(path, preprocessing), ours[0])


def test_a_different_crop_or_resize_would_fail_the_comparison(tmp_path):
    """The tolerance above is tight enough to tell a stretch from a shortest-edge resize and crop."""
    pixels = np.asarray(Image.open(real_jpeg(tmp_path / "a.jpg", (600, 400), seed=0)))
    expected = processor_input(bit_processor(64), pixels[None])
    stretched = Preprocessing(64, (0.5,) * 3, (0.5,) * 3)
    levels = in_levels(frames_to_tensor(pixels[None], stretched), stretched) - in_levels(expected, stretched)
    assert levels.abs().max() > 10 * LEVEL_TOLERANCE


def test_rank_with_a_hugging_face_folder_writes_a_ladi_v2a_ranking(world):
    facts = json.loads((world["out"] / "run.json").read_text())
    assert facts["models"] == [str(world["bit"])] and facts["backbones"] == ["BitForImageClassification"]
    assert facts["labelset"]["name"] == "ladi-v2a"
    trec = pd.read_csv(world["out"] / "hf.trec", sep=" ", header=None, names=["topic", "q0", "shot", "rank",
                                                                               "score", "run"])
    assert set(trec["topic"]) == set(LADI_V2A.features)
    assert set(trec["shot"]) == {"Shot1_001", "Shot1_002"}
    scores = pd.read_csv(world["out"] / "clip_scores.csv").set_index("shot_id")
    assert list(scores.columns[-12:]) == list(LADI_V2A.class_names)


def shot_per_frame(clip: Path, table: Path) -> list[str]:
    """A shot table with one shot per 10 fps sample of clip (each [t, t + 0.05) s): a shot's max is its frame's."""
    frames = len(decode_clip(Clip(clip.stem, clip)).timestamps)
    shots = [f"frame_{k:03d}" for k in range(frames)]
    pd.DataFrame({"video": clip.name, "shot_id": shots, "start": [k / 10 for k in range(frames)],
                  "end": [k / 10 + 0.05 for k in range(frames)]}).to_csv(table, index=False)
    return shots


@pytest.mark.parametrize("model", ["bit", "swin"])
def test_rank_frame_sigmoids_equal_the_transformers_pipeline(world, model, tmp_path, cli):
    from transformers import pipeline

    clip = world["clips"] / "Shot1_001.mp4"
    table = world["clips"] / f"frames_{model}.csv"
    shots = shot_per_frame(clip, table)
    out = tmp_path / "out"
    cli("rank", "--shots", table, "--models", world[model], "--out", out, "--device", "cpu")
    ranked = pd.read_csv(out / "clip_scores.csv").set_index("shot_id").loc[shots, list(LADI_V2A.class_names)]
    # the 10 fps samples at the clip's own size, converted to RGB as rank converts them (the decoder's default
    # converter sits about a level low: dsdi.video.decode MODEL_SCALER_FLAGS)
    frames = np.concatenate([chunk[0] for chunk, _ in ClipChunks(Clip(clip.stem, clip), shrink_to=[CLIP_SIZE])])
    classify = pipeline("image-classification", model=str(world[model]), function_to_apply="sigmoid", top_k=12)
    expected = np.array([[{r["label"]: r["score"] for r in result}[name] for name in LADI_V2A.class_names]
                         for result in classify([Image.fromarray(frame) for frame in frames])])
    assert expected.std(axis=0).max() > 0.01  # the frames score apart
    np.testing.assert_allclose(ranked.to_numpy(float), expected, atol=SIGMOID_TOLERANCE)


def test_a_hugging_face_model_fuses_with_a_ladi_v2a_checkpoint_by_class_name(world, tmp_path, cli):
    checkpoint = tmp_path / "v2a.pt"
    tiny_checkpoint(checkpoint, labelset=LADI_V2A, head_std=(3.0, None))
    alone = {}
    for name, model in (("hf", world["bit"]), ("dsdi", checkpoint)):
        cli("rank", "--clips", world["clips"], "--models", model, "--out", tmp_path / name, "--device", "cpu")
        alone[name] = pd.read_csv(tmp_path / name / "clip_scores.csv").set_index("shot_id")
    cli("rank", "--clips", world["clips"], "--models", world["bit"], "--models", checkpoint, "--model-weights", 2,
        "--model-weights", 1, "--out", tmp_path / "both", "--device", "cpu")
    fused = pd.read_csv(tmp_path / "both" / "clip_scores.csv").set_index("shot_id")
    columns = list(LADI_V2A.class_names)
    expected = (2 * alone["hf"][columns] + alone["dsdi"].loc[alone["hf"].index, columns]) / 3
    np.testing.assert_allclose(fused.loc[expected.index, columns].to_numpy(float), expected.to_numpy(float),
                               atol=1e-6)
    ensemble = tmp_path / "mixed.toml"  # the same two as an ensemble file: the HF folder a model member
    ensemble.write_text(f'members = [{{model = "{world["bit"]}", weight = 2.0}}, {{model = "{checkpoint}"}}]\n')
    cli("rank", "--clips", world["clips"], "--ensemble", ensemble, "--out", tmp_path / "file", "--device", "cpu")
    from_file = pd.read_csv(tmp_path / "file" / "clip_scores.csv").set_index("shot_id")
    np.testing.assert_allclose(from_file[columns].to_numpy(float), fused[columns].to_numpy(float), atol=1e-9)


def test_a_hub_name_not_in_the_cache_and_incomplete_folders_exit_2_on_one_line(world, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    said = cli.said(cli("rank", "--clips", world["clips"], "--models", "MITLL/LADI-v2-classifier-small", "--out",
                        tmp_path / "o1", expect=2))
    assert "huggingface-cli download MITLL/LADI-v2-classifier-small" in said
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # runs/A with a runs/ folder here: a mistyped run folder, not a hub name
    said = cli.said(cli("rank", "--clips", world["clips"], "--models", "runs/A", "--out", tmp_path / "o2", expect=2))
    assert "no such checkpoint file, run directory" in said and "cache" not in said
    no_labels = shutil.copytree(world["bit"], tmp_path / "no-labels")
    config = json.loads((no_labels / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (no_labels / "config.json").write_text(json.dumps(config))
    no_processor = shutil.copytree(world["bit"], tmp_path / "no-processor")
    (no_processor / "preprocessor_config.json").unlink()
    for folder, says in ((no_labels, "config.json has no id2label"), (no_processor, "no preprocessor_config.json")):
        result = cli("rank", "--clips", world["clips"], "--models", folder, "--out", tmp_path / folder.name,
                     expect=2)
        assert says in cli.said(result)
        with pytest.raises(InputError, match=says) as caught:
            load_classifier(folder)
        assert "\n" not in str(caught.value)
    assert load_classifier(world["bit"]).labelset == LADI_V2A
