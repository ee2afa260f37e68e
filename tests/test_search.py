"""dsdi search: the query language, feature / example / mixed / feedback search over a rank output, the CLI and its
TREC run through dsdi eval. The rank outputs here are written by dsdi's own index and fusion (a synthetic one with
drawn scores and embeddings; tests/test_embeddings.py ranks real clips); references are plain numpy."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dsdi.search.engine
from dsdi.errors import InputError
from dsdi.index.embeddings import embedding_bytes, unit_rows
from dsdi.index.scores import ClipScores
from dsdi.index.store import ScoreIndex
from dsdi.labels.labelset import load_labelset
from dsdi.rank.fusion import fuse_and_write
from dsdi.rank.output import RankOutput, RunFacts
from dsdi.search.engine import SearchIndex, approximate_index
from dsdi.search.query import parse_query
from dsdi.video.clip import Clip

V2A = load_labelset("ladi-v2a")
V1 = load_labelset("ladi-v1")
KEY = "0123456789abcdef@10fps"


def clustered_embeddings(rng: np.random.Generator, clips: int, dims: int, clusters: int) -> np.ndarray:
    """Unit vectors (clips, dims) around ``clusters`` random centres (as features of similar scenes cluster)."""
    centres = rng.standard_normal((clusters, dims))
    return unit_rows(centres[rng.integers(0, clusters, clips)] + 0.6 * rng.standard_normal((clips, dims)))


def write_rank_output(out: Path, probs: np.ndarray, vectors: np.ndarray | None, embedded: np.ndarray | None = None,
                      labelset=V2A) -> list[str]:
    """A rank output of one model written by ScoreIndex and fuse_and_write: clip i has max scores probs[i] (its
    peak times: class index / 10 s) and, where ``embedded`` (default: all), the embedding vectors[i]."""
    shots = [f"shot{i:05d}" for i in range(len(probs))]
    clips = [Clip(shot, out / "clips" / f"{shot}.mp4") for shot in shots]
    index = ScoreIndex(out)
    try:
        index.register_model(KEY, Path("m.pt"), "lcnet_050", 64, KEY[:16], 10.0, labelset.class_names)
        index.set_clips(clips)
        peaks = np.arange(len(labelset.class_names)) / 10.0
        for i, clip in enumerate(clips):
            scores = ClipScores(5, "ok", "", probs[i], probs[i], probs[i], peaks)
            has = vectors is not None and (embedded is None or embedded[i])
            index.add_clip(clip, {KEY: scores}, (KEY, vectors[i]) if has else None)
        facts = RunFacts(run_id="t", models=["m.pt"], model_keys=[KEY], backbones=["lcnet_050"], weights=[1.0],
                         agg="max", fps=10.0, topk=10, labelset=labelset.to_dict(), fuse=[], pid="p", tr_type="L",
                         priority=1, embed_model="m.pt" if vectors is not None else None,
                         embed_model_key=KEY if vectors is not None else None)
        fuse_and_write(index, RankOutput(out), facts, time.perf_counter(), 0, 0)
    finally:
        index.close()
    return shots


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """200 clips of ladi-v2a with drawn scores and clustered 64-dimensional embeddings (every 10th without one)."""
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.01, 0.99, (200, len(V2A.class_names)))
    vectors = clustered_embeddings(rng, 200, 64, 8)
    embedded = np.arange(200) % 10 != 9
    out = tmp_path_factory.mktemp("search") / "out"
    shots = write_rank_output(out, probs, vectors, embedded)
    stored = unit_rows(np.frombuffer(embedding_bytes(vectors), dtype=np.int8).reshape(200, 64))
    return {"out": out, "probs": probs, "vectors": stored, "embedded": embedded, "shots": np.array(shots)}


def reference_top(scores: np.ndarray, shots: np.ndarray, topk: int) -> list[str]:
    """Shot ids by score descending, ties by shot id (pandas)."""
    table = pd.DataFrame({"shot": shots, "score": scores}).sort_values(["score", "shot"], ascending=[False, True])
    return table["shot"].head(topk).tolist()


# ---- the query language


def column(name: str, probs: np.ndarray) -> np.ndarray:
    return probs[:, V2A.class_names.index(name)]


def test_query_semantics_precedence_and_weights():
    probs = np.random.default_rng(0).uniform(0.01, 0.99, (50, len(V2A.class_names)))
    scores = dict(zip(V2A.class_names, probs.T, strict=True))
    a, b, c = (column(name, probs) for name in ("flooding_any", "roads_any", "debris_any"))

    def value(text: str) -> np.ndarray:
        return parse_query(text, V2A).scores(scores)

    np.testing.assert_allclose(value("flooding_any AND roads_any"), np.sqrt(a * b))
    np.testing.assert_allclose(value("flooding_any OR roads_any"), 1 - np.sqrt((1 - a) * (1 - b)))
    np.testing.assert_allclose(value("NOT flooding_any"), 1 - a)
    np.testing.assert_allclose(value("2*flooding_any AND roads_any"), a ** (2 / 3) * b ** (1 / 3))
    np.testing.assert_allclose(value("0.5*flooding_any OR roads_any"), 1 - (1 - a) ** (1 / 3) * (1 - b) ** (2 / 3))
    # AND binds tighter than OR, NOT tighter than AND; side by side means AND; keywords in any case
    np.testing.assert_allclose(value("flooding_any OR roads_any AND debris_any"),
                               1 - np.sqrt((1 - a) * (1 - np.sqrt(b * c))))
    np.testing.assert_allclose(value("(flooding_any OR roads_any) and debris_any"),
                               np.sqrt((1 - np.sqrt((1 - a) * (1 - b))) * c))
    np.testing.assert_allclose(value("NOT flooding_any AND roads_any"), np.sqrt((1 - a) * b))
    np.testing.assert_allclose(value("debris_any NOT flooding_any"), np.sqrt(c * (1 - a)))
    np.testing.assert_allclose(value("NOT (flooding_any AND roads_any)"), value("NOT flooding_any OR NOT roads_any"))
    assert parse_query("2*Flooding_Any", V2A).single_feature() == "flooding_any"
    assert parse_query("flooding_any OR roads_any", V2A).single_feature() is None


def test_quoted_names_and_unknown_names():
    query = parse_query('"rubble / debris" AND NOT \'flooding / water damage\' OR snow/ice', V1)
    assert query.features() == ["rubble / debris", "flooding / water damage", "snow/ice"]
    with pytest.raises(InputError) as error:
        parse_query("flooding AND roads_anyy", V2A)
    message = str(error.value)
    assert "\n" not in message and "'flooding'" in message and "flooding_any" in message
    for bad in ("flooding_any AND", "(flooding_any", "flooding_any)", '"flooding_any', "", "0*flooding_any"):
        with pytest.raises(InputError):
            parse_query(bad, V2A)


def test_cli_unknown_feature_exits_2_with_one_line(synthetic, cli):
    result = cli("search", synthetic["out"], "--query", "debris_any NOT watr", expect=2)
    said = cli.said(result)
    assert "unknown feature 'watr'" in said and "water_any" in said
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 2  # one message, maybe wrapped


# ---- searching a rank output


def test_feature_query_ranks_by_its_value_with_peaks(synthetic):
    index = SearchIndex.open(synthetic["out"])
    hits = index.search("debris_any NOT water_any", topk=15)
    probs = synthetic["probs"]
    expected = np.sqrt(column("debris_any", probs) * (1 - column("water_any", probs)))
    assert [h.shot_id for h in hits] == reference_top(expected, synthetic["shots"], 15)
    np.testing.assert_allclose([h.score for h in hits], np.sort(expected)[::-1][:15], rtol=1e-6)
    for hit in hits:  # the thumbnail: the peak frame of the query's feature scoring highest on the clip
        i = int(hit.shot_id[4:])
        best = "debris_any" if probs[i, V2A.class_names.index("debris_any")] >= probs[
            i, V2A.class_names.index("water_any")] else "water_any"
        assert hit.peak_s == pytest.approx(V2A.class_names.index(best) / 10.0, abs=1e-3)
        assert hit.features["roads_any"] == pytest.approx(column("roads_any", probs)[i], rel=1e-6)
    with pytest.raises(InputError):
        index.search()


def test_example_and_mixed_search_match_exact_numpy(synthetic):
    index = SearchIndex.open(synthetic["out"])
    vectors, embedded, shots = synthetic["vectors"], synthetic["embedded"], synthetic["shots"]
    examples = ["shot00003", "shot00017"]
    query = unit_rows(vectors[[3, 17]].mean(axis=0))
    cosines = np.where(embedded, vectors @ query, -np.inf)
    hits = index.search(like_shots=examples, topk=20)
    assert [h.shot_id for h in hits] == reference_top(cosines, shots, 20)
    assert not any(h.shot_id == "shot00009" for h in index.search(like_shots=["shot00003"], topk=200))
    np.testing.assert_allclose([h.score for h in hits], np.sort(cosines)[::-1][:20], atol=1e-5)
    mixed = column("flooding_any", synthetic["probs"]) * (1 + cosines) / 2
    hits = index.search("flooding_any", like_shots=examples, topk=20)
    assert [h.shot_id for h in hits] == reference_top(mixed, shots, 20)
    with pytest.raises(InputError, match="no embedding of this clip"):
        index.search(like_shots=["shot00009"])
    with pytest.raises(InputError, match="no such shot"):
        index.search(like_shots=["nowhere"])


def test_relevance_feedback_moves_judged_relevant_neighbours_up(synthetic):
    index = SearchIndex.open(synthetic["out"])
    vectors, shots = synthetic["vectors"], synthetic["shots"]
    before = [h.shot_id for h in index.search(like_shots=["shot00003"], topk=200)]
    judged = next(s for s in before[60:] if int(s[4:]) % 10 != 9)  # far down the list: relevant
    neighbours = [s for s in reference_top(vectors @ vectors[int(judged[4:])], shots, 6) if s != judged][:4]
    after = [h.shot_id for h in index.search(like_shots=["shot00003"], feedback={judged: True}, topk=200)]
    assert after.index(judged) < before.index(judged)
    assert sum(after.index(s) for s in neighbours) < sum(before.index(s) for s in neighbours)
    pushed = index.search(like_shots=["shot00003"], feedback={before[1]: False}, topk=200)
    assert [h.shot_id for h in pushed].index(before[1]) > 1  # judged not relevant: moved down
    alone = [h.shot_id for h in index.search(feedback={judged: True}, topk=5)]
    assert alone[0] == judged  # feedback alone searches by the judged shots


def test_approximate_search_recall_against_exact(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    vectors = clustered_embeddings(rng, 3000, 32, 30)
    probs = rng.uniform(0.01, 0.99, (3000, len(V2A.class_names)))
    write_rank_output(tmp_path / "out", probs, vectors)
    monkeypatch.setattr(dsdi.search.engine, "EXACT_LIMIT", 1000)  # 3000 clips: FAISS
    index = SearchIndex.open(tmp_path / "out")
    exact = unit_rows(index.embeddings.codes.astype(np.float32))
    recalls = []
    for query in rng.choice(3000, 20, replace=False):
        truth = set(np.argsort(-(exact @ exact[query]), kind="stable")[:100].tolist())
        found = index.search(like_shots=[f"shot{query:05d}"], topk=100)
        recalls.append(len(truth & {int(h.shot_id[4:]) for h in found}) / 100)
    assert np.mean(recalls) >= 0.9
    assert len(list((tmp_path / "out").glob("embeddings-*.faiss"))) == 1  # kept for the next search
    mixed = index.search("flooding_any", like_shots=["shot00000"], topk=10)
    reference = column("flooding_any", probs) * (1 + exact @ exact[0]) / 2
    assert len({h.shot_id for h in mixed} & set(reference_top(reference, np.array(
        [f"shot{i:05d}" for i in range(3000)]), 10))) >= 9
    assert approximate_index(index.embeddings).ntotal == 3000


def test_cli_outputs_and_trec_run_through_eval(synthetic, tmp_path, cli):
    out, probs, shots = synthetic["out"], synthetic["probs"], synthetic["shots"]
    result = cli("search", out, "--query", "roads_any", "--topk", 5, "--out", tmp_path / "hits.csv",
                 "--trec", tmp_path / "run.trec", terminal_width=200)
    top = reference_top(column("roads_any", probs), shots, 5)
    assert top[0] in result.output
    table = pd.read_csv(tmp_path / "hits.csv")
    assert table["shot_id"].tolist() == top and table["rank"].tolist() == [1, 2, 3, 4, 5]
    assert list(table.columns[5:]) == list(V2A.features)
    qrels = tmp_path / "qrels"  # the 1st and 3rd are relevant, and one clip the run missed: AP (1 + 2/3) / 3
    missed = reference_top(column("roads_any", probs), shots, 200)[-1]
    qrels.write_text(f"roads_any 0 {top[0]} 1\nroads_any 0 {top[2]} 1\nroads_any 0 {missed} 1\n")
    result = cli("eval", "--run", tmp_path / "run.trec", "--qrels", qrels, "--labelset", "ladi-v2a")
    assert f"{(1 + 2 / 3) / 3:.4f}" in result.output
    cli("search", out, "--like-shot", top[0], "--out", tmp_path / "hits.json", "--trec", tmp_path / "x.trec",
        "--topic", "similar_to_one")
    assert json.loads((tmp_path / "hits.json").read_text())[0]["shot_id"] == top[0]
    assert (tmp_path / "x.trec").read_text().split()[:3] == ["similar_to_one", "Q0", top[0]]
    result = cli("search", out, "--like-shot", top[0], "--trec", tmp_path / "y.trec", expect=2)
    assert "--topic" in cli.said(result)
    cli("search", out, "--query", "roads_any", "--out", tmp_path / "hits.txt", expect=2)


def test_an_index_without_embeddings_says_how_to_add_them(tmp_path, cli):
    probs = np.random.default_rng(1).uniform(0, 1, (5, len(V2A.class_names)))
    write_rank_output(tmp_path / "out", probs, None)
    assert SearchIndex.open(tmp_path / "out").search("water_any", topk=2)
    result = cli("search", tmp_path / "out", "--like-shot", "shot00001", expect=2)
    assert "holds no clip embeddings" in cli.said(result)
