"""Workflow checkpoints in ``lab.db``: one row per run, one per finished step.

Why SQLite rows, not files: a step's checkpoint must be on disk before the next step can
rely on it, and a SIGKILL between two writes must leave either the old row or the new one.
Each step's row is written in its own ``BEGIN IMMEDIATE … COMMIT``, so a resumed run finds
exactly the steps that finished. The whole transaction is one function run on the
connection's own thread (``conn.call``): one hop instead of one per statement, which halves
a checkpoint's cost, and since that thread runs calls one at a time, two transactions never
interleave (bench_workflow.py). A row keeps the hash of what the step
was asked (its definition and rendered inputs): a resume reuses the output only when the
hash is the same, so a step whose inputs changed runs again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aillm_lab.db import LabDB
from aillm_lab.errors import ConfigError

if TYPE_CHECKING:
    from aillm_lab.agents.workflow_run import StepRun
    from aillm_lab.runtime import LoopRunner

SCHEMA = """
CREATE TABLE IF NOT EXISTS workflow_runs (
    run_id     TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    inputs     TEXT NOT NULL,    -- JSON
    status     TEXT NOT NULL,
    started_at TEXT NOT NULL,    -- ISO 8601, UTC
    updated_at TEXT NOT NULL,
    outputs    TEXT,             -- JSON, once finished
    error      TEXT
);
CREATE TABLE IF NOT EXISTS workflow_steps (
    run_id      TEXT NOT NULL,
    step        TEXT NOT NULL,
    input_hash  TEXT NOT NULL,   -- sha256 of the step's definition and rendered inputs
    status      TEXT NOT NULL,   -- completed | failed
    output      TEXT,            -- JSON
    attempts    INTEGER NOT NULL,
    duration_s  REAL NOT NULL,
    cost_usd    REAL,
    error       TEXT,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
"""
T = TypeVar("T")
_SAVE = ("INSERT OR REPLACE INTO workflow_steps (run_id, step, input_hash, status, output, "
         "attempts, duration_s, cost_usd, error, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?)")


@dataclass(frozen=True)
class Checkpoint:
    """A finished step as stored: its input hash, status, output (JSON text) and cost."""

    step: str
    input_hash: str
    status: str
    output: str | None
    attempts: int
    duration_s: float
    cost_usd: float | None
    error: str | None

    def value(self) -> Any:
        return None if self.output is None else json.loads(self.output)


class CheckpointStore:
    """The checkpoint tables on the Lab's ``lab.db``; use on the runner loop."""

    def __init__(self, path: str | Path, runner: LoopRunner | None = None) -> None:
        self.db = LabDB(path, schema=SCHEMA, runner=runner)

    async def begin(self, run_id: str, workflow: str, inputs: str) -> dict[str, Checkpoint]:
        """Start or resume ``run_id``: the steps it finished before (none for a new run).
        A run id used by another workflow is refused (its steps would not match)."""
        conn = await self.db.conn()
        owner, rows = await conn.call(_in_transaction, _begin, run_id, workflow, inputs)
        if owner is not None and owner != workflow:
            raise ConfigError(f"run_id {run_id!r} belongs to workflow {owner!r}, not "
                              f"{workflow!r}; give this run another run_id.",
                              fields=("run_id",))
        return {r[0]: Checkpoint(*r) for r in rows}

    async def save(self, run_id: str, step: StepRun, output: str | None) -> None:
        """One step's checkpoint, committed before this returns."""
        assert step.input_hash is not None
        conn = await self.db.conn()
        await conn.call(_in_transaction, _execute, _SAVE, (
            run_id, step.id, step.input_hash, step.status, output, step.attempts,
            step.duration_s, step.cost_usd, step.error, _now()))

    async def finish(self, run_id: str, status: str, outputs: str | None,
                     error: str | None) -> None:
        conn = await self.db.conn()
        await conn.call(_in_transaction, _execute,
                        "UPDATE workflow_runs SET status = ?, outputs = ?, error = ?, "
                        "updated_at = ? WHERE run_id = ?",
                        (status, outputs, error, _now(), run_id))

    async def aclose(self) -> None:
        await self.db.aclose()


# -- on the connection's thread: each call is one whole transaction ---------------------------
def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(conn, *args)`` inside ``BEGIN IMMEDIATE … COMMIT`` (ROLLBACK on any error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    conn.execute(sql, params)


def _begin(conn: sqlite3.Connection, run_id: str, workflow: str,
           inputs: str) -> tuple[str | None, list[tuple[Any, ...]]]:
    """The run's workflow so far (None if new) and its steps' rows; marks it running. A run
    of another workflow is left as it is (the caller refuses it)."""
    row = conn.execute("SELECT workflow FROM workflow_runs WHERE run_id = ?",
                       (run_id,)).fetchone()
    if row is not None and row[0] != workflow:
        return str(row[0]), []
    now = _now()
    conn.execute("INSERT INTO workflow_runs (run_id, workflow, inputs, status, started_at, "
                 "updated_at) VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT (run_id) DO "
                 "UPDATE SET inputs = excluded.inputs, status = 'running', "
                 "updated_at = excluded.updated_at, outputs = NULL, error = NULL",
                 (run_id, workflow, inputs, now, now))
    rows = conn.execute("SELECT step, input_hash, status, output, attempts, duration_s, "
                        "cost_usd, error FROM workflow_steps WHERE run_id = ?",
                        (run_id,)).fetchall()
    return workflow, [tuple(r) for r in rows]


def _now() -> str:
    return datetime.now(UTC).isoformat()
