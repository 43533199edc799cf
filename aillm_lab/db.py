"""``LabDB``: one aiosqlite connection to a SQLite file, owned by the runner loop.

Why a shared helper: the audit log, RAG index and long-term memory all live in ``lab.db``
and must follow the same durability rules (DESIGN invariants 2 and 9): WAL, a busy timeout,
``BEGIN IMMEDIATE … COMMIT`` around every write batch, and a connection created, used and
closed on one loop. Each owner opens its own ``LabDB`` on the same file; WAL lets them share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aillm_lab.errors import RunnerError

if TYPE_CHECKING:
    import aiosqlite

    from aillm_lab.runtime import LoopRunner

log = logging.getLogger(__name__)
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

# SQLite's WAL-reset bug (a rare corruption when a checkpoint races a reset) is fixed in
# 3.51.3, and backported to 3.50.7 and 3.44.6; any older release in each series has it.
_WAL_RESET_FIXED = {(3, 51): (3, 51, 3), (3, 50): (3, 50, 7), (3, 44): (3, 44, 6)}


class SqliteVersionWarning(UserWarning):
    """The linked SQLite library has a known durability bug; upgrade it when you can."""


def wal_reset_bug(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> bool:
    """True if this SQLite release predates the WAL-reset fix for its series."""
    fixed = _WAL_RESET_FIXED.get(version[:2])
    if fixed is not None:
        return version < fixed
    return version < (3, 51, 3) and version[:2] not in ((3, 50), (3, 44))


class LabDB:
    """A lazily opened connection; ``write()`` is the only way to change data.

    ``schema`` is run once in a write transaction at open (use ``CREATE … IF NOT EXISTS``).
    Use it from the runner loop only (``runner.arun`` / ``runner.run``).
    """

    _warned = False

    def __init__(self, path: str | Path, *, schema: str = "", synchronous: Synchronous = "NORMAL",
                 busy_timeout_ms: int = 5000, runner: LoopRunner | None = None) -> None:
        self.path = Path(path)
        self.schema = schema
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._runner = runner
        self._conn: aiosqlite.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"LabDB({str(self.path)!r})"

    async def conn(self) -> aiosqlite.Connection:
        """The open connection (opened on first use, on the calling loop)."""
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            if loop is not self._loop:
                raise RunnerError(f"{self!r} was opened on another event loop; use it from "
                                  "the runner loop (runner.arun / runner.run) only.")
            return self._conn
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            if self._conn is None:
                self._conn = await self._open()
                if self._runner is not None:
                    self._runner.on_close(self.aclose)
        return self._conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on any error), one at a time."""
        conn = await self.conn()
        assert self._lock is not None
        async with self._lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        conn = await self.conn()
        return list(await conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One write transaction around many rows."""
        async with self.write() as conn:
            await conn.executemany(sql, rows)

    async def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run a WAL checkpoint; returns (busy, log frames, checkpointed frames)."""
        row = await self.fetchone(f"PRAGMA wal_checkpoint({mode})")
        return tuple(row) if row else (0, 0, 0)  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Close and join the worker thread; idempotent, and a later call reopens."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        thread = getattr(conn, "_thread", None)
        await conn.close()
        if isinstance(thread, threading.Thread):
            thread.join(1.0)

    async def _open(self) -> aiosqlite.Connection:
        import aiosqlite

        if wal_reset_bug() and not LabDB._warned:
            LabDB._warned = True
            warnings.warn(f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug fixed in "
                          "3.51.3 (3.50.7, 3.44.6); upgrade Python's SQLite when you can.",
                          SqliteVersionWarning, stacklevel=3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = aiosqlite.connect(self.path, isolation_level=None)
        thread = getattr(conn, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.daemon = True  # see ResponseStore._open: exit must not wait for it
        await conn
        conn.row_factory = sqlite3.Row
        try:
            rows = list(await conn.execute_fetchall("PRAGMA journal_mode=WAL"))
            if str(rows[0][0]).lower() != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (is it on a network "
                                   "file system?); put the workspace on a local disk.")
            await conn.execute(f"PRAGMA synchronous={self.synchronous}")
            await conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            if self.schema:
                await conn.execute("BEGIN IMMEDIATE")
                for statement in _statements(self.schema):
                    await conn.execute(statement)
                await conn.execute("COMMIT")
        except BaseException:
            await conn.close()
            raise
        return conn


def _statements(script: str) -> list[str]:
    """Split a schema into statements (``executescript`` would commit our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
