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

The async methods are the implementation; each sync twin is ``sync_twin(a…)``. How memories
reach the disk (connection, write batches, vector caches, embedder) is ``_store.MemoryStore``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    check_namespace,
    check_options,
    check_text,
)
from aillm_lab.memory._store import EmbedderLike, MemoryStore
from aillm_lab.memory._vectors import score
from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner, sync_twin

if TYPE_CHECKING:
    import aiosqlite
    import pandas as pd

    from aillm_lab.config import LabSettings
    from aillm_lab.llm.base import Model

T = TypeVar("T")
_CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")

__all__ = ["EmbedderLike", "Hits", "ImportReport", "LongTermMemory", "Memories", "Memory",
           "MemoryBusy", "MemoryHit", "MemoryInputError", "MemoryNotFound", "ScoringWeights"]


class LongTermMemory(Lifecycle):
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
        check_options(synchronous, dedupe_threshold, checkpoint_every, checkpoint_interval_s,
                      busy_timeout_ms)
        if db_path is None:
            if settings is None:
                from aillm_lab.config import LabSettings

                settings = LabSettings.load()
            db_path = settings.db_path
        self.runner = runner or get_runner()
        self._db = LabDB(db_path, schema=SCHEMA, synchronous=synchronous,
                         busy_timeout_ms=busy_timeout_ms, runner=self.runner)
        self._store = MemoryStore(self._db, embedder=embedder, clock=clock,
                                  checkpoint_every=checkpoint_every,
                                  checkpoint_interval_s=checkpoint_interval_s)
        self.weights = weights or ScoringWeights()
        self.dedupe_threshold = dedupe_threshold
        self.timeout = timeout
        self.models = models  # the Lab's gateway (lab.model): how consolidation reaches a model

    def __repr__(self) -> str:
        return f"LongTermMemory({str(self._db.path)!r})"

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def embedder(self) -> EmbedderLike:
        return self._store.embedder

    @property
    def sync_timeout(self) -> float | None:
        """What a sync twin waits at most (``timeout``); the async methods use it too."""
        return self.timeout

    @property
    def checkpoint_every(self) -> int:
        return self._store.checkpoint_every

    @checkpoint_every.setter
    def checkpoint_every(self, value: int) -> None:
        self._store.checkpoint_every = value

    @property
    def checkpoint_interval_s(self) -> float:
        return self._store.checkpoint_interval_s

    @checkpoint_interval_s.setter
    def checkpoint_interval_s(self, value: float) -> None:
        self._store.checkpoint_interval_s = value

    # -- adding -----------------------------------------------------------------------------
    async def aadd(self, text: str, namespace: str = "user", importance: float = 0.5,
                   metadata: Mapping[str, Any] | None = None,
                   tags: Sequence[str] | None = None, *, dedupe: bool = True) -> Memory:
        """Remember ``text``; a near-duplicate strengthens the live memory it matches."""
        return (await self._arun(self._add_many([text], namespace, importance, metadata, tags,
                                                dedupe, single=True)))[0]

    async def aadd_many(self, texts: Sequence[str], namespace: str = "user",
                        importance: float | Sequence[float] = 0.5,
                        metadata: Mapping[str, Any] | None = None,
                        tags: Sequence[str] | None = None, *, dedupe: bool = True) -> Memories:
        """Many memories in one transaction; one result per text, in order."""
        return await self._arun(self._add_many(texts, namespace, importance, metadata, tags,
                                               dedupe))

    # -- reading ----------------------------------------------------------------------------
    async def asearch(self, query: str, namespace: str = "user", k: int = 5, *,
                      weights: ScoringWeights | None = None) -> Hits:
        """The ``k`` best live memories for ``query``, each with its score factors."""
        return await self._arun(self._search(query, namespace, k, weights))

    async def aget(self, id: str, *, include_invalid: bool = False) -> Memory:
        """One memory; forgotten or superseded ones only with ``include_invalid=True``."""
        return await self._arun(self._store.read(_batch.find_memory, id,
                                                 live=not include_invalid))

    async def ahistory(self, id: str) -> Memories:
        """Every version of the memory ``id`` belongs to, oldest first (forgotten included)."""
        return Memories(await self._arun(self._store.read(_history, id)))

    async def alist(self, namespace: str | None = "user", *,
                    include_invalid: bool = False) -> Memories:
        """All memories of a namespace (``None``: every namespace), oldest first."""
        if namespace is not None:
            check_namespace(namespace)
        return Memories(await self._arun(self._store.read(_list, namespace, include_invalid)))

    def to_pandas(self, namespace: str | None = "user", *,
                  include_invalid: bool = False) -> pd.DataFrame:
        return self.list(namespace, include_invalid=include_invalid).to_pandas()

    # -- changing ---------------------------------------------------------------------------
    async def aupdate(self, id: str, text: str, *, importance: float | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      tags: Sequence[str] | None = None) -> Memory:
        """Write a new version of a live memory; the old one stays as history."""
        return await self._arun(_changes.update(self._store, id, text, importance, metadata,
                                                tags))

    async def aforget(self, id: str) -> Memory:
        """Hide a memory from search and get (soft delete); ``purge`` erases it."""
        return await self._arun(_changes.forget(self._store, id))

    async def apurge(self, id: str | None = None, *, namespace: str | None = None) -> int:
        """Erase a memory with its whole history, or a whole namespace; returns rows erased.

        Erasing a consolidation summary makes the memories it replaced live again.
        """
        return await self._arun(_changes.purge(self._store, id, namespace))

    async def aconsolidate(self, namespace: str, model: Model | str, *, max_group: int = 8,
                           min_group: int = 2, threshold: float = 0.8) -> Memories:
        """Summarise groups of similar memories with ``model``; sources become history."""
        return await self._arun(_io.consolidate(self._store, self.models, namespace, model,
                                                max_group, min_group, threshold))

    async def areindex(self, namespace: str | None = None, *, batch: int = 256) -> int:
        """Embed live memories that lack a vector from this embedder (after switching one)."""
        return await self._arun(_io.reindex(self._store, namespace, batch))

    # -- export / import --------------------------------------------------------------------
    async def aexport(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every row (history and forgotten included) as JSON-ready dicts with their links."""
        return [m.model_dump(mode="json") for m in await self.alist(namespace,
                                                                     include_invalid=True)]

    def export_jsonl(self, path: str | Path, namespace: str | None = None) -> int:
        """Write one JSON object per line (atomically); returns the number of memories."""
        return _io.write_jsonl(path, self.export(namespace))

    async def aimport_records(self, records: Iterable[Mapping[str, Any] | Memory]) -> ImportReport:
        """Insert exported memories keeping their ids; already stored ids are skipped."""
        return await self._arun(_io.import_records(self._store, records))

    def import_jsonl(self, path: str | Path) -> ImportReport:
        return self.import_records(_io.read_jsonl(path))

    def from_pandas(self, frame: pd.DataFrame) -> ImportReport:
        return self.import_records(_io.frame_records(frame))

    # -- maintenance ------------------------------------------------------------------------
    async def acheckpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """A WAL checkpoint now: (busy, WAL frames, frames checkpointed)."""
        return await self._arun(self._db.checkpoint(_checkpoint_mode(mode)))

    async def aclose(self) -> None:  # close, with and async with come from Lifecycle
        """Close the connection (idempotent; a later call reopens it)."""
        await self._arun(self._store.aclose())

    # -- sync twins -------------------------------------------------------------------------
    add = sync_twin(aadd)
    add_many = sync_twin(aadd_many)
    search = sync_twin(asearch)
    get = sync_twin(aget)
    history = sync_twin(ahistory)
    list = sync_twin(alist)
    update = sync_twin(aupdate)
    forget = sync_twin(aforget)
    purge = sync_twin(apurge)
    consolidate = sync_twin(aconsolidate)
    reindex = sync_twin(areindex)
    export = sync_twin(aexport)
    import_records = sync_twin(aimport_records)
    checkpoint = sync_twin(acheckpoint)

    # -- implementation (on the runner loop) ------------------------------------------------
    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """On the runner loop: awaited in place there, hopped onto it from any other loop."""
        return await self.runner.arun(coro, self.timeout)

    async def _add_many(self, texts: Sequence[str], namespace: str,
                        importance: float | Sequence[float], metadata: Any, tags: Any,
                        dedupe: bool, single: bool = False) -> Memories:
        items = _batch.new_items(texts, namespace, importance, metadata, tags, single)
        if not items:
            return Memories()
        store = self._store
        vectors = await store.embed([it.text for it in items])
        now = store.clock()
        async with store.transaction() as tx:
            cache = await store.vectors(tx.conn, namespace)
            plan = await _batch.plan_adds(tx.conn, items, vectors, cache,
                                          self.dedupe_threshold if dedupe else None, dedupe)
            refs = await _batch.apply_plan(tx, plan, items, vectors, now,
                                           store.embedder.model_id)
            rows = await _batch.fetch_rows(tx.conn, "seq", sorted(set(refs)))
            by_seq = {row["seq"]: row for row in rows}
            result = await _batch.to_memories(tx.conn, [by_seq[seq] for seq in refs])
        return Memories(result)

    async def _search(self, query: str, namespace: str, k: int,
                      weights: ScoringWeights | None) -> Hits:
        query = check_text(query, "query")
        check_namespace(namespace)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000:
            raise MemoryInputError("k", f"{k!r}: must be an integer in [1, 10000].")
        w = weights or self.weights
        store = self._store
        q = (await store.embed([query]))[0]
        cache = await store.read(store.vectors, namespace)
        top, bm25 = await asyncio.gather(_batch.offload(cache, cache.top, q, w.candidates),
                                         store.read(_batch.fts_candidates, query, namespace,
                                                    w.candidates))
        vec = dict(top)
        seqs = sorted(set(vec) | set(bm25))
        missing = [s for s in seqs if s not in vec]
        vec.update(zip(missing, cache.cosines(missing, q), strict=True))
        now = store.clock()
        hits = []
        for row in await store.read(_batch.fetch_rows, "seq", seqs, live=True):
            seq = row["seq"]
            total, sim, imp, rec = score(vec.get(seq, 0.0), bm25.get(seq, 0.0),
                                         row["importance"], now - row["last_seen"], w)
            if sim <= 0:  # nothing in common with the query: not a hit, however recent
                continue
            hits.append((total, seq, sim, imp, rec, row))
        hits.sort(key=lambda h: (-h[0], -h[1]))
        hits = hits[:k]
        memories = await store.read(_batch.to_memories, [h[5] for h in hits])
        return Hits(MemoryHit(memory=m, score=h[0], similarity=h[2], vector_score=vec.get(h[1],
                              0.0), text_score=bm25.get(h[1], 0.0), importance_factor=h[3],
                              recency_factor=h[4]) for h, m in zip(hits, memories, strict=True))


# -- reads (each runs inside MemoryStore.read) ------------------------------------------------
async def _history(conn: aiosqlite.Connection, id: str) -> list[Memory]:
    row = await _batch.find_row(conn, id)
    rows = await _batch.select(conn, f"SELECT {COLUMNS} FROM memories WHERE root_id = ? "
                               "ORDER BY version, seq", (row["root_id"],))
    return await _batch.to_memories(conn, rows)


async def _list(conn: aiosqlite.Connection, namespace: str | None,
                include_invalid: bool) -> list[Memory]:
    where, params = ["1"], []
    if namespace is not None:
        where.append("namespace = ?")
        params.append(namespace)
    if not include_invalid:
        where.append("valid_to IS NULL")
    rows = await _batch.select(conn, f"SELECT {COLUMNS} FROM memories WHERE "
                               f"{' AND '.join(where)} ORDER BY seq", params)
    return await _batch.to_memories(conn, rows)


def _checkpoint_mode(mode: str) -> str:
    if mode not in _CHECKPOINT_MODES:
        raise MemoryInputError("mode", f"{mode!r}: use one of {', '.join(_CHECKPOINT_MODES)}.")
    return mode
