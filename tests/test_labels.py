"""`dsdi labels`: LADI answers -> soft / hard / majority labels, checked through the real CLI on real files.

Expected values come from hand computation (paper Fig. 1 and small worked cases) and from an independent
pure-Python re-derivation (csv module + ast.literal_eval + collections.Counter) of the documented rules.
"""

from __future__ import annotations

import ast
import csv
import inspect
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dsdi.labels.crowd import parse_answer, read_annotations, soft_labels
from dsdi.labels.schema import CLASSES, category_of, load_token_map, normalise_token

LADI_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ladi-sample"

FLOOD, SMOKE, DAMAGE_NONE = "damage:flood/water", "damage:smoke/fire", "damage:none"


def write_annotations(path: Path, rows: list[tuple[str, str, list[str]]], sep: str = "\t", id_column: str = "url"):
    """Write (image id, worker, tokens) rows in LADI's format: Answer as the Python repr of the token list."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=sep, lineterminator="\n")
        writer.writerow([id_column, "WorkerId", "Answer"])
        writer.writerows([image, worker, repr(tokens)] for image, worker, tokens in rows)
    return path


def read_labels(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str}, keep_default_na=False)


def row_of(labels: pd.DataFrame, image_id: str) -> dict[str, float]:
    return labels.set_index("image_id").loc[image_id].to_dict()


def expect_only(values: dict[str, float], nonzero: dict[str, float]) -> None:
    """All 37 classes: the given ones equal exactly, the rest exactly 0."""
    assert values == {name: nonzero.get(name, 0.0) for name in CLASSES}


def reference_labels(path: Path, mode: str, sep: str) -> dict[str, list[float]]:
    """Independent re-derivation of the documented rules, one image at a time, in plain Python."""
    token_map = load_token_map()
    per_image: dict[str, list[list[str]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=sep):
            classes = sorted({token_map[normalise_token(t)] for t in ast.literal_eval(row["Answer"])})
            per_image.setdefault(row["url"].strip(), []).append(classes)
    result = {}
    for image, answers in per_image.items():
        counts = Counter(name for classes in answers for name in classes)
        rows_per_category = Counter(c for classes in answers for c in {category_of(n) for n in classes})
        largest = max(counts.values(), default=0)
        if mode == "soft":
            result[image] = [counts[n] / largest if largest else 0.0 for n in CLASSES]
        elif mode == "hard":
            result[image] = [1.0 if counts[n] else 0.0 for n in CLASSES]
        else:
            result[image] = [
                1.0 if counts[n] and 2 * counts[n] >= rows_per_category[category_of(n)] else 0.0 for n in CLASSES
            ]
    return result


# ---- the paper's Fig. 1 and hand-computed cases -------------------------------------------------------------


def test_fig1_soft_label_exact(tmp_path, cli):
    """Paper Fig. 1: six answers [flood x4, smoke x1, damage:none x1] -> 1.0, 0.25, 0.25, the other 34 are 0."""
    tokens = [[FLOOD], [FLOOD], [SMOKE], [FLOOD], [FLOOD], [DAMAGE_NONE]]
    src = write_annotations(tmp_path / "fig1.tsv", [("fig1.jpg", f"w{i}", t) for i, t in enumerate(tokens)])
    out = tmp_path / "data" / "labels.csv"
    result = cli("labels", src, "--out", out, expect=None)
    assert result.exit_code == 0, result.output
    labels = read_labels(out)
    assert list(labels.columns) == ["image_id", *CLASSES]
    assert len(labels) == 1
    expect_only(
        row_of(labels, "fig1.jpg"), {"flooding / water damage": 1.0, "smoke / fire": 0.25, "damage: none": 0.25}
    )
    assert "6 / 6 / 6" in result.output  # answers per image min / median / max
    assert "images" in result.output and "answer rows" in result.output


# Image A, damage rows: {flood, rubble}, {flood}, {none}, {rubble} -> counts 2, 2, 1 of 4 damage rows;
#          infrastructure rows: {road}, {none}, {none} -> counts 1, 2 of 3 infrastructure rows.
# Image B: [] and {car}: the empty row names no category, so car has 1 of 1 vehicle rows.
# Image C: only [] -> all zeros.  Image D: a row naming flood twice counts once, beside one misc row.
HAND_ROWS = [
    ("A", "w1", [FLOOD, "damage:rubble"]),
    ("A", "w2", [FLOOD]),
    ("A", "w3", [DAMAGE_NONE]),
    ("A", "w4", ["damage:rubble"]),
    ("A", "w1", ["infrastructure:road"]),
    ("A", "w2", ["infrastructure:none"]),
    ("A", "w5", ["infrastructure:none"]),
    ("B", "w1", []),
    ("B", "w2", ["vehicles:car"]),
    ("C", "w3", []),
    ("D", "w1", [FLOOD, FLOOD]),
    ("D", "w2", ["damage:misc"]),
]
HAND_EXPECTED = {
    "soft": {
        "A": {
            "flooding / water damage": 1.0,
            "rubble / debris": 1.0,
            "damage: none": 0.5,
            "road": 0.5,
            "infrastructure: none": 1.0,
        },
        "B": {"car": 1.0},
        "C": {},
        "D": {"flooding / water damage": 1.0, "damage (misc)": 1.0},
    },
    "hard": {
        "A": {
            "flooding / water damage": 1.0,
            "rubble / debris": 1.0,
            "damage: none": 1.0,
            "road": 1.0,
            "infrastructure: none": 1.0,
        },
        "B": {"car": 1.0},
        "C": {},
        "D": {"flooding / water damage": 1.0, "damage (misc)": 1.0},
    },
    "majority": {  # 2 of 4 damage rows is half -> 1; 1 of 4 -> 0; 1 of 3 road -> 0; 2 of 3 none -> 1
        "A": {"flooding / water damage": 1.0, "rubble / debris": 1.0, "infrastructure: none": 1.0},
        "B": {"car": 1.0},
        "C": {},
        "D": {"flooding / water damage": 1.0, "damage (misc)": 1.0},
    },
}


@pytest.mark.parametrize("mode", ["soft", "hard", "majority"])
def test_modes_on_hand_computed_cases(tmp_path, mode, cli):
    src = write_annotations(tmp_path / "hand.tsv", HAND_ROWS)
    out = tmp_path / f"{mode}.csv"
    result = cli("labels", src, "--out", out, "--mode", mode, expect=None)
    assert result.exit_code == 0, result.output
    labels = read_labels(out)
    assert list(labels["image_id"]) == ["A", "B", "C", "D"]  # order of first appearance, no image dropped
    for image, nonzero in HAND_EXPECTED[mode].items():
        expect_only(row_of(labels, image), nonzero)
    assert "1 / 2 / 7" in result.output  # answers per image: C has 1, B and D 2, A 7
    assert "empty answers" in result.output


def test_library_function_matches_cli(tmp_path):
    src = write_annotations(tmp_path / "hand.tsv", HAND_ROWS)
    labels = soft_labels(read_annotations(src), mode="majority")
    assert list(labels.columns) == ["image_id", *CLASSES]
    for image, nonzero in HAND_EXPECTED["majority"].items():
        expect_only(row_of(labels, image), nonzero)


# ---- file formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("id_column", ["url", "img_url", "image_uuid"])
@pytest.mark.parametrize("sep", ["\t", ","])
def test_tab_and_comma_files_and_all_id_columns(tmp_path, id_column, sep, cli):
    src = write_annotations(tmp_path / "ann.txt", HAND_ROWS, sep=sep, id_column=id_column)
    out = tmp_path / "labels.csv"
    result = cli("labels", src, "--out", out, expect=None)
    assert result.exit_code == 0, result.output
    labels = read_labels(out)
    for image, nonzero in HAND_EXPECTED["soft"].items():
        expect_only(row_of(labels, image), nonzero)


def random_rows(rng: np.random.Generator, n_rows: int, n_images: int) -> list[tuple[str, str, list[str]]]:
    """Random answers over every mapped token, spelled with varied case and separators, some lists empty."""
    tokens = sorted(load_token_map())
    variants = [lambda t: t, str.upper, lambda t: t.replace("-", " / "), lambda t: t.replace("-", "_").title()]
    rows = []
    for _ in range(n_rows):
        n_tokens = rng.choice([0, 1, 1, 1, 2, 3])
        answer = [variants[rng.integers(len(variants))](tokens[rng.integers(len(tokens))]) for _ in range(n_tokens)]
        rows.append((f"https://ladi.example/Images/{rng.integers(n_images):05d}.jpg", f"W{rng.integers(50)}", answer))
    return rows


@pytest.mark.parametrize("mode", ["soft", "hard", "majority"])
@pytest.mark.parametrize("sep", ["\t", ","])
def test_random_files_match_plain_python_reference(tmp_path, mode, sep, cli):
    rng = np.random.default_rng(["soft", "hard", "majority"].index(mode) * 2 + (sep == ","))
    src = write_annotations(tmp_path / "ann.txt", random_rows(rng, 3000, 400), sep=sep)
    out = tmp_path / "labels.csv"
    result = cli("labels", src, "--out", out, "--mode", mode, expect=None)
    assert result.exit_code == 0, result.output
    labels = read_labels(out).set_index("image_id")
    expected = reference_labels(src, mode, sep)
    assert list(labels.index) == list(expected)
    np.testing.assert_array_equal(labels.to_numpy(), np.array(list(expected.values())))


def test_line_numbers_with_blank_lines_and_quoted_newlines(tmp_path, cli):
    src = tmp_path / "odd.csv"
    src.write_text(
        "url,WorkerId,Answer\n"
        "a.jpg,w1,\"['damage:none']\"\n"  # line 2
        "\n"  # line 3: blank
        'b.jpg,"w\n2","[\'damage:none\']"\n'  # lines 4-5: a quoted newline
        "c.jpg,w3,not a list\n"  # line 6
        "d.jpg,w4,\"['damage:none'\"\n",  # line 7
        encoding="utf-8",
    )
    assert_input_error(cli("labels", src, "--out", tmp_path / "labels.csv", expect=None),
                       "2 Answer value(s)", "line(s) 6, 7")


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("['damage:flood/water', 'damage:none']", ["damage:flood/water", "damage:none"]),
        ("[]", []),
        ("  [ 'a:b' , ]  ", ["a:b"]),
        ('["water:lake/pond"]', ["water:lake/pond"]),
        ("('damage:misc',)", ["damage:misc"]),
        ('["it\'s:odd"]', ["it's:odd"]),
        ("damage:none", None),
        ("", None),
        ("[1, 2]", None),
        ("['a:b'", None),
        ("{'a:b'}", None),
    ],
)
def test_parse_answer(text, tokens):
    assert parse_answer(text) == tokens


# ---- bad input: exit 2 with a message that says what and where ---------------------------------------------


def assert_input_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # undo rich's line wrapping
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("url\tWorkerId\tResponse", "missing column 'Answer'"),
        ("url\tworker\tAnswer", "missing column 'WorkerId'"),
        ("image\tWorkerId\tAnswer", "missing image id column (one of url, img_url, image_uuid)"),
    ],
)
def test_missing_column_names_it_and_the_columns_found(tmp_path, header, missing, cli):
    src = tmp_path / "ann.tsv"
    src.write_text(f"{header}\nx.jpg\tw1\t['damage:none']\n", encoding="utf-8")
    out = tmp_path / "labels.csv"
    result = cli("labels", src, "--out", out, expect=None)
    found = header.replace("\t", ", ")
    assert_input_error(result, missing, f"columns found: {found}")
    assert not out.exists()


def test_unparseable_answers_list_first_lines_and_total(tmp_path, cli):
    rows = []
    for i in range(30):
        rows.append(f"img{i}.jpg\tw1\t['damage:none']")
        if i % 2:
            rows.append(f"img{i}.jpg\tw2\tdamage:flood/water")  # not a list
    src = tmp_path / "ann.tsv"
    src.write_text("url\tWorkerId\tAnswer\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = cli("labels", src, "--out", tmp_path / "labels.csv", expect=None)
    # header = line 1; img0 line 2; img1 lines 3 (good) and 4 (bad); img2 line 5; img3 lines 6, 7 (bad) ...
    first_ten = ", ".join(str(4 + 3 * k) for k in range(10))
    assert_input_error(result, "15 Answer value(s)", f"line(s) {first_ten}, ...", str(src))


def test_unknown_tokens_listed_with_counts_unless_skipped(tmp_path, cli):
    rows = [
        ("a.jpg", "w1", [FLOOD, "water:swamp"]),
        ("a.jpg", "w2", ["water:swamp"]),
        ("b.jpg", "w1", ["water:swamp", "damage:alien"]),
        ("b.jpg", "w2", [FLOOD]),
    ]
    src = write_annotations(tmp_path / "ann.tsv", rows)
    out = tmp_path / "labels.csv"
    result = cli("labels", src, "--out", out, expect=None)
    assert_input_error(
        result, "'water:swamp' x3 (first at line 2)", "'damage:alien' x1 (first at line 4)", "--skip-unknown"
    )
    assert not out.exists()

    skipped = cli("labels", src, "--out", out, "--skip-unknown", expect=None)
    assert skipped.exit_code == 0, skipped.output
    assert "4 (water:swamp x3, damage:alien x1)" in " ".join(skipped.output.split())
    labels = read_labels(out)
    expect_only(row_of(labels, "a.jpg"), {"flooding / water damage": 1.0})
    expect_only(row_of(labels, "b.jpg"), {"flooding / water damage": 1.0})  # the unknown-only row names nothing


def test_user_token_map_extends_the_shipped_one(tmp_path, cli):
    src = write_annotations(tmp_path / "ann.tsv", [("a.jpg", "w1", ["water:swamp", FLOOD]), ("a.jpg", "w2", [FLOOD])])
    user_map = tmp_path / "tokens.csv"
    user_map.write_text("token,class\nwater:swamp,flooding\n", encoding="utf-8")
    out = tmp_path / "labels.csv"
    result = cli("labels", src, "--out", out, "--token-map", user_map, expect=None)
    assert result.exit_code == 0, result.output
    expect_only(row_of(read_labels(out), "a.jpg"), {"flooding / water damage": 1.0, "flooding": 0.5})


def test_bad_token_map_files(tmp_path, cli):
    src = write_annotations(tmp_path / "ann.tsv", [("a.jpg", "w1", [FLOOD])])
    wrong_class = tmp_path / "tokens.csv"
    wrong_class.write_text("token,class\nwater:swamp,swamp\n", encoding="utf-8")
    assert_input_error(cli("labels", src, "--token-map", wrong_class, expect=None),
                       "class 'swamp' is not one of the 37")
    assert_input_error(cli("labels", src, "--token-map", tmp_path / "nope.csv", expect=None),
                       "nope.csv", "cannot read it")


def test_empty_ids_missing_and_empty_files(tmp_path, cli):
    src = tmp_path / "ann.tsv"
    src.write_text("url\tWorkerId\tAnswer\na.jpg\tw1\t[]\n \tw2\t['damage:none']\n", encoding="utf-8")
    assert_input_error(cli("labels", src, expect=None), "1 row(s) with an empty image id", "line(s) 3")
    assert_input_error(cli("labels", tmp_path / "absent.tsv", expect=None), "absent.tsv", "no such annotation file")
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    assert_input_error(cli("labels", empty, expect=None), "the file is empty")
    empty.write_text("url\tWorkerId\tAnswer\n", encoding="utf-8")
    assert_input_error(cli("labels", empty, expect=None), "no answer rows after the header line")


def test_unquoted_answer_in_comma_file(tmp_path, cli):
    src = tmp_path / "ann.csv"
    src.write_text(
        "url,WorkerId,Answer\na.jpg,w1,['damage:none', 'damage:misc']\nb.jpg,w1,['damage:none']\n"
        "c.jpg,w1,['damage:none', 'damage:misc']\n",
        encoding="utf-8",
    )
    assert_input_error(cli("labels", src, expect=None),
                       "2 row(s) have more fields than the header (3)", "line(s) 2, 4", "quote")


def test_failed_run_keeps_the_previous_output_and_leaves_no_temp_file(tmp_path, cli):
    out = tmp_path / "labels.csv"
    good = write_annotations(tmp_path / "good.tsv", HAND_ROWS)
    assert cli("labels", good, "--out", out, expect=None).exit_code == 0
    before = out.read_bytes()
    bad = write_annotations(tmp_path / "bad.tsv", [("a.jpg", "w1", ["water:swamp"])])
    assert cli("labels", bad, "--out", out, expect=None).exit_code == 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "good.tsv", "labels.csv"]


# ---- size and real data ------------------------------------------------------------------------------------


def test_200k_rows(tmp_path, cli):
    """The real LADI file size (~200k answer rows) goes through the CLI (about 2 s here; timing in the report)."""
    rng = np.random.default_rng(7)
    n_rows, n_images = 200_000, 20_000
    tokens = sorted(load_token_map())
    distinct_answers = np.array(["[]"] + [repr([a]) for a in tokens] + [repr([a, b]) for a in tokens for b in tokens])
    answers = distinct_answers[rng.integers(len(distinct_answers), size=n_rows)]
    urls = np.char.add("https://ladi.example/", np.char.zfill(rng.integers(n_images, size=n_rows).astype(str), 6))
    workers = rng.integers(500, size=n_rows).astype(str)
    src = tmp_path / "big.tsv"
    src.write_text(
        "url\tWorkerId\tAnswer\n"
        + "".join(f"{u}\t{w}\t{a}\n" for u, w, a in zip(urls.tolist(), workers.tolist(), answers.tolist(), strict=True))
    )
    out = tmp_path / "labels.csv"
    result = cli("labels", src, "--out", out, "--mode", "hard", expect=None)
    assert result.exit_code == 0, result.output
    assert "200,000" in result.output
    labels = read_labels(out).set_index("image_id")
    assert list(labels.index) == list(dict.fromkeys(urls))
    for token, name in [("environment:lava", "lava"), ("infrastructure:water-tower", "water tower")]:
        named = np.char.find(answers, f"'{token}'") >= 0
        assert set(labels.index[labels[name] == 1.0]) == set(urls[named])


@pytest.mark.skipif(not (LADI_SAMPLE / "flood_tiny_metadata.csv").is_file(), reason="no ../shared/data/ladi-sample")
@pytest.mark.parametrize(("id_column", "meta_column"), [("img_url", "url"), ("image_uuid", "uuid")])
def test_real_ladi_ids_round_trip(tmp_path, id_column, meta_column, cli):
    """Real LADI urls and uuids (from the metadata sample) come out as the image_id unchanged."""
    ids = pd.read_csv(LADI_SAMPLE / "flood_tiny_metadata.csv", dtype=str)[meta_column].tolist()
    rows = [(image, f"w{k}", [FLOOD] if k % 2 else [DAMAGE_NONE]) for image in ids for k in range(3)]
    src = write_annotations(tmp_path / "ann.tsv", rows, id_column=id_column)
    out = tmp_path / "labels.csv"
    assert cli("labels", src, "--out", out, expect=None).exit_code == 0
    labels = read_labels(out)
    assert labels["image_id"].tolist() == list(dict.fromkeys(ids))
    assert set(labels["flooding / water damage"]) == {0.5} and set(labels["damage: none"]) == {1.0}


def test_noise_free_synthetic_world_gives_its_true_labels(tmp_path, cli):
    """With workers who never miss nor invent a feature, `dsdi synth`'s answers give back its true labels:
    exactly for hard and majority (none-classes included), and the same positives for soft."""
    synth = pytest.importorskip("dsdi.synth", reason="dsdi.synth (the synthetic world) is not in this tree")
    if "miss_rate" not in inspect.signature(synth.build_world).parameters:
        pytest.skip("dsdi.synth.build_world has no miss_rate/false_rate parameters")
    world = synth.build_world(tmp_path / "world", n_images=12, n_clips=0, seed=3, miss_rate=0.0, false_rate=0.0)
    truth = read_labels(world.true_labels).set_index("image_id")[list(CLASSES)]
    for mode in ("soft", "hard", "majority"):
        out = tmp_path / f"{mode}.csv"
        assert cli("labels", world.annotations, "--out", out, "--mode", mode, expect=None).exit_code == 0
        labels = read_labels(out).set_index("image_id")[list(CLASSES)]
        assert list(labels.index) == list(truth.index)
        if mode == "soft":
            np.testing.assert_array_equal(labels.to_numpy() > 0, truth.to_numpy() > 0)
        else:
            np.testing.assert_array_equal(labels.to_numpy(), truth.to_numpy())
