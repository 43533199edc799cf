"""Answers we already have: a bounded in-memory cache and a persistent record/replay store.

``ResponseCache`` saves repeat calls inside one process. ``ResponseStore`` is the cassette
that lets notebooks and CI run offline: ``record`` writes every successful answer to
``<home>/cache.db``, ``replay`` serves only recordings, ``replay_or_record`` serves what it has
and records the rest. Both take the request hash from ``gateway.request_hash``; neither ever
sees a key or a header, and the store keeps only the hash, provider, model, time and answer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic_core import PydanticSerializationError

from aillm_lab.db import LabDB
from aillm_lab.errors import ConfigError, ReplayMiss
from aillm_lab.llm.base import completion_events
from aillm_lab.llm.types import Completion, Message, StreamEvent

if TYPE_CHECKING:
    from aillm_lab.runtime import LoopRunner

StoreMode = Literal["off", "record", "replay", "replay_or_record"]
Recorded = Completion | list[StreamEvent]

log = logging.getLogger(__name__)

_MODES: tuple[str, ...] = get_args(StoreMode)
_UNFINISHED = ("error", "cancelled")  # partial answers must never be served again
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key      TEXT    NOT NULL,  -- the request hash, never the request itself
    stream   INTEGER NOT NULL,  -- 0: one Completion row; 1: one row per StreamEvent
    seq      INTEGER NOT NULL,
    provider TEXT    NOT NULL,
    model    TEXT    NOT NULL,
    created  TEXT    NOT NULL,  -- ISO 8601, UTC
    body     TEXT    NOT NULL,  -- model_dump_json() of the Completion or StreamEvent
    PRIMARY KEY (key, stream, seq)
) WITHOUT ROWID;
PRAGMA user_version=1;
"""


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a ResponseCache, for dashboards and the monitoring agent."""

    size: int
    max_entries: int
    ttl_s: float
    hits: int
    misses: int
    evictions: int
    expirations: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class ResponseCache:
    """A bounded LRU with a TTL for identical requests; completions and streams alike.

    Values are copied in and out, so a caller that stamps latency on a hit cannot change
    what the next hit sees. Thread-safe, so ``stats()`` may be read from any thread.
    """

    def __init__(self, max_entries: int = 1024, ttl_s: float = 3600.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigError(f"ResponseCache max_entries = {max_entries!r}: must be an "
                              "integer >= 1.", fields=("max_entries",))
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not (
                0 < ttl_s < math.inf):
            raise ConfigError(f"ResponseCache ttl_s = {ttl_s!r}: must be a finite number of "
                              "seconds > 0.", fields=("ttl_s",))
        self.max_entries, self.ttl_s, self._clock = max_entries, float(ttl_s), clock
        self._entries: OrderedDict[tuple[str, bool], tuple[float, Recorded]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._expirations = 0

    def get(self, key: str, *, stream: bool = False) -> Recorded | None:
        """The cached answer for ``key``, or ``None``; a hit becomes the most recent entry."""
        slot = (key, stream)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None and entry[0] <= self._clock():
                del self._entries[slot]
                self._expirations += 1
                entry = None
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(slot)
            self._hits += 1
        return _copy(entry[1])

    def put(self, key: str, value: Recorded) -> bool:
        """Remember a successful answer; returns False (and keeps nothing) for unfinished ones."""
        if not is_cacheable(value):
            return False
        slot = (key, isinstance(value, list))
        value = _copy(value)
        with self._lock:
            now = self._clock()
            self._entries[slot] = (now + self.ttl_s, value)
            self._entries.move_to_end(slot)
            self._drop_expired(now)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._evictions += 1
        return True

    def stats(self) -> CacheStats:
        with self._lock:
            self._drop_expired(self._clock(), everywhere=True)
            return CacheStats(size=len(self._entries), max_entries=self.max_entries,
                              ttl_s=self.ttl_s, hits=self._hits, misses=self._misses,
                              evictions=self._evictions, expirations=self._expirations)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return self.stats().size

    def _drop_expired(self, now: float, everywhere: bool = False) -> None:
        """Drop expired entries: from the cold end (cheap) or, for stats, all of them."""
        if everywhere:
            for slot in [s for s, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[slot]
                self._expirations += 1
            return
        while self._entries:
            slot, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[slot]
            self._expirations += 1


@dataclass(frozen=True)
class StoreStats:
    path: Path
    mode: StoreMode
    recordings: int
    rows: int
    bytes: int
    hits: int
    misses: int
    saves: int


class ResponseStore(LabDB):
    """Record and replay answers in SQLite, content-addressed by the request hash.

    A ``LabDB`` without the lab's identity check, so ``cache.db`` keeps the same rules as
    ``lab.db`` (WAL, ``BEGIN IMMEDIATE`` writes, one connection opened lazily on the runner
    loop and closed there with ``await aclose()``); pass ``runner`` to have that happen when
    the runner closes.
    """

    def __init__(self, home: str | Path, mode: StoreMode = "off", *,
                 path: str | Path | None = None, runner: LoopRunner | None = None) -> None:
        super().__init__(Path(path).expanduser() if path is not None else
                         Path(home).expanduser() / "cache.db",
                         schema=_SCHEMA, runner=runner, identity=False)
        self.mode = mode
        self.hits = self.misses = self.saves = 0

    @property
    def mode(self) -> StoreMode:
        return self._mode

    @property
    def reads(self) -> bool:
        """Whether ``lookup`` can answer (or raise) in this mode; the gateway skips it if not."""
        return self._mode in ("replay", "replay_or_record")

    @property
    def writes(self) -> bool:
        """Whether ``save`` can keep anything in this mode; the gateway skips it if not."""
        return self._mode in ("record", "replay_or_record")

    @mode.setter
    def mode(self, value: StoreMode) -> None:
        if value not in _MODES:
            allowed = ", ".join(repr(m) for m in _MODES)
            raise ConfigError(f"store mode = {value!r} is not a ResponseStore mode. "
                              f"Allowed: {allowed}.", fields=("mode",))
        self._mode = value

    async def lookup(self, key: str, *, stream: bool, describe: str = "") -> Recorded | None:
        """The recorded answer for ``key``, or ``None``; in ``replay`` a miss raises.

        ``describe`` names the request in the ReplayMiss message (see ``describe_request``).
        """
        if not self.reads:
            return None
        rows = await self.fetchall(
            "SELECT body FROM responses WHERE key = ? AND stream = ? ORDER BY seq",
            (key, int(stream)))
        bodies = [row[0] for row in rows]
        if not bodies:
            self.misses += 1
            if self._mode == "replay":
                raise _miss(key, stream, describe, self.path)
            return None
        self.hits += 1
        if stream:
            return [StreamEvent.model_validate_json(body) for body in bodies]
        return Completion.model_validate_json(bodies[0])

    async def save(self, key: str, value: Recorded, *, provider: str = "",
                   model: str = "") -> bool:
        """Record a successful answer (replacing an older one); True if it was written.

        A no-op unless the mode records. Unfinished answers (error, cancelled, or a stream
        without its ``done`` event) are refused, and so is an output that cannot be
        serialized, which is logged rather than failing a call that already succeeded.
        """
        if not self.writes or not is_cacheable(value):
            return False
        try:
            bodies = ([e.model_dump_json() for e in value] if isinstance(value, list)
                      else [value.model_dump_json()])
        except PydanticSerializationError as exc:
            log.warning("not recording request %s: its answer cannot be serialized (%s)",
                        key[:12], exc)
            return False
        stream = isinstance(value, list)
        final = _final(value)
        model = model or (final.model if final is not None else "")
        created = datetime.now(UTC).isoformat()
        rows = [(key, int(stream), seq, provider, model, created, body)
                for seq, body in enumerate(bodies)]
        async with self.write() as conn:
            await conn.execute("DELETE FROM responses WHERE key = ? AND stream = ?",
                               (key, int(stream)))
            await conn.executemany(
                "INSERT INTO responses (key, stream, seq, provider, model, created, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.saves += 1
        return True

    def stats(self) -> StoreStats:
        """Counts read through a short read-only connection; safe from any thread."""
        recordings = rows = 0
        if self.path.exists():
            uri = self.path.resolve().as_uri() + "?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                try:
                    recordings, rows = conn.execute(
                        "SELECT COUNT(DISTINCT key || ':' || stream), COUNT(*) "
                        "FROM responses").fetchone()
                except sqlite3.OperationalError:  # file exists but was never initialised
                    pass
        size = sum(p.stat().st_size for p in _db_files(self.path) if p.exists())
        return StoreStats(path=self.path, mode=self._mode, recordings=recordings, rows=rows,
                          bytes=size, hits=self.hits, misses=self.misses, saves=self.saves)

    def __repr__(self) -> str:
        return f"ResponseStore({str(self.path)!r}, mode={self._mode!r})"


def is_cacheable(value: Recorded) -> bool:
    """Only finished answers are kept: not errors, not cancellations, not cut-off streams."""
    if isinstance(value, list) and (not value or value[-1].type != "done"):
        return False
    final = _final(value)
    return final is None or final.finish_reason not in _UNFINISHED


def as_completion(value: Recorded) -> Completion:
    """A recorded answer as a ``Completion``, whether it was recorded as one or streamed."""
    final = _final(value)
    if final is None:
        raise ValueError("a recorded stream without its final 'done' event cannot answer a "
                         "completion; clear that recording")
    return final


def as_events(value: Recorded) -> list[StreamEvent]:
    """A recorded answer as stream events, whether it was streamed or recorded whole."""
    return value if isinstance(value, list) else completion_events(value)


def describe_request(provider: str, model: str, messages: Sequence[Message],
                     width: int = 60) -> str:
    """``provider:model «preview of the last user message»`` for ReplayMiss messages."""
    last = next((m.text for m in reversed(messages) if m.role == "user"), "")
    preview = " ".join(last.split())
    if len(preview) > width:
        preview = preview[:width - 1] + "…"
    return f"{provider}:{model} «{preview}»"


# -- helpers ------------------------------------------------------------------------------
def _copy(value: Recorded) -> Recorded:
    if isinstance(value, list):
        return [event.model_copy(deep=True) for event in value]
    return value.model_copy(deep=True)


def _final(value: Recorded) -> Completion | None:
    """The completion itself, or the one a stream's last event carries."""
    if isinstance(value, Completion):
        return value
    return value[-1].completion if value else None


def _miss(key: str, stream: bool, describe: str, path: Path) -> ReplayMiss:
    what = describe or "this request"
    kind = "stream" if stream else "completion"
    exc = ReplayMiss(
        f"Replay mode has no recorded {kind} for {what} (request {key[:12]}…) in {path}. "
        "Record it once with mode 'replay_or_record' (or 'record'), or check that the "
        "prompt, model and parameters match the recording.")
    exc.request_hash = key  # type: ignore[attr-defined]
    return exc


def _db_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]



class TieredStore:
    """The in-memory cache in front of the persistent store, as one gateway ``store`` hook.

    A memory hit never touches SQLite; a store hit warms the memory cache. ``mode`` is the
    persistent store's, so the gateway logs replay hits as such.
    """

    def __init__(self, store: ResponseStore, cache: ResponseCache | None = None) -> None:
        self.store, self.cache = store, cache

    @property
    def mode(self) -> str:
        return self.store.mode

    @property
    def reads(self) -> bool:
        return self.cache is not None or self.store.reads

    @property
    def writes(self) -> bool:
        return self.cache is not None or self.store.writes

    async def lookup(self, key: str, *, stream: bool, describe: str = "") -> Recorded | None:
        if self.cache is not None and (hit := self.cache.get(key, stream=stream)) is not None:
            return hit
        hit = await self.store.lookup(key, stream=stream, describe=describe)
        if hit is not None and self.cache is not None:
            self.cache.put(key, hit)
        return hit

    async def save(self, key: str, value: Recorded) -> bool:
        if self.cache is not None:
            self.cache.put(key, value)
        return await self.store.save(key, value)
