"""The RAG index: SQLite is the truth, the usearch file is a rebuildable cache of it.

Why this split (ARCHITECTURE.md, invariant 9): documents, chunks, vectors and the FTS5 (BM25) table
live in ``lab.db`` and change only inside ``BEGIN IMMEDIATE`` transactions, with triggers
keeping FTS in step with the chunks in the same transaction. The ANN index is one usearch
file per collection, keyed by chunk rowid, written to a temp file and ``os.replace``d, with a
manifest (count, max rowid, model, HNSW build settings, sha256) checked at open: a missing,
stale or corrupt file is rebuilt from SQLite. Rowids are never reused (AUTOINCREMENT) and a
key is never removed and re-added (usearch #175, #355): dead chunks are masked and
compacted away by a rebuild.
Small collections skip usearch and search exactly with numpy.
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aillm_lab.rag.embeddings import CACHE_SCHEMA, text_hash

if TYPE_CHECKING:
    from aillm_lab.db import LabDB

log = logging.getLogger(__name__)

EXACT_THRESHOLD = 20_000  # below this many live vectors, numpy beats HNSW (bench_rag.py)
FILTER_EXACT_LIMIT = 5_000  # filtered sets up to this size are searched exactly
COMPACT_RATIO = 0.2  # rebuild when more than this share of indexed keys is dead
# HNSW settings: recall@10 against exact search on 100k real text chunks (bench_rag.py)
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 128
MANIFEST_VERSION = 1
LEGACY_GRAPH = {"connectivity": 16, "expansion_add": 128}  # manifests written before "graph"

SCHEMA = CACHE_SCHEMA + """
CREATE TABLE IF NOT EXISTS rag_collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rag_documents (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '[]',
    mtime REAL,
    ingested REAL NOT NULL,
    UNIQUE (collection_id, source)
);
CREATE TABLE IF NOT EXISTS rag_chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    doc_id INTEGER,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    section TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    alive INTEGER NOT NULL DEFAULT 1,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS rag_chunks_doc ON rag_chunks (doc_id);
CREATE INDEX IF NOT EXISTS rag_chunks_live ON rag_chunks (collection_id, alive);
CREATE VIRTUAL TABLE IF NOT EXISTS rag_fts USING fts5 (
    text, section, content='rag_chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS rag_chunks_ai AFTER INSERT ON rag_chunks WHEN new.alive = 1
BEGIN
    INSERT INTO rag_fts (rowid, text, section) VALUES (new.id, new.text, new.section);
END;
CREATE TRIGGER IF NOT EXISTS rag_chunks_dead AFTER UPDATE OF alive ON rag_chunks
WHEN old.alive = 1 AND new.alive = 0
BEGIN
    INSERT INTO rag_fts (rag_fts, rowid, text, section)
    VALUES ('delete', old.id, old.text, old.section);
END;
CREATE TRIGGER IF NOT EXISTS rag_chunks_ad AFTER DELETE ON rag_chunks WHEN old.alive = 1
BEGIN
    INSERT INTO rag_fts (rag_fts, rowid, text, section)
    VALUES ('delete', old.id, old.text, old.section);
END;
"""


class DenseIndex:
    """Dense search over one collection's live vectors: exact numpy, or a usearch file.

    Not thread-safe by itself; ``Knowledge`` serialises calls with a per-collection lock.
    """

    def __init__(self, db: LabDB, collection_id: int, name: str, *, model_id: str, dim: int,
                 index_dir: Path, exact_threshold: int = EXACT_THRESHOLD,
                 connectivity: int = CONNECTIVITY, expansion_add: int = EXPANSION_ADD,
                 expansion_search: int = EXPANSION_SEARCH) -> None:
        self.db, self.collection_id, self.name = db, collection_id, name
        self.model_id, self.dim = model_id, dim
        self.path = Path(index_dir) / f"{name}.usearch"
        self.manifest_path = self.path.with_suffix(".manifest.json")
        self.exact_threshold = exact_threshold
        self.hnsw = {"connectivity": connectivity, "expansion_add": expansion_add,
                     "expansion_search": expansion_search}
        self.live = 0
        self.rebuilds = 0  # how often the usearch file was rebuilt from SQLite
        self._unsaved = False  # the in-memory usearch index is ahead of its file
        self._ann: Any = None
        self._max_rowid = 0
        self._dead: set[int] = set()
        self._ids = np.zeros(0, dtype=np.int64)
        self._mat = np.zeros((0, dim), dtype=np.float32)

    @property
    def uses_ann(self) -> bool:
        return self._ann is not None

    async def aopen(self) -> None:
        """Load vectors (exact) or the verified usearch file (ANN), rebuilding if needed."""
        row = await self.db.fetchone(
            "SELECT count(*) FROM rag_chunks WHERE collection_id = ? AND alive = 1",
            (self.collection_id,))
        self.live = int(row[0]) if row else 0
        if self.live < self.exact_threshold:
            self._ann = None
            self._ids, self._mat = await self._live_vectors()
        else:
            self._ids, self._mat = np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
            await self._open_ann()

    async def aupdate(self, added_ids: list[int], added: np.ndarray, dead_ids: list[int], *,
                      save: bool = True) -> None:
        """Apply one committed batch: new live vectors and newly dead chunk ids.

        ``save=False`` leaves writing the file to ``asave`` (once per ingest, not per batch:
        at 100k each save rewrote and hashed ~160 MB); a crash before it only leaves the
        file stale, and ``aopen`` catches up from SQLite.
        """
        self.live += len(added_ids) - len(dead_ids)
        if self._ann is None and self.live >= self.exact_threshold:
            await self.aopen()  # grew past the threshold: switch to the usearch file
            return
        if self._ann is None:
            keep = ~np.isin(self._ids, np.asarray(dead_ids, dtype=np.int64))
            self._ids = np.concatenate([self._ids[keep], np.asarray(added_ids, np.int64)])
            self._mat = np.concatenate([self._mat[keep], added.reshape(-1, self.dim)])
            return
        self._dead.update(dead_ids)
        if added_ids:
            keys = np.asarray(added_ids, dtype=np.uint64)
            await asyncio.to_thread(self._ann.add, keys, added)
            self._max_rowid = max(self._max_rowid, max(added_ids))
        if len(self._dead) > COMPACT_RATIO * max(len(self._ann), 1):
            await self.arebuild(reason="compaction")
        elif added_ids or dead_ids:
            self._unsaved = True
            if save:
                await self.asave()

    async def asave(self) -> None:
        """Write the usearch file if batches applied since the last save changed it."""
        if self._ann is not None and self._unsaved:
            await asyncio.to_thread(self._save)

    async def asearch(self, query: np.ndarray, k: int,
                      allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) best first; ``allowed`` restricts to those ids.

        A small allowed set is searched exactly; a large one over-fetches from usearch.
        """
        if allowed is not None and (self._ann is None or len(allowed) <= FILTER_EXACT_LIMIT):
            ids, mat = await self._vectors_for(allowed)
            return _exact(query, ids, mat, k)
        if self._ann is None:
            return _exact(query, self._ids, self._mat, k)
        keep = None if allowed is None else {int(i) for i in allowed}
        total = len(self._ann)
        usable = max(total - len(self._dead), 1) if keep is None else max(len(keep), 1)
        want = math.ceil(k * total / usable) + 8  # expected over-fetch, then grow
        while True:
            fetch = min(want, total)
            if fetch <= 0:
                return []
            matches = self._ann.search(query, fetch)
            hits = [(int(key), 1.0 - float(dist))
                    for key, dist in zip(matches.keys, matches.distances, strict=True)
                    if int(key) not in self._dead and (keep is None or int(key) in keep)]
            if len(hits) >= k or fetch >= total:
                return hits[:k]
            want *= 4

    async def arebuild(self, reason: str, *, quiet: bool = False) -> None:
        """Drop dead rows and write a fresh usearch file from SQLite's live vectors."""
        (log.debug if quiet else log.warning)(
            "rebuilding the %r vector index from lab.db (%s)", self.name, reason)
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM rag_chunks WHERE collection_id = ? AND alive = 0",
                               (self.collection_id,))
        ids, mat = await self._live_vectors()
        self._ann = await asyncio.to_thread(self._build, ids, mat)
        self._dead = set()
        self._max_rowid = int(ids.max()) if len(ids) else await self._max_id()
        self.rebuilds += not quiet
        await asyncio.to_thread(self._save)

    def remove_files(self) -> None:
        for path in (self.path, self.manifest_path):
            path.unlink(missing_ok=True)

    # -- the usearch file ------------------------------------------------------------------
    async def _open_ann(self) -> None:
        dead = await self.db.fetchall(
            "SELECT id FROM rag_chunks WHERE collection_id = ? AND alive = 0",
            (self.collection_id,))
        self._dead = {int(r[0]) for r in dead}
        problem, manifest = self._check_file()
        if problem is None:
            row = await self.db.fetchone(
                "SELECT count(*) FROM rag_chunks WHERE collection_id = ? AND id <= ?",
                (self.collection_id, manifest["max_rowid"]))
            if not row or int(row[0]) != manifest["count"]:
                problem = "stale: SQLite and the manifest disagree on the vector count"
        if problem is None:
            ann = await asyncio.to_thread(self._load)
            if len(ann) != manifest["count"]:
                problem = f"the file holds {len(ann)} vectors, not {manifest['count']}"
            else:
                self._ann, self._max_rowid = ann, int(manifest["max_rowid"])
        if problem is not None:
            fresh = not self.path.exists() and not self.manifest_path.exists()
            await self.arebuild(reason="new collection" if fresh else problem, quiet=fresh)
            return
        await self._catch_up()

    async def _catch_up(self) -> None:
        """Add live chunks committed after the file was saved (a crash before the save)."""
        rows = await self.db.fetchall(
            "SELECT id, vector FROM rag_chunks WHERE collection_id = ? AND alive = 1 AND id > ?",
            (self.collection_id, self._max_rowid))
        if rows:
            ids, mat = _unpack(rows, self.dim)
            await asyncio.to_thread(self._ann.add, ids.astype(np.uint64), mat)
            self._max_rowid = int(ids.max())
            await asyncio.to_thread(self._save)

    def _check_file(self) -> tuple[str | None, dict[str, Any]]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return "missing or unreadable manifest", {}
        if not self.path.is_file():
            return "missing index file", manifest
        expected = (MANIFEST_VERSION, self.model_id, self.dim)
        if (manifest.get("version"), manifest.get("model_id"), manifest.get("dim")) != expected:
            return "manifest is for another model or version", manifest
        if manifest.get("graph", LEGACY_GRAPH) != self._graph_settings():
            return "built with other HNSW settings (a rebuild applies the current ones)", manifest
        if _sha256(self.path) != manifest.get("sha256"):
            return "checksum mismatch (truncated or corrupt file)", manifest
        return None, manifest

    def _graph_settings(self) -> dict[str, int]:
        """The build-time settings baked into the file (expansion_search is set at load)."""
        return {"connectivity": self.hnsw["connectivity"],
                "expansion_add": self.hnsw["expansion_add"]}

    def _new_index(self) -> Any:
        from usearch.index import Index

        return Index(ndim=self.dim, metric="cos", dtype="f32", **self.hnsw)

    def _build(self, ids: np.ndarray, mat: np.ndarray) -> Any:
        ann = self._new_index()
        if len(ids):
            ann.add(ids.astype(np.uint64), mat)
        return ann

    def _load(self) -> Any:
        ann = self._new_index()
        ann.load(str(self.path))
        ann.expansion_search = self.hnsw["expansion_search"]
        return ann

    def _save(self) -> None:
        """Temp file + ``os.replace`` for the index, then the manifest the same way."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.name}.", suffix=".tmp")
        os.close(fd)
        try:
            self._ann.save(tmp)
            _fsync(tmp)
            digest = _sha256(Path(tmp))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        manifest = {"version": MANIFEST_VERSION, "count": len(self._ann),
                    "max_rowid": self._max_rowid, "model_id": self.model_id, "dim": self.dim,
                    "graph": self._graph_settings(), "sha256": digest}
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=1))
        self._unsaved = False

    # -- SQLite reads ----------------------------------------------------------------------
    async def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = await self.db.fetchall(
            "SELECT id, vector FROM rag_chunks WHERE collection_id = ? AND alive = 1 "
            "ORDER BY id", (self.collection_id,))
        return _unpack(rows, self.dim)

    async def _vectors_for(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._ann is None:
            keep = np.isin(self._ids, ids)
            return self._ids[keep], self._mat[keep]
        rows = []
        id_list = [int(i) for i in ids]
        for i in range(0, len(id_list), 500):
            part = id_list[i:i + 500]
            rows += await self.db.fetchall(
                f"SELECT id, vector FROM rag_chunks WHERE alive = 1 AND id IN "
                f"({','.join('?' * len(part))})", part)
        return _unpack(rows, self.dim)

    async def _max_id(self) -> int:
        row = await self.db.fetchone("SELECT max(id) FROM rag_chunks WHERE collection_id = ?",
                                     (self.collection_id,))
        return int(row[0]) if row and row[0] is not None else 0


def _exact(query: np.ndarray, ids: np.ndarray, mat: np.ndarray,
           k: int) -> list[tuple[int, float]]:
    if not len(ids):
        return []
    scores = mat @ query.astype(np.float32)
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in top]


def _unpack(rows: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
    return ids, mat


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: str | Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- documents and chunks in SQLite -----------------------------------------------------------
async def doc_hashes(db: LabDB, collection_id: int) -> dict[str, str]:
    """source -> content hash for every document in the collection."""
    rows = await db.fetchall("SELECT source, content_hash FROM rag_documents "
                             "WHERE collection_id = ?", (collection_id,))
    return {r[0]: r[1] for r in rows}


async def replace_documents(db: LabDB, collection_id: int, group: list[tuple[Any, list[Any]]],
                            vectors: np.ndarray, tags: list[str],
                            ) -> tuple[list[tuple[int, np.ndarray]], list[int]]:
    """Upsert documents and their chunks in ONE transaction; returns (added, dead ids).

    A chunk whose text and section are unchanged keeps its rowid (and vector); every other
    old chunk dies and each new one gets a fresh rowid, so no usearch key is ever reused.
    Statements are batched per group, not per document: each one is a hop to the SQLite
    thread, and per-document hops were a third of ingest time.
    """
    now = time.time()
    tag_text = json.dumps(sorted(set(tags)))
    async with db.write() as conn:
        await conn.executemany(
            "INSERT INTO rag_documents (collection_id, source, type, content_hash, metadata,"
            " tags, mtime, ingested) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (collection_id, source) DO UPDATE SET type = excluded.type, "
            "content_hash = excluded.content_hash, metadata = excluded.metadata, "
            "tags = CASE WHEN excluded.tags = '[]' THEN tags ELSE excluded.tags END, "
            "mtime = excluded.mtime, ingested = excluded.ingested",
            [(collection_id, doc.source, doc.type, doc.content_hash,
              json.dumps(doc.metadata, default=str), tag_text, doc.mtime, now)
             for doc, _ in group])
        doc_ids = dict(await _select_in(
            conn, "SELECT source, id FROM rag_documents WHERE collection_id = ? AND source IN",
            [doc.source for doc, _ in group], [collection_id]))
        old: dict[tuple[int, str, str], list[int]] = {}
        for r in sorted(await _select_in(
                conn, "SELECT id, doc_id, text_hash, section FROM rag_chunks WHERE alive = 1 "
                "AND doc_id IN", list(doc_ids.values())), key=lambda r: r[0]):
            old.setdefault((int(r[1]), r[2], r[3]), []).append(int(r[0]))
        keep: list[tuple[int, int]] = []
        fresh: list[tuple[Any, ...]] = []
        fresh_vectors: list[np.ndarray] = []
        row_of = 0
        for doc, chunks in group:
            doc_id = int(doc_ids[doc.source])
            for chunk in chunks:
                vector = vectors[row_of]
                row_of += 1
                key = (doc_id, text_hash(chunk.text), chunk.section)
                if old.get(key):
                    keep.append((chunk.ordinal, old[key].pop(0)))
                    continue
                fresh.append((collection_id, doc_id, chunk.ordinal, chunk.text, key[1],
                              chunk.token_count, chunk.section,
                              json.dumps({"start": chunk.start, **chunk.metadata}),
                              vector.tobytes()))
                fresh_vectors.append(vector)
        await conn.executemany("UPDATE rag_chunks SET ordinal = ? WHERE id = ?", keep)
        before = (await (await conn.execute("SELECT max(id) FROM rag_chunks")).fetchone())[0]
        await conn.executemany(
            "INSERT INTO rag_chunks (collection_id, doc_id, ordinal, text, text_hash, "
            "token_count, section, metadata, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", fresh)
        rows = await conn.execute_fetchall(  # AUTOINCREMENT: ids rise in insertion order
            "SELECT id FROM rag_chunks WHERE id > ? ORDER BY id", (before or 0,))
        added = [(int(r[0]), v) for r, v in zip(rows, fresh_vectors, strict=True)]
        dead = sorted(i for ids in old.values() for i in ids)
        await _kill(conn, dead)
    return added, dead


async def _select_in(conn: Any, sql: str, values: list[Any],
                     params: list[Any] | None = None) -> list[Any]:
    """``sql + " (?, ?, ...)"`` over ``values`` in slices that fit SQLite's parameter limit."""
    rows: list[Any] = []
    for i in range(0, len(values), 500):
        part = values[i:i + 500]
        rows += await conn.execute_fetchall(f"{sql} ({','.join('?' * len(part))})",
                                            [*(params or []), *part])
    return rows


async def remove_documents(db: LabDB, collection_id: int, sources: list[str]) -> list[int]:
    """Delete documents by source; their chunks die (gone from FTS at once). Returns ids."""
    dead: list[int] = []
    async with db.write() as conn:
        for source in sources:
            rows = await conn.execute_fetchall(
                "SELECT c.id FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_id "
                "WHERE d.collection_id = ? AND d.source = ? AND c.alive = 1",
                (collection_id, source))
            ids = [int(r[0]) for r in rows]
            await _kill(conn, ids)
            await conn.execute("DELETE FROM rag_documents WHERE collection_id = ? AND source = ?",
                               (collection_id, source))
            dead += ids
    return dead


async def drop_collection(db: LabDB, collection_id: int) -> None:
    async with db.write() as conn:
        for table in ("rag_chunks", "rag_documents"):
            await conn.execute(f"DELETE FROM {table} WHERE collection_id = ?", (collection_id,))
        await conn.execute("DELETE FROM rag_collections WHERE id = ?", (collection_id,))


async def _kill(conn: Any, ids: list[int]) -> None:
    """Mark chunks dead: the trigger removes them from FTS; text and vector are dropped."""
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        await conn.execute(f"UPDATE rag_chunks SET alive = 0, text = '', vector = NULL "
                           f"WHERE id IN ({','.join('?' * len(part))})", part)


def under(source: str, paths: Any) -> bool:
    """Whether ``source`` lies under one of the ingested paths (folder, file or glob)."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    for item in items:
        path = Path(item).expanduser()
        if glob.has_magic(str(path)):
            if fnmatch.fnmatchcase(source, os.path.abspath(path)):
                return True
            continue
        resolved = str(path.resolve())
        if source == resolved or source.startswith(resolved.rstrip(os.sep) + os.sep):
            return True
    return False
