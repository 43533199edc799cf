"""``LongTermMemory``: durable, searchable memories per namespace in ``lab.db``.

Why SQLite and not a vector database: one file holds the memories, their history, an FTS5
index and the vectors, and every write batch is one ``BEGIN IMMEDIATE … COMMIT`` (WAL), so a
memory whose ``add`` returned survives a crash of the process. With ``synchronous="NORMAL"``
(the default) WAL commits reach the OS but are not fsynced: safe against a killed or crashed
process, not against power loss; pass ``synchronous="FULL"`` when that matters. Reads share
the instance's connection with its writes, so they wait for an open batch to end and never
see rows that are not committed yet (or never will be). Another writer's lock is waited out
for ``busy_timeout_ms``, then ``MemoryBusy`` says so.

Adding never deletes (mem0 #1674): a near-duplicate of a live memory (same normalised text,
or cosine above ``dedupe_threshold``) strengthens it instead. ``update`` writes a new version
and keeps the old one as history; ``forget`` hides; ``purge`` really deletes. Search ranks
FTS5 (BM25) and exact-cosine candidates by ``similarity × importance × recency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from aillm_lab.db import LabDB, Synchronous
from aillm_lab.memory import _batch, _changes, _io
from aillm_lab.memory._schema import (
    COLUMNS,
    SCHEMA,
    Hits,
    ImportReport,
    Memories,
    Memory,
    MemoryBusy,
    MemoryHit,
    MemoryInputError,
    MemoryNotFound,
    ScoringWeights,
    check_id,
    check_namespace,
    check_options,
    check_text,
)
from aillm_lab.memory._vectors import VectorCache, as_matrix, score

if TYPE_CHECKING:
    import aiosqlite
    import pandas as pd

    from aillm_lab.config import LabSettings
    from aillm_lab.llm.base import Model
    from aillm_lab.runtime import LoopRunner

T = TypeVar("T")
_CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")

__all__ = ["EmbedderLike", "Hits", "ImportReport", "LongTermMemory", "Memories", "Memory",
           "MemoryBusy", "MemoryHit", "MemoryInputError", "MemoryNotFound", "ScoringWeights"]


class EmbedderLike(Protocol):
    """What memory needs from an embedder (``aillm_lab.rag.embeddings`` provides them)."""

    model_id: str
    dim: int

    async def aembed(self, texts: list[str]) -> Any:
        """Float32, L2-normalised, shape (len(texts), dim)."""


class LongTermMemory:
    """Memories in ``lab.db`` with async methods (``aadd``…) and sync twins (``add``…).

    Give ``settings`` (uses ``settings.db_path``) or ``db_path``. The embedder defaults to
    ``aillm_lab.rag.embeddings.default_embedder()``, loaded on first use.
    """

    def __init__(self, settings: LabSettings | None = None, *, db_path: str | Path | None = None,
                 embedder: EmbedderLike | None = None, synchronous: Synchronous = "NORMAL",
                 runner: LoopRunner | None = None, weights: ScoringWeights | None = None,
                 dedupe_threshold: float | None = 0.95, checkpoint_every: int = 1000,
                 checkpoint_interval_s: float = 300.0, busy_timeout_ms: int = 5000,
                 clock: Callable[[], float] = time.time, timeout: float | None = None,
                 models: Callable[[Model | str], Model] | None = None) -> None:
        from aillm_lab.runtime import get_runner

        check_options(synchronous, dedupe_threshold, checkpoint_every, checkpoint_interval_s,
                      busy_timeout_ms)
        if db_path is None:
            if settings is None:
                from aillm_lab.config import LabSettings

                settings = LabSettings.load()
            db_path = settings.db_path
        self._runner = runner or get_runner()
        self._db = LabDB(db_path, schema=SCHEMA, synchronous=synchronous,
                         busy_timeout_ms=busy_timeout_ms, runner=self._runner)
        self._embedder = embedder
        self.weights = weights or ScoringWeights()
        self.dedupe_threshold = dedupe_threshold
        self.checkpoint_every, self.checkpoint_interval_s = checkpoint_every, checkpoint_interval_s
        self.timeout = timeout
        self.models = models  # the Lab's gateway (lab.model): how consolidation reaches a model
        self._clock = clock
        self._caches: dict[str, VectorCache] = {}
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._cache_conn: object = None
        self._writes, self._last_checkpoint = 0, clock()

    def __repr__(self) -> str:
        return f"LongTermMemory({str(self._db.path)!r})"

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def embedder(self) -> EmbedderLike:
        if self._embedder is None:
            from aillm_lab.rag.embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    # -- adding -----------------------------------------------------------------------------
    async def aadd(self, text: str, namespace: str = "user", importance: float = 0.5,
                   metadata: Mapping[str, Any] | None = None,
                   tags: Sequence[str] | None = None, *, dedupe: bool = True) -> Memory:
        """Remember ``text``; a near-duplicate strengthens the live memory it matches."""
        return (await self._arun(self._add_many([text], namespace, importance, metadata, tags,
                                                dedupe, single=True)))[0]

    def add(self, text: str, namespace: str = "user", importance: float = 0.5,
            metadata: Mapping[str, Any] | None = None, tags: Sequence[str] | None = None, *,
            dedupe: bool = True) -> Memory:
        return self._run(self._add_many([text], namespace, importance, metadata, tags,
                                        dedupe, single=True))[0]

    async def aadd_many(self, texts: Sequence[str], namespace: str = "user",
                        importance: float | Sequence[float] = 0.5,
                        metadata: Mapping[str, Any] | None = None,
                        tags: Sequence[str] | None = None, *, dedupe: bool = True) -> Memories:
        """Many memories in one transaction; one result per text, in order."""
        return await self._arun(self._add_many(texts, namespace, importance, metadata, tags,
                                               dedupe))

    def add_many(self, texts: Sequence[str], namespace: str = "user",
                 importance: float | Sequence[float] = 0.5,
                 metadata: Mapping[str, Any] | None = None,
                 tags: Sequence[str] | None = None, *, dedupe: bool = True) -> Memories:
        return self._run(self._add_many(texts, namespace, importance, metadata, tags, dedupe))

    # -- reading ----------------------------------------------------------------------------
    async def asearch(self, query: str, namespace: str = "user", k: int = 5, *,
                      weights: ScoringWeights | None = None) -> Hits:
        """The ``k`` best live memories for ``query``, each with its score factors."""
        return await self._arun(self._search(query, namespace, k, weights))

    def search(self, query: str, namespace: str = "user", k: int = 5, *,
               weights: ScoringWeights | None = None) -> Hits:
        return self._run(self._search(query, namespace, k, weights))

    async def aget(self, id: str, *, include_invalid: bool = False) -> Memory:
        """One memory; forgotten or superseded ones only with ``include_invalid=True``."""
        return await self._arun(self._get(id, include_invalid))

    def get(self, id: str, *, include_invalid: bool = False) -> Memory:
        return self._run(self._get(id, include_invalid))

    async def ahistory(self, id: str) -> Memories:
        """Every version of the memory ``id`` belongs to, oldest first (forgotten included)."""
        return await self._arun(self._history(id))

    def history(self, id: str) -> Memories:
        return self._run(self._history(id))

    async def alist(self, namespace: str | None = "user", *,
                    include_invalid: bool = False) -> Memories:
        """All memories of a namespace (``None``: every namespace), oldest first."""
        return await self._arun(self._list(namespace, include_invalid))

    def list(self, namespace: str | None = "user", *, include_invalid: bool = False) -> Memories:
        return self._run(self._list(namespace, include_invalid))

    def to_pandas(self, namespace: str | None = "user", *,
                  include_invalid: bool = False) -> pd.DataFrame:
        return self.list(namespace, include_invalid=include_invalid).to_pandas()

    # -- changing ---------------------------------------------------------------------------
    async def aupdate(self, id: str, text: str, *, importance: float | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      tags: Sequence[str] | None = None) -> Memory:
        """Write a new version of a live memory; the old one stays as history."""
        return await self._arun(_changes.update(self, id, text, importance, metadata, tags))

    def update(self, id: str, text: str, *, importance: float | None = None,
               metadata: Mapping[str, Any] | None = None,
               tags: Sequence[str] | None = None) -> Memory:
        return self._run(_changes.update(self, id, text, importance, metadata, tags))

    async def aforget(self, id: str) -> Memory:
        """Hide a memory from search and get (soft delete); ``purge`` erases it."""
        return await self._arun(_changes.forget(self, id))

    def forget(self, id: str) -> Memory:
        return self._run(_changes.forget(self, id))

    async def apurge(self, id: str | None = None, *, namespace: str | None = None) -> int:
        """Erase a memory with its whole history, or a whole namespace; returns rows erased.

        Erasing a consolidation summary makes the memories it replaced live again.
        """
        return await self._arun(_changes.purge(self, id, namespace))

    def purge(self, id: str | None = None, *, namespace: str | None = None) -> int:
        return self._run(_changes.purge(self, id, namespace))

    async def aconsolidate(self, namespace: str, model: Model | str, *, max_group: int = 8,
                           min_group: int = 2, threshold: float = 0.8) -> Memories:
        """Summarise groups of similar memories with ``model``; sources become history."""
        return await self._arun(_io.consolidate(self, namespace, model, max_group, min_group,
                                                threshold))

    def consolidate(self, namespace: str, model: Model | str, *, max_group: int = 8,
                    min_group: int = 2, threshold: float = 0.8) -> Memories:
        return self._run(_io.consolidate(self, namespace, model, max_group, min_group,
                                         threshold))

    async def areindex(self, namespace: str | None = None, *, batch: int = 256) -> int:
        """Embed live memories that lack a vector from this embedder (after switching one)."""
        return await self._arun(_io.reindex(self, namespace, batch))

    def reindex(self, namespace: str | None = None, *, batch: int = 256) -> int:
        return self._run(_io.reindex(self, namespace, batch))

    # -- export / import --------------------------------------------------------------------
    async def aexport(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every row (history and forgotten included) as JSON-ready dicts with their links."""
        return [m.model_dump(mode="json") for m in await self.alist(namespace,
                                                                     include_invalid=True)]

    def export(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [m.model_dump(mode="json") for m in self.list(namespace, include_invalid=True)]

    def export_jsonl(self, path: str | Path, namespace: str | None = None) -> int:
        """Write one JSON object per line (atomically); returns the number of memories."""
        return _io.write_jsonl(path, self.export(namespace))

    async def aimport_records(self, records: Iterable[Mapping[str, Any] | Memory]) -> ImportReport:
        """Insert exported memories keeping their ids; already stored ids are skipped."""
        return await self._arun(_io.import_records(self, records))

    def import_records(self, records: Iterable[Mapping[str, Any] | Memory]) -> ImportReport:
        return self._run(_io.import_records(self, records))

    def import_jsonl(self, path: str | Path) -> ImportReport:
        return self.import_records(_io.read_jsonl(path))

    def from_pandas(self, frame: pd.DataFrame) -> ImportReport:
        return self.import_records(_io.frame_records(frame))

    # -- maintenance ------------------------------------------------------------------------
    async def acheckpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """A WAL checkpoint now: (busy, WAL frames, frames checkpointed)."""
        return await self._arun(self._db.checkpoint(_checkpoint_mode(mode)))

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        return self._run(self._db.checkpoint(_checkpoint_mode(mode)))

    async def aclose(self) -> None:
        """Close the connection (idempotent; a later call reopens it)."""
        await self._arun(self._close())

    def close(self) -> None:
        if self._runner.started:
            self._run(self._close())

    def __enter__(self) -> LongTermMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> LongTermMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- implementation (on the runner loop) ------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro, self.timeout)

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._runner.arun(coro, self.timeout)

    async def _add_many(self, texts: Sequence[str], namespace: str,
                        importance: float | Sequence[float], metadata: Any, tags: Any,
                        dedupe: bool, single: bool = False) -> Memories:
        items = _batch.new_items(texts, namespace, importance, metadata, tags, single)
        if not items:
            return Memories()
        vectors = await self._embed([it.text for it in items])
        now = self._clock()
        async with self._transaction() as tx:
            cache = await self._cache(namespace)
            plan = await _batch.plan_adds(tx.conn, items, vectors, cache,
                                          self.dedupe_threshold if dedupe else None, dedupe)
            refs = await _batch.apply_plan(tx, plan, items, vectors, now, self.embedder.model_id)
            rows = await _batch.fetch_rows(tx.conn, "seq", sorted(set(refs)))
            by_seq = {row["seq"]: row for row in rows}
            result = await self._memories([by_seq[seq] for seq in refs], tx.conn)
        return Memories(result)

    async def _search(self, query: str, namespace: str, k: int,
                      weights: ScoringWeights | None) -> Hits:
        query = check_text(query, "query")
        check_namespace(namespace)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000:
            raise MemoryInputError("k", f"{k!r}: must be an integer in [1, 10000].")
        w = weights or self.weights
        q = (await self._embed([query]))[0]
        async with self._guarded():
            cache = await self._cache(namespace)
        top, bm25 = await asyncio.gather(_batch.offload(cache, cache.top, q, w.candidates),
                                         self._read(_batch.fts_candidates, query, namespace,
                                                    w.candidates))
        vec = dict(top)
        seqs = sorted(set(vec) | set(bm25))
        missing = [s for s in seqs if s not in vec]
        vec.update(zip(missing, cache.cosines(missing, q), strict=True))
        now = self._clock()
        hits = []
        for row in await self._read(_batch.fetch_rows, "seq", seqs, live=True):
            seq = row["seq"]
            total, sim, imp, rec = score(vec.get(seq, 0.0), bm25.get(seq, 0.0),
                                         row["importance"], now - row["last_seen"], w)
            if sim <= 0:  # nothing in common with the query: not a hit, however recent
                continue
            hits.append((total, seq, sim, imp, rec, row))
        hits.sort(key=lambda h: (-h[0], -h[1]))
        hits = hits[:k]
        memories = await self._memories([h[5] for h in hits])
        return Hits(MemoryHit(memory=m, score=h[0], similarity=h[2], vector_score=vec.get(h[1],
                              0.0), text_score=bm25.get(h[1], 0.0), importance_factor=h[3],
                              recency_factor=h[4]) for h, m in zip(hits, memories, strict=True))

    async def _get(self, id: str, include_invalid: bool) -> Memory:
        row = await self._row(id)
        if row["valid_to"] is not None and not include_invalid:
            state = ("forgotten" if row["forgotten_at"] is not None
                     else f"superseded by {row['superseded_by']!r}")
            raise MemoryNotFound(f"id = {id!r}: that memory was {state}; pass "
                                 "include_invalid=True or call history(id) to see it.")
        return (await self._memories([row]))[0]

    async def _history(self, id: str) -> Memories:
        row = await self._row(id)
        rows = await self._read(_batch.select, f"SELECT {COLUMNS} FROM memories WHERE "
                                "root_id = ? ORDER BY version, seq", (row["root_id"],))
        return Memories(await self._memories(rows))

    async def _list(self, namespace: str | None, include_invalid: bool) -> Memories:
        where, params = ["1"], []
        if namespace is not None:
            where.append("namespace = ?")
            params.append(check_namespace(namespace))
        if not include_invalid:
            where.append("valid_to IS NULL")
        rows = await self._read(_batch.select, f"SELECT {COLUMNS} FROM memories WHERE "
                                f"{' AND '.join(where)} ORDER BY seq", params)
        return Memories(await self._memories(rows))

    # -- shared helpers ---------------------------------------------------------------------
    async def _row(self, id: str) -> Any:
        check_id(id)
        row = await self._read(_batch.fetch_one, "id", id)
        if row is None:
            raise MemoryNotFound(f"id = {id!r}: no such memory (it may have been purged); "
                                 "search() or list() to find ids.")
        return row

    async def _embed(self, texts: list[str]) -> np.ndarray:
        embedder = self.embedder
        raw = await embedder.aembed(list(texts))
        return as_matrix(raw, len(texts), int(embedder.dim))

    async def _memories(self, rows: Sequence[Any], conn: aiosqlite.Connection | None = None,
                        ) -> list[Memory]:
        """Rows as records; pass ``conn`` inside a transaction (the lock is already held)."""
        if conn is not None:
            return await _batch.to_memories(conn, rows)
        return await self._read(_batch.to_memories, rows)

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, …)`` between our write batches, which share this connection: a read
        never sees a batch before its COMMIT (or one that rolls back)."""
        async with self._guarded():
            return await fn(await self._db.conn(), *args, **kwargs)

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """Our writes, reads and cache loads exclude each other: none sees half a batch."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # the runner may have restarted
            self._lock, self._lock_loop = asyncio.Lock(), loop
            self._caches.clear()
        async with self._lock:
            yield

    async def _close(self) -> None:
        self._caches.clear()
        await self._db.aclose()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_batch.Tx]:
        """One write batch; the vector caches change only after its COMMIT returned."""
        async with self._guarded():
            try:
                async with self._db.write() as conn:
                    tx = _batch.Tx(conn)
                    yield tx
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise MemoryBusy(f"busy_timeout_ms = {self._db.busy_timeout_ms}: another "
                                 f"connection kept {self.path.name}'s write lock longer than "
                                 "that; retry, or raise busy_timeout_ms.") from exc
            if tx.reset_all:
                self._caches.clear()
            for ns, (seqs, vecs) in tx.added.items():
                if ns in self._caches:
                    self._caches[ns].add(seqs, np.asarray(vecs, dtype=np.float32))
            for ns, seqs in tx.removed_seqs.items():
                if ns in self._caches:
                    self._caches[ns].remove(seqs)
            await self._maybe_checkpoint()

    async def _cache(self, namespace: str) -> VectorCache:
        """The namespace's live vectors, reloaded if another connection committed since."""
        conn = await self._db.conn()
        if conn is not self._cache_conn:  # data_version only compares within one connection
            self._caches.clear()
            self._cache_conn = conn
        version = await _batch.one_value(conn, "PRAGMA data_version")
        cache = self._caches.get(namespace)
        if cache is not None and cache.data_version == version:
            return cache
        embedder = self.embedder
        if int(embedder.dim) <= 0:  # an embedder that learns its dimension on first use
            await self._embed(["dimension probe"])
        cache = await _batch.load_cache(conn, namespace, embedder.model_id, int(embedder.dim),
                                        version)
        if any(c.data_version != version for c in self._caches.values()):
            self._caches.clear()
        self._caches[namespace] = cache
        return cache

    async def _maybe_checkpoint(self) -> None:
        self._writes += 1
        now = self._clock()
        if (self._writes >= self.checkpoint_every
                or now - self._last_checkpoint >= self.checkpoint_interval_s):
            self._writes, self._last_checkpoint = 0, now
            await self._db.checkpoint("PASSIVE")


def _checkpoint_mode(mode: str) -> str:
    if mode not in _CHECKPOINT_MODES:
        raise MemoryInputError("mode", f"{mode!r}: use one of {', '.join(_CHECKPOINT_MODES)}.")
    return mode
