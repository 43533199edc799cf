"""A collection's rows in ``lab.db``: the schema, and the writes that change documents.

Why apart from ``index.py``: this is the truth (documents, chunks with their one stored
vector, FTS5 kept in step by triggers, all changed inside ``BEGIN IMMEDIATE``); ``index.py``
is the dense index rebuilt from it. Rowids are never reused (AUTOINCREMENT), so a usearch key
never comes back for another chunk.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aillm_lab.rag.embeddings import CACHE_SCHEMA, text_hash

if TYPE_CHECKING:
    from aillm_lab.db import LabDB

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
CREATE INDEX IF NOT EXISTS rag_chunks_hash ON rag_chunks (text_hash);
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


# The embedding cache's first stop: a chunk's own vector, kept once (EmbeddingCache.stored)
STORED_VECTORS = ("SELECT c.text_hash, c.vector FROM rag_chunks AS c JOIN rag_collections AS k "
                  "ON k.id = c.collection_id WHERE k.model_id = ? AND c.vector IS NOT NULL "
                  "AND c.text_hash IN ({marks})")


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
    """Mark chunks dead: the trigger removes them from FTS; text and vector are dropped, the
    vector moving to the embedding cache (a restored file is not embedded again)."""
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        marks = ",".join("?" * len(part))
        await conn.execute(
            "INSERT OR REPLACE INTO rag_embedding_cache (model_id, text_hash, vector) "
            "SELECT k.model_id, c.text_hash, c.vector FROM rag_chunks AS c JOIN "
            "rag_collections AS k ON k.id = c.collection_id "
            f"WHERE c.id IN ({marks}) AND c.vector IS NOT NULL", part)
        await conn.execute(f"UPDATE rag_chunks SET alive = 0, text = '', vector = NULL "
                           f"WHERE id IN ({marks})", part)


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
