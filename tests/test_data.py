"""Image data on real JPEG/PNG files: id resolution, draft decode, preprocessing against PIL, broken files
skipped mid-run (also across a worker process), deterministic hold-out and split, labels CSV checks, `dsdi prepare`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dsdi.errors import InputError
from dsdi.labels.schema import CLASSES
from dsdi.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor
from dsdi.train.data import (
    Augmentation,
    LabelledImageDataset,
    collate_skip_broken,
    decode_image,
    find_unreadable_images,
    load_image,
    read_labels_csv,
    resolve_image_path,
    training_batch,
)
from dsdi.train.splits import holdout_split, train_val_split

LADI_SAMPLE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "ladi-sample"
               / "010_0775_4365f589-de67-4561-8fdd-f1ac1ac1ae07.jpg")


def _scene(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth colour scene (gradients plus blobs) with mild noise, like an aerial photo at low zoom."""
    rng = np.random.default_rng(seed)
    small_w, small_h = max(width // 32, 4), max(height // 32, 4)
    coarse = rng.integers(0, 256, size=(small_h, small_w, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """good/a.jpg (640x480), good/b.png (120x90), big.jpg (4000x3000), and the broken kinds: truncated,
    damaged inside (found only by decoding), empty, text named .jpg."""
    root = tmp_path_factory.mktemp("images")
    (root / "good").mkdir()
    _scene(640, 480, 1).save(root / "good" / "a.jpg", quality=92)
    _scene(120, 90, 2).save(root / "good" / "b.png")
    _scene(4000, 3000, 3).save(root / "big.jpg", quality=90)
    whole = (root / "good" / "a.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) * 6 // 10])
    damaged = bytearray(whole)
    damaged[20:28] = bytes(8)  # wipes the marker after PIL's 16-byte JFIF header: header parses, data does not
    (root / "damaged.jpg").write_bytes(bytes(damaged))
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    return root


def _labels(image_ids, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.random((len(image_ids), len(CLASSES))).round(3), columns=list(CLASSES))
    table.insert(0, "image_id", image_ids)
    return table


def _normalised_reference(rgb_uint8: np.ndarray) -> np.ndarray:
    """float64 (3, H, W) ImageNet normalisation of uint8 (H, W, 3), written out independently."""
    unit = rgb_uint8.astype(np.float64) / 255.0
    return ((unit - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)


def test_image_ids_resolve_to_files_under_the_root(image_dir):
    assert resolve_image_path("good/a.jpg", image_dir) == image_dir / "good" / "a.jpg"
    assert resolve_image_path("https://ladi.s3.amazonaws.com/good/a.jpg", image_dir) == image_dir / "good" / "a.jpg"
    assert resolve_image_path("s3://ladi/good/b.png", image_dir) == image_dir / "good" / "b.png"
    assert resolve_image_path("https://host/Images/FEMA_CAP/9073/big.jpg", image_dir) == image_dir / "big.jpg"
    assert resolve_image_path("s3://ladi/Images/x%20y.jpg", image_dir) == image_dir / "Images" / "x%20y.jpg"
    assert resolve_image_path("https://host/Images/x%20y.jpg", image_dir) == image_dir / "Images" / "x y.jpg"


def test_draft_decodes_a_large_jpeg_at_one_eighth_and_matches_a_full_decode(image_dir):
    pixels = decode_image(image_dir / "big.jpg", 360)
    assert pixels.shape == (375, 500, 3) and pixels.dtype == np.uint8  # 4000x3000 / 8, both sides >= 360
    tensor = load_image(image_dir / "big.jpg", 360)
    assert tensor.shape == (3, 360, 360) and tensor.dtype == torch.float32
    with Image.open(image_dir / "big.jpg") as image:
        full = np.asarray(image.convert("RGB"))
    assert full.shape == (3000, 4000, 3)
    from_full = frames_to_tensor(full[None], 360)[0]
    difference = (tensor - from_full).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.25  # normalised units (1/255 ~ 0.017)


@pytest.mark.skipif(not LADI_SAMPLE.is_file(), reason="the real LADI sample image (../shared/data) is absent")
def test_draft_on_a_real_ladi_original_matches_a_full_decode():
    tensor = load_image(LADI_SAMPLE, 360)
    with Image.open(LADI_SAMPLE) as image:
        assert image.size == (6000, 4000)
        full = np.asarray(image.convert("RGB"))
    assert (tensor - frames_to_tensor(full[None], 360)[0]).abs().mean() < 0.02


def test_validation_preprocessing_matches_pil_bilinear_resize(image_dir):
    tensor = load_image(image_dir / "good" / "b.png", 48)
    with Image.open(image_dir / "good" / "b.png") as image:
        reference = _normalised_reference(np.asarray(image.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR)))
    np.testing.assert_allclose(tensor.numpy(), reference, atol=2.5 / 255 / min(IMAGENET_STD))


def test_exif_orientation_is_applied(tmp_path):
    scene = _scene(80, 40, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    scene.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rotated.jpg") as image:
        raw = np.asarray(image.convert("RGB"))
    upright = decode_image(tmp_path / "rotated.jpg", 80)  # no draft reduction: compare full-size pixels
    np.testing.assert_array_equal(upright, np.rot90(raw, k=-1))


def test_unreadable_images_are_listed_with_their_reason(image_dir):
    ids = ["good/a.jpg", "s3://ladi/good/b.png", "big.jpg", "truncated.jpg", "damaged.jpg", "empty.jpg", "notes.jpg",
           "gone.jpg"]
    labels = _labels(ids)
    fast_finds = {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
        "gone.jpg": "missing",
    }
    decoding_finds = {"truncated.jpg": "truncated", "damaged.jpg": "corrupt (OSError", **fast_finds}
    for decode, expected in ((False, fast_finds), (True, decoding_finds)):
        found = find_unreadable_images(labels, image_dir, decode=decode, workers=2)
        assert [image_id for image_id, _, _ in found] == list(expected)
        for image_id, path, reason in found:
            assert path == str(image_dir / image_id) and reason.startswith(expected[image_id])


def test_dataset_items_and_a_broken_file_skipped_through_a_worker_process(image_dir):
    ids = ["good/a.jpg", "truncated.jpg", "s3://b/good/b.png", "notes.jpg", "empty.jpg"]
    labels = _labels(ids)
    dataset = LabelledImageDataset(labels, image_dir, 32, train=False)
    image, target, index = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and index == 0
    torch.testing.assert_close(image, load_image(image_dir / "good" / "a.jpg", 32))
    np.testing.assert_array_equal(target.numpy(), labels.loc[0, list(CLASSES)].to_numpy(np.float32))

    loader = DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate_skip_broken)
    first, second = list(loader)
    assert first.images.shape == (2, 3, 32, 32) and first.indices.tolist() == [0, 2]
    np.testing.assert_array_equal(first.targets.numpy(), labels.loc[[0, 2], list(CLASSES)].to_numpy(np.float32))
    assert [b.image_id for b in first.broken] == ["truncated.jpg"]
    assert second is None  # both items of the last batch were broken
    assert collate_skip_broken([dataset[3]]) is None


def test_training_items_are_the_validation_pixels_as_uint8(image_dir):
    labels = _labels(["good/a.jpg", "good/b.png"])
    validation = LabelledImageDataset(labels, image_dir, 64, train=False)
    training = LabelledImageDataset(labels, image_dir, 64, train=True)
    mean, std = (torch.tensor(values).view(3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    for index in range(2):
        pixels, target, _ = training[index]
        assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.uint8
        unit = validation[index][0] * std + mean  # the validation transform before its normalisation
        assert (pixels.float() - unit * 255).abs().max() <= 1.0  # the same resize, rounded to uint8
        torch.testing.assert_close(target, validation[index][1])


def test_a_models_own_mean_and_std_normalise_training_and_validation(image_dir):
    """training_batch and the validation items with a model's mean/std other than ImageNet's, against a float64
    re-derivation of the normalisation; the corners the rotation uncovers are the mean, 0 once normalised."""
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.3)
    mean64, std64 = (torch.tensor(values, dtype=torch.float64).view(3, 1, 1) for values in (mean, std))
    torch.manual_seed(0)
    images = (torch.rand(6, 3, 48, 48) * 255).round().to(torch.uint8)
    augmentation = Augmentation(rotation_degrees=45.0)
    torch.manual_seed(3)
    draws = torch.rand(6, 7) * 2 - 1
    torch.manual_seed(3)
    augmented = augmentation.apply(images, fill=mean).double()
    torch.manual_seed(3)
    batch = training_batch(images, augmentation, mean, std)
    torch.testing.assert_close(batch.double(), (augmented - mean64) / std64, atol=1e-5, rtol=0)
    turned = draws[:, 6].abs() * 45.0 > 20.0  # the corner pixel lies outside the turned image
    assert turned.any() and batch[turned][:, :, 0, 0].abs().max() < 1e-5
    torch.testing.assert_close(augmented[turned][:, :, 0, 0], mean64.view(1, 3).expand(int(turned.sum()), 3))

    labels = _labels(["good/a.jpg", "good/b.png"])
    own = LabelledImageDataset(labels, image_dir, 32, train=False, mean=mean, std=std)
    for index, name in enumerate(("good/a.jpg", "good/b.png")):
        unit = torch.from_numpy(np.array(decode_image(image_dir / name, 32))).permute(2, 0, 1).double()[None] / 255
        unit = torch.nn.functional.interpolate(unit, size=(32, 32), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
        torch.testing.assert_close(own[index][0].double(), (unit - mean64) / std64, atol=1e-5, rtol=0)


def test_training_normalises_with_the_backbones_timm_config(tmp_path):
    """make_loaders takes the mean/std of the backbone's timm config (test_convnext: 0.5 / 0.5) for its loaders
    and the validation items."""
    from dsdi.runtime import ProcessGroup
    from dsdi.train.config import TrainConfig
    from dsdi.train.loop import make_loaders

    ids = [f"scene_{i}.png" for i in range(10)]
    for i, name in enumerate(ids):
        _scene(40, 30, i).save(tmp_path / name)
    _labels(ids).to_csv(tmp_path / "labels.csv", index=False)
    config = TrainConfig(labels=tmp_path / "labels.csv", images=tmp_path, backbone="test_convnext", img_size=32)
    loaders = make_loaders(config, torch.device("cpu"), ProcessGroup())
    assert (loaders.preprocessing.mean, loaders.preprocessing.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    item = loaders.val.dataset[0][0]
    imagenet = LabelledImageDataset(_labels(loaders.val.dataset.image_ids[:1]), tmp_path, 32, train=False)[0][0]
    unit = imagenet * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    torch.testing.assert_close(item, (unit - 0.5) / 0.5, atol=1e-5, rtol=0)


def test_batch_augmentation_is_torchvision_colour_jitter_flips_and_rotation_per_image():
    """Augmentation.apply against torchvision's functional ops applied one image at a time with the same draws
    (brightness, contrast, saturation, hue, horizontal flip, vertical flip, rotation), inside the rotated frame;
    every image gets its own draws, and training_batch normalises the result."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(6, 3, 6, 6), size=(48, 48), mode="bicubic")
    images = (smooth.clamp(0, 1) * 255).round().to(torch.uint8)
    images[1] = images[0]
    augmentation = Augmentation()
    torch.manual_seed(3)
    draws = torch.rand(6, 7) * 2 - 1  # what apply draws: one row per image, uniform in [-1, 1]
    torch.manual_seed(3)
    augmented = augmentation.apply(images)
    assert augmented.shape == (6, 3, 48, 48) and augmented.dtype == torch.float32
    assert 0 <= augmented.min() and augmented.max() <= 1
    assert (augmented[0] - augmented[1]).abs().max() > 0.05  # the same picture, other draws
    for image, draw, result in zip(images, draws.tolist(), augmented, strict=True):
        expected = image.float() / 255
        expected = TF.adjust_brightness(expected, 1 + augmentation.brightness * draw[0])
        expected = TF.adjust_contrast(expected, 1 + augmentation.contrast * draw[1])
        expected = TF.adjust_saturation(expected, 1 + augmentation.saturation * draw[2])
        expected = TF.adjust_hue(expected, augmentation.hue * draw[3])
        expected = TF.horizontal_flip(expected) if draw[4] < 0 else expected
        expected = TF.vertical_flip(expected) if draw[5] < 0 else expected
        expected = TF.rotate(expected, augmentation.rotation_degrees * draw[6], InterpolationMode.BILINEAR,
                             fill=list(IMAGENET_MEAN))
        torch.testing.assert_close(result[:, 12:36, 12:36], expected[:, 12:36, 12:36], atol=1e-4, rtol=0)
    torch.manual_seed(3)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(training_batch(images, augmentation), (augmented - mean) / std)


def test_split_is_deterministic_exact_and_independent_of_row_order():
    ids = [f"https://host/img_{i:05d}.jpg" for i in range(1000)]
    train, val = train_val_split(ids, val_fraction=0.2, seed=0)
    assert len(val) == 200 and len(train) == 800 and set(train).isdisjoint(val) and set(train) | set(val) == set(ids)
    assert train == [i for i in ids if i in set(train)]  # input order kept
    shuffled = list(np.random.default_rng(1).permutation(ids))
    train_again, val_again = train_val_split(shuffled, val_fraction=0.2, seed=0)
    assert set(val_again) == set(val) and set(train_again) == set(train)
    _, other_val = train_val_split(ids, val_fraction=0.2, seed=1)
    assert 0 < len(set(other_val) & set(val)) < 100  # another seed: another, roughly independent split
    assert len(train_val_split(ids[:2], 0.2)[1]) == 1
    with pytest.raises(InputError, match="val-fraction"):
        train_val_split(ids, val_fraction=1.0)


def test_holdout_depends_only_on_the_ids_and_its_seed_and_is_salted_apart_from_the_split():
    ids = [f"https://host/img_{i:05d}.jpg" for i in range(1000)]
    rest, held = holdout_split(ids, fraction=0.05, seed=0)
    assert len(held) == 50 and len(rest) == 950 and set(rest) | set(held) == set(ids) and set(rest).isdisjoint(held)
    assert held == [i for i in ids if i in set(held)] and rest == [i for i in ids if i in set(rest)]  # input order
    shuffled = [*np.random.default_rng(2).permutation(ids), ids[3]]  # row order and a repeated row do not matter
    again_rest, again_held = holdout_split(shuffled, fraction=0.05, seed=0)
    assert set(again_held) == set(held) and set(again_rest) == set(rest)
    assert 0 <= len(set(holdout_split(ids, 0.05, seed=1)[1]) & set(held)) < 15  # its own seed: another hold-out
    # the split's seed 0 ranks ids by another hash: its first 5% are not the hold-out
    assert len(set(train_val_split(ids, val_fraction=0.05, seed=0)[1]) & set(held)) < 15
    # every split seed of the rest leaves the hold-out alone
    for seed in (1, 2, 13):
        train, val = train_val_split(rest, val_fraction=0.2, seed=seed)
        assert set(held).isdisjoint(train) and set(held).isdisjoint(val) and len(val) == 190
    assert holdout_split(ids, fraction=0.0, seed=0) == (ids, [])
    assert holdout_split(ids[:3], fraction=0.05) == (ids[:3], [])  # round(0.15) = 0: no hold-out
    with pytest.raises(InputError, match="holdout-fraction"):
        holdout_split(ids, fraction=1.0)


def test_labels_csv_is_validated_with_file_and_line(tmp_path):
    table = _labels(["a.jpg", "b.jpg", "c.jpg"])
    table.to_csv(tmp_path / "labels.csv", index=False)
    labels = read_labels_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == ["image_id", *CLASSES] and labels["image_id"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_allclose(labels[list(CLASSES)].to_numpy(), table[list(CLASSES)].to_numpy(), rtol=1e-6)

    table.drop(columns=[CLASSES[3]]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match=rf"short.csv: missing column\(s\) \[.*{CLASSES[3]}"):
        read_labels_csv(tmp_path / "short.csv")
    bad = table.astype({CLASSES[0]: object})
    bad.loc[1, CLASSES[0]] = "yes"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="bad.csv, line 3"):
        read_labels_csv(tmp_path / "bad.csv")
    pd.concat([table, table.iloc[[0]]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match="dup.csv, line 5: image_id 'a.jpg'"):
        read_labels_csv(tmp_path / "dup.csv")
    with pytest.raises(InputError, match="labels file not found"):
        read_labels_csv(tmp_path / "absent.csv")


def test_prepare_writes_a_resized_cache_and_reports_broken_files(image_dir, tmp_path, cli):
    ids = ["https://host/good/a.jpg", "s3://ladi/good/b.png", "big.jpg", "truncated.jpg", "empty.jpg"]
    _labels(ids).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "cache"
    args = ["prepare", "--labels", str(tmp_path / "labels.csv"), "--images", str(image_dir), "--out", str(out),
            "--short-side", "64", "--decode-threads", "2"]
    result = cli(*args)
    assert "3 written, 0 already up to date, 2 unreadable" in result.output
    expected_sizes = {"good/a.jpg": (85, 64), "good/b.png": (85, 64), "big.jpg": (85, 64)}  # shorter side 64
    for relative, size in expected_sizes.items():
        with Image.open(out / relative) as cached:
            assert (cached.format, cached.size) == ("JPEG", size)
    failures = pd.read_csv(out / "prepare_failures.csv")
    assert failures["image_id"].tolist() == ["truncated.jpg", "empty.jpg"]

    again = cli(*args)
    assert "0 written, 3 already up to date" in again.output
    cached_set = LabelledImageDataset(_labels(ids[:3]), out, 64, train=False)
    for index in range(3):  # training on the cache sees nearly the originals' pixels (two resamplings, q95)
        original = load_image(resolve_image_path(ids[index], image_dir), 64)
        assert (cached_set[index][0] - original).abs().mean() < 0.1

    bigger = cli(*args[:-4], "--short-side", "96", "--decode-threads", "1")
    assert "3 written, 0 already up to date" in bigger.output  # another size: the stale cache is rewritten
    with Image.open(out / "big.jpg") as cached:
        assert cached.size == (128, 96)
    pd.DataFrame({"image_id": ids[:3], "split": "test", "roads_any": 1.0}).to_csv(tmp_path / "v2a.csv", index=False)
    other = cli("prepare", "--labels", tmp_path / "v2a.csv", "--images", image_dir, "--out", tmp_path / "v2a",
                "--short-side", "64")  # labels of any label set: only the image ids count
    assert "3 written, 0 already up to date" in other.output
