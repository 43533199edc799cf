"""``LabDB``: one aiosqlite connection to a SQLite file, owned by the runner loop.

Why a shared helper: the audit log, RAG index and long-term memory all live in ``lab.db``
and must follow the same durability rules (ARCHITECTURE.md, invariants 2 and 9): WAL, a busy
timeout, ``BEGIN IMMEDIATE … COMMIT`` around every write batch, and a connection created,
used and closed on one loop. Each owner opens its own ``LabDB`` on the same file; WAL lets
them share. The record/replay store (``llm/store.py``) is a ``LabDB`` on ``cache.db``, for
the same rules.

Identity: a truncated, deleted or swapped ``lab.db`` must not pass for a new, empty lab. The
id of a home's database lives in a ``lab_meta`` table inside it and in ``lab.db.id`` beside
it (``id_path``). Opening checks that they agree (and runs ``PRAGMA quick_check`` once per
version of the file per process), so a lost or foreign file raises ``LabDBIdentityError``
and a damaged one ``LabDBError``, each naming the file and the fix, instead of an empty lab
or a raw ``sqlite3`` error. A home with neither file is new and gets both.

Every SQLite error that leaves a ``LabDB`` connection is a ``LabDBError`` naming the file
(the original is its ``__cause__``); lock timeouts are ``LabDBBusy``, still an
``OperationalError`` with SQLite's "locked" text, so callers that route them keep working.
``backup``, ``reset`` and ``check`` are the sync doors for ``Lab.backup`` and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aillm_lab.errors import (
    LabDBBusy,
    LabDBError,
    LabDBIdentityError,
    LabDBOperationalError,
    RunnerError,
)

if TYPE_CHECKING:
    import aiosqlite

    from aillm_lab.runtime import LoopRunner

log = logging.getLogger(__name__)
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

# SQLite's WAL-reset bug (a rare corruption when a checkpoint races a reset) is fixed in
# 3.51.3, and backported to 3.50.7 and 3.44.6; any older release in each series has it.
_WAL_RESET_FIXED = {(3, 51): (3, 51, 3), (3, 50): (3, 50, 7), (3, 44): (3, 44, 6)}
FIX = ("restore it from a backup (lab.backup(path) writes one), or run `aillm-lab reset "
       "--confirm` to move it aside and start an empty lab")
_META = "CREATE TABLE IF NOT EXISTS lab_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_ID = re.compile(r"[0-9a-f]{32}")
_CORRUPT = ("malformed", "not a database", "could not decode", "corrupt")
_checked: dict[str, tuple[int, int, int]] = {}  # path -> (inode, size, mtime) quick_check passed


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

    ``schema`` is run once in a write transaction at open (use ``CREATE … IF NOT EXISTS``),
    with the identity check unless ``identity=False`` (a file that is not the lab's own, such
    as the record/replay store's ``cache.db``). Use it from the runner loop only
    (``runner.arun`` / ``runner.run``).
    """

    _warned = False

    def __init__(self, path: str | Path, *, schema: str = "", synchronous: Synchronous = "NORMAL",
                 busy_timeout_ms: int = 5000, runner: LoopRunner | None = None,
                 identity: bool = True) -> None:
        self.path = Path(path)
        self.schema = schema
        self.identity = identity
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._runner = runner
        self._conn: aiosqlite.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # read_small's, on the loop's thread
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
                # SQLite may have rolled back already (corruption, disk full); the error
                # that got us here says more than "no transaction is active"
                with contextlib.suppress(LabDBError):
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        conn = await self.conn()
        return list(await conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def read_small(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A small read through an index (tens of rows by key), run on the loop itself.

        Why: SQLite answers such a read in tens of µs, while the hop to aiosqlite's thread
        and back costs about 200 µs, twice per RAG search (bench_rag_vs_chroma.py). It uses
        a second, read-only connection on this loop's thread; WAL shows it every committed
        write. Not for scans or large reads: while it runs, the loop waits.
        """
        await self.conn()  # open, identity checked, and on this loop
        reader = self._reader
        try:
            if reader is None:
                reader = self._reader = _reader_connect(self.path, self.busy_timeout_ms)
            return reader.execute(sql, params).fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise lab_db_error(exc, self.path) from exc

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
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        thread = getattr(conn, "_thread", None)
        await conn.close()
        if isinstance(thread, threading.Thread):
            thread.join(1.0)

    async def _open(self) -> aiosqlite.Connection:
        if wal_reset_bug() and not LabDB._warned:
            LabDB._warned = True
            warnings.warn(f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug fixed in "
                          "3.51.3 (3.50.7, 3.44.6); upgrade Python's SQLite when you can.",
                          SqliteVersionWarning, stacklevel=3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        expected = expected_id(self.path) if self.identity else None
        conn = _connection_class()(self.path, create=expected is None)
        thread = getattr(conn, "_thread", None)
        if isinstance(thread, threading.Thread):
            # Python joins non-daemon threads *before* atexit runs; a worker started off the
            # (daemon) runner thread would otherwise hang exit if nobody closed the database
            thread.daemon = True
        try:
            await conn
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise lab_db_error(exc, self.path) from exc
        conn.row_factory = sqlite3.Row
        try:
            await conn.call(prepare, self.path, expected, schema=self.schema,
                            synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms,
                            identity=self.identity)
        except BaseException:
            await conn.close()
            raise
        return conn


# -- identity and integrity (sync: they run on a connection's own thread) --------------------
def id_path(path: str | Path) -> Path:
    """The identity file beside a database: ``<home>/lab.db.id`` holds its 32-hex-digit id."""
    path = Path(path)
    return path.with_name(path.name + ".id")


def expected_id(path: Path) -> str | None:
    """The id ``lab.db.id`` records (None for a new home); raises if ``lab.db`` is gone.

    Checked before connecting, since connecting would create an empty file in its place.
    """
    sidecar = id_path(path)
    try:
        text = sidecar.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    if not _ID.fullmatch(text):
        raise LabDBIdentityError(
            f"{sidecar} holds no lab id ({text[:40]!r}). If {path.name} is this home's "
            f"database, delete {sidecar.name} and it is written again from {path.name}.",
            path=path)
    if not path.exists():
        raise _identity_error(path, text, None, f"{path} is missing")
    if path.stat().st_size == 0 and not _wal_has_data(path):
        raise _identity_error(path, text, None, f"{path} is empty (0 bytes)")
    return text


def prepare(conn: sqlite3.Connection, path: Path, expected: str | None, *, schema: str = "",
            synchronous: Synchronous = "NORMAL", busy_timeout_ms: int = 5000,
            identity: bool = True) -> str | None:
    """WAL, pragmas, ``quick_check``, then identity and schema in one write transaction.

    Returns the database's id (None with ``identity=False``); writes ``lab.db.id`` when the
    home had none, so a later loss of ``lab.db`` is noticed.
    """
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if str(mode[0]).lower() != "wal":
        raise LabDBOperationalError(f"{path}: SQLite refused WAL mode (is it on a network "
                                    "file system?); put the workspace on a local disk.",
                                    path=path)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    _quick_check_once(conn, path)
    found = None
    conn.execute("BEGIN IMMEDIATE")
    try:
        if identity:
            found = _stored_id(conn)
            if expected is not None and found != expected:
                raise _identity_error(path, expected, found, _mismatch(conn, path, found))
            if found is None:
                found = uuid.uuid4().hex
                conn.execute(_META)
                conn.execute("INSERT INTO lab_meta (key, value) VALUES ('id', ?)", (found,))
        for statement in _statements(schema):
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if identity and expected is None:
        _write_id(id_path(path), found or "")
    return found


def check(path: str | Path) -> tuple[bool, str]:
    """(healthy, what ``PRAGMA quick_check`` and the identity check found), changing nothing."""
    path = Path(path)
    try:
        expected = expected_id(path)
        if not path.exists():
            return True, "not created yet"
        with contextlib.closing(_sync_connect(path, create=False)) as conn:
            problems = _quick_check(conn)
            if problems:
                return False, str(_damaged(path, problems))
            found = _stored_id(conn)
            if expected is not None and found != expected:
                return False, str(_identity_error(path, expected, found,
                                                  _mismatch(conn, path, found)))
    except LabDBError as exc:
        return False, str(exc)
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        return False, str(lab_db_error(exc, path))
    ident = f"id {found}" if found else "no id yet: the next lab to open it records one"
    return True, f"PRAGMA quick_check: ok; {ident}"


def reset(path: str | Path, *, dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Move ``lab.db`` (with its -wal/-shm) aside as ``lab.db.broken-<time>`` and start an
    empty lab with a new id; nothing is deleted. Returns the (from, to) moves."""
    path = Path(path)
    stamp, n = time.strftime("%Y%m%dT%H%M%S"), 0
    while True:
        aside = path.with_name(f"{path.name}.broken-{stamp}{f'-{n}' if n else ''}")
        if not any(Path(f"{aside}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
            break
        n += 1
    moves = [(Path(f"{path}{suffix}"), Path(f"{aside}{suffix}"))
             for suffix in ("", "-wal", "-shm") if Path(f"{path}{suffix}").exists()]
    if dry_run:
        return moves
    for src, dst in moves:  # SQLite finds a moved file's WAL by the same suffix
        os.replace(src, dst)
    id_path(path).unlink(missing_ok=True)
    _checked.pop(str(path.absolute()), None)
    with contextlib.closing(_sync_open(path)):
        pass
    return moves


def backup(path: str | Path, target: str | Path) -> Path:
    """A consistent copy of ``path`` at ``target`` through SQLite's online backup API.

    The copy keeps the lab's id, so copying it back over ``lab.db`` restores the home, and a
    new home adopts it. Writers on other connections go on meanwhile (WAL); ``target`` is
    written to a temporary file and renamed, so it is never half a database.
    """
    path, target = Path(path), Path(target)
    if target.absolute() == path.absolute():
        raise ValueError(f"backup({str(target)!r}): that is the database itself; give another "
                         "path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with contextlib.closing(_sync_open(path)) as src, \
                contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as dst:
            try:
                src.backup(dst)
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise lab_db_error(exc, path) from exc
        for stale in ("-wal", "-shm"):  # an older copy's WAL must not meet the new file
            Path(f"{target}{stale}").unlink(missing_ok=True)
        os.replace(tmp, target)
    finally:
        for leftover in ("", "-wal", "-shm"):
            Path(f"{tmp}{leftover}").unlink(missing_ok=True)
    return target


def lab_db_error(exc: BaseException, path: Path) -> LabDBError:
    """SQLite's error (or corrupt text's ``UnicodeDecodeError``) as one that names the file."""
    if isinstance(exc, LabDBError):
        return exc
    text = str(exc)
    code = str(getattr(exc, "sqlite_errorname", "") or "")
    if (isinstance(exc, UnicodeDecodeError) or code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
            or any(mark in text.lower() for mark in _CORRUPT)):
        return _damaged(path, [text])
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return LabDBBusy(f"{path}: {text}: another connection held its lock longer than "
                         "busy_timeout_ms; retry, or close the other lab using this home.",
                         path=path)
    if isinstance(exc, sqlite3.OperationalError):
        return LabDBOperationalError(f"{path}: {text}. If the file was changed outside the "
                                     "lab, `aillm-lab doctor` checks it.", path=path)
    return LabDBError(f"{path}: SQLite failed: {text}", path=path)


@functools.cache
def _connection_class() -> type[Any]:
    """An aiosqlite connection whose every call raises ``LabDBError`` naming the file; made
    on first use, so importing ``aillm_lab`` does not import aiosqlite."""
    import aiosqlite

    class LabConnection(aiosqlite.Connection):
        def __init__(self, path: Path, *, create: bool) -> None:
            super().__init__(functools.partial(_sync_connect, path, create=create), 64)
            self.lab_path = path

        async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            """``fn(sqlite3_connection, *args)`` on the connection's own thread."""
            return await self._execute(fn, self._conn, *args, **kwargs)

        async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            try:
                return await super()._execute(fn, *args, **kwargs)
            except LabDBError:
                raise
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise lab_db_error(exc, self.lab_path) from exc

    return LabConnection


def _sync_connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Autocommit; without ``create`` a missing file is an error rather than a new, empty db."""
    uri = f"{path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _reader_connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """``read_small``'s connection: read-only, and quick to give up on a lock (it blocks
    the loop while it waits; in WAL mode a reader rarely has to)."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {min(busy_timeout_ms, 250)}")
    return conn


def _sync_open(path: Path) -> sqlite3.Connection:
    """A checked connection for the sync doors (backup, reset); errors name the file."""
    expected = expected_id(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = _sync_connect(path, create=expected is None)
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        raise lab_db_error(exc, path) from exc
    try:
        prepare(conn, path, expected)
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        conn.close()
        if isinstance(exc, LabDBError):
            raise
        raise lab_db_error(exc, path) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _quick_check_once(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` (reads every page: ~0.2 s per 100 MB) once per version of the
    file per process, so damage is found at open, not by whichever call reaches it first."""
    key, stat = str(path.absolute()), path.stat()
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if _checked.get(key) == version:
        return
    problems = _quick_check(conn)
    if problems:
        raise _damaged(path, problems)
    _checked[key] = version


def _quick_check(conn: sqlite3.Connection) -> list[str]:
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
    return [] if rows == ["ok"] else rows


def _damaged(path: Path, problems: list[str]) -> LabDBError:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if id_path(path).exists():  # the lab's own database
        fix = f"{FIX}; `aillm-lab doctor` shows what PRAGMA quick_check finds"
    else:  # a file without the lab's identity, such as the record/replay store's cache.db
        fix = (f"move {path.name} and its -wal/-shm files aside (it starts again empty) or "
               "restore it from a copy")
    return LabDBError(f"{path} is damaged: {problems[0]}{more}. To recover, {fix}.",
                      path=path)


def _stored_id(conn: sqlite3.Connection) -> str | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lab_meta'"
                    ).fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM lab_meta WHERE key = 'id'").fetchone()
    return None if row is None else str(row[0])


def _mismatch(conn: sqlite3.Connection, path: Path, found: str | None) -> str:
    if found is not None:
        return f"{path} belongs to another lab (its id is {found})"
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return (f"{path} is not this home's database (it has no lab id)" if tables else
            f"{path} is empty (no tables)")


def _identity_error(path: Path, expected: str, found: str | None,
                    problem: str) -> LabDBIdentityError:
    return LabDBIdentityError(
        f"{problem}, but {id_path(path).name} says this home's database has id {expected}: "
        f"its memories, documents and audit log are not there. To recover, {FIX}.",
        path=path, expected_id=expected, found_id=found)


def _wal_has_data(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.exists() and wal.stat().st_size > 0


def _write_id(sidecar: Path, db_id: str) -> None:
    """Written to a temporary file, then renamed: never a half-written id."""
    tmp = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(db_id + "\n", encoding="ascii")
    os.replace(tmp, sidecar)


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
