"""Run files: TRECVID XML checked with lxml against the shipped DTD, TREC form read back by pytrec_eval's
parser, qrels, rank_features against an independent sort, and the refusal of bad rankings and bad lines."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from dsdi.errors import InputError
from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import CLASSES, FEATURES, NONE_CLASSES
from dsdi.trecvid.qrels import read_qrels
from dsdi.trecvid.submission import (
    check_rankings,
    rank_features,
    read_run,
    write_submission_xml,
    write_trec_run,
)

DTD_PATH = str(resources.files("dsdi") / "data_files" / "videoFeatureExtractionResults.dtd")


def random_rankings(rng: np.random.Generator, n_features: int = 5, n_shots: int = 40) -> dict:
    """fNum -> [(shot, score)] best first, distinct decreasing scores, random lengths (0 allowed)."""
    rankings = {}
    for fnum in rng.choice(np.arange(1, 33), size=n_features, replace=False):
        length = int(rng.integers(0, n_shots))
        shots = rng.permutation([f"Shot{i}_{i % 7:03d}" for i in range(n_shots)])[:length]
        scores = np.sort(rng.random(length))[::-1]
        rankings[int(fnum)] = [(str(s), float(v)) for s, v in zip(shots, scores, strict=True)]
    return rankings


def validate_with_lxml(path) -> etree._ElementTree:
    """Parse with lxml, validating against the DTD file shipped in the package (independent of dsdi code)."""
    tree = etree.parse(str(path), etree.XMLParser(load_dtd=False, no_network=True))
    dtd = etree.DTD(DTD_PATH)
    assert dtd.validate(tree), dtd.error_log.filter_from_errors()
    return tree


# ---- XML -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_xml_validates_against_dtd_and_round_trips(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rankings = random_rankings(rng)
    path = tmp_path / "run.xml"
    write_submission_xml(path, rankings, pid="HTC", run_desc="ensemble A01-C12", tr_type="O", priority=2,
                         elapsed_s={fnum: 1.5 for fnum in rankings})
    tree = validate_with_lxml(path)
    assert tree.docinfo.doctype.startswith("<!DOCTYPE videoFeatureExtractionResults")
    run = tree.getroot().find("videoFeatureExtractionRunResult")
    assert (run.get("trType"), run.get("pid"), run.get("priority"), run.get("desc")) == (
        "O", "HTC", "2", "ensemble A01-C12")
    for feature in run:
        items = feature.findall("item")
        expected = rankings[int(feature.get("fNum"))]
        assert [int(i.get("seqNum")) for i in items] == list(range(1, len(expected) + 1))
        assert [i.get("shotId") for i in items] == [s for s, _ in expected]
        assert float(feature.get("elapsedTime")) == 1.5
    back = read_run(path)
    assert set(back) == set(rankings)
    for fnum, ranking in rankings.items():
        assert [s for s, _ in back[fnum]] == [s for s, _ in ranking]
        synthetic = [score for _, score in back[fnum]]
        assert synthetic == sorted(synthetic, reverse=True) and len(set(synthetic)) == len(synthetic)


def test_xml_escapes_description_and_keeps_previous_file_on_refusal(tmp_path):
    path = tmp_path / "run.xml"
    write_submission_xml(path, {3: [("Shot1_001", 0.9)]}, pid="T&M", run_desc='a "quoted" <desc>')
    run = validate_with_lxml(path).getroot()[0]
    assert run.get("pid") == "T&M" and run.get("desc") == 'a "quoted" <desc>'
    before = path.read_bytes()
    with pytest.raises(ValueError, match="'Shot1_001' appears twice"):
        write_submission_xml(path, {3: [("Shot1_001", 0.9), ("Shot1_001", 0.5)]}, pid="T", run_desc="")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.xml"]  # no temp file left behind


# case -> (rankings, exception, message): InputError where user data (--topk, a score table) can cause it,
# ValueError where only calling code can (rank_features and read_run check the data first).
BAD_RANKINGS = {
    "duplicate shot": ({1: [("Shot1_001", 0.9), ("Shot1_001", 0.5)]}, ValueError, "'Shot1_001' appears twice"),
    "score increases": ({1: [("Shot1_001", 0.5), ("Shot2_001", 0.9)]}, ValueError, "rank 2: score 0.9 is higher"),
    "nan score": ({1: [("Shot1_001", math.nan)]}, InputError, "score nan of shot 'Shot1_001' is not a finite"),
    "whitespace in shot id": ({1: [("Shot 1", 0.5)]}, ValueError, "shot id 'Shot 1' must be a non-empty"),
    "empty shot id": ({1: [("", 0.5)]}, ValueError, "shot id '' must be a non-empty"),
    "number as text": ({"1": [("Shot1_001", 0.5)]}, ValueError, "topic '1' must be a non-negative int or a name"),
    "spaced name": ({"roads any": [("Shot1_001", 0.5)]}, ValueError, "topic 'roads any' must be"),
    "bool fNum": ({True: [("Shot1_001", 0.5)]}, ValueError, "topic True must be"),
    "negative fNum": ({-1: [("Shot1_001", 0.5)]}, ValueError, "topic -1 must be"),
    "ranking not a list": ({1: "Shot1_001"}, ValueError, "ranking must be a list"),
    "entry not a pair": ({1: [("Shot1_001", 0.5, 3)]}, ValueError, "expected \\(shot_id, score\\)"),
    "not a dict": ([(1, [("Shot1_001", 0.5)])], ValueError, "rankings must be a dict"),
    "too many items": ({1: [(f"Shot{i}", 1.0 / (i + 1)) for i in range(1001)]}, InputError,
                       "1001 ranked shots, at most 1000 allowed; use --topk 1000 or less"),
}


@pytest.mark.parametrize("case", sorted(BAD_RANKINGS))
def test_invalid_rankings_are_refused_by_both_writers(tmp_path, case):
    rankings, error, message = BAD_RANKINGS[case]
    with pytest.raises(error, match=message):
        write_submission_xml(tmp_path / "run.xml", rankings, pid="T", run_desc="d")
    if case != "too many items":  # the TREC form has no NIST length limit
        with pytest.raises(error, match=message):
            write_trec_run(tmp_path / "run.trec", rankings, "r1")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tr_type": "A"}, "--tr-type 'A': choose one of L, O"),
        ({"priority": 0}, "--priority 0: the submission priority must be an integer >= 1"),
        ({"pid": " "}, "--pid: the team id must not be empty"),
        ({"elapsed_s": -1.0}, "elapsed time for feature 1 must be a finite number >= 0 seconds, got -1.0"),
        ({"elapsed_s": math.inf}, "got inf .*run.json"),
        ({"elapsed_s": {1: "3 s"}}, "got '3 s'"),
    ],
)
def test_invalid_run_attributes_are_refused(tmp_path, kwargs, message):
    arguments = {"pid": "T", "run_desc": "d", **kwargs}
    with pytest.raises(InputError, match=message):
        write_submission_xml(tmp_path / "run.xml", {1: [("Shot1_001", 0.5)]}, **arguments)


@pytest.mark.parametrize("run_id", ["", "my run"])
def test_invalid_run_id_is_refused(tmp_path, run_id):
    with pytest.raises(InputError, match=f"--run-id '{run_id}': the run id must be non-empty and without whitespace"):
        write_trec_run(tmp_path / "run.trec", {1: [("Shot1_001", 0.5)]}, run_id)
    assert list(tmp_path.iterdir()) == []


def xml_text(body: str, run_attributes: str = 'trType="L" pid="T" priority="1" desc="d"') -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE videoFeatureExtractionResults SYSTEM "videoFeatureExtractionResults.dtd">\n'
        f"<videoFeatureExtractionResults>\n<videoFeatureExtractionRunResult {run_attributes}>\n{body}\n"
        "</videoFeatureExtractionRunResult>\n</videoFeatureExtractionResults>\n"
    )


FEATURE_OPEN = '<videoFeatureExtractionFeatureResult fNum="{}" elapsedTime="0">'
FEATURE_CLOSE = "</videoFeatureExtractionFeatureResult>"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (xml_text(FEATURE_OPEN.format(1) + '\n<item seqNum="1" shotId="a"/>\n<item seqNum="3" shotId="b"/>\n'
                  + FEATURE_CLOSE), "line 5: seqNum of feature 1 must run 1..2"),
        (xml_text(FEATURE_OPEN.format(1) + '\n<item seqNum="1" shotId="a"/>\n<item seqNum="2" shotId="a"/>\n'
                  + FEATURE_CLOSE), "line 7: shot 'a' is listed twice"),
        (xml_text(FEATURE_OPEN.format(1) + FEATURE_CLOSE + "\n" + FEATURE_OPEN.format(1) + FEATURE_CLOSE),
         "line 6: feature 1 appears twice"),
        (xml_text(FEATURE_OPEN.format(1) + FEATURE_CLOSE, run_attributes='trType="X" pid="T" priority="1" desc=""'),
         "line 4: does not match the TRECVID DTD"),
        (xml_text(FEATURE_OPEN.format(1) + '\n<item seqNum="1"/>\n' + FEATURE_CLOSE),
         "line 6: does not match the TRECVID DTD"),
        (xml_text(FEATURE_OPEN.format(1) + '\n<item seqNum="1" shotId="a">\n' + FEATURE_CLOSE),
         "not well-formed XML"),
        (xml_text(FEATURE_OPEN.format("x") + FEATURE_CLOSE), "line 5: fNum 'x' is not an integer"),
    ],
)
def test_bad_xml_run_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(InputError, match="bad.xml") as error:
        read_run(path)
    assert message in str(error.value)


# ---- TREC form -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_trec_run_is_read_by_pytrec_eval_and_round_trips(tmp_path, seed):
    rankings = random_rankings(np.random.default_rng(seed))
    path = tmp_path / "run.trec"
    write_trec_run(path, rankings, "dsdi_run1")
    with open(path) as handle:
        parsed = pytrec_eval.parse_run(handle)
    expected = {str(f): {s: v for s, v in ranking} for f, ranking in rankings.items() if ranking}
    assert parsed == expected  # scores survive exactly (round-trip float text)
    for line in path.read_text().splitlines():
        fnum, q0, shot, rank, score, run_id = line.split()
        assert q0 == "Q0" and run_id == "dsdi_run1"
        assert rankings[int(fnum)][int(rank) - 1] == (shot, float(score))
    assert read_run(path) == {f: r for f, r in rankings.items() if r}


def test_trec_reader_orders_by_rank_column(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("# comment\n\n2 Q0 b 2 0.5 r\n2 Q0 a 1 0.7 r\n1 Q0 c 1 0.1 r\n")
    assert read_run(path) == {1: [("c", 0.1)], 2: [("a", 0.7), ("b", 0.5)]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 Q0 a 1 0.5 r\n1 Q0 b 2 0.4\n", "line 2: expected 6 columns"),
        ("1 Q0 a 1 0.5 r\n1 Q0 a 2 0.4 r\n", "line 2: shot 'a' is ranked twice for feature 1 (first on line 1)"),
        ("1 Q0 a 1 0.5 r\n1 Q0 b 1 0.4 r\n", "line 2: rank 1 is used twice"),
        ("1 Q0 a 1 0.5 r\n2 Q0 b 1 0.4 other\n", "line 2: run id 'other' differs"),
        ("1 Q0 a one 0.5 r\n", "line 1: rank 'one' is not an integer"),
        ("1 Q0 a 1 high r\n", "line 1: score 'high' is not a number"),
        ("1 Q0 a 1 nan r\n", "line 1: score 'nan' is not finite"),
        ("\n# nothing\n", "no run lines found"),
    ],
)
def test_bad_trec_run_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.trec"
    path.write_text(text)
    with pytest.raises(InputError, match="bad.trec") as error:
        read_run(path)
    assert message in str(error.value)


def test_latin_1_xml_and_utf8_bom_trec_are_read(tmp_path):
    path = tmp_path / "latin1.xml"
    text = xml_text(FEATURE_OPEN.format(4) + '\n<item seqNum="1" shotId="Shot1_001"/>\n' + FEATURE_CLOSE,
                    run_attributes='trType="L" pid="VCL" priority="1" desc="caf\u00e9 run"')
    path.write_bytes(text.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').encode("latin-1"))
    assert read_run(path) == {4: [("Shot1_001", 1.0)]}
    bom_trec = tmp_path / "bom.trec"
    bom_trec.write_bytes(b"\xef\xbb\xbf1 Q0 a 1 0.5 r\n")
    assert read_run(bom_trec) == {1: [("a", 0.5)]}


def test_missing_run_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_run(tmp_path / "absent.xml")


# ---- qrels -----------------------------------------------------------------------------------


def test_read_qrels_matches_pytrec_eval_parser(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{f} 0 Shot{s}_001 {rng.integers(0, 3)}" for f in range(1, 6) for s in range(20) if rng.random() < 0.6]
    path = tmp_path / "qrels.txt"
    path.write_text("\n".join(lines) + "\n")
    with open(path) as handle:
        reference = pytrec_eval.parse_qrel(handle)
    assert {str(f): judged for f, judged in read_qrels(path).items()} == reference


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 0 a 1\n1 0 b\n", "line 2: expected 4 columns"),
        ("1 0 a 1\n1 0 b yes\n", "line 2: relevance 'yes' is not an integer"),
        ("1 0 a 1\n\n1 0 a 0\n", "line 3: shot 'a' is judged twice for feature 1 (first on line 1)"),
        ("", "no judgements found"),
    ],
)
def test_bad_qrels_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "q.txt"
    path.write_text(text)
    with pytest.raises(InputError, match="q.txt") as error:
        read_qrels(path)
    assert message in str(error.value)


# ---- rank_features ---------------------------------------------------------------------------


def reference_ranking(shot_ids, column_scores, topk):
    """Independent re-derivation: Python sort by (-score, shot id)."""
    order = sorted(zip(shot_ids, column_scores, strict=True), key=lambda pair: (-pair[1], pair[0]))
    return [(s, float(v)) for s, v in order[:topk]]


@pytest.mark.parametrize("topk", [1, 7, 1000])
def test_rank_features_matches_reference_sort_with_ties(topk):
    rng = np.random.default_rng(topk)
    shot_ids = [f"Shot{int(i)}_{int(j):03d}" for i, j in rng.integers(0, 50, size=(30, 2))]
    shot_ids = list(dict.fromkeys(shot_ids))
    matrix = rng.integers(0, 4, size=(len(shot_ids), len(CLASSES))) / 4.0  # many ties
    matrix[:, len(FEATURES):] = 2.0  # none-classes score highest: must never appear
    scores = {s: matrix[i] for i, s in enumerate(reversed(shot_ids))}  # insertion order must not matter
    matrix_in_order = np.stack([scores[s] for s in shot_ids])
    rankings = rank_features(scores, topk=topk)
    numbers = dict(LADI_V1.feature_numbers)
    assert sorted(rankings) == sorted(numbers[f] for f in FEATURES) and len(rankings) == 32
    for column, feature in enumerate(FEATURES):
        assert rankings[numbers[feature]] == reference_ranking(shot_ids, matrix_in_order[:, column], topk)
    check_rankings(rankings)
    frame = pd.DataFrame(matrix_in_order, columns=list(CLASSES)).assign(shot_id=shot_ids)
    assert rank_features(frame, topk=topk) == rankings
    assert rank_features(frame.drop(columns=list(NONE_CLASSES)).set_index("shot_id"), topk=topk) == rankings


def test_rank_features_uses_given_feature_numbers_and_refuses_bad_scores():
    numbers = {feature: 100 + i for i, feature in enumerate(FEATURES)}
    rankings = rank_features({"a": np.ones(37), "b": np.zeros(37)}, topk=5, topics=numbers)
    assert sorted(rankings) == list(range(100, 132)) and rankings[100] == [("a", 1.0), ("b", 0.0)]
    with pytest.raises(InputError, match="NaN score for shot 'b'.*another checkpoint"):
        rank_features({"a": np.ones(37), "b": np.full(37, np.nan)})
    with pytest.raises(InputError, match="--topk 0: keep at least 1 clip per feature"):
        rank_features({"a": np.ones(37)}, topk=0)
    with pytest.raises(ValueError, match="shot ids in the score table must be unique"):
        rank_features(pd.DataFrame({"shot_id": ["a", "a"], **{f: [0.1, 0.2] for f in FEATURES}}))
    with pytest.raises(InputError, match="'Shot 1'"):
        rank_features({"Shot 1": np.ones(37)})
    with pytest.raises(ValueError, match="shape"):
        rank_features({"a": np.ones(36)})
    with pytest.raises(ValueError, match="lacks feature columns"):
        rank_features(pd.DataFrame({"shot_id": ["a"], "flooding": [0.3]}))


@settings(max_examples=60, deadline=None)
@given(
    scores=st.dictionaries(
        st.text(alphabet="abcXYZ_019", min_size=1, max_size=6),
        st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=32, max_size=32),
        max_size=12,
    ),
    topk=st.integers(1, 15),
)
def test_rank_features_property_valid_prefix_of_full_order(scores, topk):
    rankings = rank_features(scores, topk=topk)
    check_rankings(rankings)
    full = rank_features(scores, topk=10_000)
    for fnum, ranking in rankings.items():
        assert len(ranking) == min(topk, len(scores))
        assert ranking == full[fnum][:topk]


shot_id_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Z")), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    rankings=st.dictionaries(
        st.integers(0, 500),
        st.lists(shot_id_text, unique=True, max_size=8).map(
            lambda ids: [(shot, 1.0 - i / 8) for i, shot in enumerate(ids)]
        ),
        min_size=1,
        max_size=4,
    )
)
def test_property_any_printable_shot_ids_round_trip_through_both_forms(tmp_path_factory, rankings):
    folder = tmp_path_factory.mktemp("roundtrip")
    write_submission_xml(folder / "run.xml", rankings, pid="T", run_desc="<&\"'>")
    validate_with_lxml(folder / "run.xml")
    from_xml = read_run(folder / "run.xml")
    assert {f: [s for s, _ in r] for f, r in from_xml.items()} == {f: [s for s, _ in r] for f, r in rankings.items()}
    write_trec_run(folder / "run.trec", rankings, "r")
    if any(rankings.values()):
        assert read_run(folder / "run.trec") == {f: r for f, r in rankings.items() if r}
