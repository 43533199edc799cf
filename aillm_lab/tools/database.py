"""``Database``: read-only DuckDB over DataFrames and workspace files, for agents.

Why three layers: the statement type is checked with DuckDB's own parser (one
SELECT, nothing else); the SELECT's syntax tree is walked for file readers and functions
that reveal or change state; and the database runs with external access off and its
configuration locked, so even a query that slipped past the parser could read only the
files the user registered (``allowed_paths``) and could not switch anything back on.

DESIGN invariant 2: one DuckDB database, a cursor per worker thread, queries in a private
executor so the runner loop never stalls, and a timeout that calls ``interrupt()``.
``allowed_paths`` cannot change once the configuration is locked, so registering a file
rebuilds the (in-memory, views-only) database; DataFrames are registered on each cursor.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import Lifecycle, sync_twin
from aillm_lab.tools._duckdb_engine import (
    READERS,
    Engine,
    QueryTimeout,
    Source,
    ThreadState,
    Ticket,
    close_quietly,
    consume,
    default_threads,
    describe_columns,
    fetch_capped,
    interrupt_quietly,
    interrupt_until_done,
    quote,
    read_settings,
    sync_frames,
)
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import SqlPolicy
from aillm_lab.tools.sqlguard import (
    ALLOWED_CATALOG_VIEWS,
    ALLOWED_TABLE_FUNCTIONS,
    DENIED_FUNCTIONS,
    RESERVED_PREFIXES,
    DatabaseError,
    check_sql,
    first_line,
)

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.runtime import LoopRunner

T = TypeVar("T")
FileFormat = Literal["csv", "parquet", "json"]

_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
    ".json": "json", ".jsonl": "json", ".ndjson": "json"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Database(Lifecycle):
    """Read-only SQL over registered DataFrames and workspace files, with caps and timeouts.

    ``register(name, df)`` and ``register_file(name, path)`` add tables; ``await aquery(sql)``
    (or ``query(sql)``) runs one SELECT and returns a DataFrame capped at
    ``policy.max_rows`` rows and ``policy.max_result_bytes`` bytes.
    """

    def __init__(self, ws: Workspace, policy: SqlPolicy | None = None, *,
                 runner: LoopRunner | None = None, workers: int = 4) -> None:
        if workers < 1:
            raise DatabaseError(f"workers={workers} must be at least 1")
        self.ws = ws
        self.policy = policy or SqlPolicy()
        self.runner = runner
        self._lock = threading.RLock()
        self._sources: dict[str, Source] = {}  # keyed by lower-case name, like DuckDB
        self._files_version = 0
        self._engine: Engine | None = None
        self._engines: list[Engine] = []  # every engine not yet closed
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="aillm-duckdb")
        self._local = ThreadState()
        self._cursors: list[Any] = []
        self._tickets: set[Ticket] = set()
        self._closed = False
        self._close_registered = False

    def __repr__(self) -> str:
        return f"Database({self.ws.root}, tables={self.tables()})"

    # -- tables ----------------------------------------------------------------------------
    def register(self, name: str, df: pd.DataFrame) -> None:
        """Expose a pandas DataFrame as table ``name`` (by reference; replaces that name)."""
        import pandas as pd

        if not isinstance(df, pd.DataFrame):
            raise DatabaseError(f"register({name!r}, ...) needs a pandas DataFrame, got "
                                f"{type(df).__name__}; use register_file() for files")
        self._put(Source(_check_name(name), "dataframe", frame=df))

    def register_file(self, name: str, path: str | Path, *,
                      format: FileFormat | None = None) -> None:
        """Expose a CSV, Parquet or JSON file in the workspace as view ``name``.

        The path is checked with the workspace rules; the view is created by the trusted
        side, which is the only way a query reaches a file.
        """
        name = _check_name(name)
        real = Path(os.path.realpath(self.ws.resolve(path)))  # pin the file, not the link
        if not real.is_relative_to(self.ws.root):
            raise SafetyViolation("path.symlink_escape", f"{str(path)!r} leads through a "
                                  "symbolic link outside the workspace; register a real file")
        if not real.is_file():
            raise DatabaseError(f"register_file({name!r}, {str(path)!r}): no such file in the "
                                f"workspace {self.ws.root}; pass a path relative to it")
        kind = format or _SUFFIXES.get(real.suffix.lower())
        if kind not in READERS:
            raise DatabaseError(f"register_file({name!r}, {str(path)!r}): unknown format "
                                f"{format or real.suffix!r}; use a {', '.join(_SUFFIXES)} file "
                                f"or pass format='csv'|'parquet'|'json'")
        self._put(Source(name, kind, path=real))

    def unregister(self, name: str) -> None:
        """Remove table ``name``; queries already running keep their view of it."""
        with self._lock:
            old = self._sources.pop(name.lower(), None)
            if old is None:
                raise DatabaseError(f"no table named {name!r}; tables: {self._names()}")
            if old.path is not None:
                self._files_version += 1

    def tables(self) -> list[str]:
        """Registered table names, in registration order."""
        with self._lock:
            return [s.name for s in self._sources.values()]

    # -- queries ---------------------------------------------------------------------------
    async def aquery(self, sql: str, *, max_rows: int | None = None,
                     timeout_s: float | None = None) -> pd.DataFrame:
        """Run one read-only SELECT in a worker thread; the DataFrame's ``attrs`` say if it
        was truncated (``attrs["truncated"]``, ``attrs["note"]``)."""
        if not isinstance(sql, str):
            raise DatabaseError(f"sql must be a string, got {type(sql).__name__}")
        limit = self._row_limit(max_rows)
        job = functools.partial(_run_select, sql, limit, self.policy.max_result_bytes)
        return await self._submit(job, timeout_s)

    query = sync_twin(aquery)

    async def alist_tables(self) -> pd.DataFrame:
        """One row per table: name, kind (dataframe/csv/parquet/json), source and columns."""
        return await self._submit(self._list_job, None)

    list_tables = sync_twin(alist_tables)

    async def adescribe(self, name: str) -> pd.DataFrame:
        """Column names, types and nullability of table ``name``."""
        with self._lock:
            source = self._sources.get(str(name).lower())
            if source is None:
                raise DatabaseError(f"no table named {name!r}; tables: {self._names()}")
        return await self._submit(functools.partial(describe_columns, source.name), None)

    describe = sync_twin(adescribe)

    async def asettings(self) -> dict[str, str]:
        """The security settings DuckDB reports (external access, lock, allowed paths)."""
        return await self._submit(read_settings, None)

    settings = sync_twin(asettings)

    # -- tools -----------------------------------------------------------------------------
    def tools(self) -> list[Tool]:
        """``sql_query``, ``list_tables`` and ``describe_table`` for an agent (risk: read)."""
        db = self

        async def sql_query(sql: str, max_rows: int | None = None) -> Any:
            """Run one read-only DuckDB SELECT over the registered tables (see list_tables).

            WITH, FROM-first, VALUES, DESCRIBE, SHOW and SUMMARIZE work; anything that
            writes, reads files or changes settings is refused.

            Args:
                sql: a single SELECT statement in DuckDB SQL.
                max_rows: return at most this many rows (capped by the policy).
            """
            return await db.aquery(sql, max_rows=max_rows)

        async def list_tables() -> Any:
            """List the tables you can query, with their kind, source and columns."""
            return await db.alist_tables()

        async def describe_table(name: str) -> Any:
            """Show the columns and types of one table.

            Args:
                name: a table name from list_tables.
            """
            return await db.adescribe(name)

        async def load_table(path: str, name: str | None = None) -> str:
            """Make a CSV, Parquet or JSON file from the workspace queryable as a table.

            Args:
                path: the file, relative to the workspace, e.g. 'data/sales.csv'.
                name: the table name (letters, digits, '_'); defaults to the file's name.
            """
            table = name or _table_name(path)
            with db._lock:
                taken = db._sources.get(table.lower())
            if taken is not None and taken.kind == "dataframe":
                raise DatabaseError(f"table {table!r} holds data your user registered; "
                                    f"pass another name, e.g. name='{table}_file'")
            db.register_file(table, path)
            columns = await db.adescribe(table)
            return (f"table {table!r} reads {path}; query it with sql_query. Columns:\n"
                    + to_text(columns))

        return [Tool(fn, risk=RiskLevel.READ)
                for fn in (sql_query, list_tables, describe_table, load_table)]

    # -- lifecycle -------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Interrupt running queries, join the worker threads and close DuckDB; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for ticket in list(self._tickets):
            ticket.stop()
        try:
            await asyncio.to_thread(self._shutdown)
        except RuntimeError:  # at interpreter exit no new thread may start: stop inline
            self._shutdown()

    # -- internals -------------------------------------------------------------------------
    def _put(self, source: Source) -> None:
        with self._lock:
            self._check_open()
            old = self._sources.pop(source.name.lower(), None)
            self._sources[source.name.lower()] = source
            if source.path is not None or (old is not None and old.path is not None):
                self._files_version += 1

    def _names(self) -> str:
        return ", ".join(self.tables()) or "none registered"

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError("this Database is closed; create a new one")

    def _row_limit(self, max_rows: int | None) -> int:
        if max_rows is None:
            return self.policy.max_rows
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise DatabaseError(f"max_rows={max_rows!r} must be a positive integer "
                                f"(at most {self.policy.max_rows})")
        return min(max_rows, self.policy.max_rows)

    async def _submit(self, job: Callable[[Any], T], timeout_s: float | None) -> T:
        """Run ``job(cursor)`` on a worker; past the deadline, interrupt it and raise."""
        timeout = self.policy.timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise DatabaseError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
        with self._lock:
            self._check_open()
            if self.runner is not None and not self._close_registered:
                self.runner.on_close(self.aclose)
                self._close_registered = True
        ticket = Ticket(timeout)
        try:
            fut = asyncio.get_running_loop().run_in_executor(self._executor, self._work, job,
                                                             ticket)
        except RuntimeError:  # closed between the check and the submit
            raise DatabaseError("this Database is closed; create a new one") from None
        fut.add_done_callback(consume)
        self._tickets.add(ticket)
        try:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
            if fut not in done:
                await interrupt_until_done(ticket, fut)
                raise ticket.timeout_error()
            return fut.result()
        except asyncio.CancelledError:
            ticket.stop()
            raise
        finally:
            self._tickets.discard(ticket)

    def _work(self, job: Callable[[Any], T], ticket: Ticket) -> T:
        """Worker thread: bring this thread's cursor up to date, then run the job on it."""
        import duckdb

        engine, local = self._prepare_thread()
        cursor = local.cursor
        try:
            sync_frames(cursor, local.frames, local.want)
            ticket.attach(cursor)
            try:
                return job(cursor)
            finally:
                ticket.attach(None)
        except duckdb.InterruptException:
            if self._closed:
                raise DatabaseError("the Database was closed while the query ran") from None
            raise ticket.timeout_error() from None
        except duckdb.PermissionException as exc:
            raise SafetyViolation("sql.file_access", f"{first_line(exc)}; query the "
                                  f"registered tables instead: {self._names()}") from None
        except duckdb.OutOfMemoryException:
            raise SafetyViolation("sql.memory_limit", f"the query needed more than the "
                                  f"{self.policy.memory_limit_mb} MB DuckDB may use "
                                  f"(SqlPolicy.memory_limit_mb); filter or aggregate before "
                                  f"sorting or joining, or add a LIMIT") from None
        except duckdb.Error as exc:
            raise DatabaseError(_explain(exc, engine, self._names())) from None
        finally:
            self._release(engine)

    def _prepare_thread(self) -> tuple[Engine, ThreadState]:
        with self._lock:
            self._check_open()
            engine = self._engine
            if engine is None or engine.version != self._files_version:
                if engine is not None:
                    engine.retired = True
                    self._maybe_close(engine)
                files = {k: s for k, s in self._sources.items() if s.path is not None}
                engine = self._engine = Engine(files, self._files_version, self._limits())
                self._engines.append(engine)
            local = self._local
            local.want = {s.name: s.frame for s in self._sources.values() if s.frame is not None}
            if local.engine is not engine:
                old = local.cursor
                close_quietly(old)
                local.engine, local.cursor, local.frames = engine, engine.con.cursor(), {}
                self._cursors = [c for c in self._cursors if c is not old] + [local.cursor]
            engine.active += 1
        return engine, local

    def _limits(self) -> dict[str, Any]:
        """Set when each engine is created, then locked: queries cannot raise them."""
        return {"memory_limit": f"{self.policy.memory_limit_mb}MiB",
                "threads": self.policy.threads or default_threads()}

    def _release(self, engine: Engine) -> None:
        with self._lock:
            engine.active -= 1
            self._maybe_close(engine)

    def _maybe_close(self, engine: Engine) -> None:
        if engine.retired and engine.active == 0 and engine in self._engines:
            self._engines.remove(engine)
            close_quietly(engine.con)

    def _list_job(self, cursor: Any) -> pd.DataFrame:
        import pandas as pd

        with self._lock:
            sources = list(self._sources.values())
        rows = []
        for s in sources:
            try:
                cols = cursor.sql(f"DESCRIBE {quote(s.name)}").fetchall()
                columns = ", ".join(f"{c[0]} {c[1]}" for c in cols)
            except Exception as exc:  # one broken file must not hide the other tables
                reason = self._local.engine.errors.get(s.name.lower()) or first_line(exc)
                columns = f"(cannot read: {reason})"
            source = "DataFrame" if s.path is None else self.ws.relative(s.path)
            rows.append({"name": s.name, "kind": s.kind, "source": source, "columns": columns})
        return pd.DataFrame(rows, columns=["name", "kind", "source", "columns"])

    def _shutdown(self) -> None:
        with self._lock:  # a worker whose ticket was already released still stops here
            for cursor in self._cursors:
                interrupt_quietly(cursor)
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for cursor in self._cursors:
                close_quietly(cursor)
            for engine in self._engines:
                close_quietly(engine.con)
            self._cursors, self._engines, self._engine = [], [], None


def _table_name(path: str) -> str:
    """A valid table name from a file name: 'data/2024 sales.csv' -> 't_2024_sales'."""
    stem = re.sub(r"\W+", "_", Path(str(path)).stem).strip("_") or "data"
    return f"t_{stem}" if stem[0].isdigit() else stem[:62]


def to_text(df: pd.DataFrame, *, max_rows: int = 50, max_colwidth: int = 60) -> str:
    """A compact plain-text table for a model or a log, ending with any truncation note."""
    shape = f"({len(df)} rows x {len(df.columns)} columns)"
    if df.empty:
        body = "(no rows) columns: " + (", ".join(map(str, df.columns)) or "none")
    else:
        body = df.to_string(index=False, max_rows=max_rows, max_colwidth=max_colwidth)
    note = df.attrs.get("note")
    return "\n".join([body, shape] + ([str(note)] if note else []))


def _run_select(sql: str, limit: int, max_bytes: int, cursor: Any) -> pd.DataFrame:
    check_sql(sql, cursor)
    df, over_rows, over_bytes = fetch_capped(cursor, sql, limit, max_bytes)
    size = int(df.memory_usage(index=False, deep=True).sum())
    if size > max_bytes:  # the streamed estimate is conservative; this is the backstop
        df, over_bytes = df.iloc[:_rows_within(df, max_bytes)], True
    notes = []
    if over_rows:
        notes.append(f"the query returned more than {limit} rows; showing the first {limit}")
    if over_bytes:
        notes.append(f"the result is over the {max_bytes}-byte cap; showing the first "
                     f"{len(df)} rows, which fit")
    df = df.reset_index(drop=True)
    df.attrs["truncated"] = bool(notes)
    if notes:
        df.attrs["note"] = "Truncated: " + "; ".join(notes) + ". Aggregate or filter for less."
    return df


def _rows_within(df: pd.DataFrame, max_bytes: int) -> int:
    """How many leading rows fit in ``max_bytes`` (binary search on measured size)."""
    lo, hi = 0, len(df)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(df.iloc[:mid].memory_usage(index=False, deep=True).sum()) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _explain(exc: Exception, engine: Engine, tables: str) -> str:
    text = first_line(exc)
    hint = f"tables: {tables}"
    if engine.errors:
        hint += "; views that failed to load: " + "; ".join(
            f"{k} ({v})" for k, v in engine.errors.items())
    return f"DuckDB refused the query: {text} ({hint})"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DatabaseError(f"table name {name!r} is not a plain identifier; use letters, "
                            "digits and underscores, starting with a letter (max 63)")
    if name.lower().startswith(RESERVED_PREFIXES):
        raise DatabaseError(f"table name {name!r} would shadow DuckDB's own "
                            f"{name.split('_')[0]}_* names; choose another")
    return name


__all__ = ["ALLOWED_CATALOG_VIEWS", "ALLOWED_TABLE_FUNCTIONS", "DENIED_FUNCTIONS", "Database",
           "DatabaseError", "QueryTimeout", "check_sql", "to_text"]
