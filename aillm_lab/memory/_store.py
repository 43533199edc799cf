"""``MemoryStore``: what memory keeps in ``lab.db`` and in RAM, behind one small interface.

Why a store apart from ``LongTermMemory``: the public class says what a memory operation
means; the store says how it reaches the disk. It owns the ``LabDB`` connection, the lock
that keeps our reads out of our own open write batches, the ``BEGIN IMMEDIATE … COMMIT``
batches (``transaction``), the per-namespace vector caches patched after each commit, the
embedder, and the WAL checkpoint cadence. Everything else in ``memory/`` uses only this:

- ``read(fn, …)``: ``fn(conn, …)`` on committed data, between our write batches;
- ``transaction()``: one write batch (a ``Tx``), all or nothing;
- ``vectors(conn, namespace)``: a namespace's live vectors, from inside ``read`` or a batch;
- ``embed(texts)``, ``embedder``, ``clock``, ``db``, ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from aillm_lab.memory import _batch
from aillm_lab.memory._schema import MemoryBusy
from aillm_lab.memory._vectors import VectorCache, as_matrix

if TYPE_CHECKING:
    import aiosqlite

    from aillm_lab.db import LabDB

T = TypeVar("T")


class EmbedderLike(Protocol):
    """What memory needs from an embedder (``aillm_lab.rag.embeddings`` provides them)."""

    model_id: str
    dim: int

    async def aembed(self, texts: list[str]) -> Any:
        """Float32, L2-normalised, shape (len(texts), dim)."""


class MemoryStore:
    """Memory's connection, write batches, vector caches and embedder (runner loop only)."""

    def __init__(self, db: LabDB, *, embedder: EmbedderLike | None = None,
                 clock: Callable[[], float] = time.time, checkpoint_every: int = 1000,
                 checkpoint_interval_s: float = 300.0) -> None:
        self.db = db
        self.clock = clock
        self.checkpoint_every, self.checkpoint_interval_s = checkpoint_every, checkpoint_interval_s
        self._embedder = embedder
        self._caches: dict[str, VectorCache] = {}
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._cache_conn: object = None
        self._writes, self._last_checkpoint = 0, clock()

    @property
    def embedder(self) -> EmbedderLike:
        """The embedder given, or ``aillm_lab.rag.embeddings.default_embedder()`` on first use."""
        if self._embedder is None:
            from aillm_lab.rag.embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Checked, unit-length float32 rows, one per text."""
        embedder = self.embedder
        raw = await embedder.aembed(list(texts))
        return as_matrix(raw, len(texts), int(embedder.dim))

    async def read(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, …)`` between our write batches, which share this connection: a read
        never sees a batch before its COMMIT (or one that rolls back)."""
        async with self._guarded():
            return await fn(await self.db.conn(), *args, **kwargs)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_batch.Tx]:
        """One write batch; the vector caches change only after its COMMIT returned."""
        async with self._guarded():
            try:
                async with self.db.write() as conn:
                    tx = _batch.Tx(conn)
                    yield tx
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise MemoryBusy(f"busy_timeout_ms = {self.db.busy_timeout_ms}: another "
                                 f"connection kept {self.db.path.name}'s write lock longer "
                                 "than that; retry, or raise busy_timeout_ms.") from exc
            if tx.reset_all:
                self._caches.clear()
            for ns, (seqs, vecs) in tx.added.items():
                if ns in self._caches:
                    self._caches[ns].add(seqs, np.asarray(vecs, dtype=np.float32))
            for ns, seqs in tx.removed_seqs.items():
                if ns in self._caches:
                    self._caches[ns].remove(seqs)
            await self._maybe_checkpoint()

    async def vectors(self, conn: aiosqlite.Connection, namespace: str) -> VectorCache:
        """The namespace's live vectors, reloaded if another connection committed since.

        Call it as ``read(store.vectors, namespace)`` or with a batch's ``tx.conn``: the
        cache must not load while one of our batches is half written.
        """
        if conn is not self._cache_conn:  # data_version only compares within one connection
            self._caches.clear()
            self._cache_conn = conn
        version = await _batch.one_value(conn, "PRAGMA data_version")
        cache = self._caches.get(namespace)
        if cache is not None and cache.data_version == version:
            return cache
        embedder = self.embedder
        if int(embedder.dim) <= 0:  # an embedder that learns its dimension on first use
            await self.embed(["dimension probe"])
        cache = await _batch.load_cache(conn, namespace, embedder.model_id, int(embedder.dim),
                                        version)
        if any(c.data_version != version for c in self._caches.values()):
            self._caches.clear()
        self._caches[namespace] = cache
        return cache

    async def aclose(self) -> None:
        """Drop the caches and close the connection (a later call reopens it)."""
        self._caches.clear()
        await self.db.aclose()

    # -- helpers ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """Our writes, reads and cache loads exclude each other: none sees half a batch."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # the runner may have restarted
            self._lock, self._lock_loop = asyncio.Lock(), loop
            self._caches.clear()
        async with self._lock:
            yield

    async def _maybe_checkpoint(self) -> None:
        self._writes += 1
        now = self.clock()
        if (self._writes >= self.checkpoint_every
                or now - self._last_checkpoint >= self.checkpoint_interval_s):
            self._writes, self._last_checkpoint = 0, now
            await self.db.checkpoint("PASSIVE")
