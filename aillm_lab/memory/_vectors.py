"""Exact cosine search over one namespace's live vectors, kept in RAM beside SQLite.

Why exact and in RAM: memory stores are small next to document indexes, and a brute-force
``matrix @ query`` over 100k float32 vectors of dimension 384 (150 MB) takes about 20 ms on
the 2-core development machine (benchmarks/bench_memory.py: search p50 28 ms at 100k), with
no index to rebuild or drift. That is fine up to ~100k memories per namespace; beyond that,
put an ANN index (usearch) in front of it. Large products run in a worker thread.
SQLite stays the source of truth: this cache is rebuilt from ``memory_vectors`` whenever
another connection commits (``PRAGMA data_version``) and patched after our own commits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from aillm_lab.memory._schema import ScoringWeights

_CHUNK = 8192  # a block of vectors x queries holds about _CHUNK * 64 similarities
_WORD = re.compile(r"\w+", re.UNICODE)


class VectorCache:
    """Live vectors of one namespace in a growable buffer, keyed by ``memories.seq``."""

    def __init__(self, dim: int, data_version: int = -1) -> None:
        self.dim = dim
        self.data_version = data_version
        self._mat = np.zeros((64, dim), dtype=np.float32)
        self._seq = np.full(64, -1, dtype=np.int64)
        self._pos: dict[int, int] = {}
        self._n = 0

    def __len__(self) -> int:
        return len(self._pos)

    def add(self, seqs: Sequence[int], vectors: np.ndarray) -> None:
        for seq, vec in zip(seqs, vectors, strict=True):
            if seq in self._pos:
                self._mat[self._pos[seq]] = vec
                continue
            if self._n == len(self._seq):
                self._grow()
            self._mat[self._n], self._seq[self._n] = vec, seq
            self._pos[seq] = self._n
            self._n += 1

    def remove(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            pos = self._pos.pop(seq, None)
            if pos is not None:
                self._mat[pos] = 0.0
                self._seq[pos] = -1
        if self._n > 1024 and len(self._pos) < self._n // 2:
            self._compact()

    def top(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` most similar (seq, cosine) pairs, best first."""
        mat, seq, n = self._mat, self._seq, self._n  # safe to run in a worker thread
        k = min(k, n)
        if k <= 0:
            return []
        sims = mat[:n] @ query.astype(np.float32, copy=False)
        if len(self._pos) < n:  # removed rows are zero; keep them out of the ranking
            sims[seq[:n] < 0] = -np.inf
        idx = np.argpartition(-sims, k - 1)[:k]
        idx = idx[np.argsort(-sims[idx], kind="stable")]
        return [(int(seq[i]), float(sims[i])) for i in idx if sims[i] > -np.inf]

    def cosines(self, seqs: Sequence[int], query: np.ndarray) -> list[float]:
        """Cosine of ``query`` with each seq's vector (0.0 for a seq not in the cache)."""
        return [float(self._mat[self._pos[s]] @ query) if s in self._pos else 0.0
                for s in seqs]

    def vectors(self, seqs: Sequence[int]) -> np.ndarray:
        """The vectors of ``seqs`` (zero rows for seqs not in the cache)."""
        out = np.zeros((len(seqs), self.dim), dtype=np.float32)
        for i, s in enumerate(seqs):
            if s in self._pos:
                out[i] = self._mat[self._pos[s]]
        return out

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query row, the best (seq, cosine); seq -1 when the cache is empty."""
        best = np.full(len(queries), -np.inf, dtype=np.float32)
        arg = np.full(len(queries), -1, dtype=np.int64)
        step = max(1, _CHUNK // max(1, len(queries)) * 64)  # about _CHUNK x 64 sims a block
        holes = len(self._pos) < self._n
        for start in range(0, self._n, step):
            stop = min(start + step, self._n)
            seqs = self._seq[start:stop]
            sims = queries @ self._mat[start:stop].T
            if holes:
                sims[:, seqs < 0] = -np.inf
            j = sims.argmax(axis=1)
            val = sims[np.arange(len(queries)), j]
            better = val > best
            best[better], arg[better] = val[better], seqs[j[better]]
        return arg, best

    def _grow(self) -> None:
        cap = len(self._seq) * 2
        mat = np.zeros((cap, self.dim), dtype=np.float32)
        seq = np.full(cap, -1, dtype=np.int64)
        mat[:self._n], seq[:self._n] = self._mat[:self._n], self._seq[:self._n]
        self._mat, self._seq = mat, seq

    def _compact(self) -> None:
        keep = self._seq[:self._n] >= 0
        mat, seq = self._mat[:self._n][keep], self._seq[:self._n][keep]
        self._n = len(seq)
        cap = max(64, 1 << (self._n - 1).bit_length())
        self._mat = np.zeros((cap, self.dim), dtype=np.float32)
        self._seq = np.full(cap, -1, dtype=np.int64)
        self._mat[:self._n], self._seq[:self._n] = mat, seq
        self._pos = {int(s): i for i, s in enumerate(seq)}


def as_matrix(vectors: object, n: int, dim: int, argument: str = "embedder") -> np.ndarray:
    """Check an embedder's output: (n, dim) finite float32 rows, re-normalised to unit length."""
    from aillm_lab.memory._schema import MemoryInputError

    mat = np.asarray(vectors, dtype=np.float32)
    if mat.shape != (n, dim) or not np.isfinite(mat).all():
        raise MemoryInputError(argument, f"returned an array of shape {mat.shape}, expected "
                               f"({n}, {dim}) of finite floats; check its dim attribute.")
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.where(norms > 0, norms, 1.0)


def fts_query(text: str, max_terms: int = 32) -> str | None:
    """An FTS5 ``OR`` query of the quoted words in ``text`` (None when it has none)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:max_terms]
    return " OR ".join(f'"{w}"' for w in words) or None


def score(cosine: float, bm25: float, importance: float, age_s: float,
          weights: ScoringWeights) -> tuple[float, float, float, float]:
    """(score, similarity, importance factor, recency factor) for one candidate.

    ``bm25`` is already normalised to [0, 1]; negative cosines count as 0.
    """
    w = weights.text_weight
    similarity = (1 - w) * max(cosine, 0.0) + w * bm25
    recency = 0.5 ** (max(age_s, 0.0) / (weights.half_life_days * 86_400))
    imp = importance ** weights.importance if weights.importance else 1.0
    rec = recency ** weights.recency if weights.recency else 1.0
    sim = similarity ** weights.similarity if weights.similarity else 1.0
    return sim * imp * rec, similarity, imp, rec


def normalise_bm25(raw: dict[int, float]) -> dict[int, float]:
    """SQLite's bm25() is negative, lower is better; map it to (0, 1], best = 1."""
    if not raw:
        return {}
    best = max(-v for v in raw.values())
    if not math.isfinite(best) or best <= 0:
        return dict.fromkeys(raw, 1.0)
    return {seq: max(-v, 0.0) / best for seq, v in raw.items()}
