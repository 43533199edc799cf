"""The DuckDB side of ``Database``: locked connections, per-thread cursors, interrupts.

Private: ``Database`` is the API. Kept apart so the class reads top-down; what is here is
the mechanics of invariant 2 (one database, a cursor per worker thread, ``interrupt()`` on
timeout) and the locked configuration that is the last layer behind the SQL guard.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.sqlguard import first_line

if TYPE_CHECKING:
    import pandas as pd

READERS: dict[str, str] = {"csv": "read_csv", "parquet": "read_parquet", "json": "read_json"}
# Set when the database is created; the rest are SET in order, then the config is locked.
CONFIG: dict[str, Any] = {
    "python_enable_replacements": False, "autoload_known_extensions": False,
    "autoinstall_known_extensions": False, "allow_community_extensions": False,
    "allow_persistent_secrets": False, "allow_extension_repositories": "forbidden",
    "temp_directory": ""}
_INTERRUPT_EVERY_S = 0.05
_INTERRUPT_GRACE_S = 5.0


class QueryTimeout(SafetyViolation, TimeoutError):
    """A query ran past its time limit and was interrupted (rule ``sql.timeout``).

    A ``SafetyViolation`` so agents hand it to the model like any policy refusal (the model
    can narrow the query), and a ``TimeoutError`` so generic timeout handling catches it.
    """


@dataclass(frozen=True)
class Source:
    """A registered table: a DataFrame (by reference) or a pinned workspace file."""

    name: str
    kind: Literal["dataframe", "csv", "parquet", "json"]
    frame: Any = None  # pandas DataFrame for kind == "dataframe"
    path: Path | None = None


def default_threads() -> int:
    """One core stays free for the runner loop (and the kernel), so a long query cannot make
    the notebook's loop miss its beats; on one core, DuckDB and the loop share it."""
    return max(1, (os.cpu_count() or 2) - 1)


class Engine:
    """One locked in-memory DuckDB database; rebuilt when the set of files changes.

    ``limits`` (``memory_limit``, ``threads``) are set when the database is created and are
    then locked with the rest of the configuration, so no query can raise them.
    """

    def __init__(self, files: dict[str, Source], version: int,
                 limits: dict[str, Any] | None = None) -> None:
        import duckdb

        self.version, self.active, self.retired = version, 0, False
        self.errors: dict[str, str] = {}
        for _ in range(3):  # a file swapped for a symlink mid-build is caught on the next try
            for key, s in files.items():
                if os.path.realpath(s.path) != str(s.path):
                    self.errors[key] = "the file became a symbolic link; register a real file"
            pinned = [s for key, s in files.items() if key not in self.errors]
            con = locked_connection(sorted({str(s.path) for s in pinned}), limits)
            if con is not None:
                break
        else:
            raise SafetyViolation("path.symlink_escape", "registered files keep turning into "
                                  "symbolic links; unregister them and register real files")
        self.con = con
        for s in pinned:
            try:
                con.execute(f"CREATE VIEW {quote(s.name)} AS SELECT * FROM "
                            f"{READERS[s.kind]}({literal(str(s.path))})")
            except duckdb.Error as exc:  # one bad file must not take the others down
                self.errors[s.name.lower()] = first_line(exc)


def locked_connection(paths: list[str], limits: dict[str, Any] | None = None) -> Any:
    """A DuckDB connection that can read exactly ``paths``, or None if one was a symlink.

    DuckDB resolves symlinks when it stores ``allowed_paths``, so reading the setting back
    proves that no listed file was swapped for a link between our check and the SET.
    """
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": default_threads(), **CONFIG,
                                             **(limits or {})})
    if paths:  # must precede the next two: DuckDB refuses it once access is off
        con.execute("SET allowed_paths = ?", [paths])
        stored = con.execute("SELECT current_setting('allowed_paths')").fetchall()[0][0]
        if sorted(stored) != paths:
            con.close()
            return None
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


class ThreadState(threading.local):
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.cursor: Any = None
        self.frames: dict[str, Any] = {}  # DataFrames registered on this cursor
        self.want: dict[str, Any] = {}  # DataFrames registered on the Database now


class Ticket:
    """One query's link between the loop (which may stop it) and its worker thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.lock = threading.Lock()
        self.cursor: Any = None
        self.cancelled = False

    def attach(self, cursor: Any) -> None:
        """Bind the worker's cursor (None when done); a stopped ticket refuses to start."""
        with self.lock:
            if self.cancelled and cursor is not None:
                raise self.timeout_error()
            self.cursor = cursor

    def stop(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.cursor is not None:
                self.cursor.interrupt()

    def timeout_error(self) -> QueryTimeout:
        return QueryTimeout("sql.timeout", f"the query ran past {self.timeout:g} s and was "
                            "stopped; filter, aggregate or add a LIMIT, or pass a larger "
                            "timeout_s")


async def interrupt_until_done(ticket: Ticket, fut: asyncio.Future[Any]) -> None:
    """Interrupt until the worker gives up (an interrupt before execution starts is lost)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _INTERRUPT_GRACE_S
    while not fut.done() and loop.time() < deadline:
        ticket.stop()
        await asyncio.wait({fut}, timeout=_INTERRUPT_EVERY_S)


def fetch_capped(cursor: Any, sql: str, limit: int,
                 max_bytes: int) -> tuple[pd.DataFrame, bool, bool]:
    """The first rows of an already checked query that fit ``limit`` and ``max_bytes``, and
    whether rows were left out for each cap.

    Why not ``df()``: it builds the whole result before any cap can apply (a 20 MB cap once
    let 4.4 GB be built). Here DuckDB streams and rows are taken one at a time, each measured
    before the next is converted, so one wide row after many narrow ones cannot slip a batch
    of them past the cap (about 10 us a row). DuckDB's dtypes come from an empty run.
    """
    base = cursor.sql(sql)
    cursor.execute(base.limit(limit + 1).sql_query())  # the SQL df() ran: ORDER BY gets top-N
    rows: list[tuple[Any, ...]] = []
    used, over_rows, over_bytes, ended = 0, False, False, False
    try:
        while True:
            fetched = cursor.fetchmany(1)
            if not fetched:
                ended = True
                break
            size = row_bytes(fetched[0])
            over_rows = len(rows) >= limit
            over_bytes = not over_rows and used + size > max_bytes
            if over_rows or over_bytes:
                break
            rows.append(fetched[0])
            used += size
    finally:
        if not ended:  # stop DuckDB producing rows nobody will read
            abort_quietly(cursor)
    return with_dtypes(rows, base.limit(0).df()), over_rows, over_bytes


def row_bytes(row: tuple[Any, ...]) -> int:
    """What a row costs once in a DataFrame, at least as much as pandas' deep measure."""
    return sum(8 + _value_bytes(v, 0) for v in row)


def _value_bytes(value: Any, depth: int) -> int:
    if depth < 4 and isinstance(value, list | tuple):
        return sys.getsizeof(value) + sum(_value_bytes(v, depth + 1) for v in value)
    if depth < 4 and isinstance(value, dict):
        return sys.getsizeof(value) + sum(_value_bytes(k, depth + 1) + _value_bytes(v, depth + 1)
                                          for k, v in value.items())
    return sys.getsizeof(value)


def with_dtypes(rows: list[tuple[Any, ...]], template: pd.DataFrame) -> pd.DataFrame:
    """Fetched rows as a DataFrame with the dtypes DuckDB's ``df()`` gives (``template``)."""
    import pandas as pd

    if not rows:
        return template
    df = pd.DataFrame.from_records(rows, columns=range(len(template.columns)))
    for i, dtype in enumerate(template.dtypes):
        df[i] = _as_dtype(df[i], dtype)
    df.columns = template.columns
    return df


def _as_dtype(column: pd.Series, dtype: Any) -> pd.Series:
    """``astype`` where the template is specific, with pandas' nullable types for NULLs in
    int/bool columns as ``df()`` has; where the template says object (strings, lists, blobs:
    ``df()`` decides by the values), pandas' own inference from the values is kept."""
    if column.dtype == dtype or str(dtype) == "object":
        return column
    kind = getattr(dtype, "kind", "")
    if kind in "iub" and column.isna().any():
        dtype = "boolean" if kind == "b" else str(dtype).capitalize().replace("Ui", "UI")
    try:
        return column.astype(dtype)
    except (TypeError, ValueError, OverflowError):
        return column


def describe_columns(name: str, cursor: Any) -> pd.DataFrame:
    df = cursor.sql(f"DESCRIBE {quote(name)}").df()
    return df[["column_name", "column_type", "null"]]


def read_settings(cursor: Any) -> dict[str, str]:
    rows = cursor.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
        "'lock_configuration', 'allowed_paths', 'allowed_directories', 'allowed_configs', "
        "'python_enable_replacements', 'autoload_known_extensions', "
        "'autoinstall_known_extensions', 'memory_limit', 'threads')").fetchall()
    return {str(k): str(v) for k, v in rows}


def sync_frames(cursor: Any, have: dict[str, Any], want: dict[str, Any]) -> None:
    """Register this thread's cursor's DataFrames (registrations are per connection)."""
    for name in [n for n in have if n not in want]:
        cursor.unregister(name)
        del have[name]
    for name, frame in want.items():
        if have.get(name) is not frame:
            cursor.register(name, frame)
            have[name] = frame


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def close_quietly(obj: Any) -> None:
    if obj is not None:
        try:
            obj.close()
        except Exception:  # already closed with its parent connection
            pass


def abort_quietly(cursor: Any) -> None:
    try:
        cursor.abort()
    except Exception:  # the result already ended, or the cursor was closed
        pass


def interrupt_quietly(cursor: Any) -> None:
    try:
        cursor.interrupt()
    except Exception:  # closed with its parent connection
        pass


def consume(fut: asyncio.Future[Any]) -> None:
    """Mark a worker's error as seen when nobody awaits it any more (after a timeout)."""
    if not fut.cancelled():
        fut.exception()
