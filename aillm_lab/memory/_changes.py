"""Writes that change a stored memory: ``update`` (a new version), ``forget`` (hide) and
``purge`` (erase). Each is one write batch through the store (``_store.MemoryStore``).

Why versions and not in-place edits: an agent that "corrects" a memory may be wrong, so the
old text stays as history (``valid_to``/``superseded_by``) until someone purges it.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from aillm_lab.memory import _batch
from aillm_lab.memory._schema import (
    INSERT,
    Memory,
    MemoryInputError,
    MemoryNotFound,
    check_importance,
    check_metadata,
    check_namespace,
    check_tags,
    check_text,
    text_hash,
)

if TYPE_CHECKING:
    from aillm_lab.memory._store import MemoryStore


async def update(store: MemoryStore, id: str, text: str, importance: float | None,
                 metadata: Any, tags: Any) -> Memory:
    """Insert version n+1 and close version n, in one transaction."""
    text = check_text(text)
    imp = None if importance is None else check_importance(importance)
    meta = None if metadata is None else check_metadata(metadata)
    tag_list = None if tags is None else check_tags(tags)
    old = await store.read(_batch.find_memory, id, live=True)
    vector = await store.embed([text])
    now, new_id = store.clock(), uuid.uuid4().hex
    async with store.transaction() as tx:
        row = await _batch.fetch_one(tx.conn, "id", id)
        if row is None or row["valid_to"] is not None:
            raise MemoryNotFound(f"id = {id!r}: changed while updating; get() it again.")
        cur = await tx.conn.execute(INSERT, (
            new_id, old.namespace, text, text_hash(text),
            old.importance if imp is None else imp, row["strength"],
            json.dumps(old.tags if tag_list is None else tag_list),
            json.dumps(old.metadata if meta is None else meta), now, now, None, None, None,
            row["root_id"], row["version"] + 1))
        await tx.conn.execute("UPDATE memories SET valid_to = ?, superseded_by = ? "
                              "WHERE seq = ?", (now, new_id, row["seq"]))
        await tx.add_vectors(old.namespace, [cur.lastrowid], vector, store.embedder.model_id)
        tx.removed(old.namespace, [row["seq"]])
        new = await _batch.fetch_one(tx.conn, "id", new_id)
        return (await _batch.to_memories(tx.conn, [new]))[0]


async def forget(store: MemoryStore, id: str) -> Memory:
    """Mark a memory forgotten (idempotent): hidden from search, get and list."""
    await store.read(_batch.find_row, id)
    async with store.transaction() as tx:
        row = await _batch.fetch_one(tx.conn, "id", id)
        if row is None:
            raise MemoryNotFound(f"id = {id!r}: purged while forgetting it.")
        if row["forgotten_at"] is None:
            now = store.clock()
            await tx.conn.execute("UPDATE memories SET valid_to = COALESCE(valid_to, ?), "
                                  "forgotten_at = ? WHERE seq = ?", (now, now, row["seq"]))
            tx.removed(row["namespace"], [row["seq"]])
            row = await _batch.fetch_one(tx.conn, "id", id)
        return (await _batch.to_memories(tx.conn, [row]))[0]


async def purge(store: MemoryStore, id: str | None, namespace: str | None) -> int:
    """Delete a history chain (or a namespace); triggers drop its FTS rows, vectors, links."""
    if (id is None) == (namespace is None):
        raise MemoryInputError("id", f"{id!r} with namespace = {namespace!r}: give exactly "
                               "one, a memory id or a namespace to erase.")
    if id is not None:
        root = (await store.read(_batch.find_row, id))["root_id"]
        sql, params = "DELETE FROM memories WHERE root_id = ?", (root,)
    else:
        sql, params = "DELETE FROM memories WHERE namespace = ?", (check_namespace(namespace),)
    async with store.transaction() as tx:
        if id is not None:  # memories a purged summary replaced come back (never lost)
            await tx.conn.execute(
                "UPDATE memories SET valid_to = NULL, superseded_by = NULL WHERE "
                "forgotten_at IS NULL AND root_id != ? AND superseded_by IN "
                "(SELECT id FROM memories WHERE root_id = ?)", (root, root))
        cur = await tx.conn.execute(sql, params)
        tx.reset_all = True
        return int(cur.rowcount)
