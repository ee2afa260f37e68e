"""Clip embeddings and their stored form in the score index (``dsdi.index.store``).

A clip's embedding is made from one model's pooled pre-logit features of its sampled frames (``clip_embedding``):
each frame's feature vector is L2-normalised, the clip's are averaged, a vector wider than ``EMBEDDING_DIMS`` is
projected to ``EMBEDDING_DIMS`` by a fixed seeded random matrix with orthonormal columns (``projection``: the same
for every index and every dsdi, so an image embedded later lands in the same space), and the result is
L2-normalised again. It is stored (``embedding_bytes``) as d int8 codes (512 bytes for 512 dimensions), each value
times 127 / the vector's largest absolute value, rounded: only the direction matters, and the codes' cosine to the
float vector is measured in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

EMBEDDING_DIMS = 512
PROJECTION_SEED = 21
_CODE_MAX = 127


@functools.lru_cache(maxsize=4)
def projection(features: int) -> np.ndarray | None:
    """float32 (features, EMBEDDING_DIMS) with orthonormal columns (QR of a Gaussian matrix drawn by numpy's PCG64
    from PROJECTION_SEED and ``features``), or None when ``features`` <= EMBEDDING_DIMS (kept as they are)."""
    if features <= EMBEDDING_DIMS:
        return None
    gaussian = np.random.default_rng([PROJECTION_SEED, features]).standard_normal((features, EMBEDDING_DIMS))
    orthonormal, upper = np.linalg.qr(gaussian)
    return (orthonormal * np.sign(np.diag(upper))).astype(np.float32)  # signs fixed: the QR's own are arbitrary


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of ``vectors`` (N, D) scaled to length 1 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def clip_embedding(frame_features: np.ndarray) -> np.ndarray:
    """The embedding float32 (d,) of frame features (N, D), N >= 1: the mean of the L2-normalised rows, projected
    to EMBEDDING_DIMS when D is wider, L2-normalised (d = min(D, EMBEDDING_DIMS))."""
    mean = unit_rows(frame_features).mean(axis=0)
    matrix = projection(len(mean))
    return unit_rows(mean if matrix is None else mean @ matrix)


def embedding_bytes(vectors: np.ndarray) -> bytes:
    """The stored forms of embeddings float (N, d) or (d,), concatenated: d int8 codes each."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    largest = np.abs(vectors).max(axis=1, keepdims=True)
    return np.rint(vectors * (_CODE_MAX / np.where(largest > 0, largest, 1.0))).astype(np.int8).tobytes()


@dataclass
class Embeddings:
    """Stored embeddings of N clips: int8 codes (N, d), each row the direction of one clip's embedding."""

    codes: np.ndarray

    @classmethod
    def from_bytes(cls, data: bytes, dims: int) -> Embeddings:
        """The embeddings of concatenated stored forms of ``dims`` dimensions each."""
        return cls(np.frombuffer(data, dtype=np.int8).reshape(len(data) // dims if dims else 0, dims))

    @property
    def dims(self) -> int:
        return self.codes.shape[1]

    def __len__(self) -> int:
        return len(self.codes)

    def unit(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """float32 (n, d) unit vectors of the chosen rows."""
        return unit_rows(self.codes[rows].astype(np.float32))
