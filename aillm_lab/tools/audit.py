"""``AuditLog``: one row in ``lab.db`` for every tool call, whatever its outcome.

Why group commit: a commit costs more than a cheap tool call (about 350 µs against a 300 µs
``read_file``), and an agent step makes several calls. So rows are buffered on the runner
loop and committed together (one ``BEGIN IMMEDIATE … COMMIT``) at most ``commit_every_s``
(0.1 s) after the first of them, or at once when ``max_batch`` rows wait. ``record``
returns without waiting for that commit, unless the call asks for ``durable=True``: then it
returns only once the transaction holding its row has committed. The Safety Guard asks for
it for the risk levels the policy lists in ``safety.audit.durable`` (writes, programs and
the network by default: calls with effects outside the lab, which cost far more than a
commit anyway). A log's first row is committed before ``record`` returns too: that opens
and checks ``lab.db``, so a lost or damaged database fails the first tool call.

The guarantee, tested by SIGKILLing a writer: the row of a call whose result was returned
more than a second before the process died is in ``lab.db`` (``synchronous=NORMAL`` in WAL
mode survives a process crash; ``FULL`` also survives a power cut). Readers see every row
recorded before them: ``frame``, ``count`` and ``aclose`` commit the buffer first, and so
does the runner's shutdown (``atexit``) for a log that was never closed.

A failed commit loses no row silently: the batch goes back to the head of the buffer, a
warning is logged, and commits are retried with a growing pause (up to ``MAX_RETRY_S``).
Until one succeeds, every ``record`` waits for its own commit, so the next tool call raises
the error; ``frame`` and ``count`` raise it too. ``aclose`` tries once more and, if the rows
still cannot be written, logs an error with their number and closes anyway (closing must
release the connection); they stay buffered, written if the log is used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.db import LabDB, Synchronous

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.runtime import LoopRunner

log = logging.getLogger(__name__)
Decision = Literal["allowed", "refused", "denied", "error"]
MAX_AUDIT_STR = 1000  # longer argument strings (file contents …) are clipped in the log
COMMIT_EVERY_S = 0.1  # a buffered row is committed at most this long after it was recorded
MAX_BATCH = 500  # rows waiting that trigger a commit at once
MAX_RETRY_S = 2.0  # the longest pause between attempts after failed commits

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id           INTEGER PRIMARY KEY,
    ts           TEXT NOT NULL,     -- ISO 8601, UTC
    tool         TEXT NOT NULL,
    call_id      TEXT,
    arguments    TEXT NOT NULL,     -- JSON, secrets redacted, long strings clipped
    risk         TEXT NOT NULL,
    decision     TEXT NOT NULL,     -- allowed | refused | denied | error
    rule         TEXT,              -- the safety rule behind a refusal or denial
    duration_ms  REAL NOT NULL,
    result_chars INTEGER NOT NULL,  -- size of the rendered result before the cap
    truncated    INTEGER NOT NULL,
    injection    TEXT,              -- comma-separated marker names, if any
    error        TEXT
);
CREATE INDEX IF NOT EXISTS audit_tool_ts ON audit (tool, ts);
"""
_COLUMNS = ("ts", "tool", "call_id", "arguments", "risk", "decision", "rule", "duration_ms",
            "result_chars", "truncated", "injection", "error")
_INSERT = f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


# json.dumps(..., ensure_ascii=False, default=str) builds this encoder on every call; a row
# is written per tool call, so one is kept (same text)
_ARGS_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


class AuditEntry(BaseModel):
    """One tool call as the audit log stores it; ``arguments`` must already be redacted."""

    tool: str
    decision: Decision
    arguments: Any = Field(default_factory=dict)
    risk: str = "read"
    call_id: str | None = None
    rule: str | None = None
    duration_ms: float = 0.0
    result_chars: int = 0
    truncated: bool = False
    injection: list[str] = Field(default_factory=list)
    error: str | None = None
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> tuple[Any, ...]:
        """The SQLite row: JSON arguments with long strings clipped, markers joined."""
        return (self.ts.isoformat(), self.tool, self.call_id,
                _ARGS_JSON.encode(_clip(self.arguments)),
                self.risk, self.decision, self.rule, round(self.duration_ms, 4),
                self.result_chars, int(self.truncated), ",".join(self.injection) or None,
                self.error)


class AuditLog:
    """The ``audit`` table of ``lab.db``, group-committed; use it on one loop (the runner's).

    ``synchronous="NORMAL"`` (WAL) survives a crash of the process; pass ``"FULL"`` to also
    survive a power cut, at the cost of an fsync per commit.
    """

    def __init__(self, path: str | Path, *, runner: LoopRunner | None = None,
                 synchronous: Synchronous = "NORMAL", commit_every_s: float = COMMIT_EVERY_S,
                 max_batch: int = MAX_BATCH) -> None:
        if not 0 < commit_every_s <= 0.5:
            raise ValueError(f"AuditLog(commit_every_s={commit_every_s!r}): use a value in "
                             "(0, 0.5] seconds, so a returned call is on disk within a second")
        self.db = LabDB(path, schema=_SCHEMA, synchronous=synchronous, runner=runner)
        self.commit_every_s = commit_every_s
        self.max_batch = max(1, max_batch)
        self._runner = runner
        self._rows: list[tuple[Any, ...]] = []  # recorded, not yet handed to a commit
        self._waiters: list[asyncio.Future[None]] = []  # resolved by the next commit
        self._flusher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # set: commit now, without waiting
        self._error: Exception | None = None  # the last failed commit, until one succeeds
        self._opened = False  # a commit succeeded since the connection was (re)opened
        self._hook: Callable[[], Awaitable[None]] | None = None  # flushes at runner close

    def __repr__(self) -> str:
        return f"AuditLog({str(self.db.path)!r})"

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def pending(self) -> int:
        """Rows recorded but not yet handed to a commit."""
        return len(self._rows)

    async def record(self, entry: AuditEntry, *, durable: bool = False) -> None:
        """Buffer one row; with ``durable=True``, return once it is committed."""
        await self.record_many([entry], durable=durable)

    async def record_many(self, entries: list[AuditEntry], *, durable: bool = False) -> None:
        """Buffer rows for the next group commit (see the module docstring).

        With ``durable=True``, or while commits are failing, this waits for the commit
        that holds the rows and raises its error; the rows stay buffered for a retry.
        """
        if not entries:
            return
        self._rows.extend(entry.row() for entry in entries)
        if durable or self._error is not None or not self._opened:
            await self.flush()
        else:
            self._kick(now=len(self._rows) >= self.max_batch)

    async def flush(self) -> None:
        """Commit every row recorded so far; raises the commit's error (rows are kept)."""
        if not self._rows and (self._flusher is None or self._flusher.done()):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick(now=True)
        await waiter  # a cancelled caller cancels only its waiter, never the commit

    async def frame(self, limit: int | None = None, *, tool: str | None = None) -> pd.DataFrame:
        """The log as a DataFrame, oldest first; ``limit`` keeps the most recent rows."""
        import pandas as pd

        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ValueError(f"frame(limit={limit!r}): use a whole number >= 0, or None for "
                             "every row")
        where, params = ("WHERE tool = ?", [tool]) if tool is not None else ("", [])
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM audit {where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        await self.flush()
        rows = await self.db.fetchall(sql, params)
        df = pd.DataFrame([tuple(r) for r in reversed(rows)], columns=["id", *_COLUMNS])
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
        df["arguments"] = df["arguments"].map(json.loads)
        df["truncated"] = df["truncated"].astype(bool)
        for col in ("call_id", "rule", "injection", "error"):  # None, not NaN, when empty
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        return df

    async def count(self) -> int:
        await self.flush()
        row = await self.db.fetchone("SELECT count(*) FROM audit")
        return int(row[0]) if row else 0

    async def aclose(self) -> None:
        """Commit the buffer and close the connection; idempotent, and a later call reopens.

        Rows that cannot be committed are logged as an error (how many, and why) and stay
        buffered for the next use; the connection is closed all the same.
        """
        try:
            await self.flush()
        except Exception as exc:
            log.error("audit log %s: %d rows are not written (%r); they are kept in memory "
                      "and written if this log is used again", self.db.path, len(self._rows),
                      exc)
        finally:
            self._hook = None
            self._opened = False
            flusher, self._flusher = self._flusher, None
            if flusher is not None and not flusher.done():  # a retry loop after a failure
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)
            await self.db.aclose()

    # -- the flusher -----------------------------------------------------------------------
    def _kick(self, *, now: bool) -> None:
        """Make sure a flusher is running; ``now`` skips its pause."""
        if self._flusher is None or self._flusher.done():
            self._wake = asyncio.Event()
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name=f"audit-flusher:{self.db.path.name}")
        if now:
            assert self._wake is not None
            self._wake.set()

    async def _flush_loop(self) -> None:
        """Pause up to ``commit_every_s`` (longer after failures), commit, until all is in."""
        pause = self.commit_every_s
        try:
            while self._rows or self._waiters:
                await self._pause(pause)
                ok = await self._commit()
                pause = self.commit_every_s if ok else min(pause * 2, MAX_RETRY_S)
        except asyncio.CancelledError:  # the loop is ending with the log never closed
            if self._rows:
                with contextlib.suppress(Exception):
                    await self._commit()
            raise

    async def _pause(self, seconds: float) -> None:
        wake = self._wake
        assert wake is not None
        if not wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await wake.wait()
        wake.clear()

    async def _commit(self) -> bool:
        """One transaction for every buffered row; resolves the waiters it covers."""
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        try:
            if rows:
                await self._write(rows)
        except BaseException as exc:
            self._rows[:0] = rows  # back at the head, in order: a failed commit loses no row
            error = exc if isinstance(exc, Exception) else RuntimeError(
                f"audit commit interrupted: {exc!r}")
            if self._error is None:
                log.warning("audit log %s: committing %d rows failed (%r); they are kept and "
                            "retried, and tool calls wait for the audit until it works again",
                            self.db.path, len(rows), exc)
            self._error = error
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return False
        if self._error is not None:
            log.warning("audit log %s: commits work again", self.db.path)
        self._error = None
        self._opened = self._opened or bool(rows)
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        self._hook_runner()
        return True

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction. A lone row is one autocommit INSERT: SQLite gives it its own
        transaction (same durability) in one hop to the connection thread instead of three
        (BEGIN, INSERT, COMMIT). Safe because only this flusher writes on this connection."""
        if len(rows) == 1:
            conn = await self.db.conn()
            await conn.execute(_INSERT, rows[0])
        else:
            await self.db.executemany(_INSERT, rows)

    def _hook_runner(self) -> None:
        """Flush at the runner's shutdown. Registered after the connection opened, so it
        runs before the connection's own closer (closers run last-registered first)."""
        if self._runner is None or self._hook is not None:
            return

        async def hook() -> None:
            if self._hook is not hook:  # superseded: the log was closed (and maybe reopened)
                return
            try:
                await self.flush()
            except Exception as exc:
                log.error("audit log %s: %d rows could not be written at shutdown: %r",
                          self.db.path, len(self._rows), exc)
            finally:
                self._hook = None

        self._hook = hook
        self._runner.on_close(hook)


def _clip(value: Any, limit: int = MAX_AUDIT_STR) -> Any:
    """Long strings shortened with a note, so writing a 5 MB file logs 1 kB, not 5 MB."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}…[+{len(value) - limit} chars]"
    if isinstance(value, dict):
        return {str(k): _clip(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clip(v, limit) for v in value]
    return value


__all__ = ["AuditEntry", "AuditLog", "Decision"]
