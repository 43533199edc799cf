"""The SQL side of search: filters, the FTS5 (BM25) query, and the rows a hit shows.

Why apart from ``retriever``: these are pure functions of ``lab.db`` (no embedder, no
index), so the sparse half of hybrid search can be read, tested and reused on its own.
BM25 comes from SQLite's FTS5 table ``rag_fts``, which triggers keep in step with live
chunks in the same transaction as every write.
"""

from __future__ import annotations

import glob
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from aillm_lab.errors import AillmError
from aillm_lab.rag.loaders import DocType

if TYPE_CHECKING:
    from aillm_lab.db import LabDB

RRF_K = 60
MAX_FTS_LIMIT = 1_000_000
STOPWORDS = frozenset("""a an and are as at be been but by can could do does did for from had has
have how i if in into is it its may might must not of on or our shall should so than that the
their them then there these they this those to was we were what when where which who whom why
will with would you your""".split())


class RagError(AillmError, ValueError):
    """A search or ingest argument is invalid; the message names it and the allowed values."""


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
                prefix = source_key(self.source)
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
    rows = await db.read_small(
        "SELECT c.id, c.text, c.section, c.ordinal, c.token_count, c.metadata, d.source, "
        "d.type, d.metadata, d.tags, d.mtime, d.id FROM rag_chunks c "
        f"JOIN rag_documents d ON d.id = c.doc_id WHERE c.id IN ({','.join('?' * len(ids))})",
        ids)
    out = {}
    for r in rows:
        meta = {**_json(r[8]), **_json(r[5]), "type": r[7], "tags": _json(r[9]),
                "mtime": r[10], "ordinal": r[3], "token_count": r[4], "doc_id": r[11]}
        out[int(r[0])] = {"text": r[1], "section": r[2], "source": r[6], "metadata": meta}
    return out


def _json(text: str) -> Any:
    """``json.loads``, skipping the parser for the empty ``{}``/``[]`` most rows hold."""
    if text == "{}":
        return {}
    return [] if text == "[]" else json.loads(text)


def rrf(rankings: list[list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the rankings, best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def source_key(source: str | Path) -> str:
    """The form sources are stored in: an absolute, resolved path (a trailing / is kept)."""
    text = str(source)
    key = str(Path(text).expanduser().resolve())
    return key + "/" if text.endswith(("/", "\\")) and not key.endswith("/") else key
