"""Consolidation, reindexing, import and export of memories, through ``_store.MemoryStore``.

Why imports keep ids: an exported file is a backup, so importing it again (or twice) must
give back exactly the same memories, their history chains and summary links, and change
nothing the second time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aillm_lab.memory._batch import CHUNK, fetch_rows, to_memories, unembedded
from aillm_lab.memory._schema import (
    COLUMNS,
    INSERT,
    ImportReport,
    Memories,
    Memory,
    MemoryInputError,
    check_id,
    check_namespace,
    check_text,
    memory_to_params,
    text_hash,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from aillm_lab.llm.base import Model
    from aillm_lab.memory._store import MemoryStore

log = logging.getLogger(__name__)

CONSOLIDATE_PROMPT = (
    "You merge related long-term memories into one. Reply with a single concise statement "
    "that keeps every distinct fact, name and number from the memories below. No preamble.")


# -- consolidation ------------------------------------------------------------------------
async def consolidate(store: MemoryStore, models: Callable[[Model | str], Model] | None,
                      namespace: str, model: Model | str, max_group: int, min_group: int,
                      threshold: float) -> Memories:
    """Group live memories by cosine >= ``threshold`` and replace each group by a summary.

    ``models`` is the Lab's gateway (``lab.model``); without one only a ``Model`` will do.
    """
    from aillm_lab.llm.types import Message

    check_namespace(namespace)
    if isinstance(max_group, bool) or not isinstance(max_group, int) or max_group < 2:
        raise MemoryInputError("max_group", f"{max_group!r}: must be an integer >= 2.")
    if isinstance(min_group, bool) or not isinstance(min_group, int) or not (
            2 <= min_group <= max_group):
        raise MemoryInputError("min_group", f"{min_group!r}: must be an integer in "
                               f"[2, max_group={max_group}].")
    if not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise MemoryInputError("threshold", f"{threshold!r}: must be a cosine in (0, 1].")
    if models is not None:  # every call through the Lab's gateway: limits, budget, log
        model = models(model)
    elif isinstance(model, str):
        raise MemoryInputError("model", f"{model!r}: a model name needs a Lab's gateway; use "
                               f"lab.memory.consolidate(...), or pass a Model object")

    async def live(conn: Any) -> tuple[list[Any], np.ndarray]:
        cache = await store.vectors(conn, namespace)
        rows = list(await conn.execute_fetchall(
            f"SELECT {COLUMNS} FROM memories WHERE namespace = ? AND valid_to IS NULL "
            "ORDER BY importance DESC, seq", (namespace,)))
        return rows, cache.vectors([r["seq"] for r in rows])

    rows, vectors = await store.read(live)
    out = Memories()
    for group in _groups(vectors, threshold, max_group, min_group):
        sources = [rows[i] for i in group]
        listing = "\n".join(f"{n}. {r['text']}" for n, r in enumerate(sources, 1))
        completion = await model.complete([Message.system(CONSOLIDATE_PROMPT),
                                           Message.user(f"Memories:\n{listing}")])
        text = completion.text.strip()
        if not text:
            log.warning("%s returned an empty summary; %d memories left as they are",
                        model.id, len(sources))
            continue
        summary = await _write_summary(store, namespace, sources, text, model.id)
        if summary is not None:
            out.append(summary)
    return out


def _groups(vectors: np.ndarray, threshold: float, max_group: int,
            min_group: int) -> list[list[int]]:
    """Greedy: each unassigned memory (most important first) takes its nearest neighbours."""
    import numpy as np

    taken = np.zeros(len(vectors), dtype=bool)
    groups = []
    for seed in range(len(vectors)):
        if taken[seed] or not vectors[seed].any():
            continue
        sims = vectors @ vectors[seed]
        sims[taken] = -np.inf
        sims[seed] = np.inf
        order = [int(i) for i in np.argsort(-sims, kind="stable")[:max_group]
                 if sims[i] >= threshold]
        if len(order) >= min_group:
            taken[order] = True
            groups.append(order)
    return groups


async def _write_summary(store: MemoryStore, namespace: str, sources: list[Any], text: str,
                         model_id: str) -> Memory | None:
    vector = await store.embed([text])
    now, sid = store.clock(), uuid.uuid4().hex
    ids = [r["id"] for r in sources]
    tags = sorted(set().union(*(json.loads(r["tags"]) for r in sources)))
    async with store.transaction() as tx:
        live = await tx.conn.execute_fetchall(
            f"SELECT seq FROM memories WHERE valid_to IS NULL AND id IN "
            f"({', '.join('?' * len(ids))})", ids)
        if len(live) != len(ids):
            log.info("memories changed while %s summarised them; group skipped", model_id)
            return None
        cur = await tx.conn.execute(INSERT, (
            sid, namespace, text, text_hash(text), max(r["importance"] for r in sources),
            sum(r["strength"] for r in sources), json.dumps(tags),
            json.dumps({"consolidated_by": model_id, "source_count": len(ids)}),
            now, now, None, None, None, sid, 1))
        await tx.conn.executemany(
            "INSERT OR IGNORE INTO memory_links (summary_id, source_id, relation, created_at) "
            "VALUES (?, ?, 'summarizes', ?)", [(sid, i, now) for i in ids])
        await tx.conn.executemany("UPDATE memories SET valid_to = ?, superseded_by = ? "
                                  "WHERE id = ?", [(now, sid, i) for i in ids])
        await tx.add_vectors(namespace, [cur.lastrowid], vector, store.embedder.model_id)
        tx.removed(namespace, [r["seq"] for r in sources])
        row = (await tx.conn.execute_fetchall(f"SELECT {COLUMNS} FROM memories WHERE id = ?",
                                              (sid,)))[0]
        return (await to_memories(tx.conn, [row]))[0]


async def reindex(store: MemoryStore, namespace: str | None, batch: int) -> int:
    """Embed live memories that lack a vector from the current embedder, ``batch`` at a time."""
    if namespace is not None:
        check_namespace(namespace)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise MemoryInputError("batch", f"{batch!r}: must be an integer >= 1.")
    embedder, total = store.embedder, 0
    while True:
        if int(embedder.dim) <= 0:
            await store.embed(["dimension probe"])
        rows = await store.read(unembedded, namespace, embedder.model_id, int(embedder.dim),
                               limit=batch)
        if not rows:
            return total
        vectors = await store.embed([r[2] for r in rows])
        async with store.transaction() as tx:
            for ns in sorted({r[1] for r in rows}):
                idx = [i for i, r in enumerate(rows) if r[1] == ns]
                await tx.add_vectors(ns, [rows[i][0] for i in idx], vectors[idx],
                                     embedder.model_id)
        total += len(rows)


# -- import -------------------------------------------------------------------------------
async def import_records(store: MemoryStore,
                         records: Iterable[Mapping[str, Any] | Memory]) -> ImportReport:
    """Insert records whose ids are new, with their links and vectors, in one transaction."""
    memories = _validated(records)
    existing = await store.read(_existing, memories)
    new = [m for m in memories if m.id not in existing]
    live = [m for m in new if m.live]
    vectors = await store.embed([m.text for m in live]) if live else None
    report = ImportReport(skipped=len(memories) - len(new))
    async with store.transaction() as tx:
        if await _existing(tx.conn, new):
            raise MemoryInputError("records", "another writer stored some of these ids during "
                                   "the import; run the import again (it is idempotent).")
        await tx.conn.executemany(INSERT, [memory_to_params(m) for m in new])
        links = [(m.id, s, from_created(m)) for m in new for s in m.sources]
        await tx.conn.executemany(
            "INSERT OR IGNORE INTO memory_links (summary_id, source_id, relation, created_at) "
            "VALUES (?, ?, 'summarizes', ?)", links)
        if live and vectors is not None:
            rows = await fetch_rows(tx.conn, "id", [m.id for m in live])
            by_id = {r["id"]: r["seq"] for r in rows}
            for ns in sorted({m.namespace for m in live}):
                idx = [i for i, m in enumerate(live) if m.namespace == ns]
                await tx.add_vectors(ns, [by_id[live[i].id] for i in idx], vectors[idx],
                                     store.embedder.model_id)
        report.added, report.links = len(new), len(links)
    return report


def from_created(m: Memory) -> float:
    return m.created_at.timestamp()


def _validated(records: Iterable[Mapping[str, Any] | Memory]) -> list[Memory]:
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Iterable):
        raise MemoryInputError("records", f"{type(records).__name__}: must be an iterable of "
                               "dicts (from export()/to_pandas()) or Memory objects.")
    out: dict[str, Memory] = {}
    for i, rec in enumerate(records):
        try:
            m = rec if isinstance(rec, Memory) else Memory.model_validate(dict(rec))
        except (ValidationError, TypeError, ValueError) as exc:
            raise MemoryInputError(f"records[{i}]", f"not a memory: {_first_error(exc)}; "
                                   "import what export() or to_pandas() produced.") from None
        check_id(m.id, f"records[{i}].id")
        check_namespace(m.namespace, f"records[{i}].namespace")
        check_text(m.text, f"records[{i}].text")
        if m.id in out and out[m.id].text != m.text:
            raise MemoryInputError(f"records[{i}].id", f"{m.id!r} appears twice with "
                                   "different text; ids must be unique.")
        out.setdefault(m.id, m)
    return list(out.values())


async def _existing(conn: Any, memories: list[Memory]) -> set[str]:
    """Ids already stored; a stored id with other text is a conflict, never overwritten."""
    found: set[str] = set()
    texts = {m.id: m for m in memories}
    ids = list(texts)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        for row in await conn.execute_fetchall(
                f"SELECT id, text, namespace FROM memories WHERE id IN "
                f"({', '.join('?' * len(chunk))})", chunk):
            m = texts[row[0]]
            if row[1] != m.text or row[2] != m.namespace:
                raise MemoryInputError("records", f"id {row[0]!r} is already stored with "
                                       "different text or namespace; purge it first or give "
                                       "the record a new id. Nothing was imported.")
            found.add(row[0])
    return found


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


# -- files and frames ---------------------------------------------------------------------
def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> int:
    """Write to a temp file beside ``path``, fsync, then ``os.replace`` (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(records)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise MemoryInputError("path", f"{str(path)!r}: no such file; give the path that "
                               "export_jsonl() wrote.")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise MemoryInputError("path", f"{str(path)!r} line {n}: not JSON ({exc.msg})."
                                       ) from None


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as plain dicts: NaN/NaT become None, arrays become lists."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise MemoryInputError("frame", f"{type(frame).__name__}: must be a pandas DataFrame "
                               "such as to_pandas(include_invalid=True) returns.")
    return [{k: _plain(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    import pandas as pd

    if hasattr(value, "tolist") and not isinstance(value, pd.Timestamp):
        value = value.tolist()
    if isinstance(value, list | dict | str):
        return value
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value
