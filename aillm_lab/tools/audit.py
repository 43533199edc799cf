"""``AuditLog``: one durable row in ``lab.db`` for every tool call, whatever its outcome.

Why SQLite and group commit: a row must be on disk before the guard hands a result back
(a crash must not lose the record of a write), yet agents fire tool calls in parallel.
Concurrent ``record`` calls share one ``BEGIN IMMEDIATE … COMMIT``; each still returns only
after the transaction holding its row has committed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.db import LabDB, Synchronous

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.runtime import LoopRunner

Decision = Literal["allowed", "refused", "denied", "error"]
MAX_AUDIT_STR = 1000  # longer argument strings (file contents …) are clipped in the log

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
                json.dumps(_clip(self.arguments), ensure_ascii=False, default=str),
                self.risk, self.decision, self.rule, round(self.duration_ms, 4),
                self.result_chars, int(self.truncated), ",".join(self.injection) or None,
                self.error)


class AuditLog:
    """The ``audit`` table of ``lab.db``; ``record`` returns once the row is committed.

    ``synchronous="NORMAL"`` (WAL) survives a crash of the process; pass ``"FULL"`` to also
    survive a power cut, at the cost of an fsync per commit.
    """

    def __init__(self, path: str | Path, *, runner: LoopRunner | None = None,
                 synchronous: Synchronous = "NORMAL") -> None:
        self.db = LabDB(path, schema=_SCHEMA, synchronous=synchronous, runner=runner)
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"AuditLog({str(self.db.path)!r})"

    @property
    def path(self) -> Path:
        return self.db.path

    async def record(self, entry: AuditEntry) -> None:
        """Write one row; returns after the transaction holding it has committed."""
        await self.record_many([entry])

    async def record_many(self, entries: list[AuditEntry]) -> None:
        """Write rows in one transaction (shared with any concurrent ``record`` calls)."""
        if not entries:
            return
        loop = asyncio.get_running_loop()
        futures = []
        for entry in entries:
            fut: asyncio.Future[None] = loop.create_future()
            self._pending.append((entry.row(), fut))
            futures.append(fut)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # shield: a cancelled caller must not cancel the commit other callers wait for
        await asyncio.shield(asyncio.gather(*futures))

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
        await self._drain()
        rows = await self.db.fetchall(sql, params)
        df = pd.DataFrame([tuple(r) for r in reversed(rows)], columns=["id", *_COLUMNS])
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
        df["arguments"] = df["arguments"].map(json.loads)
        df["truncated"] = df["truncated"].astype(bool)
        for col in ("call_id", "rule", "injection", "error"):  # None, not NaN, when empty
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        return df

    async def count(self) -> int:
        await self._drain()
        row = await self.db.fetchone("SELECT count(*) FROM audit")
        return int(row[0]) if row else 0

    async def aclose(self) -> None:
        """Finish pending writes and close the connection; idempotent."""
        await self._drain()
        await self.db.aclose()

    async def _drain(self) -> None:
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.shield(flusher)

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction. A lone row is one autocommit INSERT: SQLite gives it its own
        transaction (same durability) in one hop to the connection thread instead of three
        (BEGIN, INSERT, COMMIT). Safe because only this flusher writes on this connection."""
        if len(rows) == 1:
            conn = await self.db.conn()
            await conn.execute(_INSERT, rows[0])
        else:
            await self.db.executemany(_INSERT, rows)

    async def _flush(self) -> None:
        """Commit whatever is pending, batch after batch, until nothing is left."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write([row for row, _ in batch])
            except BaseException as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception)
                                          else RuntimeError(f"audit write interrupted: {exc!r}"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


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
