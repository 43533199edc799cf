"""The audit table: group commits, durable records, no row lost to a failed commit, frames."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from aillm_lab.db import _statements
from aillm_lab.runtime import LoopRunner
from aillm_lab.tools.audit import _SCHEMA, MAX_AUDIT_STR, AuditEntry, AuditLog

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def _entry(i: int = 0, **kw: object) -> AuditEntry:
    values: dict[str, object] = {"tool": "read_file", "decision": "allowed",
                                 "arguments": {"path": f"f{i}.txt"}, "call_id": f"c{i}"}
    values.update(kw)
    return AuditEntry(**values)  # type: ignore[arg-type]


def _stored(path: Path) -> list[str]:
    """call ids in the file as another connection sees them (what survives a crash)."""
    with sqlite3.connect(path) as other:
        try:
            ids = [r[0] for r in other.execute("SELECT call_id FROM audit ORDER BY id")]
        except sqlite3.OperationalError:  # not created yet
            ids = []
    other.close()
    return ids


def test_a_recorded_row_is_committed_when_record_returns(tmp_path: Path) -> None:
    """``durable=True`` (what the guard asks for write, execute and network tools)."""
    path = tmp_path / "lab.db"

    async def main() -> list[tuple[object, ...]]:
        log = AuditLog(path)
        await log.record(_entry(1, risk="write", decision="refused", rule="path.outside",
                                duration_ms=1.5, result_chars=42, truncated=True,
                                injection=["fake_role_tag", "hidden_text"], error="no"),
                         durable=True)
        # a second, independent connection sees it before the log is closed
        with sqlite3.connect(path) as other:
            rows = other.execute("SELECT tool, call_id, arguments, risk, decision, rule, "
                                 "duration_ms, result_chars, truncated, injection, error "
                                 "FROM audit").fetchall()
        await log.aclose()
        return rows

    rows = asyncio.run(main())
    assert rows == [("read_file", "c1", '{"path": "f1.txt"}', "write", "refused", "path.outside",
                     1.5, 42, 1, "fake_role_tag,hidden_text", "no")]


def test_concurrent_records_all_land_and_share_transactions(tmp_path: Path) -> None:
    transactions = 0

    async def main() -> tuple[int, list[str]]:
        log = AuditLog(tmp_path / "lab.db")
        write = log.db.executemany

        async def counting(sql: str, rows: object) -> None:
            nonlocal transactions
            transactions += 1
            await write(sql, rows)  # type: ignore[arg-type]

        log.db.executemany = counting  # type: ignore[method-assign]
        await asyncio.gather(*(log.record(_entry(i)) for i in range(200)))
        df = await log.frame()
        await log.aclose()
        return len(df), list(df["call_id"])

    n, ids = asyncio.run(main())
    assert n == 200 and sorted(ids) == sorted(f"c{i}" for i in range(200))
    assert 1 <= transactions < 200


def test_frame_is_oldest_first_and_limit_keeps_the_latest(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        log = AuditLog(tmp_path / "lab.db")
        for i in range(5):
            await log.record(_entry(i, tool="a" if i % 2 else "b"))
        full = await log.frame()
        last = await log.frame(limit=2)
        only_a = await log.frame(tool="a")
        await log.aclose()
        return list(full["call_id"]), list(last["call_id"]), list(only_a["call_id"])

    full, last, only_a = asyncio.run(main())
    assert full == ["c0", "c1", "c2", "c3", "c4"]
    assert last == ["c3", "c4"]
    assert only_a == ["c1", "c3"]


def test_frame_parses_types(tmp_path: Path) -> None:
    async def main():  # type: ignore[no-untyped-def]
        log = AuditLog(tmp_path / "lab.db")
        await log.record(_entry(0, arguments={"path": "x", "n": [1, 2]}, truncated=True))
        df = await log.frame()
        await log.aclose()
        return df

    df = asyncio.run(main())
    assert df.loc[0, "arguments"] == {"path": "x", "n": [1, 2]}
    assert bool(df.loc[0, "truncated"]) is True
    assert str(df["ts"].dt.tz) == "UTC"
    assert list(df.columns) == ["id", "ts", "tool", "call_id", "arguments", "risk", "decision",
                                "rule", "duration_ms", "result_chars", "truncated", "injection",
                                "error"]


def test_rows_survive_reopening_the_database(tmp_path: Path) -> None:
    async def write() -> None:
        log = AuditLog(tmp_path / "lab.db")
        await log.record_many([_entry(i) for i in range(3)])
        await log.aclose()

    async def read() -> int:
        log = AuditLog(tmp_path / "lab.db")
        n = await log.count()
        await log.aclose()
        return n

    asyncio.run(write())
    assert asyncio.run(read()) == 3


def test_long_argument_strings_are_clipped_in_the_log(tmp_path: Path) -> None:
    big = "x" * (MAX_AUDIT_STR * 5)

    async def main() -> dict[str, str]:
        log = AuditLog(tmp_path / "lab.db")
        await log.record(_entry(0, arguments={"content": big, "path": "a"}))
        row = (await log.frame()).loc[0, "arguments"]
        stored = await log.db.fetchone("SELECT arguments FROM audit")
        assert stored is not None and json.loads(stored[0]) == row
        await log.aclose()
        return row

    stored = asyncio.run(main())
    assert stored["path"] == "a"
    assert len(stored["content"]) < MAX_AUDIT_STR + 40
    assert stored["content"].endswith(f"[+{MAX_AUDIT_STR * 4} chars]")


def test_a_bad_decision_is_rejected() -> None:
    with pytest.raises(ValueError, match="decision"):
        AuditEntry(tool="t", decision="maybe")  # type: ignore[arg-type]


def test_a_bad_frame_limit_names_the_argument(tmp_path: Path) -> None:
    async def main() -> None:
        log = AuditLog(tmp_path / "lab.db")
        try:
            await log.frame(limit=-1)
        finally:
            await log.aclose()

    with pytest.raises(ValueError, match="limit"):
        asyncio.run(main())


def test_a_failed_write_reaches_every_waiting_caller(tmp_path: Path) -> None:
    async def main() -> list[object]:
        log = AuditLog(tmp_path / "lab.db")
        await log.record(_entry(0), durable=True)
        await log.db.fetchall("DROP TABLE audit")  # break the table under the log
        results = await asyncio.gather(log.record(_entry(1), durable=True),
                                       log.record(_entry(2), durable=True),
                                       return_exceptions=True)
        await _recreate(log)
        await log.aclose()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)


async def _recreate(log: AuditLog) -> None:
    conn = await log.db.conn()
    for statement in _statements(_SCHEMA):
        await conn.execute(statement)


# -- group commit ---------------------------------------------------------------------------
def test_record_returns_before_the_commit_which_follows_within_the_interval(
        tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> tuple[list[str], int, float]:
        log = AuditLog(path, commit_every_s=0.1)
        await log.record(_entry(0), durable=True)  # the file and table exist
        await log.record(_entry(1))
        await log.record(_entry(2))
        before, pending = _stored(path), log.pending  # no await since: nothing committed yet
        start = time.monotonic()
        while _stored(path) != ["c0", "c1", "c2"] and time.monotonic() - start < 5:  # noqa: ASYNC110 - polls another connection
            await asyncio.sleep(0.005)
        waited = time.monotonic() - start
        await log.aclose()
        return before, pending, waited

    before, pending, waited = asyncio.run(main())
    assert before == ["c0"] and pending == 2
    assert 0.05 <= waited < 1.0


def test_frame_and_count_see_every_row_recorded_before_them(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, list[str]]:
        log = AuditLog(tmp_path / "lab.db", commit_every_s=0.5)
        for i in range(5):  # the first waits for its commit (it opens lab.db), the rest not
            await log.record(_entry(i))
        pending = log.pending
        n = await log.count()
        await log.record(_entry(5))
        ids = list((await log.frame())["call_id"])
        await log.aclose()
        return pending, n, ids

    pending, n, ids = asyncio.run(main())
    assert pending == 4 and n == 5
    assert ids == [f"c{i}" for i in range(6)]


def test_a_durable_record_commits_the_buffered_rows_with_its_own_in_one_transaction(
        tmp_path: Path) -> None:
    path = tmp_path / "lab.db"
    transactions = 0

    async def main() -> list[str]:
        log = AuditLog(path, commit_every_s=0.5)
        await log.record(_entry(0), durable=True)
        write = log.db.executemany

        async def counting(sql: str, rows: object) -> None:
            nonlocal transactions
            transactions += 1
            await write(sql, rows)  # type: ignore[arg-type]

        log.db.executemany = counting  # type: ignore[method-assign]
        for i in range(1, 5):
            await log.record(_entry(i))
        await log.record(_entry(5, risk="write"), durable=True)
        seen = _stored(path)
        await log.aclose()
        return seen

    assert asyncio.run(main()) == [f"c{i}" for i in range(6)]
    assert transactions == 1


def test_a_full_batch_is_committed_without_waiting_for_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> list[str]:
        log = AuditLog(path, commit_every_s=0.5, max_batch=10)
        await log.record(_entry(0), durable=True)
        await log.record_many([_entry(i) for i in range(1, 11)])
        start = time.monotonic()
        while len(_stored(path)) < 11 and time.monotonic() - start < 0.4:  # noqa: ASYNC110 - polls another connection
            await asyncio.sleep(0.005)
        seen = _stored(path)
        await log.aclose()
        return seen

    assert asyncio.run(main()) == [f"c{i}" for i in range(11)]


def test_a_failed_commit_loses_no_row_and_the_next_call_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The rows of a failed group commit are kept and retried; meanwhile every record
    waits for its own commit, so the failure surfaces on the next call, not never."""
    async def main() -> tuple[object, list[str]]:
        log = AuditLog(tmp_path / "lab.db", commit_every_s=0.05)
        await log.record(_entry(0), durable=True)
        await log.db.fetchall("DROP TABLE audit")
        await log.record(_entry(1))  # returns: its commit is still to come
        await asyncio.sleep(0.3)  # the group commit fails (and is retried) meanwhile
        assert log.pending == 1
        try:
            await log.record(_entry(2))  # not durable, but the log is failing: it waits
        except sqlite3.OperationalError as exc:
            raised: object = exc
        else:
            raised = None
        await _recreate(log)
        await log.record(_entry(3))  # the disk works again: everything kept goes in
        ids = list((await log.frame())["call_id"])
        await log.aclose()
        return raised, ids

    with caplog.at_level(logging.WARNING, logger="aillm_lab.tools.audit"):
        raised, ids = asyncio.run(main())
    assert "no such table: audit" in str(raised)
    assert ids == ["c1", "c2", "c3"]  # c0 went with the dropped table
    assert "kept and retried" in caplog.text and "work again" in caplog.text


def test_close_logs_rows_it_cannot_write_still_closes_and_keeps_them_for_the_next_use(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> list[str]:
        log = AuditLog(tmp_path / "lab.db")
        await log.record(_entry(0))
        await log.db.fetchall("DROP TABLE audit")
        await log.record(_entry(1))
        await log.record(_entry(2))
        await log.aclose()  # does not raise: closing must release the connection
        await _recreate(log)  # reopens: the kept rows are written on the next use
        ids = list((await log.frame())["call_id"])
        await log.aclose()
        return ids

    with caplog.at_level(logging.ERROR, logger="aillm_lab.tools.audit"):
        ids = asyncio.run(main())
    assert "2 rows are not written" in caplog.text
    assert ids == ["c1", "c2"]


def test_the_first_row_is_committed_on_return_so_a_lost_database_fails_the_first_call(
        tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> tuple[list[str], list[str]]:
        log = AuditLog(path, commit_every_s=0.5)
        await log.record(_entry(0))
        await log.record(_entry(1))
        seen = _stored(path)
        await log.aclose()
        await log.record(_entry(2))  # reopened: its first row waits again
        reopened = _stored(path)
        await log.aclose()
        return seen, reopened

    seen, reopened = asyncio.run(main())
    assert seen == ["c0"] and reopened == ["c0", "c1", "c2"]


def test_closing_the_runner_commits_the_rows_of_a_log_never_closed(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"
    runner = LoopRunner(name="audit-test")
    log = AuditLog(path, runner=runner, commit_every_s=0.5)
    runner.run(log.record(_entry(0), durable=True))

    async def burst() -> None:
        for i in range(1, 4):
            await log.record(_entry(i))

    runner.run(burst())
    assert _stored(path) == ["c0"]
    runner.close()  # what atexit does
    assert _stored(path) == ["c0", "c1", "c2", "c3"]


def test_a_commit_interval_over_half_a_second_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit_every_s"):
        AuditLog(tmp_path / "lab.db", commit_every_s=2.0)
