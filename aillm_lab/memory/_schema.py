"""Long-term memory's tables, typed records, errors and input checks.

Kept apart from ``long_term.py`` so the store reads top-down: this module says what a memory
*is* (rows, validation, reprs); the store says what you can *do* with one.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import sqlite3
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aillm_lab.display import Displayable
from aillm_lab.errors import AillmError

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    seq           INTEGER PRIMARY KEY,    -- the FTS and vector rowid
    id            TEXT    NOT NULL UNIQUE,
    namespace     TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    text_hash     TEXT    NOT NULL,       -- sha256 of the normalised text
    importance    REAL    NOT NULL CHECK (importance BETWEEN 0 AND 1),
    strength      INTEGER NOT NULL DEFAULT 1,  -- 1 + times a near-duplicate was added
    tags          TEXT    NOT NULL DEFAULT '[]',
    metadata      TEXT    NOT NULL DEFAULT '{}',
    created_at    REAL    NOT NULL,       -- unix seconds; also when this version became valid
    last_seen     REAL    NOT NULL,       -- last add or reinforcement; drives recency
    valid_to      REAL,                   -- set when superseded or forgotten; NULL = live
    superseded_by TEXT,
    forgotten_at  REAL,
    root_id       TEXT    NOT NULL,       -- the first version's id: the history chain
    version       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS memories_hash ON memories (text_hash, namespace, valid_to);
CREATE INDEX IF NOT EXISTS memories_namespace ON memories (namespace, valid_to);
CREATE INDEX IF NOT EXISTS memories_root ON memories (root_id, version);
CREATE TABLE IF NOT EXISTS memory_vectors (
    seq    INTEGER PRIMARY KEY,           -- memories.seq
    model  TEXT    NOT NULL,
    dim    INTEGER NOT NULL,
    vector BLOB    NOT NULL               -- float32, L2-normalised
);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5 (
    text, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS memory_links (
    summary_id TEXT NOT NULL,
    source_id  TEXT NOT NULL,
    relation   TEXT NOT NULL DEFAULT 'summarizes',
    created_at REAL NOT NULL,
    PRIMARY KEY (summary_id, source_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_links_source ON memory_links (source_id);
CREATE TRIGGER IF NOT EXISTS memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memory_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_purge AFTER DELETE ON memories BEGIN
    DELETE FROM memory_fts WHERE rowid = old.seq;
    DELETE FROM memory_vectors WHERE seq = old.seq;
    DELETE FROM memory_links WHERE summary_id = old.id OR source_id = old.id;
END;
"""

COLUMNS = ("seq, id, namespace, text, text_hash, importance, strength, tags, metadata, "
           "created_at, last_seen, valid_to, superseded_by, forgotten_at, root_id, version")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_TEXT = 100_000


class MemoryNotFound(AillmError, KeyError):
    """No memory has this id, or it is hidden (forgotten or superseded) and was not asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MemoryInputError(AillmError, ValueError):
    """An argument to a memory operation is invalid; ``argument`` names it."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument} = {message}")
        self.argument = argument

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.argument, str(self).split(" = ", 1)[-1]))


class MemoryBusy(AillmError, TimeoutError):
    """Another connection held ``lab.db``'s write lock for longer than ``busy_timeout_ms``."""

    argument = "busy_timeout_ms"


class ScoringWeights(BaseModel):
    """How search ranks: ``similarity**a × importance**b × recency**c``.

    An exponent of 0 turns its factor off. Similarity mixes the vector cosine with the BM25
    score (normalised to the best candidate) by ``text_weight``; recency halves every
    ``half_life_days`` since the memory was last seen.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    similarity: float = Field(default=1.0, ge=0, le=10)
    importance: float = Field(default=1.0, ge=0, le=10)
    recency: float = Field(default=1.0, ge=0, le=10)
    half_life_days: float = Field(default=30.0, gt=0, le=36_500)
    text_weight: float = Field(default=0.3, ge=0, le=1)
    candidates: int = Field(default=50, ge=1, le=10_000,
                            description="candidates per source (vectors, FTS) before ranking")


class Memory(BaseModel, Displayable):
    """One version of a memory. ``live`` ones are searchable; the rest are history."""

    model_config = ConfigDict(frozen=True)

    id: str
    namespace: str
    text: str
    importance: float = Field(ge=0, le=1)
    strength: int = Field(default=1, ge=1)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    last_seen: datetime
    valid_to: datetime | None = None
    superseded_by: str | None = None
    forgotten_at: datetime | None = None
    root_id: str
    version: int = Field(default=1, ge=1)
    sources: list[str] = Field(default_factory=list,
                               description="ids this memory summarises (consolidation)")

    @property
    def live(self) -> bool:
        return self.valid_to is None

    def _repr_html_(self) -> str:
        return Memories([self])._repr_html_()


class MemoryHit(BaseModel, Displayable):
    """A search result with every factor of its score, so a ranking can be explained."""

    model_config = ConfigDict(frozen=True)

    memory: Memory
    score: float
    similarity: float
    vector_score: float
    text_score: float
    importance_factor: float
    recency_factor: float

    def _repr_html_(self) -> str:
        return Hits([self])._repr_html_()


class ImportReport(BaseModel):
    """What an import did: ``added`` new rows, ``skipped`` ids already stored unchanged."""

    added: int = 0
    skipped: int = 0
    links: int = 0


class Memories(list[Memory], Displayable):
    """A list of memories that shows as a table in Jupyter and converts to a DataFrame."""

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([m.model_dump() for m in self], columns=list(Memory.model_fields))

    def _repr_html_(self) -> str:
        rows = [(m.id[:8], m.namespace, m.text, f"{m.importance:.2f}", m.strength,
                 "live" if m.live else ("forgotten" if m.forgotten_at else "superseded"))
                for m in self]
        return _table(("id", "namespace", "text", "importance", "strength", "state"), rows)


class Hits(list[MemoryHit], Displayable):
    """Search results, best first; a table in Jupyter, a DataFrame on request."""

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{**h.memory.model_dump(), **h.model_dump(exclude={"memory"})}
                             for h in self])

    def _repr_html_(self) -> str:
        rows = [(f"{h.score:.3f}", f"{h.similarity:.3f}", f"{h.importance_factor:.2f}",
                 f"{h.recency_factor:.2f}", h.memory.text) for h in self]
        return _table(("score", "similarity", "importance", "recency", "text"), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_short(v))}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- validation ---------------------------------------------------------------------------
def check_text(text: Any, argument: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise MemoryInputError(argument, f"{_short(repr(text), 60)}: must be a non-empty "
                               "string; pass the fact to remember.")
    if len(text) > MAX_TEXT:
        raise MemoryInputError(argument, f"<{len(text)} characters>: at most {MAX_TEXT}; "
                               "split it, or store a summary and keep the source elsewhere.")
    return text.strip()


def check_importance(value: Any, argument: str = "importance") -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= 1):
        raise MemoryInputError(argument, f"{value!r}: must be a number in [0, 1] "
                               "(0.5 is a neutral default).")
    return float(value)


def check_namespace(value: Any, argument: str = "namespace") -> str:
    if not isinstance(value, str) or not _NAMESPACE.match(value):
        raise MemoryInputError(argument, f"{_short(repr(value), 60)}: must be 1-128 letters, "
                               "digits or _ . : / @ -, starting with a letter or digit, "
                               "e.g. 'user', 'agent:researcher' or 'project/alpha'.")
    return value


def check_id(value: Any, argument: str = "id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise MemoryInputError(argument, f"{_short(repr(value), 60)}: not a memory id; use "
                               "the .id of a Memory returned by add() or search().")
    return value


def check_tags(tags: Any, argument: str = "tags") -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, Sequence | set | frozenset) or not all(
            isinstance(t, str) and t for t in tags):
        raise MemoryInputError(argument, f"{_short(repr(tags), 60)}: must be a list of "
                               "non-empty strings, e.g. ['preference'].")
    return sorted(set(tags))


def check_metadata(metadata: Any, argument: str = "metadata") -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise MemoryInputError(argument, f"{_short(repr(metadata), 60)}: must be a dict.")
    try:
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise MemoryInputError(argument, f"{_short(repr(metadata), 60)}: must be "
                               f"JSON-serialisable ({exc}).") from None


def check_options(synchronous: Any, dedupe_threshold: Any, checkpoint_every: Any,
                  checkpoint_interval_s: Any, busy_timeout_ms: Any = 5000) -> None:
    """LongTermMemory's constructor options, checked before anything is opened."""
    if synchronous not in ("NORMAL", "FULL", "EXTRA"):
        raise MemoryInputError("synchronous", f"{synchronous!r}: use 'NORMAL' (survives a "
                               "process crash) or 'FULL' (also survives power loss).")
    if dedupe_threshold is not None and not (
            isinstance(dedupe_threshold, int | float) and 0 < dedupe_threshold <= 1):
        raise MemoryInputError("dedupe_threshold", f"{dedupe_threshold!r}: must be in (0, 1], "
                               "or None to dedupe on identical text only.")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or (
            checkpoint_every < 1):
        raise MemoryInputError("checkpoint_every", f"{checkpoint_every!r}: must be an integer "
                               ">= 1 (write batches between WAL checkpoints).")
    if not isinstance(checkpoint_interval_s, int | float) or not checkpoint_interval_s > 0:
        raise MemoryInputError("checkpoint_interval_s", f"{checkpoint_interval_s!r}: must be "
                               "a number of seconds > 0.")
    if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int) or (
            busy_timeout_ms < 0):
        raise MemoryInputError("busy_timeout_ms", f"{busy_timeout_ms!r}: must be an integer "
                               ">= 0 (milliseconds a write waits for another writer's lock).")


def normalise(text: str) -> str:
    """Case, width and whitespace folded, so 'Likes  TEA' and 'likes tea' hash alike."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


# -- rows <-> records ---------------------------------------------------------------------
def to_time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def from_time(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def row_to_memory(row: sqlite3.Row, sources: Sequence[str] = ()) -> Memory:
    return Memory(id=row["id"], namespace=row["namespace"], text=row["text"],
                  importance=row["importance"], strength=row["strength"],
                  tags=json.loads(row["tags"]), metadata=json.loads(row["metadata"]),
                  created_at=to_time(row["created_at"]), last_seen=to_time(row["last_seen"]),
                  valid_to=to_time(row["valid_to"]), superseded_by=row["superseded_by"],
                  forgotten_at=to_time(row["forgotten_at"]), root_id=row["root_id"],
                  version=row["version"], sources=list(sources))


def memory_to_params(m: Memory) -> tuple[Any, ...]:
    """Insert parameters for every column but ``seq``, in ``COLUMNS`` order."""
    return (m.id, m.namespace, m.text, text_hash(m.text), m.importance, m.strength,
            json.dumps(m.tags), json.dumps(m.metadata), from_time(m.created_at),
            from_time(m.last_seen), from_time(m.valid_to), m.superseded_by,
            from_time(m.forgotten_at), m.root_id, m.version)


INSERT = (f"INSERT INTO memories ({COLUMNS.removeprefix('seq, ')}) "
          f"VALUES ({', '.join('?' * 15)})")
