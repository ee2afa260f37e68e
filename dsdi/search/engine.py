"""Search over a rank output: ``SearchIndex.open(OUT_DIR).search(...)`` -> ranked ``Hit``s.

What a search ranks by:

- a feature query alone (``dsdi.search.query``): its value from the clip's fused class scores (clip_scores.csv);
- examples alone (images, ``embed_image``, and shots of the index): the cosine between the clip's embedding and the
  normalised mean of the examples' embeddings (clips without an embedding are left out);
- both (a mixed query): the query value times (1 + cosine) / 2, so a clip must show the features and look like the
  examples (``docs/benchmarks.md`` measures it against its parts);
- relevance ``feedback`` {shot id: relevant?} (Rocchio on the embeddings): the example vector becomes
  ROCCHIO[0] x the examples' mean + ROCCHIO[1] x the judged-relevant shots' mean - ROCCHIO[2] x the
  non-relevant ones', normalised; with a feature query and no example, the feedback alone makes the example vector.

Up to EXACT_LIMIT clips the cosines are exact (numpy, float32). Above it the example part is answered by a FAISS
inverted-file index of 8-bit scalar-quantised vectors (inner product), built on first use and kept beside the index
as OUT_DIR/embeddings-<digest>.faiss; a mixed query then scores, exactly, the union of the feature query's and the
approximate search's best ``max(10 x topk, CANDIDATES)`` clips. Its recall@100 against exact search is measured in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdi.errors import InputError
from dsdi.files import atomic_output
from dsdi.index.embeddings import Embeddings, clip_embedding, unit_rows
from dsdi.index.store import ScoreIndex
from dsdi.labels.labelset import LabelSet
from dsdi.rank.output import RankOutput, RunFacts
from dsdi.search.query import Query, parse_query

EXACT_LIMIT = 200_000
CANDIDATES = 1000
ROCCHIO = (1.0, 0.75, 0.15)  # weights of the examples, the relevant and the non-relevant shots (Rocchio's usual)
FAISS_PROBE_FRACTION = 0.03  # lists visited per search, of the inverted file's sqrt(N) lists


@dataclass(frozen=True)
class Hit:
    """One ranked clip: ``peak_s`` the time (s into clip_path) of the frame to show and play from (the peak frame
    of the query's feature that scores highest on the clip; of any feature for an example search); ``features``:
    the clip's fused score of every feature of the label set."""

    shot_id: str
    score: float
    clip_path: str
    peak_s: float
    features: dict[str, float]


class SearchIndex:
    """A rank output opened for search: fused feature scores and peak times of every ranked clip, the clip
    embeddings (when the index holds them) and the model that made them."""

    def __init__(self, out_dir: Path, facts: RunFacts, labelset: LabelSet, clip_scores, peak_times,
                 embedded: np.ndarray, embeddings: Embeddings | None) -> None:
        self.out_dir, self.facts, self._labelset = out_dir, facts, labelset
        self.shots = clip_scores.index.to_numpy(dtype=str)
        self.clip_paths = clip_scores["clip_path"].to_numpy(dtype=object)
        self.feature_scores = clip_scores[list(labelset.features)].to_numpy(dtype=np.float64)
        peaks = peak_times.reindex(index=clip_scores.index, columns=list(labelset.features))
        self.peak_times = np.nan_to_num(peaks.to_numpy(dtype=np.float64), nan=0.0)
        self.embedded = embedded  # (N,) bool: the clip has an embedding
        self.embeddings = embeddings  # rows of the embedded clips, in shot order
        self._row = np.cumsum(embedded) - 1  # clip position -> its row in embeddings (where embedded)
        self._exact: np.ndarray | None = None
        self._approximate = None
        self._embedder = None

    @classmethod
    def open(cls, out_dir: str | Path) -> SearchIndex:
        """The rank output folder ``out_dir`` (run.json, clip_scores.csv, peak_frames.csv, scores.sqlite);
        InputError naming what is missing."""
        output = RankOutput(Path(out_dir))
        facts = output.read_facts()
        labelset = facts.label_set()
        clip_scores = output.read_clip_scores().sort_index()
        missing = [f for f in labelset.features if f not in clip_scores.columns]
        if missing:
            raise InputError(f"{output.clip_scores_csv}: lacks the scores of {', '.join(missing[:3])}; "
                             "re-run dsdi fuse on the folder")
        embedded, embeddings = np.zeros(len(clip_scores), dtype=bool), None
        if facts.embed_model_key and output.index_file.is_file():
            index = ScoreIndex(output.path)
            try:
                positions, stored = index.stored_embeddings(facts.embed_model_key)
                rows = clip_scores.index.get_indexer(index.clip_set().shots[positions])
            finally:
                index.close()
            kept = rows >= 0
            embedded[rows[kept]] = True
            embeddings = Embeddings(stored.codes[kept][np.argsort(rows[kept])])
        return cls(output.path, facts, labelset, clip_scores, output.read_peak_times(), embedded, embeddings)

    @property
    def labelset(self) -> LabelSet:
        return self._labelset

    def __len__(self) -> int:
        return len(self.shots)

    def parse(self, query: str) -> Query:
        """``query`` parsed over this index's label set (InputError as ``parse_query``)."""
        return parse_query(query, self._labelset)

    def search(self, query: str | Query | None = None, like_vectors: Sequence[np.ndarray] = (),
               like_shots: Sequence[str] = (), feedback: Mapping[str, bool] | None = None,
               topk: int = 100) -> list[Hit]:
        """The best ``topk`` clips for a feature query, examples (unit embeddings (d,) of images, ``embed_image``,
        made once by the caller; shot ids of the index), relevance feedback, or a mix (see the module docstring),
        best first, ties by shot id. InputError when nothing is asked, for an unknown shot id, or for examples when
        the index holds no embeddings."""
        parsed = self.parse(query) if isinstance(query, str) else query
        vector = self._example_vector(like_vectors, like_shots, feedback or {})
        if parsed is None and vector is None:
            raise InputError("nothing to search for: give a --query, a --like image or a --like-shot")
        values = parsed.scores(dict(zip(self._labelset.features, self.feature_scores.T, strict=True))) \
            if parsed is not None else None
        if vector is None:
            positions, scores = _top(values, np.arange(len(values)), topk)
        elif values is None:
            positions, scores = self._nearest(vector, topk)
        else:
            positions, scores = self._mixed(values, vector, topk)
        return self._hits(positions, scores, parsed.features() if parsed is not None else [])

    def _example_vector(self, vectors: Sequence[np.ndarray], shots: Sequence[str],
                        feedback: Mapping[str, bool]) -> np.ndarray | None:
        """The unit example vector (d,) of the examples and the feedback, or None when there are neither."""
        if not (len(vectors) or shots or feedback):
            return None
        examples = list(vectors) + [self.shot_embedding(s) for s in shots]
        relevant = [self.shot_embedding(s) for s, judged in feedback.items() if judged]
        other = [self.shot_embedding(s) for s, judged in feedback.items() if not judged]
        vector = np.zeros(self.embeddings.dims, dtype=np.float32)
        for weight, sign, vectors in zip(ROCCHIO, (1, 1, -1), (examples, relevant, other), strict=True):
            if vectors:
                vector += sign * weight * unit_rows(np.mean(vectors, axis=0))
        return unit_rows(vector)

    def shot_embedding(self, shot_id: str) -> np.ndarray:
        """The unit embedding float32 (d,) of a shot of the index; InputError when it has none."""
        self._need_embeddings(f"--like-shot {shot_id}")
        position = np.searchsorted(self.shots, shot_id)
        if position >= len(self.shots) or self.shots[position] != shot_id:
            raise InputError(f"--like-shot {shot_id}: no such shot among the {len(self.shots)} ranked clips of "
                             f"{self.out_dir}")
        if not self.embedded[position]:
            raise InputError(f"--like-shot {shot_id}: the index holds no embedding of this clip; rank "
                             f"{self.out_dir} again to add it")
        return self.embeddings.unit(np.array([self._row[position]]))[0]

    def embed_image(self, pixels: np.ndarray) -> np.ndarray:
        """The unit embedding float32 (d,) of an image, uint8 (H, W, 3) RGB, by the index's embedding model
        with its own preprocessing (loaded on first use, on the CPU)."""
        import torch

        from dsdi.models.preprocess import frames_to_tensor

        self._need_embeddings("--like")
        classifier, features_of = self._embed_model()
        with torch.inference_mode():
            features = features_of(frames_to_tensor(np.asarray(pixels, dtype=np.uint8)[None],
                                                    classifier.preprocessing))[1]
        vector = clip_embedding(features.numpy())
        if len(vector) != self.embeddings.dims:
            raise InputError(f"{self.facts.embed_model}: its features make {len(vector)}-dimensional embeddings, "
                             f"the index holds {self.embeddings.dims}; rank {self.out_dir} again")
        return vector

    def _embed_model(self):
        """(Classifier, its with_features function) of run.json's embed_model, checked against the index key."""
        if self._embedder is None:
            from dsdi.models.classifier import load_classifier
            from dsdi.models.features import with_features

            classifier = load_classifier(self.facts.embed_model)
            if not self.facts.embed_model_key.startswith(classifier.digest[:16]):
                raise InputError(f"{self.facts.embed_model}: changed since {self.out_dir} was ranked (its "
                                 "content differs from the embedding model's); rank the folder again")
            self._embedder = classifier, with_features(classifier.module, str(self.facts.embed_model))
        return self._embedder

    def _need_embeddings(self, what: str) -> None:
        if self.embeddings is None or not len(self.embeddings):
            raise InputError(f"{what}: {self.out_dir} holds no clip embeddings; rank it again with this dsdi "
                             "(--engine torch) to add them")

    def _exact_vectors(self) -> np.ndarray:
        if self._exact is None:
            self._exact = self.embeddings.unit()
        return self._exact

    def _cosines(self, vector: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """float64 cosines to ``vector`` of the clips at ``positions`` (None: every clip, exact up to EXACT_LIMIT
        clips); -inf for clips without an embedding."""
        if positions is None:
            cosines = np.full(len(self), -np.inf)
            cosines[self.embedded] = self._exact_vectors() @ vector
            return cosines
        cosines = np.full(len(positions), -np.inf)
        has = self.embedded[positions]
        cosines[has] = self.embeddings.unit(self._row[positions[has]]) @ vector
        return cosines

    def _nearest(self, vector: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cosines) of the topk clips nearest to ``vector``: exact, or FAISS above EXACT_LIMIT."""
        if len(self) <= EXACT_LIMIT:
            positions = np.flatnonzero(self.embedded)
            return _top(self._cosines(vector)[positions], positions, topk)
        positions = np.sort(np.flatnonzero(self.embedded)[self._approximate_rows(vector, topk)])  # ties: by position
        return _top(self._cosines(vector, positions), positions, topk)

    def _mixed(self, values: np.ndarray, vector: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the topk clips by query value x (1 + cosine) / 2 (clips with an embedding)."""
        if len(self) <= EXACT_LIMIT:
            positions = np.flatnonzero(self.embedded)
            cosines = self._cosines(vector)[positions]
        else:
            wanted = max(10 * topk, CANDIDATES)
            by_query, _ = _top(np.where(self.embedded, values, -np.inf), np.arange(len(self)), wanted)
            by_example = np.flatnonzero(self.embedded)[self._approximate_rows(vector, wanted)]
            positions = np.union1d(by_query, by_example)
            cosines = self._cosines(vector, positions)
        return _top(values[positions] * (1.0 + cosines) / 2.0, positions, topk)

    def _approximate_rows(self, vector: np.ndarray, count: int) -> np.ndarray:
        """Rows of embeddings of the approximate ``count`` nearest to ``vector`` (FAISS)."""
        if self._approximate is None:
            self._approximate = approximate_index(self.embeddings, self.out_dir, self.facts.embed_model_key)
        _, rows = self._approximate.search(vector[None].astype(np.float32), count)
        return rows[0][rows[0] >= 0]

    def _hits(self, positions: np.ndarray, scores: np.ndarray, features: list[str]) -> list[Hit]:
        names = list(self._labelset.features)
        shown = [names.index(f) for f in features] or list(range(len(names)))
        hits = []
        for position, score in zip(positions.tolist(), scores.tolist(), strict=True):
            row = self.feature_scores[position]
            best = shown[int(np.argmax(np.nan_to_num(row[shown], nan=-1.0)))]
            hits.append(Hit(str(self.shots[position]), float(score), str(self.clip_paths[position]),
                            float(self.peak_times[position, best]),
                            {name: float(value) for name, value in zip(names, row, strict=True)}))
        return hits


def _top(scores: np.ndarray, positions: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """The topk (positions, scores) of ``scores`` (one per entry of ``positions``, which ascend: shot order), best
    first, ties by position (shot id), NaN last; exact in O(N)."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    count = min(topk, len(scores))
    if count == 0:
        return positions[:0], scores[:0]
    kth = np.partition(scores, len(scores) - count)[len(scores) - count]
    above = np.flatnonzero(scores > kth)
    chosen = np.concatenate([above, np.flatnonzero(scores == kth)[:count - len(above)]])
    order = np.lexsort((chosen, -scores[chosen]))
    return positions[chosen[order]], scores[chosen[order]]


def approximate_index(embeddings: Embeddings, out_dir: Path | None = None, key: str = ""):
    """A FAISS inner-product inverted file (sqrt(N) lists, 8-bit scalar quantiser) of the unit embeddings, visiting
    FAISS_PROBE_FRACTION of its lists per search; read from, or else written to, out_dir's
    embeddings-<digest>.faiss (the digest of ``key`` and the codes) when out_dir is given."""
    import faiss

    digest = hashlib.blake2b(key.encode() + embeddings.codes.tobytes(), digest_size=8).hexdigest()
    cached = out_dir / f"embeddings-{digest}.faiss" if out_dir is not None else None
    if cached is not None and cached.is_file():
        index = faiss.read_index(str(cached))
    else:
        index = _build_faiss(embeddings)
        if cached is not None:
            for stale in out_dir.glob("embeddings-*.faiss"):
                stale.unlink(missing_ok=True)
            with atomic_output(cached) as tmp:
                faiss.write_index(index, str(tmp))
    index.nprobe = max(1, math.ceil(FAISS_PROBE_FRACTION * index.nlist))
    return index


def _build_faiss(embeddings: Embeddings):
    import faiss

    lists = max(1, int(math.sqrt(len(embeddings))))
    quantiser = faiss.IndexFlatIP(embeddings.dims)
    index = faiss.IndexIVFScalarQuantizer(quantiser, embeddings.dims, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(len(embeddings), min(len(embeddings), 40 * lists), replace=False)
    index.train(embeddings.unit(np.sort(sample)))
    for start in range(0, len(embeddings), 65536):
        index.add(embeddings.unit(slice(start, start + 65536)))
    return index
