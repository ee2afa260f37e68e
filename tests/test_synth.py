"""dsdi synth: files and formats (PIL, pandas, the ffmpeg CLI), qrels re-derived from the clip truth,
Table 1 frequency order (scipy), crowd-noise rates (binomial bounds), determinism, CLI errors."""

import ast
import filecmp
import hashlib
import inspect
import re
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from dsdi.labels import schema
from dsdi.labels.crowd import read_annotations, soft_labels
from dsdi.labels.labelset import LADI_V1
from dsdi.synth import (
    OUTLIER_KINDS,
    build_world,
    encode_clip,
    feature_probabilities,
    render_clip,
    sample_labels,
    simulate_annotations,
    with_none_classes,
)
from dsdi.synth import looks as synth_looks
from dsdi.synth.looks import LOOKS, check_looks
from dsdi.video.decode import sample_frames
from dsdi.video.ffmpeg import FfmpegError, run

N_IMAGES, N_CLIPS = 40, 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), n_images=N_IMAGES, n_clips=N_CLIPS, seed=3,
                       clip_seconds=(1.0, 2.0))


def test_images_and_true_labels(world):
    truth = pd.read_csv(world.true_labels)
    assert list(truth.columns) == ["image_id", *schema.CLASSES]
    assert len(truth) == N_IMAGES and truth["image_id"].is_unique
    assert set(np.unique(truth[list(schema.CLASSES)].to_numpy())) <= {0, 1}
    files = sorted(p.name for p in world.images_dir.iterdir())
    assert files == sorted(url.rsplit("/", 1)[1] for url in truth["image_id"])
    assert all(url.startswith("https://") for url in truth["image_id"])
    for name in files[:5]:
        with Image.open(world.images_dir / name) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (640, 480))
    for none_class in schema.NONE_CLASSES:  # '<category>: none' <=> no feature of that category
        members = [f for f in schema.FEATURES if schema.category_of(f) == schema.category_of(none_class)]
        assert (truth[none_class] == (truth[members].sum(axis=1) == 0)).all()


def test_annotations_are_ladi_format(world):
    answers = pd.read_csv(world.annotations, sep="\t")
    assert list(answers.columns)[:3] == ["url", "WorkerId", "Answer"]
    truth = pd.read_csv(world.true_labels)
    assert set(answers["url"]) == set(truth["image_id"])
    token_map = schema.load_token_map()
    categories = []
    for text in answers["Answer"]:
        tokens = ast.literal_eval(text)
        assert isinstance(tokens, list) and tokens
        assert all(schema.normalise_token(t) in token_map for t in tokens)
        assert len({t.split(":")[0] for t in tokens}) == 1  # one row answers one category
        categories.append(tokens[0].split(":")[0])
    answers["category"] = categories
    workers = answers.groupby(["url", "category"])["WorkerId"]
    assert workers.size().between(3, 6).all() and (workers.nunique() == workers.size()).all()
    assert answers.groupby("url")["category"].nunique().eq(5).all()
    assert answers["WorkerId"].str.fullmatch(r"A[A-Z0-9]{13}").all()


def test_noise_free_answers_reproduce_true_labels(tmp_path):
    world = build_world(tmp_path, n_images=12, n_clips=0, seed=1, image_size=(64, 48), miss_rate=0.0,
                        false_rate=0.0)
    token_map = schema.load_token_map()
    answers = pd.read_csv(world.annotations, sep="\t")
    named = pd.DataFrame(0, index=pd.read_csv(world.true_labels)["image_id"], columns=list(schema.CLASSES))
    for url, text in zip(answers["url"], answers["Answer"], strict=True):
        for token in ast.literal_eval(text):
            named.loc[url, token_map[schema.normalise_token(token)]] = 1
    truth = pd.read_csv(world.true_labels)
    classes = truth[list(schema.CLASSES)].to_numpy()
    assert (named.to_numpy() == classes).all()
    assert world.qrels.read_text() == ""
    hard = soft_labels(read_annotations(world.annotations), mode="hard").set_index("image_id").loc[truth["image_id"]]
    assert (hard[list(schema.CLASSES)].to_numpy() == classes).all()


def test_worker_noise_rates_match_settings():
    rng = np.random.default_rng(0)
    labels = sample_labels(1500, rng)
    ids = [f"i{k}" for k in range(len(labels))]
    answers = simulate_annotations(ids, labels, rng, miss_rate=0.3, false_rate=0.05)
    token_map = schema.load_token_map()
    index = {image_id: k for k, image_id in enumerate(ids)}
    hits = np.zeros(2)  # named present, named absent
    trials = np.zeros(2)
    for url, text in zip(answers["url"], answers["Answer"], strict=True):
        named = {token_map[schema.normalise_token(t)] for t in ast.literal_eval(text)}
        category = schema.category_of(next(iter(named)))
        for feature in (f for f in schema.FEATURES if schema.category_of(f) == category):
            present = labels[index[url], schema.CLASSES.index(feature)] == 1
            trials[0 if present else 1] += 1
            hits[0 if present else 1] += feature in named
    rates = hits / trials
    for rate, expected, n in zip(rates, (0.7, 0.05), trials, strict=True):  # 5 binomial standard errors
        assert abs(rate - expected) < 5 * np.sqrt(expected * (1 - expected) / n)


def _ffmpeg_info(ffmpeg_exe: str, path: Path) -> tuple[str, int]:
    """(ffmpeg's stream description, number of decoded frames) from the ffmpeg CLI."""
    command = ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24").global_args("-v", "info")
    stdout, stderr = command.run(cmd=ffmpeg_exe, capture_stdout=True, capture_stderr=True)
    stream = next(line for line in stderr.decode().splitlines() if "Video:" in line)
    return stream, len(stdout)


def test_clips_decode_with_ffmpeg(world, ffmpeg_exe):
    table = pd.read_csv(world.clips_table)
    assert len(table) == N_CLIPS
    assert sorted(p.name for p in world.clips_dir.iterdir()) == sorted(f"{s}.mp4" for s in table["shot_id"])
    for row in table.itertuples():
        assert re.fullmatch(r"Shot\d+_\d{3}", row.shot_id)
        stream, n_bytes = _ffmpeg_info(ffmpeg_exe, world.root / row.clip_path)
        assert "h264" in stream and "yuv420p" in stream and "640x360" in stream and "30 fps" in stream
        assert n_bytes == row.frames * 640 * 360 * 3
        assert 1.0 - 1 / 30 <= row.frames / 30 <= 2.0 + 1 / 30


def test_ten_fps_sampler_sees_every_third_frame(world):
    """qrels count a feature as relevant when a frame at t = 0, 0.1, ... shows it: the decoder samples exactly those."""
    for row in pd.read_csv(world.clips_table).itertuples():
        frames, timestamps = sample_frames(world.root / row.clip_path, fps=10.0)
        assert len(frames) == len(timestamps) == -(-row.frames // 3)
        np.testing.assert_allclose(timestamps, np.arange(len(frames)) / 10, atol=1e-6)


def test_encoded_frames_match_the_rendered_pan(tmp_path, ffmpeg_exe):
    features = with_none_classes(np.eye(32, dtype=np.uint8)[[7, 22, 31]].max(axis=0, keepdims=True))[0]
    clip = render_clip(features[:32], np.random.default_rng(0), 0.5, width=320, height=180)
    encode_clip(clip, tmp_path / "c.mp4")
    command = (ffmpeg.input(str(tmp_path / "c.mp4")).output("pipe:", format="rawvideo", pix_fmt="rgb24")
               .global_args("-v", "error"))
    decoded = np.frombuffer(run(command, "decoding c.mp4", cmd=ffmpeg_exe), np.uint8).reshape(-1, 180, 320, 3)
    assert len(decoded) == len(clip.offsets) == 15
    for frame, (x, y) in zip(decoded, clip.offsets, strict=True):
        rendered = clip.scene[y: y + 180, x: x + 320].astype(int)
        assert np.abs(frame.astype(int) - rendered).mean() < 5  # lossy H.264 + 4:2:0, same picture
    assert np.abs(decoded[0].astype(int) - decoded[-1].astype(int)).mean() > 1  # the camera moves


def test_failed_encode_leaves_neither_clip_nor_temp_file(tmp_path):
    clip = render_clip(np.zeros(32, np.uint8), np.random.default_rng(0), 0.2, width=64, height=36)
    target = tmp_path / "c.mp4"
    target.write_bytes(b"previous clip")
    with pytest.raises(FfmpegError, match="ffmpeg failed writing .*c.mp4: .*"):
        encode_clip(clip, target, fps=0)  # ffmpeg rejects frame rate 0 after reading input
    assert [p.name for p in tmp_path.iterdir()] == ["c.mp4"] and target.read_bytes() == b"previous clip"


def test_every_feature_has_exactly_one_look():
    assert set(LOOKS) == set(schema.FEATURES) and {look.kind for look in LOOKS.values()} == {"region", "object", "line"}
    check_looks()
    with pytest.raises(RuntimeError, match=r"no look for \['meteor crater'\], looks for unknown features \['lava'\]"):
        check_looks(tuple(name for name in schema.FEATURES if name != "lava") + ("meteor crater",))


def test_qrels_follow_clip_truth(world):
    fnums = dict(LADI_V1.feature_numbers)
    table = pd.read_csv(world.clips_table)
    truth = pd.read_csv(world.clip_truth)
    qrels = [line.split() for line in world.qrels.read_text().splitlines()]
    assert all(len(q) == 4 and q[1] == "0" and q[3] in ("0", "1") for q in qrels)
    assert {(int(q[0]), q[2]) for q in qrels} == {(f, s) for f in fnums.values() for s in table["shot_id"]}
    assert len(qrels) == 32 * N_CLIPS
    frames = dict(zip(table["shot_id"], table["frames"], strict=True))
    sampled_relevant = set()
    for row in truth.itertuples():
        first, end = round(row.start_s * 30), round(row.end_s * 30)
        assert 0 <= first < end <= frames[row.shot_id] and end - first == row.frames
        assert row.fnum == fnums[row.feature]
        if any(t % 3 == 0 for t in range(first, end)):  # frames at t = 0, 0.1, 0.2 ... s
            sampled_relevant.add((row.fnum, row.shot_id))
    assert {(int(q[0]), q[2]) for q in qrels if q[3] == "1"} == sampled_relevant
    assert sampled_relevant, "no feature visible in any clip"
    partial = truth[(truth["start_s"] > 0) | (truth["end_s"] < truth["shot_id"].map(frames) / 30 - 1e-6)]
    assert len(partial) > 0, "every feature spans its whole clip: panning shows nothing come or go"


def test_label_frequencies_follow_table1():
    labels = sample_labels(20000, np.random.default_rng(5))
    frequency = labels[:, : schema.NUM_FEATURES].mean(axis=0)
    counts = np.asarray(schema.CLASS_COUNTS[: schema.NUM_FEATURES])
    assert spearmanr(frequency, counts).statistic > 0.97
    assert set(np.argsort(-frequency)[:3]) == set(np.argsort(-counts)[:3])
    lava, flood = schema.CLASSES.index("lava"), schema.CLASSES.index("flooding / water damage")
    assert frequency[lava] < 0.015 and frequency[flood] > 0.3
    np.testing.assert_allclose(frequency, feature_probabilities(), atol=0.015)
    small = sample_labels(200, np.random.default_rng(6), min_per_feature=3)
    assert small[:, : schema.NUM_FEATURES].sum(axis=0).min() >= 3


def _same_files(a: Path, b: Path) -> bool:
    """Same file names and bytes under both folders (MP4s too: x264 runs single-threaded)."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def test_deterministic_per_seed_and_cli_matches_library(tmp_path, cli):
    options = dict(n_images=6, n_clips=1, image_size=(160, 120), clip_seconds=(0.5, 0.6), outlier_rate=0.25)
    first = build_world(tmp_path / "a", seed=7, **options)
    result = cli("synth", "--out", str(tmp_path / "b"), "--images", "6", "--clips", "1", "--seed", "7",
                 "--image-resolution", "160x120", "--clip-seconds", "0.5-0.6", "--outlier-rate", "0.25", expect=None)
    assert result.exit_code == 0, result.output
    assert _same_files(first.root, tmp_path / "b")
    other = build_world(tmp_path / "c", seed=8, **options)
    assert not filecmp.cmp(first.true_labels, other.true_labels, shallow=False)


@pytest.mark.parametrize("flags, message", [
    (["--image-resolution", "640by480"], "--image-resolution"),
    (["--images", "-1"], ">= 0"),
    (["--miss-rate", "1.5"], "[0, 1]"),
    (["--clip-seconds", "5-2"], "min <= max"),
    (["--outlier-rate", "0.95"], "--outlier-rate"),
    (["--outlier-rate", "-0.1"], "--outlier-rate"),
])
def test_bad_options_exit_2(tmp_path, flags, message, cli):
    result = cli("synth", "--out", str(tmp_path / "w"), *flags, expect=None)
    assert result.exit_code == 2 and message in result.output


N_NORMAL, N_OUTLIERS = 12, 4  # outlier_rate 0.25: round(0.25 * 12 / 0.75) = 4, one of each kind


@pytest.fixture(scope="module")
def outlier_world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("outliers"), n_images=N_NORMAL, n_clips=0, seed=5,
                       image_size=(160, 120), outlier_rate=0.25)


def test_outliers_follow_the_normal_images_and_show_nothing_in_the_truth(outlier_world):
    truth = pd.read_csv(outlier_world.true_labels)
    assert list(truth.columns) == ["image_id", *schema.CLASSES, "outlier"]
    assert truth["image_id"].str.rsplit("/", n=1).str[1].tolist() == [f"img_{i:06d}.jpg" for i in range(16)]
    assert sorted(p.name for p in outlier_world.images_dir.iterdir()) == [f"img_{i:06d}.jpg" for i in range(16)]
    assert truth["outlier"].tolist() == [0] * N_NORMAL + [1] * N_OUTLIERS
    outliers = truth[truth["outlier"] == 1]
    assert (outliers[list(schema.FEATURES)] == 0).all().all() and (outliers[list(schema.NONE_CLASSES)] == 1).all().all()
    assert (truth.loc[truth["outlier"] == 0, list(schema.FEATURES)].sum(axis=1) > 0).any()


def test_outliers_carry_wrong_crowd_answers(outlier_world):
    answers = pd.read_csv(outlier_world.annotations, sep="\t")
    outlier_urls = set(pd.read_csv(outlier_world.true_labels).query("outlier == 1")["image_id"])
    is_outlier = answers["url"].isin(outlier_urls)
    assert is_outlier.tolist() == sorted(is_outlier.tolist())  # outlier rows come last
    fooled = answers[is_outlier]
    assert set(fooled["url"]) == outlier_urls and fooled.groupby("url").size().between(5 * 3, 5 * 6).all()
    named = fooled["Answer"].map(lambda text: any(not t.endswith(":none") for t in ast.literal_eval(text)))
    assert named.mean() > 0.2  # workers name features that are not there
    normal_workers = set(answers.loc[~is_outlier, "WorkerId"])
    assert len(set(fooled["WorkerId"]) & normal_workers) > 0.6 * fooled["WorkerId"].nunique()  # one crowd


def _feature_colours() -> np.ndarray:
    """(K, 3) the saturated colours written in looks.py (RGB int triples with max - min >= 40): greys, whites
    and blacks are left out, as sky, flares and black frames share them."""
    triples = {tuple(e.value for e in node.elts) for node in ast.walk(ast.parse(inspect.getsource(synth_looks)))
               if isinstance(node, ast.Tuple) and len(node.elts) == 3
               and all(isinstance(e, ast.Constant) and type(e.value) is int for e in node.elts)}
    return np.array([c for c in triples if 0 <= min(c) and max(c) <= 255 and max(c) - min(c) >= 40], np.float32)


def _share_in_feature_colours(path: Path, colours: np.ndarray) -> float:
    """Share of the image's pixels within RGB distance 25 of one of the colours."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), np.float32).reshape(-1, 1, 3)
    return float((np.sqrt(((pixels - colours[None]) ** 2).sum(-1)).min(axis=1) < 25).mean())


def test_outlier_images_show_no_feature_colour(outlier_world):
    colours = _feature_colours()
    assert len(colours) >= 15
    names = sorted(p.name for p in outlier_world.images_dir.iterdir())
    shares = [_share_in_feature_colours(outlier_world.images_dir / name, colours) for name in names]
    assert np.median(shares[:N_NORMAL]) > 0.1  # normal scenes are full of feature colours: the check can fail
    assert max(shares[N_NORMAL:]) < 0.001, dict(zip(OUTLIER_KINDS, shares[N_NORMAL:], strict=True))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outliers_leave_the_rest_of_the_world_unchanged(tmp_path):
    options = dict(n_images=8, n_clips=1, seed=2, image_size=(96, 72), clip_size=(64, 36), clip_seconds=(0.3, 0.4))
    plain = build_world(tmp_path / "plain", **options)
    mixed = build_world(tmp_path / "mixed", outlier_rate=0.2, **options)
    clips = [f"clips/{p.name}" for p in plain.clips_dir.iterdir()]
    assert len(clips) == 1
    for name in [f"images/img_{i:06d}.jpg" for i in range(8)] + clips + ["clips.csv", "clip_truth.csv", "qrels.txt"]:
        assert _sha256(plain.root / name) == _sha256(mixed.root / name), name
    assert len(list(mixed.images_dir.iterdir())) == 10  # round(0.2 * 8 / 0.8) = 2 outliers
    plain_rows, mixed_rows = plain.annotations.read_text(), mixed.annotations.read_text()
    assert mixed_rows.startswith(plain_rows) and "img_000008.jpg" in mixed_rows[len(plain_rows):]
    plain_truth, mixed_truth = plain.true_labels.read_text().splitlines(), mixed.true_labels.read_text().splitlines()
    assert mixed_truth[:9] == [plain_truth[0] + ",outlier"] + [line + ",0" for line in plain_truth[1:]]


def test_ladi_v1_world_is_unchanged(tmp_path):
    """The default world, byte for byte in its texts and pixel for pixel in its images, as it was drawn before
    worlds came in label sets (digests of that code's output: a change here changes every ladi-v1 world)."""
    world = build_world(tmp_path, n_images=8, n_clips=2, seed=7, image_size=(64, 48), clip_size=(64, 36),
                        clip_seconds=(1.0, 1.5), outlier_rate=0.2)
    texts, pixels = hashlib.sha256(), hashlib.sha256()
    for path in (world.true_labels, world.annotations, world.clips_table, world.clip_truth, world.qrels):
        texts.update(path.read_bytes())
    for path in sorted(world.images_dir.glob("*.jpg")):
        with Image.open(path) as image:
            pixels.update(np.asarray(image).tobytes())
    assert texts.hexdigest() == "8e0e2107523d4c9c033cf72b72b0034bbdb484c60748b8204a925999d815756b"
    assert pixels.hexdigest() == "ce32b8783942699372c6a1ea4f3c9ac9162ff6793395bd9d340a0d61975b70c5"
