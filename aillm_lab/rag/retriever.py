"""``Knowledge``: ingest files into named collections, then search them dense, sparse or both.

Why one facade: a researcher wants ``kb.ingest("docs/")`` and ``kb.search("…")`` and nothing
else to think about. Underneath, loading and chunking run in a worker thread, embeddings go
through the SQLite cache (identical text is never embedded twice), each batch of changed
documents is replaced in one ``BEGIN IMMEDIATE`` transaction, and the dense index is updated
after the commit (so a crash only ever leaves it stale, which ``DenseIndex`` repairs). Hybrid
search fuses dense and BM25 rankings with reciprocal rank fusion (k = 60).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from aillm_lab.db import LabDB
from aillm_lab.rag import store as rag_store
from aillm_lab.rag.chunking import DEFAULT_OVERLAP_TOKENS, Chunker
from aillm_lab.rag.embeddings import Embedder, EmbeddingCache, default_embedder, normalise
from aillm_lab.rag.index import EXACT_THRESHOLD, DenseIndex
from aillm_lab.rag.loaders import Document, LoadWarning, Skipped, load
from aillm_lab.rag.results import SearchHit, SearchResults
from aillm_lab.rag.sparse import (
    Filters,
    RagError,
    chunk_rows,
    filtered_ids,
    fts_query,
    rrf,
    source_key,
    sparse_search,
)
from aillm_lab.rag.store import SCHEMA
from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner, sync_twin

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from aillm_lab.config import LabSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
Mode = Literal["dense", "sparse", "hybrid"]
# ``progress=`` of an ingest: a tqdm bar (True), none (False), or ``hook(done, total)`` with the
# chunks embedded so far (a page's own bar); a hook may be called from a worker thread
ProgressHook = Callable[[int, int], None]
MAX_K = 1000
EMBED_BATCH = 4096  # chunks embedded (sorted by length) and committed together


class IngestReport(BaseModel):
    """What one ingest changed; ``embeddings_computed`` excludes cache hits.

    ``skipped`` lists every entry that was not ingested and why (binary, symlink, FIFO …);
    ``warnings`` lists files ingested imperfectly (invalid UTF-8 replaced with U+FFFD).
    """

    collection: str = "default"
    docs_added: int = 0
    docs_updated: int = 0
    docs_unchanged: int = 0
    docs_removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    embeddings_computed: int = 0
    seconds: float = 0.0
    skipped: list[Skipped] = Field(default_factory=list)
    warnings: list[LoadWarning] = Field(default_factory=list)


class CollectionInfo(BaseModel):
    name: str
    model_id: str
    dim: int
    documents: int
    chunks: int
    ann: bool = False  # searched through the usearch file (else exact numpy)
    rebuilds: int = 0  # usearch rebuilds from SQLite since this Knowledge opened it
    disk_bytes: int = 0  # about: its rows in lab.db (text, vectors, metadata) + index files


class Knowledge(Lifecycle):
    """Named collections of documents in ``lab.db``, searchable by meaning and by words."""

    def __init__(self, settings: LabSettings | None = None, *, db_path: str | Path | None = None,
                 index_dir: str | Path | None = None, embedder: Embedder | None = None,
                 runner: LoopRunner | None = None, chunk_tokens: int | None = None,
                 overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
                 exact_threshold: int = EXACT_THRESHOLD, progress: bool = True) -> None:
        if db_path is None or index_dir is None:
            if settings is None:
                from aillm_lab.config import LabSettings

                settings = LabSettings.load()
            db_path = db_path or settings.db_path
            index_dir = index_dir or settings.home / "index"

        self.runner = runner or get_runner()
        self.db = LabDB(db_path, schema=SCHEMA, runner=self.runner)
        self.index_dir = Path(index_dir)
        self._embedder = embedder
        self.chunk_tokens, self.overlap_tokens = chunk_tokens, overlap_tokens
        self.exact_threshold = exact_threshold
        self.progress = progress
        self.cache = EmbeddingCache(self.db, stored=rag_store.STORED_VECTORS, write=False)
        self._dense: dict[str, DenseIndex] = {}
        self._cids: dict[str, int] = {}  # name -> id, checked against the embedder once
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"Knowledge({str(self.db.path)!r})"

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    # -- async API -------------------------------------------------------------------------
    async def aingest(self, paths: str | Path | Iterable[str | Path], collection: str = "default",
                      sync: bool = False, *, tags: Iterable[str] = (),
                      progress: bool | ProgressHook | None = None) -> IngestReport:
        """Add new, replace changed and (with ``sync``) remove vanished files under ``paths``;
        ``progress``: a tqdm bar of chunks embedded, or ``hook(done, total)`` instead."""
        return await self._on_runner(self._ingest(paths, collection, sync, list(tags),
                                                  self.progress if progress is None else progress))

    async def asearch(self, query: str | None = None, k: int = 10, mode: Mode | None = None,
                      collection: str = "default",
                      filters: Filters | dict[str, Any] | None = None, *,
                      vector: Any = None, vector_model: str | None = None) -> SearchResults:
        """The ``k`` best chunks for ``query``; ``filters`` narrow by source, type, tags, date.

        ``vector`` searches by a query vector you already have instead of embedding ``query``
        (``mode`` then defaults to ``"dense"``; hybrid also needs the text for BM25). Name the
        model that made it in ``vector_model`` to have the collection check it.
        """
        query, mode, flt = _check_search(query, k, mode, filters, vector)
        return await self._on_runner(self._search(query, k, mode, collection, flt,
                                                  vector, vector_model))

    async def aremove(self, source: str | Path, collection: str = "default") -> int:
        """Remove one document (by path) from the collection; returns chunks removed."""
        return await self._on_runner(self._remove_sources(collection, [source_key(source)]))

    async def acollections(self) -> list[CollectionInfo]:
        return await self._on_runner(self._collections())

    async def adrop(self, collection: str) -> None:
        """Delete a collection, its documents, chunks and index files."""
        await self._on_runner(self._drop(collection))

    async def aclose(self) -> None:  # close, with and async with come from Lifecycle
        """Close the database; idempotent (a later call reopens)."""
        await self._on_runner(self._close())

    # -- sync twins ------------------------------------------------------------------------
    ingest = sync_twin(aingest)
    search = sync_twin(asearch)
    remove = sync_twin(aremove)
    collections = sync_twin(acollections)
    drop = sync_twin(adrop)

    # -- ingest ----------------------------------------------------------------------------
    async def _ingest(self, paths: Any, collection: str, sync: bool, tags: list[str],
                      progress: bool | ProgressHook) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        loaded = await asyncio.to_thread(load, paths)
        report.skipped, report.warnings = loaded.skipped, loaded.warnings
        cid = await self._collection_id(collection, create=True)
        known = await rag_store.doc_hashes(self.db, cid)
        changed: list[Document] = []
        for doc in loaded.documents:
            old = known.get(doc.source)
            if old is not None and old == doc.content_hash:
                report.docs_unchanged += 1
            else:
                changed.append(doc)
                if old is None:
                    report.docs_added += 1
                else:
                    report.docs_updated += 1
        async with self._lock(collection):
            dense = await self._dense_index(collection)
            await self._write_changed(cid, changed, tags, dense, report, progress)
            if sync:
                seen = {d.source for d in loaded.documents}
                gone = [s for s in known if s not in seen and rag_store.under(s, paths)]
                report.docs_removed = len(gone)
                report.chunks_removed += await self._remove_locked(cid, dense, gone)
        report.seconds = round(time.perf_counter() - started, 4)
        return report

    async def _write_changed(self, cid: int, docs: list[Document], tags: list[str],
                             dense: DenseIndex, report: IngestReport,
                             progress: bool | ProgressHook) -> None:
        if not docs:
            return
        chunker = Chunker.for_embedder(self.embedder, chunk_tokens=self.chunk_tokens,
                                       overlap_tokens=self.overlap_tokens)
        split = await asyncio.to_thread(lambda: [chunker.split(d) for d in docs])
        bar = _progress(sum(len(c) for c in split), progress)
        try:
            for group in _groups(list(zip(docs, split, strict=True)), EMBED_BATCH):
                texts = [c.text for _, chunks in group for c in chunks]
                vectors, computed = await self.cache.aembed(self.embedder, texts,
                                                            progress=bar.update)
                report.embeddings_computed += computed
                added, dead = await rag_store.replace_documents(self.db, cid, group, vectors, tags)
                report.chunks_added += len(added)
                report.chunks_removed += len(dead)
                fresh = np.asarray([i for i, _ in added], dtype=np.int64)
                await dense.aupdate(fresh.tolist(),
                                    np.stack([v for _, v in added]) if added
                                    else np.zeros((0, dense.dim), np.float32), dead,
                                    save=False)
        finally:
            bar.close()
            await dense.asave()  # once per ingest, and for the batches committed before an error

    async def _remove_sources(self, collection: str, sources: list[str]) -> int:
        cid = await self._collection_id(collection, create=False)
        async with self._lock(collection):
            dense = await self._dense_index(collection)
            return await self._remove_locked(cid, dense, sources)

    async def _remove_locked(self, cid: int, dense: DenseIndex, sources: list[str]) -> int:
        if not sources:
            return 0
        dead = await rag_store.remove_documents(self.db, cid, sources)
        await dense.aupdate([], np.zeros((0, dense.dim), np.float32), dead)
        return len(dead)

    # -- search ----------------------------------------------------------------------------
    async def _search(self, query: str, k: int, mode: Mode, collection: str,
                      flt: Filters | None, vector: Any = None,
                      vector_model: str | None = None) -> SearchResults:
        cid = await self._collection_id(collection, create=False)
        depth = k if mode != "hybrid" else max(4 * k, 50)
        dense_mode = mode in ("dense", "hybrid")
        given = None
        if vector is not None:  # checked before anything runs, so no half-started gather
            async with self._lock(collection):
                dense = await self._dense_index(collection)
            given = _query_vector(vector, vector_model, dense)

        async def dense_ranking() -> list[tuple[int, float]]:
            allowed = await filtered_ids(self.db, cid, flt) if flt else None
            qvec = given if given is not None else (await self.embedder.aembed([query]))[0]
            async with self._lock(collection):
                dense = await self._dense_index(collection)
                return await dense.asearch(qvec, depth, allowed)

        jobs = [dense_ranking()] if dense_mode else []
        if mode in ("sparse", "hybrid"):  # BM25 runs while the query is being embedded
            jobs.append(sparse_search(self.db, cid, fts_query(query), depth, flt))
        ranked = list(await asyncio.gather(*jobs))
        scored = rrf(ranked)[:k] if mode == "hybrid" else ranked[0][:k]
        rows = await chunk_rows(self.db, [cid_ for cid_, _ in scored])
        hits = [SearchHit(chunk_id=i, score=round(s, 6), rank=r, **rows[i])
                for r, (i, s) in enumerate(scored, 1) if i in rows]
        return SearchResults(query, hits, mode=mode, collection=collection)

    # -- collections -----------------------------------------------------------------------
    async def _collection_id(self, name: str, *, create: bool) -> int:
        if not name or not name.replace("-", "_").isidentifier():
            raise RagError(f"collection={name!r} is not a valid name; use letters, digits, "
                           "'_' and '-', e.g. 'default' or 'papers-2024'.")
        if name in self._cids:  # a SQLite round trip per search cost as much as the ANN search
            return self._cids[name]
        row = await self.db.fetchone(
            "SELECT id, model_id FROM rag_collections WHERE name = ?", (name,))
        if row is not None:
            if row[1] != self.embedder.model_id:
                raise RagError(f"collection={name!r} was built with {row[1]}, not "
                               f"{self.embedder.model_id}; search and ingest it with that "
                               "model (lab.search/lab.ingest embedding_model=..., or "
                               "Knowledge(embedder=...)), or use another collection.")
            self._cids[name] = int(row[0])
            return self._cids[name]
        if not create:
            names = [c.name for c in await self._collections()]
            raise RagError(f"collection={name!r} does not exist; ingest into it first "
                           f"(existing: {names or 'none'}).")
        dim = self.embedder.dim or (await self.embedder.aembed(["dimension probe"])).shape[1]
        async with self.db.write() as conn:
            cur = await conn.execute(
                "INSERT INTO rag_collections (name, model_id, dim, created) VALUES (?, ?, ?, ?)",
                (name, self.embedder.model_id, dim, time.time()))
            self._cids[name] = int(cur.lastrowid or 0)
            return self._cids[name]

    async def _dense_index(self, collection: str) -> DenseIndex:
        if collection not in self._dense:
            row = await self.db.fetchone(
                "SELECT id, model_id, dim FROM rag_collections WHERE name = ?", (collection,))
            assert row is not None
            dense = DenseIndex(self.db, int(row[0]), collection, model_id=row[1], dim=row[2],
                               index_dir=self.index_dir, exact_threshold=self.exact_threshold)
            await dense.aopen()
            self._dense[collection] = dense
        return self._dense[collection]

    async def _collections(self) -> list[CollectionInfo]:
        rows = await self.db.fetchall(
            "SELECT c.name, c.model_id, c.dim, "
            "(SELECT count(*) FROM rag_documents d WHERE d.collection_id = c.id), "
            "(SELECT count(*) FROM rag_chunks k WHERE k.collection_id = c.id AND k.alive = 1), "
            "(SELECT coalesce(sum(length(k.text) + coalesce(length(k.vector), 0) + "
            " length(k.metadata) + length(k.text_hash) + length(k.section)), 0) "
            " FROM rag_chunks k WHERE k.collection_id = c.id), "
            "(SELECT coalesce(sum(length(d.source) + length(d.metadata) + length(d.tags) + "
            " length(d.content_hash)), 0) FROM rag_documents d WHERE d.collection_id = c.id) "
            "FROM rag_collections c ORDER BY c.name")
        out = []
        for r in rows:
            dense = self._dense.get(r[0])
            files = [self.index_dir / f"{r[0]}.usearch", self.index_dir / f"{r[0]}.manifest.json"]
            disk = r[5] + r[6] + sum(f.stat().st_size for f in files if f.is_file())
            out.append(CollectionInfo(name=r[0], model_id=r[1], dim=r[2], documents=r[3],
                                      chunks=r[4], ann=bool(dense and dense.uses_ann),
                                      rebuilds=dense.rebuilds if dense else 0, disk_bytes=disk))
        return out

    async def _drop(self, collection: str) -> None:
        cid = await self._collection_id(collection, create=False)
        async with self._lock(collection):
            await rag_store.drop_collection(self.db, cid)
            self._cids.pop(collection, None)
            dense = self._dense.pop(collection, None)
            if dense is not None:
                dense.remove_files()
            else:
                for suffix in (".usearch", ".manifest.json"):
                    (self.index_dir / f"{collection}{suffix}").unlink(missing_ok=True)

    async def _close(self) -> None:
        self._dense.clear()
        self._cids.clear()
        await self.db.aclose()

    def _lock(self, collection: str) -> asyncio.Lock:
        return self._locks.setdefault(collection, asyncio.Lock())

    async def _on_runner(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self.runner.arun(coro)


def _check_search(query: str | None, k: int, mode: str | None,
                  filters: Filters | dict[str, Any] | None,
                  vector: Any) -> tuple[str, Mode, Filters | None]:
    mode = mode or ("dense" if vector is not None and query is None else "hybrid")
    if mode not in ("dense", "sparse", "hybrid"):
        raise RagError(f"mode={mode!r} is unknown; use 'dense', 'sparse' or 'hybrid'.")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise RagError(f"k={k!r} is out of range; use an integer from 1 to {MAX_K}.")
    needs_text = vector is None or mode != "dense"
    if query is None and vector is not None and needs_text:
        raise RagError(f"mode={mode!r} needs the query text for its BM25 half; pass query= "
                       "too, or search the vector alone with mode='dense'.")
    if needs_text and (not isinstance(query, str) or not query.strip()):
        raise RagError(f"query={query!r} is empty; pass the text to search for.")
    return (query or "").strip(), mode, Filters.parse(filters)  # type: ignore[return-value]


def _query_vector(vector: Any, vector_model: str | None, dense: DenseIndex) -> np.ndarray:
    """A given query vector as a unit float32 row, refused if it is of another vector space."""
    if vector_model is not None and vector_model != dense.model_id:
        raise RagError(f"vector_model={vector_model!r}, but collection={dense.name!r} was "
                       f"built with {dense.model_id}; embed the query with {dense.model_id} "
                       "or search a collection built with your model.")
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        arr = np.zeros(0, np.float32)
    if arr.shape != (dense.dim,) or not np.isfinite(arr).all() or not arr.any():
        raise RagError(f"vector has shape {arr.shape}; collection={dense.name!r} holds "
                       f"{dense.dim}-d vectors of {dense.model_id}: pass one finite, non-zero "
                       "vector of that model.")
    return normalise(arr, dense.dim)[0]


def _groups(items: list[tuple[Document, list[Any]]],
            size: int) -> Iterable[list[tuple[Document, list[Any]]]]:
    """Whole documents per group, about ``size`` chunks each, so each commit is per-file atomic."""
    group: list[tuple[Document, list[Any]]] = []
    count = 0
    for item in items:
        group.append(item)
        count += len(item[1])
        if count >= size:
            yield group
            group, count = [], 0
    if group:
        yield group


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _HookBar:
    """A bar that reports to ``hook(done, total)`` (from its first call: ``(0, total)``)."""

    def __init__(self, total: int, hook: ProgressHook) -> None:
        self.total, self.done, self.hook = total, 0, hook
        hook(0, total)

    def update(self, n: int) -> None:
        self.done += n
        self.hook(self.done, self.total)

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool | ProgressHook) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    if callable(enabled):
        return _HookBar(total, enabled)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="embedding chunks", unit="chunk")
