"""run.json's record (dsdi.rank.output.RunFacts): it round-trips, reads the files dsdi wrote before the record had
a schema version (byte for byte the same when written back, plus the version line), and refuses a malformed one in
one line naming the file and the key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dsdi.errors import InputError
from dsdi.rank.fusion import fuse
from dsdi.rank.output import FUSION_KEYS, RUN_JSON_VERSION, FusedRun, RankOutput, RunFacts, ViewFacts

# run.json as dsdi rank wrote it before schema_version existed (json.dumps(facts, indent=2) + "\n").
UNVERSIONED_RANK = {
    "run_id": "t1", "models": ["runs/A/best.pt", "runs/B/best.pt"],
    "model_keys": ["0f3a9c1e2b4d5a6c@fps10", "9e8d7c6b5a4f3e2d@fps10"], "backbones": ["resnet10t", "test_convnext"],
    "weights": [1.0, 1.0], "agg": "max", "fps": 10.0, "topk": 3,
    "fuse": [{"out_dir": "submissions/other", "weight": 0.5}], "pid": "dsdi", "tr_type": "L", "priority": 1,
    "tta": "none", "tiles": None, "tile_overlap": None, "clips_ranked": 6, "clips_failed": 1, "clips_scored": 6,
    "clips_reused": 0, "index_bytes": 53248, "elapsed_s": 4.321, "created": "2026-12-01T10:00:00+00:00",
}
# ... and as dsdi fuse --out --models wrote it after choosing keys of several rank calls (no tta, tiles, overlap).
UNVERSIONED_FUSE = {**{k: v for k, v in UNVERSIONED_RANK.items() if k not in ("tta", "tiles", "tile_overlap")},
                    "weights": [2, 1], "scores_from": "submissions/t1"}
# ... and by the first dsdi rank (no views, no clips_scored / clips_reused / index_bytes).
UNVERSIONED_FIRST = {k: v for k, v in UNVERSIONED_RANK.items()
                     if k not in ("tta", "tiles", "tile_overlap", "clips_scored", "clips_reused", "index_bytes")}


def written(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def test_record_round_trips_through_run_json(tmp_path):
    facts = RunFacts(run_id="r", models=["a.pt"], model_keys=["k@fps5"], backbones=["resnet10t"], weights=[0.5],
                     agg="top3", fps=5.0, topk=10, fuse=[FusedRun("o", 0.2)], pid="p", tr_type="O", priority=2,
                     views=ViewFacts("flip", "2x3", 0.25), clips_ranked=3, clips_failed=0, clips_scored=3,
                     clips_reused=0, index_bytes=4096, elapsed_s=1.5, created="2026-12-02T00:00:00+00:00",
                     scores_from="elsewhere")
    (tmp_path / "run.json").write_text(written(facts.to_json()))
    read = RankOutput(tmp_path).read_facts(needed=FUSION_KEYS)
    assert read == facts and read.schema_version == RUN_JSON_VERSION
    data = json.loads((tmp_path / "run.json").read_text())
    assert list(data)[:2] == ["schema_version", "run_id"] and data["schema_version"] == RUN_JSON_VERSION
    assert (data["tta"], data["tiles"], data["tile_overlap"], data["fuse"]) == (
        "flip", "2x3", 0.25, [{"out_dir": "o", "weight": 0.2}])


@pytest.mark.parametrize("old", [UNVERSIONED_RANK, UNVERSIONED_FUSE, UNVERSIONED_FIRST],
                         ids=["rank", "fuse-models-out", "first-rank"])
def test_unversioned_run_json_reads_and_writes_back_the_same_bytes_plus_the_version(tmp_path, old):
    (tmp_path / "run.json").write_text(written(old))
    facts = RankOutput(tmp_path).read_facts(needed=FUSION_KEYS)
    assert facts.schema_version == RUN_JSON_VERSION and facts.fuse == [FusedRun("submissions/other", 0.5)]
    assert facts.views == (ViewFacts("none", None, None) if "tta" in old else None)
    assert facts.weights == old["weights"] and facts.scores_from == old.get("scores_from")
    assert written(facts.to_json()) == written(old).replace("{\n", '{\n  "schema_version": 1,\n', 1)


def test_missing_keys_read_as_absent_and_fuse_names_them(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "x", "models": ["a.pt"], "fuse": []}))
    facts = RankOutput(tmp_path).read_facts()
    assert (facts.run_id, facts.models, facts.fuse, facts.model_keys, facts.views) == ("x", ["a.pt"], [], None, None)
    assert facts.to_json() == {"schema_version": 1, "run_id": "x", "models": ["a.pt"], "fuse": []}
    assert RunFacts.from_json({}, tmp_path / "run.json") == RunFacts()
    with pytest.raises(InputError, match=r"run\.json: lacks model_keys, backbones, weights, agg, fps, topk, pid, "
                                         r"tr_type, priority; re-run dsdi rank"):
        fuse(tmp_path)


MALFORMED = [
    ("[1, 2]", "not a JSON object"),
    ('{"run_id": "x",', "cannot read (Expecting"),
    ('{"models": "a.pt"}', 'models: expected a list (each a string), got "a.pt"'),
    ('{"weights": [1, "2"]}', 'weights[1]: expected a number, got "2"'),
    ('{"topk": 2.5}', "topk: expected an integer, got 2.5"),
    ('{"priority": true}', "priority: expected an integer, got true"),
    ('{"fuse": [{"out_dir": "o"}]}', "fuse[0] lacks weight"),
    ('{"fuse": [{"out_dir": "o", "weight": 1, "w": 2}]}', "unknown key fuse[0].'w'"),
    ('{"fuse": {"out_dir": "o", "weight": 1}}', "fuse: expected a list (each an object with out_dir, weight)"),
    ('{"tiles": "2x2"}', "tiles without tta"),
    ('{"tta": "flip", "tile_overlap": "0.25"}', 'tile_overlap: expected a number, got "0.25"'),
    ('{"views": {"tta": "flip"}}', "unknown key 'views'"),
    ('{"model_weights": [1]}', "unknown key 'model_weights'"),
    ('{"models": ["a", "b"], "weights": [1]}', "models has 2, weights has 1 entries; each needs one per model"),
    ('{"schema_version": 2}', "schema_version 2 is newer than this dsdi reads (1); upgrade dsdi"),
    ('{"schema_version": "1"}', 'schema_version "1": expected an integer >= 1'),
]


@pytest.mark.parametrize(("text", "says"), MALFORMED, ids=[says[:30] for _, says in MALFORMED])
def test_malformed_run_json_is_one_line_naming_the_file(tmp_path, text, says):
    path = tmp_path / "run.json"
    path.write_text(text)
    for read in (RankOutput(tmp_path).read_facts, lambda: fuse(tmp_path)):
        with pytest.raises(InputError) as caught:
            read()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        assert says in message, message


def test_views_are_three_keys_or_none():
    facts = RunFacts(run_id="r", views=ViewFacts("none"))
    assert dataclasses.replace(facts, views=None).to_json() == {"schema_version": 1, "run_id": "r"}
    assert facts.to_json() == {"schema_version": 1, "run_id": "r", "tta": "none", "tiles": None,
                               "tile_overlap": None}
    assert facts.missing(("run_id", "models")) == ["models"]


def test_relative_clip_paths_resolve_from_where_rank_ran(tmp_path, monkeypatch):
    workspace = tmp_path / "workspace"
    (workspace / "clips").mkdir(parents=True)
    (workspace / "clips" / "a.mp4").write_bytes(b"a clip")
    output = RankOutput(workspace / "out")
    ranked_here = RunFacts(working_dir=str(workspace))
    monkeypatch.chdir(tmp_path)  # report / serve started from another folder
    assert output.clip_file("clips/a.mp4", ranked_here) == workspace / "clips" / "a.mp4"
    assert output.clip_file("clips/a.mp4", RunFacts()) == workspace / "out" / "clips" / "a.mp4"  # no record
    assert output.clip_file(str(workspace / "clips" / "a.mp4"), RunFacts()) == workspace / "clips" / "a.mp4"
    monkeypatch.chdir(workspace)
    assert output.clip_file("clips/a.mp4", RunFacts(working_dir="/elsewhere")) == Path("clips/a.mp4")
