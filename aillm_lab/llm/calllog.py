"""The call log: one row per model call, durable within ~0.1 s, shared by every process of a
home. ``calllog_record`` defines a row, ``calllog_store`` the files (a SQLite journal plus
Parquet segments) and this module the door a Lab uses: queue, flusher, compactor, reads."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aillm_lab.errors import CallLogError, ConfigError
from aillm_lab.llm import calllog_store as store
from aillm_lab.llm.calllog_record import (
    PANDAS_TYPES,
    SCHEMA,
    CallRecord,
    as_row,
    casts,
    rows_frame,
    typed_nulls,
    write_parquet,
)

__all__ = ["CallLog", "CallLogError", "CallRecord"]

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

T = TypeVar("T")

log = logging.getLogger(__name__)


class CallLog:
    """One Lab's door to the call log of its home, shared by every Lab and process there.

    Writing: ``append`` only queues a row in memory, so the gateway's hot path does no disk
    I/O. A background flusher thread group-commits the queue to ``<home>/calls/log.db``
    (SQLite WAL) ``commit_every_s`` after the first row arrives, so a row is durable and
    visible to every process within about that time; a SIGKILL loses at most the rows of
    that window. When the journal holds ``compact_every`` rows a compaction thread moves
    them into one Parquet segment and merges small segments (see ``calllog_store``), so
    100,000 calls are a handful of files, not 100,000.

    Reading: ``frame``/``sql`` see the Parquet segments plus the journal's newer rows as one
    DuckDB view ``calls``. They first flush this process's logs of the same home, so a row
    logged by any Lab here is readable at once.

    Threads: the sync methods block on SQLite or DuckDB and are meant for user threads (a
    notebook cell, a script). On an event loop, and always on the runner loop, use
    ``aflush``/``aframe``/``asql``/``aclose``, which run in this log's worker threads.
    Memory is bounded: past ``max_pending`` uncommitted rows (a disk that refuses writes)
    new rows are dropped, counted in ``dropped`` and warned about.
    """

    def __init__(self, home: str | Path, *, commit_every_s: float = 0.1,
                 compact_every: int | None = None, max_pending: int = 100_000) -> None:
        compact_every = store.COMPACT_ROWS if compact_every is None else compact_every
        for name, value in (("compact_every", compact_every), ("max_pending", max_pending)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CallLog {name} = {value!r}: must be an integer >= 1.",
                                  fields=(name,))
        if not isinstance(commit_every_s, int | float) or not 0 < commit_every_s <= 0.5:
            raise ConfigError(f"CallLog commit_every_s = {commit_every_s!r}: must be in "
                              "(0, 0.5] so rows are durable well within a second.",
                              fields=("commit_every_s",))
        self.dir = Path(home).expanduser() / "calls"
        self.commit_every_s = float(commit_every_s)
        self.compact_every = compact_every
        self.max_pending = max_pending
        self.dropped = 0
        self._journal = store.Journal(self.dir, SCHEMA)
        self._pending: list[tuple[Any, ...]] = []  # rows of plain values: see as_row
        self._lock = threading.Lock()  # guards _pending and the threads; never held for I/O
        self._io = threading.Lock()  # one commit at a time; owns the writer connection
        self._conn_lock = threading.Lock()  # guards the DuckDB connection and cursors
        self._writer: sqlite3.Connection | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._compact_queued = False
        self._compactor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: duckdb.DuckDBPyConnection | None = None
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._local = threading.local()
        self._generation = 0
        _LIVE.add(self)
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- writing ----------------------------------------------------------------------------
    def append(self, record: CallRecord) -> None:
        """Queue one row for the flusher; never blocks on I/O, so it is safe on the loop."""
        row = as_row(record)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.warning("call log %s: %d rows wait for the disk; %d dropped so far",
                                self.dir, len(self._pending), self.dropped)
                return
            self._pending.append(row)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                                 name="aillm-calllog-flusher")
                self._flusher.start()
        if not self._wake.is_set():  # a plain read; set() takes a lock and notifies
            self._wake.set()

    async def aappend(self, record: CallRecord) -> None:
        self.append(record)

    def flush(self) -> int:
        """Commit the queued rows to ``log.db`` now; returns how many were committed."""
        with self._io:
            return self._commit()

    async def aflush(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), self.flush)

    def compact(self, *, min_rows: int = 1) -> Path | None:
        """Flush, then move the journal into a Parquet segment and merge small segments;
        returns the new segment, or None if there was nothing (or another process is at it)."""
        self.flush()
        return store.compact(self._journal, self._cursor, write_parquet, min_rows=min_rows)

    @property
    def pending(self) -> int:
        """Rows queued in memory, not yet committed to ``log.db``."""
        with self._lock:
            return len(self._pending)

    def files(self) -> list[Path]:
        """The Parquet files a reader uses now, oldest first (pre-journal files first)."""
        segments, legacy, _ = store.scan(self.dir)
        return legacy + [s.path for s in segments]

    # -- reading ----------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """Every call of this home, from every Lab and process, sorted by time, typed."""
        import pandas as pd

        df = self.sql("SELECT * FROM calls ORDER BY time")
        if df.empty:
            return df.astype({name: PANDAS_TYPES[kind] for name, kind in SCHEMA.items()})
        if pd.Series(["x"]).dtype != object:  # pandas >= 3 types text; all-NULL is object
            text = [n for n, t in SCHEMA.items() if t == "VARCHAR" and df[n].dtype == object]
            df = df.astype(dict.fromkeys(text, "str"))
        return df.reset_index(drop=True)

    def sql(self, query: str) -> pd.DataFrame:
        """Run DuckDB SQL where ``calls`` is the whole log, e.g. ``select model, count(*)
        from calls group by model``; bad SQL raises ValueError naming the query, a damaged
        file a CallLogError naming the file."""
        for attempt in range(_READ_ATTEMPTS):
            files, rows = self._snapshot()
            try:
                return self._query(files, rows, query)
            except _Vanished:  # a compaction merged files away between scan and read
                if attempt == _READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def aframe(self, timeout: float | None = None) -> pd.DataFrame:
        return await self._offload(self.frame, timeout)

    async def asql(self, query: str, timeout: float | None = None) -> pd.DataFrame:
        """``sql`` in a worker thread; on timeout or cancellation the query is interrupted."""
        return await self._offload(lambda: self.sql(query), timeout)

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the threads, commit the rest and compact it into Parquet; idempotent.

        A later append or query reopens lazily, like the runner itself.
        """
        with self._lock:
            flusher, self._flusher = self._flusher, None
            compactor, self._compactor = self._compactor, None
            pool, self._pool = self._pool, None
        self._stop.set()
        self._wake.set()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()
        for executor in (compactor, pool):
            if executor is not None:
                executor.shutdown(wait=True)
        self._stop.clear()
        try:
            with self._io:
                self._commit()
                writer, self._writer = self._writer, None
            if writer is not None:  # this log wrote: leave its rows in Parquet
                writer.close()
                store.compact(self._journal, self._cursor, write_parquet)
        finally:
            with self._conn_lock:
                cursors, self._cursors = self._cursors, []
                db, self._db = self._db, None
                self._generation += 1
            for cur in cursors:
                cur.close()
            if db is not None:
                db.close()

    async def aclose(self) -> None:
        try:
            await asyncio.to_thread(self.close)
        except RuntimeError:  # interpreter exit: executors take no new work, so close here
            self.close()

    def __repr__(self) -> str:
        return f"CallLog({str(self.dir)!r}, files={len(self.files())}, pending={self.pending})"

    # -- internals --------------------------------------------------------------------------
    def _commit(self) -> int:
        """Group-commit the queue; call holding ``_io``. Rows leave the queue only once
        committed, so a failed commit keeps them for the next try."""
        with self._lock:
            batch = list(self._pending)
        if not batch:
            return 0
        if self._writer is None:
            self._writer = self._journal.connect()
        self._journal.append(self._writer, batch)
        with self._lock:  # only _commit removes rows, and commits are serialised by _io
            del self._pending[:len(batch)]
        return len(batch)

    def _flush_loop(self) -> None:
        """The flusher thread: wait for a row, gather more for ``commit_every_s``, commit,
        and hand the journal to the compactor when it is big enough."""
        try:
            self._flush_until_stopped()
        finally:  # an append racing close() must start a new flusher, not trust this one
            with self._lock:
                if self._flusher is threading.current_thread():
                    self._flusher = None

    def _flush_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._stop.wait(self.commit_every_s)  # group window; close() cuts it short
            if self._stop.is_set():
                return  # close() commits what is left
            self._wake.clear()
            try:
                with self._io:
                    self._commit()
                    size = self._journal.size(self._writer) if self._writer else 0
            except Exception as exc:  # rows stay queued; try again in a second
                log.warning("call-log commit to %s failed, will retry: %r",
                            self._journal.path, exc)
                self._wake.set()
                self._stop.wait(1.0)
                continue
            if size >= self.compact_every:
                self._schedule_compaction()

    def _schedule_compaction(self) -> None:
        with self._lock:
            if self._compact_queued or self._stop.is_set():
                return
            self._compact_queued = True
            if self._compactor is None:
                self._compactor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="aillm-calllog-compact")
            self._compactor.submit(self._background_compact)

    def _background_compact(self) -> None:
        """Off the flusher thread: a merge can take a second and commits must not wait."""
        with self._lock:
            self._compact_queued = False
        try:
            store.compact(self._journal, self._cursor, write_parquet,
                          min_rows=self.compact_every)
        except Exception as exc:  # rows stay in the journal, still readable
            log.warning("call-log compaction in %s failed, will retry: %r", self.dir, exc)

    def _snapshot(self) -> tuple[list[Path], list[tuple[Any, ...]]]:
        """Parquet files and journal rows that together hold each row once.

        The journal is read before the directory: a row deleted from it after our read is
        already in a segment we then list, and rows the segments hold are dropped by id.
        """
        for sibling in list(_LIVE):  # read-your-writes for every Lab of this process
            if sibling is not self and sibling.dir == self.dir:
                try:
                    sibling.flush()
                except Exception as exc:
                    log.warning("call log %s could not be flushed: %r", sibling.dir, exc)
        with self._io:
            try:
                self._commit()
            except (OSError, sqlite3.OperationalError) as exc:
                log.warning("call-log commit to %s failed: %r", self._journal.path, exc)
            with self._lock:
                unsaved = list(self._pending)
            if not self._journal.path.exists() and not self.dir.exists():
                return [], unsaved
            conn = self._journal.connect()
            try:
                for _ in range(50):
                    rows = self._journal.rows_after(conn, 0)
                    segments, legacy, gapless = store.scan(self.dir)
                    if gapless:
                        break
                    time.sleep(0.01)  # a merge is between its rename and its unlinks
                else:
                    log.warning("call log %s: segment ids have a gap; a file is missing",
                                self.dir)
            finally:
                conn.close()
        floor = store.watermark(segments)
        fresh = [r[1:] for r in rows if r[0] > floor]
        return legacy + [s.path for s in segments], fresh + unsaved

    def _query(self, files: list[Path], rows: list[tuple[Any, ...]],
               query: str) -> pd.DataFrame:
        import duckdb

        cur = self._cursor()
        fresh_name = f"_fresh_{uuid.uuid4().hex}"
        parts = [f"SELECT {typed_nulls()} WHERE false"]
        if files:
            listed = ", ".join(store.sql_str(str(p)) for p in files)
            parts.append(f"SELECT * FROM read_parquet([{listed}], union_by_name = true)")
        if rows:
            cur.register(fresh_name, rows_frame(rows))
            parts.append(f"SELECT {casts()} FROM {fresh_name}")
        try:
            cur.execute("CREATE OR REPLACE TEMP VIEW calls AS "
                        + " UNION ALL BY NAME ".join(parts))
            return cur.execute(query).df()
        except duckdb.Error as exc:
            named = [p for p in files if str(p) in str(exc)]
            if named and not all(p.exists() for p in named):
                raise _Vanished from exc
            if named and not isinstance(exc, duckdb.ParserException | duckdb.BinderException):
                raise CallLogError(
                    f"the call-log file {named[0]} cannot be read ({exc}). Move it out of "
                    f"{self.dir}: the calls it held leave the log, the others stay.",
                    path=named[0]) from exc
            raise ValueError(f"Call-log SQL failed: {exc}\n  query: {query}\n  Query the "
                             f"view `calls`; its columns are {', '.join(SCHEMA)}.") from exc
        finally:
            cur.execute("DROP VIEW IF EXISTS calls")
            if rows:
                cur.unregister(fresh_name)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is not None and self._local.generation == self._generation:
            return cur
        import duckdb

        with self._conn_lock:
            if self._db is None:
                self._db = duckdb.connect()
            cur = self._db.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            self._cursors.append(cur)
            self._local.cursor, self._local.generation = cur, self._generation
        return cur

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="aillm-calllog")
            return self._pool

    async def _offload(self, fn: Callable[[], T], timeout: float | None) -> T:
        running: dict[str, duckdb.DuckDBPyConnection] = {}

        def work() -> T:
            running["cursor"] = self._cursor()
            return fn()

        fut = asyncio.get_running_loop().run_in_executor(self._executor(), work)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            if "cursor" in running:
                running["cursor"].interrupt()
            raise TimeoutError(f"call-log query timed out after {timeout} s and was "
                               "interrupted") from None
        except asyncio.CancelledError:
            if "cursor" in running:
                running["cursor"].interrupt()
            raise


class _Vanished(Exception):
    """A Parquet file listed for a read was merged away before DuckDB opened it."""


_READ_ATTEMPTS = 5
_LIVE: weakref.WeakSet[CallLog] = weakref.WeakSet()


_INHERITED: list[Any] = []  # a forked child's copies of the parent's handles: never freed


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads and must not share its SQLite or
    DuckDB handles: start each log afresh. Rows queued before the fork are the parent's to
    commit; the child drops its copy, or they would be logged twice. The copies of the
    handles are kept, not freed: DuckDB's destructor joins worker threads the child does
    not have (SIGSEGV; duckdb/duckdb-python#292), and this hook also runs in every
    ``Popen(preexec_fn=...)`` child before its exec (Ray starts its programs so)."""
    for calllog in list(_LIVE):
        _INHERITED.append((calllog._writer, calllog._db, calllog._cursors, calllog._local))
        calllog._lock, calllog._io = threading.Lock(), threading.Lock()
        calllog._conn_lock, calllog._local = threading.Lock(), threading.local()
        calllog._wake, calllog._stop = threading.Event(), threading.Event()
        calllog._flusher = calllog._compactor = calllog._pool = None
        calllog._writer = calllog._db = None
        calllog._cursors, calllog._compact_queued, calllog._pending = [], False, []
        calllog._generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_at_exit(ref: weakref.ref[CallLog]) -> None:
    log_ = ref()
    if log_ is not None:
        try:
            log_.close()
        except Exception as exc:  # exit must go on
            log.warning("call log could not be flushed at exit: %r", exc)
