"""One write batch (``Tx``) and the add pipeline: validate, match near-duplicates, insert
or strengthen. Split from ``long_term.py``; the functions here run inside a transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from aillm_lab.memory._schema import (
    COLUMNS,
    INSERT,
    Memory,
    MemoryInputError,
    MemoryNotFound,
    check_id,
    check_importance,
    check_metadata,
    check_namespace,
    check_tags,
    check_text,
    row_to_memory,
    text_hash,
)
from aillm_lab.memory._vectors import VectorCache, fts_query, normalise_bm25

if TYPE_CHECKING:
    import aiosqlite

T = TypeVar("T")
log = logging.getLogger("aillm_lab.memory")
CHUNK = 500  # ids per "IN (…)" query, under SQLite's parameter limit
_OFFLOAD_FLOATS = 2_000_000  # cache size (vectors x dim) above which cosines run in a thread


@dataclass
class Tx:
    """An open write batch and the cache changes to apply once it commits."""

    conn: aiosqlite.Connection
    added: dict[str, tuple[list[int], list[np.ndarray]]] = field(default_factory=dict)
    removed_seqs: dict[str, list[int]] = field(default_factory=dict)
    reset_all: bool = False

    async def add_vectors(self, namespace: str, seqs: Sequence[int], vectors: np.ndarray,
                          model: str) -> None:
        await self.conn.executemany(
            "INSERT OR REPLACE INTO memory_vectors (seq, model, dim, vector) VALUES (?, ?, ?, ?)",
            [(s, model, vectors.shape[1], v.astype(np.float32).tobytes())
             for s, v in zip(seqs, vectors, strict=True)])
        slot = self.added.setdefault(namespace, ([], []))
        slot[0].extend(seqs)
        slot[1].extend(vectors)

    def removed(self, namespace: str, seqs: Sequence[int]) -> None:
        self.removed_seqs.setdefault(namespace, []).extend(seqs)


@dataclass
class Item:
    text: str
    namespace: str
    importance: float
    metadata: dict[str, Any]
    tags: list[str]
    hash: str = ""
    strength: int = 1


@dataclass
class Plan:
    """Which items become new rows and which live rows (by seq) they strengthen."""

    new: list[int]  # item indexes inserted as new rows
    ref: list[tuple[str, int]]  # per item: ("new", index into new) or ("old", seq)
    bumps: dict[int, list[int]]  # existing seq -> items that strengthen it


def new_items(texts: Any, namespace: str, importance: Any, metadata: Any, tags: Any,
              single: bool = False) -> list[Item]:
    """Validated items; ``single`` names a bad text ``text`` (add) rather than ``texts[i]``."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise MemoryInputError("texts", f"{type(texts).__name__}: must be a list of strings.")
    check_namespace(namespace)
    if isinstance(importance, Sequence) and not isinstance(importance, str):
        if len(importance) != len(texts):
            raise MemoryInputError("importance", f"<{len(importance)} values>: give one per "
                                   f"text ({len(texts)}) or a single number.")
        imps = [check_importance(v) for v in importance]
    else:
        imps = [check_importance(importance)] * len(texts)
    meta, tag_list = check_metadata(metadata), check_tags(tags)
    items = []
    for i, text in enumerate(texts):
        clean = check_text(text, "text" if single else f"texts[{i}]")
        items.append(Item(clean, namespace, imps[i], dict(meta), list(tag_list),
                          text_hash(clean)))
    return items


async def plan_adds(conn: aiosqlite.Connection, items: list[Item], vectors: np.ndarray,
                    cache: VectorCache, threshold: float | None, dedupe: bool) -> Plan:
    """Match each item to a live memory, an earlier item of the batch, or nothing."""
    plan = Plan([], [], {})
    live: dict[str, int] = {}
    if dedupe:
        hashes = sorted({it.hash for it in items})
        for start in range(0, len(hashes), CHUNK):
            chunk = hashes[start:start + CHUNK]
            for row in await conn.execute_fetchall(
                    "SELECT text_hash, seq FROM memories WHERE namespace = ? AND valid_to IS "
                    f"NULL AND text_hash IN ({', '.join('?' * len(chunk))})",
                    (items[0].namespace, *chunk)):
                live.setdefault(row[0], row[1])
    near_seq, near_sim = (await offload(cache, cache.nearest, vectors)
                          if threshold is not None and len(cache) else (None, None))
    new_hash: dict[str, int] = {}
    for i, item in enumerate(items):
        seq = live.get(item.hash) if dedupe else None
        if seq is None and near_seq is not None and near_sim[i] > threshold:
            seq = int(near_seq[i])
        if seq is not None:
            plan.bumps.setdefault(seq, []).append(i)
            plan.ref.append(("old", seq))
            continue
        j = new_hash.get(item.hash) if dedupe else None
        if j is None and threshold is not None and plan.new:
            sims = vectors[plan.new] @ vectors[i]
            best = int(np.argmax(sims))
            j = best if sims[best] > threshold else None
        if j is not None:
            merge(items[plan.new[j]], item)
            plan.ref.append(("new", j))
            continue
        new_hash.setdefault(item.hash, len(plan.new))
        plan.ref.append(("new", len(plan.new)))
        plan.new.append(i)
    return plan


async def apply_plan(tx: Tx, plan: Plan, items: list[Item], vectors: np.ndarray,
                     now: float, model: str) -> list[int]:
    """Insert the new rows and strengthen the matched ones; returns each item's seq."""
    conn = tx.conn
    fresh = [items[i] for i in plan.new]
    ids = [uuid.uuid4().hex for _ in fresh]
    await conn.executemany(INSERT, [
        (mid, it.namespace, it.text, it.hash, it.importance, it.strength, json.dumps(it.tags),
         json.dumps(it.metadata), now, now, None, None, None, mid, 1)
        for mid, it in zip(ids, fresh, strict=True)])
    seq_of = {row["id"]: row["seq"] for row in await fetch_rows(conn, "id", ids)}
    new_seqs = [seq_of[mid] for mid in ids]
    if fresh:
        await tx.add_vectors(fresh[0].namespace, new_seqs, vectors[plan.new], model)
    updates = []
    for row in await fetch_rows(conn, "seq", sorted(plan.bumps)):
        incoming = [items[i] for i in plan.bumps[row["seq"]]]
        tags = sorted(set(json.loads(row["tags"])).union(*(it.tags for it in incoming)))
        meta: dict[str, Any] = {}
        for it in incoming:
            meta.update(it.metadata)
        meta.update(json.loads(row["metadata"]))  # what is stored wins: adding never deletes
        updates.append((row["strength"] + len(incoming),
                        max([row["importance"], *(it.importance for it in incoming)]),
                        json.dumps(tags), json.dumps(meta), now, row["seq"]))
    await conn.executemany("UPDATE memories SET strength = ?, importance = ?, tags = ?, "
                           "metadata = ?, last_seen = ? WHERE seq = ?", updates)
    return [new_seqs[v] if kind == "new" else v for kind, v in plan.ref]


def merge(into: Item, item: Item) -> None:
    into.strength += 1
    into.importance = max(into.importance, item.importance)
    into.tags = sorted(set(into.tags) | set(item.tags))
    into.metadata = {**item.metadata, **into.metadata}


async def offload(cache: VectorCache, fn: Callable[..., T], *args: Any) -> T:
    """Big matrix products go to a worker thread, so the loop keeps serving other calls."""
    if len(cache) * cache.dim < _OFFLOAD_FLOATS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


async def fetch_rows(conn: aiosqlite.Connection, column: str, values: Sequence[Any], *,
                     live: bool = False) -> list[Any]:
    """Full rows whose ``column`` is in ``values`` (live ones only with ``live``)."""
    out: list[Any] = []
    extra = " AND valid_to IS NULL" if live else ""
    for start in range(0, len(values), CHUNK):
        chunk = list(values[start:start + CHUNK])
        out.extend(await conn.execute_fetchall(
            f"SELECT {COLUMNS} FROM memories WHERE {column} IN "
            f"({', '.join('?' * len(chunk))}){extra}", chunk))
    return out


async def fetch_one(conn: aiosqlite.Connection, column: str, value: Any) -> Any:
    rows = await fetch_rows(conn, column, [value])
    return rows[0] if rows else None


async def find_row(conn: aiosqlite.Connection, id: str, *, live: bool = False) -> Any:
    """The row of memory ``id``; with ``live``, a forgotten or superseded one is refused."""
    check_id(id)
    row = await fetch_one(conn, "id", id)
    if row is None:
        raise MemoryNotFound(f"id = {id!r}: no such memory (it may have been purged); "
                             "search() or list() to find ids.")
    if live and row["valid_to"] is not None:
        state = ("forgotten" if row["forgotten_at"] is not None
                 else f"superseded by {row['superseded_by']!r}")
        raise MemoryNotFound(f"id = {id!r}: that memory was {state}; pass "
                             "include_invalid=True or call history(id) to see it.")
    return row


async def find_memory(conn: aiosqlite.Connection, id: str, *, live: bool = False) -> Memory:
    """``find_row`` as a ``Memory`` record."""
    return (await to_memories(conn, [await find_row(conn, id, live=live)]))[0]


async def select(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return list(await conn.execute_fetchall(sql, params))


async def one_value(conn: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0] if rows else None


async def to_memories(conn: aiosqlite.Connection, rows: Sequence[Any]) -> list[Memory]:
    """Rows as ``Memory`` records, each with the ids it summarises (``memory_links``)."""
    ids = [row["id"] for row in rows]
    sources: dict[str, list[str]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        for link in await conn.execute_fetchall(
                "SELECT summary_id, source_id FROM memory_links WHERE summary_id IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY source_id", chunk):
            sources.setdefault(link[0], []).append(link[1])
    return [row_to_memory(row, sources.get(row["id"], ())) for row in rows]


async def load_cache(conn: aiosqlite.Connection, namespace: str, model: str, dim: int,
                     version: int) -> VectorCache:
    """The live vectors of ``namespace`` made by ``model``, from SQLite (the source of truth)."""
    cache = VectorCache(dim, version)
    rows = await conn.execute_fetchall(
        "SELECT v.seq, v.vector FROM memory_vectors v JOIN memories m ON m.seq = v.seq "
        "WHERE m.namespace = ? AND m.valid_to IS NULL AND v.model = ? AND v.dim = ?",
        (namespace, model, dim))
    if rows:
        blob = b"".join(r[1] for r in rows)
        cache.add([r[0] for r in rows], np.frombuffer(blob, dtype=np.float32).reshape(-1, dim))
    missing = await unembedded(conn, namespace, model, dim, count=True)
    if missing:
        log.warning("%d live memories in namespace %r have no %s vector (another embedder "
                    "wrote them); only full-text search finds them until you call "
                    "reindex().", missing, namespace, model)
    return cache


async def unembedded(conn: aiosqlite.Connection, namespace: str | None, model: str, dim: int,
                     *, count: bool = False, limit: int = -1) -> Any:
    """Live memories lacking a vector from ``model``: their number, or (seq, ns, text) rows."""
    where = "" if namespace is None else " AND m.namespace = ?"
    what = "count(*)" if count else "m.seq, m.namespace, m.text"
    rows = await conn.execute_fetchall(
        f"SELECT {what} FROM memories m LEFT JOIN memory_vectors v ON v.seq = m.seq "
        f"AND v.model = ? AND v.dim = ? WHERE m.valid_to IS NULL AND v.seq IS NULL{where} "
        f"ORDER BY 1 LIMIT ?", (model, dim, *(() if namespace is None else (namespace,)),
                                1 if count else limit))
    return rows[0][0] if count else list(rows)


async def fts_candidates(conn: aiosqlite.Connection, query: str, namespace: str,
                         limit: int) -> dict[int, float]:
    """BM25 candidates among live memories of ``namespace``, normalised to (0, 1]."""
    if (match := fts_query(query)) is None:
        return {}
    rows = await conn.execute_fetchall(
        "SELECT f.rowid, bm25(memory_fts) FROM memory_fts f JOIN memories m "
        "ON m.seq = f.rowid WHERE memory_fts MATCH ? AND m.namespace = ? "
        "AND m.valid_to IS NULL ORDER BY bm25(memory_fts) LIMIT ?", (match, namespace, limit))
    return normalise_bm25({r[0]: r[1] for r in rows})
