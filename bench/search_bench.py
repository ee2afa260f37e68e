"""The bench sections of `dsdi search` (imported by bench.py):

- search:       search latency of dsdi.search.engine.SearchIndex at 100,000 and 1,000,000 clips of synthetic clustered
                512-dimensional embeddings and ladi-v2a scores (a feature query, an example query, a mixed query;
                exact numpy cosine at 100k, FAISS above EXACT_LIMIT), recall@100 of FAISS against exact search,
                the cosine the stored form keeps (projection + int8) and the index's bytes per clip with embeddings.
- search_world: does it work? A synthetic ladi-v2a world (dsdi synth), a tiny model trained on its training split,
                its clips ranked with embeddings; per feature clip AP against the world's qrels of (a) the class
                scores, (b) example search with held-out test-split images showing the feature, (c) the mixed
                query (feature + examples), (d) a random ranking.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SEARCH_SIZES = (100_000, 1_000_000)
DIMS = 512
CENTRES = 2000  # scene clusters of the synthetic embeddings
QUERIES = 20


def _clustered_codes(rng: np.random.Generator, clips: int) -> np.ndarray:
    """int8 codes (clips, DIMS) of unit vectors around CENTRES random centres, written in chunks."""
    from dsdi.index.embeddings import embedding_bytes, unit_rows

    centres = rng.standard_normal((CENTRES, DIMS)).astype(np.float32)
    codes = np.empty((clips, DIMS), dtype=np.int8)
    for start in range(0, clips, 100_000):
        count = min(100_000, clips - start)
        noise = rng.standard_normal((count, DIMS), dtype=np.float32)
        vectors = unit_rows(centres[rng.integers(0, CENTRES, count)] + 0.8 * noise)
        codes[start:start + count] = np.frombuffer(embedding_bytes(vectors), dtype=np.int8).reshape(count, DIMS)
    return codes


def _index_of(codes: np.ndarray, rng: np.random.Generator, out_dir: Path):
    """A SearchIndex over ``codes`` and drawn ladi-v2a scores (built in memory: writing a million clips through
    dsdi rank is the index section's business)."""
    from dsdi.index.embeddings import Embeddings
    from dsdi.labels.labelset import load_labelset
    from dsdi.rank.output import RunFacts
    from dsdi.search.engine import SearchIndex

    labelset = load_labelset("ladi-v2a")
    shots = pd.Index([f"shot{i:07d}" for i in range(len(codes))], name="shot_id")
    scores = pd.DataFrame(rng.random((len(codes), len(labelset.class_names))), index=shots,
                          columns=list(labelset.class_names))
    scores.insert(0, "clip_path", "clip.mp4")
    peaks = pd.DataFrame(0.0, index=shots, columns=list(labelset.features))
    facts = RunFacts(labelset=labelset.to_dict(), embed_model_key="bench@10fps")
    return SearchIndex(out_dir, facts, labelset, scores, peaks, np.ones(len(codes), dtype=bool), Embeddings(codes))


def _median_ms(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _stored_form_cosines(rng: np.random.Generator) -> dict:
    """How much of the cosine between clips the stored form keeps: ReLU-like 1280-d pooled features (lcnet_050's
    width) of 10-frame clips, embedded (mean, projection to 512, int8)."""
    from dsdi.index.embeddings import Embeddings, clip_embedding, embedding_bytes, unit_rows

    frames = np.maximum(rng.standard_normal((400, 10, 1280)) + rng.standard_normal((400, 1, 1280)), 0)
    plain = unit_rows(unit_rows(frames).mean(axis=1))
    embedded = np.stack([clip_embedding(f) for f in frames])
    stored = Embeddings.from_bytes(embedding_bytes(embedded), DIMS).unit()
    return {"int8_cosine_to_float_min": float(np.min(np.sum(stored * embedded, axis=1))),
            "pair_cosine_error_mean": float(np.abs(plain @ plain.T - stored @ stored.T).mean()),
            "pair_cosine_error_max": float(np.abs(plain @ plain.T - stored @ stored.T).max())}


def _bytes_per_clip(work: Path) -> float:
    """scores.sqlite bytes per clip of 20,000 clips of one 12-class model with 512-d embeddings."""
    from dsdi.index.scores import ClipScores
    from dsdi.index.store import ScoreIndex
    from dsdi.video.clip import Clip

    rng = np.random.default_rng(1)
    clips = [Clip(f"shot{i:06d}", work / "clips" / f"{i}.mp4") for i in range(20_000)]
    index = ScoreIndex(work / "index")
    index.set_clips(clips)
    for clip in clips:
        probs = rng.random((20, 12))
        index.add_clip(clip, {"m@10fps": ClipScores.from_frame_scores(probs, np.arange(20) / 10, False, "")},
                       ("m@10fps", rng.standard_normal(DIMS)))
    index.close()
    return (work / "index" / "scores.sqlite").stat().st_size / len(clips)


def bench_search(work: Path, device: str) -> dict:
    """See the module docstring (section search)."""
    rng = np.random.default_rng(0)
    results = {"stored_form": _stored_form_cosines(rng), "index_bytes_per_clip_12_classes_512_dims":
               _bytes_per_clip(work)}
    for clips in SEARCH_SIZES:
        results[f"{clips}_clips"] = _search_at(clips, rng, work)
    return results


def _search_at(clips: int, rng: np.random.Generator, work: Path) -> dict:
    """Latencies (median of 5, topk 100) and, above EXACT_LIMIT, recall@100 at ``clips`` clips."""
    import dsdi.search.engine as engine

    codes = _clustered_codes(rng, clips)
    index = _index_of(codes, rng, work)
    queries = [f"shot{q:07d}" for q in rng.choice(clips, QUERIES, replace=False)]
    row = {"feature_query_ms": _median_ms(lambda: index.search("flooding_any AND NOT water_any", topk=100))}
    start = time.perf_counter()
    index.search(like_shots=queries[:1], topk=100)  # the exact matrix, or the FAISS index, made on first use
    row["first_example_query_s"] = time.perf_counter() - start
    row["example_query_ms"] = _median_ms(lambda: index.search(like_shots=queries[1:2], topk=100))
    row["mixed_query_ms"] = _median_ms(lambda: index.search("flooding_any", like_shots=queries[2:3], topk=100))
    if clips > engine.EXACT_LIMIT:
        row["recall_at_100_vs_exact"] = _recall(index, codes, queries)
    return row


def _recall(index, codes: np.ndarray, queries: list[str]) -> float:
    """Mean recall@100 of the index's (approximate) example search against exact cosine over every clip."""
    from dsdi.index.embeddings import unit_rows

    rows = [int(q[4:]) for q in queries]
    targets = unit_rows(codes[rows].astype(np.float32))
    cosines = np.concatenate([unit_rows(codes[s:s + 100_000].astype(np.float32)) @ targets.T
                              for s in range(0, len(codes), 100_000)])
    recalls = []
    for k, query in enumerate(queries):
        truth = set(np.argpartition(-cosines[:, k], 100)[:100].tolist())
        found = {int(hit.shot_id[4:]) for hit in index.search(like_shots=[query], topk=100)}
        recalls.append(len(truth & found) / 100)
    return float(np.mean(recalls))


WORLD = {"images": 1500, "clips": 60, "epochs": 6, "examples": 5}  # ladi-v2a world and training (demo.sh's, smaller)


def _dsdi(*args: object) -> None:
    """Run the installed dsdi command (output shown only when it fails)."""
    done = subprocess.run([sys.executable, "-m", "dsdi", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise RuntimeError(f"dsdi {args[0]} failed: {(done.stdout + done.stderr)[-400:]}")


def world_ranked(work: Path) -> tuple[Path, Path]:
    """(the world folder, the rank output) of a ladi-v2a synthetic world, a resnet10t trained on its training split
    at 64 px and its clips ranked (with embeddings)."""
    world, run, out = work / "world", work / "model", work / "rank"
    _dsdi("synth", "--out", world, "--images", WORLD["images"], "--clips", WORLD["clips"], "--seed", 0,
          "--labelset", "ladi-v2a", "--image-resolution", "320x240", "--clip-resolution", "320x180",
          "--clip-seconds", "3-6")
    _dsdi("train", "--labels", world / "labels.csv", "--images", world / "images", "--backbone", "resnet10t",
          "--img-size", 64, "--epochs", WORLD["epochs"], "--batch-size", 32, "--optimizer", "adamw", "--lr", 3e-3,
          "--weight-decay", 0.05, "--workers", 1, "--device", "cpu", "--no-pretrained", "--seed", 0,
          "--labelset", "ladi-v2a", "--out", run)
    _dsdi("rank", "--clips", world / "clips", "--models", run, "--out", out, "--device", "cpu")
    return world, out


def bench_search_world(work: Path, device: str) -> dict:
    """See the module docstring (section search_world): per feature clip AP (TREC AP over every clip) of each way
    of searching, and their means over the features with relevant clips and examples."""
    from PIL import Image

    from dsdi.search.engine import SearchIndex
    from dsdi.trecvid.evaluation import average_precision
    from dsdi.trecvid.qrels import read_qrels

    world, out = world_ranked(work)
    index = SearchIndex.open(out)
    qrels = read_qrels(world / "qrels.txt")
    labels = pd.read_csv(world / "labels.csv")
    held_out = labels[labels["split"] == "test"]
    rng = np.random.default_rng(0)
    per_feature = {}
    for feature in index.labelset.features:
        relevant = {shot for shot, rel in qrels.get(feature, {}).items() if rel > 0}
        showing = held_out[held_out[feature] >= 0.5]["image_id"].tolist()[:WORLD["examples"]]
        if not relevant or not showing:
            continue
        images = [np.asarray(Image.open(world / "images" / Path(name).name).convert("RGB")) for name in showing]
        vectors = [index.embed_image(image) for image in images]
        ways = {"class_scores": index.search(feature, topk=len(index)),
                "example": index.search(like_vectors=vectors, topk=len(index)),
                "mixed": index.search(feature, like_vectors=vectors, topk=len(index))}
        row = {way: average_precision([h.shot_id for h in hits], relevant, None) for way, hits in ways.items()}
        row["random"] = average_precision(rng.permutation(index.shots).tolist(), relevant, None)
        row["relevant_clips"], row["examples"] = len(relevant), len(images)
        per_feature[feature] = row
    table = pd.DataFrame(per_feature).T
    means = table[["class_scores", "example", "mixed", "random"]].mean().to_dict()
    return {"clips": len(index), "features": per_feature, "mean_ap": means,
            "mixed_beats_both_parts": int(((table["mixed"] > table["class_scores"])
                                           & (table["mixed"] > table["example"])).sum())}
