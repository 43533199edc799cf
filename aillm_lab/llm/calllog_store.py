"""The call log on disk: a SQLite WAL journal for fresh rows, Parquet segments for the rest.

Why two formats: a row must survive a SIGKILL and be visible to other processes within a
second, which Parquet (immutable, whole-file) cannot give per row without one file per
flush; SQLite in WAL mode gives both for the price of one small commit per batch. Parquet
stays the long-term format because DuckDB scans it fast and ``lab.sql`` and the dashboard
query it.

Layout of ``<home>/calls/``:

* ``log.db``: table ``calls`` (``id INTEGER PRIMARY KEY AUTOINCREMENT`` plus the record's
  columns). Ids are never reused, so they order all rows ever logged in this home.
* ``calls-<lo>-<hi>.parquet``: the rows with ids ``lo..hi`` (12 digits each). A reader
  takes the rows of ``log.db`` with ``id > max(hi)`` and the segments, so a row is in the
  answer once whether or not a compaction is half done.
* ``calls-<utc time>-<uuid>.parquet``: files from before the journal, read as they are.
* ``compact.lock``: a SQLite file whose write lock is the compaction mutex; SQLite's locks
  are released when a process dies, so a SIGKILLed compactor never blocks the next one.

A compaction writes a segment (temp name, fsync, ``os.replace``) and only then deletes its
rows from ``log.db``; a crash between the two leaves rows that readers skip by id and the
next compaction deletes. Merging replaces a run of small segments by one covering segment
before unlinking them; a reader that sees both keeps the covering one.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import CallLogError

if TYPE_CHECKING:
    import duckdb

COMPACT_ROWS = 1000  # journal rows that trigger a compaction into one Parquet segment
MERGE_FANOUT = 8  # this many small segments are merged into one
MERGE_MAX_ROWS = 2_000_000  # segments this large are never rewritten again
BUSY_TIMEOUT_MS = 30_000

SEGMENT = re.compile(r"^calls-(\d{12})-(\d{12})\.parquet$")
LEGACY = re.compile(r"^calls-\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class Segment:
    """One compacted Parquet file holding the journal ids ``lo..hi``."""

    lo: int
    hi: int
    path: Path

    @property
    def rows(self) -> int:
        return self.hi - self.lo + 1


def scan(directory: Path) -> tuple[list[Segment], list[Path], bool]:
    """The segments a reader should use, the legacy files, and whether the ids are gapless.

    A segment inside a larger one is a merge's leftover and is skipped. A gap means a merge
    was renamed in between our directory reads; the caller scans again.
    """
    found: list[Segment] = []
    legacy: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if m := SEGMENT.match(entry.name):
                found.append(Segment(int(m[1]), int(m[2]), Path(entry.path)))
            elif LEGACY.match(entry.name):
                legacy.append(Path(entry.path))
    chosen: list[Segment] = []
    for seg in sorted(found, key=lambda s: (s.lo, -s.hi)):
        if chosen and seg.hi <= chosen[-1].hi:
            continue  # covered by a merged segment whose parts are not unlinked yet
        chosen.append(seg)
    gapless = all(b.lo == a.hi + 1 for a, b in zip(chosen, chosen[1:], strict=False))
    return chosen, sorted(legacy), gapless


def watermark(segments: list[Segment]) -> int:
    return segments[-1].hi if segments else 0


class Journal:
    """``log.db``: the durable, shared append path. Every method opens what it needs.

    ``synchronous = FULL``: each group commit is fsync'ed, so a row also survives a power
    cut, not just a killed process; commits come from a background thread a few times a
    second, so the fsync never sits on a model call.
    """

    def __init__(self, directory: Path, schema: dict[str, str]) -> None:
        self.dir = directory
        self.path = directory / "log.db"
        self.columns = list(schema)
        self._times = [i for i, t in enumerate(schema.values()) if t == "TIMESTAMPTZ"]
        self._bools = [i for i, t in enumerate(schema.values()) if t == "BOOLEAN"]
        columns = self.columns
        self._insert = (f"INSERT INTO calls ({', '.join(_q(c) for c in columns)}) "
                        f"VALUES ({', '.join('?' * len(columns))})")

    def connect(self) -> sqlite3.Connection:
        """A connection to ``log.db`` with the table in place; corruption is a CallLogError."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.errors():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'calls'"
                                ).fetchone() is None:  # new, or deleted by hand since
                    self._create(conn)
                conn.execute("PRAGMA synchronous = FULL")
            except BaseException:
                conn.close()
                raise
        return conn

    def append(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """One group commit: ``BEGIN IMMEDIATE``, every row, ``COMMIT``."""
        with self.errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self._insert, [to_sqlite(r) for r in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def rows_after(self, conn: sqlite3.Connection, after: int) -> list[tuple[Any, ...]]:
        """``(id, *columns)`` for every row with ``id > after``, in id order."""
        cols = ", ".join(_q(c) for c in self.columns)
        with self.errors():
            cur = conn.execute(f"SELECT id, {cols} FROM calls WHERE id > ? ORDER BY id",
                               (after,))
            return [(r[0], *self._from_sqlite(r[1:])) for r in cur]

    def _from_sqlite(self, stored: tuple[Any, ...]) -> tuple[Any, ...]:
        row = list(stored)
        for i in self._times:
            if row[i] is not None:
                row[i] = EPOCH + row[i] * MICROSECOND
        for i in self._bools:
            if row[i] is not None:
                row[i] = bool(row[i])
        return tuple(row)

    def size(self, conn: sqlite3.Connection) -> int:
        with self.errors():
            lo, hi = conn.execute("SELECT min(id), max(id) FROM calls").fetchone()
        return 0 if lo is None else hi - lo + 1

    def delete_through(self, conn: sqlite3.Connection, hi: int) -> None:
        with self.errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM calls WHERE id <= ?", (hi,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """SQLite's corruption errors as a CallLogError that names ``log.db`` and the fix."""
        try:
            yield
        except sqlite3.OperationalError:
            raise  # locked, disk full, read-only: the flusher retries and warns
        except sqlite3.DatabaseError as exc:
            raise CallLogError(
                f"the call-log journal {self.path} is damaged ({exc}). Move it aside (the "
                "calls it held that are not yet in a calls-*.parquet file are lost) and the "
                "log starts a new journal; the Parquet files are untouched.",
                path=self.path) from exc

    def _create(self, conn: sqlite3.Connection) -> None:
        """The table, in WAL mode, with ids starting after the newest segment's: a journal
        deleted by hand must not reuse ids that Parquet files already hold."""
        conn.execute("PRAGMA journal_mode = WAL")
        cols = ", ".join(f"{_q(c)}" for c in self.columns)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS calls "
                         f"(id INTEGER PRIMARY KEY AUTOINCREMENT, {cols})")
            floor = watermark(scan(self.dir)[0])
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'calls'").fetchone()
            if seq is None and floor:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('calls', ?)",
                             (floor,))
            elif seq is not None and seq[0] < floor:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'calls'",
                             (floor,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


@contextlib.contextmanager
def compaction_lock(directory: Path) -> Iterator[bool]:
    """Yields True while this process holds the home's compaction lock, False if another
    one does (then skip: it is compacting the same rows)."""
    directory.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(directory / "compact.lock", timeout=0, isolation_level=None)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            yield False
            return
        try:
            yield True
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def compact(journal: Journal, cursor: Callable[[], duckdb.DuckDBPyConnection],
            write_rows: Callable[[duckdb.DuckDBPyConnection, list[tuple[Any, ...]], Path], None],
            *, min_rows: int = 1) -> Path | None:
    """Move the journal's rows into a new segment and merge small segments; returns the new
    segment, or None when another process holds the lock or fewer than ``min_rows`` wait.

    ``cursor()`` gives this thread's DuckDB cursor; ``write_rows(cursor, rows, path)`` writes
    plain rows to a Parquet file.
    """
    with compaction_lock(journal.dir) as mine:
        if not mine:
            return None
        for orphan in journal.dir.glob(".calls-*.tmp"):  # only a lock holder writes these
            orphan.unlink(missing_ok=True)
        segments, _, _ = scan(journal.dir)
        floor = watermark(segments)
        conn = journal.connect()
        try:
            journal.delete_through(conn, floor)  # a crash left them after their segment
            rows = journal.rows_after(conn, floor)
            made = None
            if rows and len(rows) >= min_rows:
                made = _segment_path(journal.dir, floor + 1, rows[-1][0])  # gapless ids
                _publish(made, lambda tmp: write_rows(cursor(), [r[1:] for r in rows], tmp))
                journal.delete_through(conn, rows[-1][0])
        finally:
            conn.close()
        merge(journal.dir, cursor)
        return made


def merge(directory: Path, cursor: Callable[[], duckdb.DuckDBPyConnection]) -> list[Path]:
    """Size-tiered merging: while the newest segments of size tier <= t (for the smallest t
    that qualifies) number at least ``MERGE_FANOUT``, rewrite them as one. Each row is
    rewritten about once per tier (log8 of the log's size), and a home keeps fewer than
    ``MERGE_FANOUT`` segments per tier.

    Call it holding the compaction lock.
    """
    made: list[Path] = []
    while True:
        segments, _, gapless = scan(directory)
        if not gapless:
            return made
        _unlink_covered(directory, segments)  # leftovers of a merge that crashed
        run = _mergeable_tail(segments)
        if not run:
            return made
        target = _segment_path(directory, run[0].lo, run[-1].hi)
        _publish(target, lambda tmp, run=run: _copy(cursor(), run, tmp))
        for seg in run:
            seg.path.unlink(missing_ok=True)
        made.append(target)


def _copy(cursor: duckdb.DuckDBPyConnection, run: list[Segment], target: Path) -> None:
    listed = ", ".join(sql_str(str(s.path)) for s in run)
    cursor.execute(f"COPY (SELECT * FROM read_parquet([{listed}], union_by_name = true)) "
                   f"TO {sql_str(str(target))} (FORMAT parquet)")


def _mergeable_tail(segments: list[Segment]) -> list[Segment]:
    for tier in range(_tier(MERGE_MAX_ROWS) + 1):
        tail: list[Segment] = []
        for seg in reversed(segments):
            if seg.rows >= MERGE_MAX_ROWS or _tier(seg.rows) > tier:
                break
            tail.append(seg)
        if len(tail) >= MERGE_FANOUT:
            return tail[::-1]
    return []


def _tier(rows: int) -> int:
    """floor(log_FANOUT(rows)): 1-7 rows are tier 0, 8-63 tier 1, 512-4095 tier 3."""
    tier = 0
    while rows >= MERGE_FANOUT ** (tier + 1):
        tier += 1
    return tier


def _unlink_covered(directory: Path, chosen: list[Segment]) -> None:
    for entry in os.scandir(directory):
        m = SEGMENT.match(entry.name)
        if m is None:
            continue
        lo, hi = int(m[1]), int(m[2])
        if not any(s.lo <= lo and hi <= s.hi and s.path.name != entry.name for s in chosen):
            continue
        Path(entry.path).unlink(missing_ok=True)


def _segment_path(directory: Path, lo: int, hi: int) -> Path:
    return directory / f"calls-{lo:012d}-{hi:012d}.parquet"


def _publish(final: Path, write: Any) -> None:
    """Write through a hidden temp file, fsync it, then rename: readers never see half."""
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temp)
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut too
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- row conversion ------------------------------------------------------------------------
def to_sqlite(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Datetimes as integer microseconds since the epoch (naive ones taken as UTC)."""
    return tuple((_micros(v) if isinstance(v, datetime) else v) for v in row)


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // MICROSECOND


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

