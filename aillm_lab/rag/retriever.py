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
import glob
import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aillm_lab.db import LabDB
from aillm_lab.errors import AillmError
from aillm_lab.rag import index as rag_index
from aillm_lab.rag.chunking import DEFAULT_OVERLAP_TOKENS, Chunker
from aillm_lab.rag.embeddings import Embedder, EmbeddingCache, default_embedder
from aillm_lab.rag.index import EXACT_THRESHOLD, SCHEMA, DenseIndex
from aillm_lab.rag.loaders import DocType, Document, Skipped, load
from aillm_lab.rag.results import SearchHit, SearchResults

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from aillm_lab.config import LabSettings
    from aillm_lab.runtime import LoopRunner

log = logging.getLogger(__name__)
T = TypeVar("T")
Mode = Literal["dense", "sparse", "hybrid"]
RRF_K = 60
MAX_K = 1000
EMBED_BATCH = 4096  # chunks embedded (sorted by length) and committed together
MAX_FTS_LIMIT = 1_000_000
STOPWORDS = frozenset("""a an and are as at be been but by can could do does did for from had has
have how i if in into is it its may might must not of on or our shall should so than that the
their them then there these they this those to was we were what when where which who whom why
will with would you your""".split())


class RagError(AillmError, ValueError):
    """A search or ingest argument is invalid; the message names it and the allowed values."""


class IngestReport(BaseModel):
    """What one ingest changed; ``embeddings_computed`` excludes cache hits."""

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


class CollectionInfo(BaseModel):
    name: str
    model_id: str
    dim: int
    documents: int
    chunks: int
    ann: bool = False  # searched through the usearch file (else exact numpy)
    rebuilds: int = 0  # usearch rebuilds from SQLite since this Knowledge opened it


class Knowledge:
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
        from aillm_lab.runtime import get_runner

        self.runner = runner or get_runner()
        self.db = LabDB(db_path, schema=SCHEMA, runner=self.runner)
        self.index_dir = Path(index_dir)
        self._embedder = embedder
        self.chunk_tokens, self.overlap_tokens = chunk_tokens, overlap_tokens
        self.exact_threshold = exact_threshold
        self.progress = progress
        self.cache = EmbeddingCache(self.db)
        self._dense: dict[str, DenseIndex] = {}
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
                      progress: bool | None = None) -> IngestReport:
        """Add new, replace changed and (with ``sync``) remove vanished files under ``paths``."""
        return await self._on_runner(self._ingest(paths, collection, sync, list(tags),
                                                  self.progress if progress is None else progress))

    async def asearch(self, query: str, k: int = 10, mode: Mode = "hybrid",
                      collection: str = "default",
                      filters: Filters | dict[str, Any] | None = None) -> SearchResults:
        """The ``k`` best chunks for ``query``; ``filters`` narrow by source, type, tags, date."""
        query, flt = _check_search(query, k, mode, filters)
        return await self._on_runner(self._search(query, k, mode, collection, flt))

    async def aremove(self, source: str | Path, collection: str = "default") -> int:
        """Remove one document (by path) from the collection; returns chunks removed."""
        return await self._on_runner(self._remove_sources(collection, [_source_key(source)]))

    async def acollections(self) -> list[CollectionInfo]:
        return await self._on_runner(self._collections())

    async def adrop(self, collection: str) -> None:
        """Delete a collection, its documents, chunks and index files."""
        await self._on_runner(self._drop(collection))

    async def aclose(self) -> None:
        """Close the database; idempotent (a later call reopens)."""
        await self._on_runner(self._close())

    # -- sync twins ------------------------------------------------------------------------
    def ingest(self, paths: str | Path | Iterable[str | Path], collection: str = "default",
               sync: bool = False, *, tags: Iterable[str] = (),
               progress: bool | None = None) -> IngestReport:
        return self.runner.run(self.aingest(paths, collection, sync, tags=tags,
                                            progress=progress))

    def search(self, query: str, k: int = 10, mode: Mode = "hybrid",
               collection: str = "default",
               filters: Filters | dict[str, Any] | None = None) -> SearchResults:
        return self.runner.run(self.asearch(query, k, mode, collection, filters))

    def remove(self, source: str | Path, collection: str = "default") -> int:
        return self.runner.run(self.aremove(source, collection))

    def collections(self) -> list[CollectionInfo]:
        return self.runner.run(self.acollections())

    def drop(self, collection: str) -> None:
        self.runner.run(self.adrop(collection))

    def close(self) -> None:
        self.runner.run(self.aclose())

    # -- ingest ----------------------------------------------------------------------------
    async def _ingest(self, paths: Any, collection: str, sync: bool, tags: list[str],
                      progress: bool) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        loaded = await asyncio.to_thread(load, paths)
        report.skipped = loaded.skipped
        cid = await self._collection_id(collection, create=True)
        known = await rag_index.doc_hashes(self.db, cid)
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
                gone = [s for s in known if s not in seen and rag_index.under(s, paths)]
                report.docs_removed = len(gone)
                report.chunks_removed += await self._remove_locked(cid, dense, gone)
        report.seconds = round(time.perf_counter() - started, 4)
        return report

    async def _write_changed(self, cid: int, docs: list[Document], tags: list[str],
                             dense: DenseIndex, report: IngestReport, progress: bool) -> None:
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
                added, dead = await rag_index.replace_documents(self.db, cid, group, vectors, tags)
                report.chunks_added += len(added)
                report.chunks_removed += len(dead)
                fresh = np.asarray([i for i, _ in added], dtype=np.int64)
                await dense.aupdate(fresh.tolist(),
                                    np.stack([v for _, v in added]) if added
                                    else np.zeros((0, dense.dim), np.float32), dead)
        finally:
            bar.close()

    async def _remove_sources(self, collection: str, sources: list[str]) -> int:
        cid = await self._collection_id(collection, create=False)
        async with self._lock(collection):
            dense = await self._dense_index(collection)
            return await self._remove_locked(cid, dense, sources)

    async def _remove_locked(self, cid: int, dense: DenseIndex, sources: list[str]) -> int:
        if not sources:
            return 0
        dead = await rag_index.remove_documents(self.db, cid, sources)
        await dense.aupdate([], np.zeros((0, dense.dim), np.float32), dead)
        return len(dead)

    # -- search ----------------------------------------------------------------------------
    async def _search(self, query: str, k: int, mode: Mode, collection: str,
                      flt: Filters | None) -> SearchResults:
        cid = await self._collection_id(collection, create=False)
        depth = k if mode != "hybrid" else max(4 * k, 50)
        dense_mode = mode in ("dense", "hybrid")

        async def dense_ranking() -> list[tuple[int, float]]:
            allowed = await filtered_ids(self.db, cid, flt) if flt else None
            qvec = (await self.embedder.aembed([query]))[0]
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
        row = await self.db.fetchone(
            "SELECT id, model_id FROM rag_collections WHERE name = ?", (name,))
        if row is not None:
            if row[1] != self.embedder.model_id:
                raise RagError(f"collection={name!r} was built with {row[1]}, not "
                               f"{self.embedder.model_id}; search it with that embedder or "
                               "ingest into another collection.")
            return int(row[0])
        if not create:
            names = [c.name for c in await self._collections()]
            raise RagError(f"collection={name!r} does not exist; ingest into it first "
                           f"(existing: {names or 'none'}).")
        dim = self.embedder.dim or (await self.embedder.aembed(["dimension probe"])).shape[1]
        async with self.db.write() as conn:
            cur = await conn.execute(
                "INSERT INTO rag_collections (name, model_id, dim, created) VALUES (?, ?, ?, ?)",
                (name, self.embedder.model_id, dim, time.time()))
            return int(cur.lastrowid or 0)

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
            "(SELECT count(*) FROM rag_chunks k WHERE k.collection_id = c.id AND k.alive = 1) "
            "FROM rag_collections c ORDER BY c.name")
        out = []
        for r in rows:
            dense = self._dense.get(r[0])
            out.append(CollectionInfo(name=r[0], model_id=r[1], dim=r[2], documents=r[3],
                                      chunks=r[4], ann=bool(dense and dense.uses_ann),
                                      rebuilds=dense.rebuilds if dense else 0))
        return out

    async def _drop(self, collection: str) -> None:
        cid = await self._collection_id(collection, create=False)
        async with self._lock(collection):
            await rag_index.drop_collection(self.db, cid)
            dense = self._dense.pop(collection, None)
            if dense is not None:
                dense.remove_files()
            else:
                for suffix in (".usearch", ".manifest.json"):
                    (self.index_dir / f"{collection}{suffix}").unlink(missing_ok=True)

    async def _close(self) -> None:
        self._dense.clear()
        await self.db.aclose()

    def _lock(self, collection: str) -> asyncio.Lock:
        return self._locks.setdefault(collection, asyncio.Lock())

    async def _on_runner(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self.runner.arun(coro)


def rrf(rankings: list[list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the rankings, best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _check_search(query: str, k: int, mode: str,
                  filters: Filters | dict[str, Any] | None) -> tuple[str, Filters | None]:
    if mode not in ("dense", "sparse", "hybrid"):
        raise RagError(f"mode={mode!r} is unknown; use 'dense', 'sparse' or 'hybrid'.")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise RagError(f"k={k!r} is out of range; use an integer from 1 to {MAX_K}.")
    if not isinstance(query, str) or not query.strip():
        raise RagError(f"query={query!r} is empty; pass the text to search for.")
    return query.strip(), Filters.parse(filters)


def _source_key(source: str | Path) -> str:
    """The form sources are stored in: an absolute, resolved path (a trailing / is kept)."""
    text = str(source)
    key = str(Path(text).expanduser().resolve())
    return key + "/" if text.endswith(("/", "\\")) and not key.endswith("/") else key


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


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="embedding chunks", unit="chunk")




# -- filters and the SQL side of search ----------------------------------------------------
class Filters(BaseModel):
    """Narrow a search: ``source`` is a glob (``*.md``) or a path prefix; ``tags`` must all
    be present; ``after``/``before`` bound the file's modification time."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    type: list[DocType] | None = None
    tags: list[str] | None = None
    after: datetime | None = None
    before: datetime | None = None

    @field_validator("type", "tags", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @classmethod
    def parse(cls, value: Filters | dict[str, Any] | None) -> Filters | None:
        if value is None or isinstance(value, Filters):
            return value
        if not isinstance(value, dict):
            raise RagError(f"filters={value!r} must be a dict or Filters, e.g. "
                           "{'source': '*.md', 'type': 'markdown', 'tags': ['paper']}.")
        try:
            return cls(**value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in err["loc"])
            raise RagError(f"filters.{field} = {err.get('input')!r}: {err['msg']}. Allowed "
                           "keys: source (glob or prefix), type, tags, after, before.") from None

    def to_sql(self) -> tuple[str, list[Any]]:
        """A WHERE fragment over ``d`` (rag_documents) and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        if self.source:
            if glob.has_magic(self.source):
                parts.append("d.source GLOB ?")
                params.append(self.source if self.source.startswith(("*", "/"))
                              else "*" + self.source)
            else:
                prefix = _source_key(self.source)
                parts.append("substr(d.source, 1, ?) = ?")
                params += [len(prefix), prefix]
        if self.type:
            parts.append(f"d.type IN ({','.join('?' * len(self.type))})")
            params += self.type
        for tag in self.tags or []:
            parts.append("EXISTS (SELECT 1 FROM json_each(d.tags) WHERE value = ?)")
            params.append(tag)
        if self.after is not None:
            parts.append("d.mtime >= ?")
            params.append(self.after.timestamp())
        if self.before is not None:
            parts.append("d.mtime < ?")
            params.append(self.before.timestamp())
        return " AND ".join(parts) or "1", params


def fts_query(query: str) -> str:
    """User text as a safe FTS5 query: each word-bearing term quoted, OR-ed together.

    Quoting makes ``foo()``, ``E1234:`` or ``a-b`` plain phrases instead of FTS5 syntax.
    Common English words are dropped (unless nothing else is left): with OR they match
    nearly every chunk, which costs time and adds nothing to BM25.
    """
    terms = [t for t in query.split() if any(ch.isalnum() for ch in t)]
    content = [t for t in terms if t.lower().strip(".,;:!?()[]'\"") not in STOPWORDS]
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in dict.fromkeys(content or terms))


async def filtered_ids(db: LabDB, collection_id: int, flt: Filters) -> np.ndarray:
    where, params = flt.to_sql()
    rows = await db.fetchall(
        "SELECT c.id FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_id "
        f"WHERE c.collection_id = ? AND c.alive = 1 AND {where}", [collection_id, *params])
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


async def sparse_search(db: LabDB, collection_id: int, match: str, k: int,
                        flt: Filters | None) -> list[tuple[int, float]]:
    """BM25 over text (weight 1) and section headings (weight 0.5); score is -bm25.

    FTS5 ranks first on its own (fast), then the collection and filters are applied; when
    they reject too many, the FTS limit grows until k hits are found or FTS runs out.
    """
    if not match:
        return []
    where, params = flt.to_sql() if flt else ("1", [])
    limit = k if flt is None else 4 * k
    while True:
        rows = await db.fetchall(
            "SELECT f.id, f.s FROM (SELECT rowid AS id, bm25(rag_fts, 1.0, 0.5) AS s "
            "FROM rag_fts WHERE rag_fts MATCH ? ORDER BY s LIMIT ?) f "
            "JOIN rag_chunks c ON c.id = f.id JOIN rag_documents d ON d.id = c.doc_id "
            f"WHERE c.collection_id = ? AND c.alive = 1 AND {where} ORDER BY f.s",
            [match, limit, collection_id, *params])
        if len(rows) >= k or limit >= MAX_FTS_LIMIT:
            break
        total = await db.fetchone("SELECT count(*) FROM rag_fts WHERE rag_fts MATCH ?",
                                  [match])
        if total is None or limit >= total[0]:
            break
        limit *= 8
    return [(int(r[0]), -float(r[1])) for r in rows[:k]]


async def chunk_rows(db: LabDB, ids: list[int]) -> dict[int, dict[str, Any]]:
    """What a SearchHit shows, per chunk id."""
    if not ids:
        return {}
    rows = await db.fetchall(
        "SELECT c.id, c.text, c.section, c.ordinal, c.token_count, c.metadata, d.source, "
        "d.type, d.metadata, d.tags, d.mtime, d.id FROM rag_chunks c "
        f"JOIN rag_documents d ON d.id = c.doc_id WHERE c.id IN ({','.join('?' * len(ids))})",
        ids)
    out = {}
    for r in rows:
        meta = {**json.loads(r[8]), **json.loads(r[5]), "type": r[7], "tags": json.loads(r[9]),
                "mtime": r[10], "ordinal": r[3], "token_count": r[4], "doc_id": r[11]}
        out[int(r[0])] = {"text": r[1], "section": r[2], "source": r[6], "metadata": meta}
    return out
