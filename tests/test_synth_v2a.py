"""dsdi synth --labelset ladi-v2a: the files (pandas, PIL), the splits, the v2a label hierarchy in every row,
labels re-derived from what is drawn (pixels), the majority of three annotators against its binomial rate,
qrels by class name re-derived from the clip truth, the CLI."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dsdi.cli.data import SynthConfig
from dsdi.labels.labelset import load_labelset
from dsdi.synth import LABELSETS, build_world, ladi_v2a

N_IMAGES, N_CLIPS = 40, 4
V2A = load_labelset("ladi-v2a")
CLASSES = list(V2A.class_names)
# The v2a hierarchy: each (narrower, wider) pair says narrower = 1 implies wider = 1. The first two follow from
# the published names (damage levels collapsed into "affected or greater" and "minor or greater"); the others
# from what the classes mean (flooded structures are flooding and buildings, damage to a road or tree shows it).
IMPLIED = [("buildings_minor_or_greater", "buildings_affected_or_greater"),
           ("buildings_affected_or_greater", "buildings_any"), ("flooding_structures", "flooding_any"),
           ("flooding_structures", "buildings_any"), ("roads_damage", "roads_any"), ("trees_damage", "trees_any")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("v2a"), n_images=N_IMAGES, n_clips=N_CLIPS, seed=3,
                       labelset="ladi-v2a", image_size=(160, 120), clip_size=(160, 90), clip_seconds=(1.0, 2.0))


def test_files_columns_and_splits(world):
    assert world.annotations is None and not list(world.root.glob("*.tsv"))
    truth, voted = pd.read_csv(world.true_labels), pd.read_csv(world.labels)
    for table in (truth, voted):
        assert list(table.columns) == ["image_id", "split", *CLASSES]
        assert set(np.unique(table[CLASSES].to_numpy())) <= {0, 1}
    assert truth[["image_id", "split"]].equals(voted[["image_id", "split"]])
    assert sorted(p.name for p in world.images_dir.iterdir()) == sorted(truth["image_id"])
    with Image.open(world.images_dir / truth["image_id"][0]) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (160, 120))
    assert truth["split"].tolist()[-4:] == ["test"] * 4 and (truth["split"] == "test").sum() == 4  # later event
    assert (truth["split"] == "val").sum() == 4 and (truth["split"] == "train").sum() == 32
    assert (truth[CLASSES].sum() >= 1).all()  # every class has an image (min_per_class forcing)


def test_hierarchy_holds_in_every_label_row(world):
    for table in (pd.read_csv(world.true_labels), pd.read_csv(world.labels)):
        for narrower, wider in IMPLIED:
            assert (table[narrower] <= table[wider]).all(), (narrower, wider)
    shows = pd.DataFrame(ladi_v2a.SHOWS, index=ladi_v2a.ELEMENTS, columns=CLASSES)
    for narrower, wider in IMPLIED:  # so that every OR of elements keeps it, in frames and annotators' eyes too
        assert (shows[narrower] <= shows[wider]).all(), (narrower, wider)


def _scene(*names: str) -> np.ndarray:
    scene = np.zeros(len(ladi_v2a.ELEMENTS), np.uint8)
    scene[[ladi_v2a.ELEMENTS.index(name) for name in names]] = 1
    return scene


def _tarp_pixels(picture: np.ndarray) -> int:
    """Pixels of a blue tarp's colour (35, 95, 210) +- 30: no other v2a element is that blue."""
    return int((np.abs(picture.astype(int) - (35, 95, 210)).max(axis=-1) < 30).sum())


@pytest.mark.parametrize("level", ladi_v2a.BUILDING_LEVELS)
def test_labels_follow_what_is_drawn(level):
    scene = _scene("grass", level)
    picture = ladi_v2a.render_picture(scene, np.random.default_rng(1), 320, 240, ladi_v2a.EARLIER)
    bare = ladi_v2a.render_picture(_scene("grass"), np.random.default_rng(1), 320, 240, ladi_v2a.EARLIER)
    labels = dict(zip(CLASSES, ladi_v2a.derive_labels(scene[None])[0], strict=True))
    changed = np.abs(picture.astype(int) - bare).max(axis=-1) > 40
    roughness = np.abs(np.diff(picture.astype(int), axis=1)).max(axis=-1)[changed[:, 1:]].mean()  # grey levels
    assert labels["buildings_any"] == 1 and changed.sum() > 500
    assert labels["buildings_affected_or_greater"] == (roughness > 6)  # plain roofs are smooth, damage marks not
    tarp = _tarp_pixels(picture) > 20  # minor and major: a blue tarp; destroyed: rubble over the lot
    assert labels["buildings_minor_or_greater"] == (tarp or roughness > 15)
    assert labels["debris_any"] == (roughness > 15)


def test_every_drawn_element_shows_in_the_picture():
    bare = ladi_v2a.render_picture(_scene(), np.random.default_rng(2), 320, 240, ladi_v2a.EARLIER)
    for name in ladi_v2a.ELEMENTS:
        picture = ladi_v2a.render_picture(_scene(name), np.random.default_rng(2), 320, 240, ladi_v2a.EARLIER)
        assert (np.abs(picture.astype(int) - bare).max(axis=-1) > 40).mean() > 0.005, name


def test_vote_is_the_majority_of_three_annotators():
    n, miss, false = 20000, 0.3, 0.2
    rng = np.random.default_rng(0)
    bridges = np.zeros((n, len(ladi_v2a.ELEMENTS)), np.uint8)
    bridges[: n // 2, ladi_v2a.ELEMENTS.index("bridge")] = 1  # bridges_any is shown by the bridge alone
    voted = ladi_v2a.vote(bridges, rng, miss, false)[:, CLASSES.index("bridges_any")]
    for rate, p, observed in ((3 * miss**2 - 2 * miss**3, miss, 1 - voted[: n // 2].mean()),
                              (3 * false**2 - 2 * false**3, false, voted[n // 2:].mean())):
        assert abs(observed - rate) < 5 * np.sqrt(rate * (1 - rate) / (n // 2)), (observed, rate)
        assert abs(observed - p) > 0.05  # not one annotator's rate
    exact = ladi_v2a.vote(bridges, rng, 0.0, 0.0)
    assert (exact == ladi_v2a.derive_labels(bridges)).all()


def test_frequencies_look_like_ladi_v2a_and_the_later_event_shifts():
    earlier = ladi_v2a.derive_labels(ladi_v2a.sample_scenes(20000, np.random.default_rng(4), ladi_v2a.EARLIER))
    later = ladi_v2a.derive_labels(ladi_v2a.sample_scenes(20000, np.random.default_rng(5), ladi_v2a.LATER))
    frequency = pd.Series(earlier.mean(axis=0), index=CLASSES)
    assert set(frequency.nlargest(3).index) == {"buildings_any", "roads_any", "trees_any"}
    rare = ["bridges_any", "buildings_minor_or_greater", "roads_damage", "trees_damage", "flooding_structures"]
    assert (frequency[rare] < 0.1).all() and (frequency[rare] > 0.01).all()
    assert later[:, CLASSES.index("flooding_any")].mean() > frequency["flooding_any"] + 0.05


def test_qrels_by_class_name_follow_clip_truth(world):
    shots = pd.read_csv(world.clips_table)["shot_id"].tolist()
    truth = pd.read_csv(world.clip_truth)
    assert list(truth.columns) == ["shot_id", "feature", "topic", "start_s", "end_s", "frames", "sampled"]
    assert (truth["topic"] == truth["feature"]).all() and set(truth["feature"]) <= set(CLASSES)
    qrels = [line.split() for line in world.qrels.read_text().splitlines()]
    assert [(q[0], q[2]) for q in qrels] == [(c, s) for c in CLASSES for s in shots]  # class order, every clip
    sampled = {(row.topic, row.shot_id) for row in truth.itertuples()
               if any(t % 3 == 0 for t in range(round(row.start_s * 30), round(row.end_s * 30)))}
    assert {(q[0], q[2]) for q in qrels if q[3] == "1"} == sampled and sampled
    for narrower, wider in IMPLIED:
        assert {s for c, s in sampled if c == narrower} <= {s for c, s in sampled if c == wider}


def _digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_cli_matches_library_and_refuses_other_label_sets(tmp_path, cli):
    assert SynthConfig.__dataclass_fields__["labelset"].metadata["choices"] == LABELSETS == ("ladi-v1", "ladi-v2a")
    options = dict(n_images=5, n_clips=1, seed=2, image_size=(96, 72), clip_size=(96, 54), clip_seconds=(0.5, 0.6))
    library = build_world(tmp_path / "a", labelset="ladi-v2a", **options)
    result = cli("synth", "--out", str(tmp_path / "b"), "--labelset", "ladi-v2a", "--images", "5", "--clips", "1",
                 "--seed", "2", "--image-resolution", "96x72", "--clip-resolution", "96x54", "--clip-seconds",
                 "0.5-0.6", expect=None)
    assert result.exit_code == 0 and "labels.csv" in result.output, result.output
    assert _digest(library.root) == _digest(tmp_path / "b")
    for flags in (["--labelset", "ladi-v2"], ["--labelset", "ladi-v2a", "--outlier-rate", "0.2"]):
        result = cli("synth", "--out", str(tmp_path / "c"), *flags, expect=None)
        assert result.exit_code == 2 and flags[-2] in result.output, result.output
