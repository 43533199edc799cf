"""The audit table: rows survive reopening, concurrent records share commits, frames read."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from aillm_lab.tools.audit import MAX_AUDIT_STR, AuditEntry, AuditLog

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def _entry(i: int = 0, **kw: object) -> AuditEntry:
    values: dict[str, object] = {"tool": "read_file", "decision": "allowed",
                                 "arguments": {"path": f"f{i}.txt"}, "call_id": f"c{i}"}
    values.update(kw)
    return AuditEntry(**values)  # type: ignore[arg-type]


def test_a_recorded_row_is_committed_when_record_returns(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> list[tuple[object, ...]]:
        log = AuditLog(path)
        await log.record(_entry(1, risk="write", decision="refused", rule="path.outside",
                                duration_ms=1.5, result_chars=42, truncated=True,
                                injection=["fake_role_tag", "hidden_text"], error="no"))
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

    async def main() -> str:
        log = AuditLog(tmp_path / "lab.db")
        await log.record(_entry(0, arguments={"content": big, "path": "a"}))
        row = await log.db.fetchone("SELECT arguments FROM audit")
        await log.aclose()
        assert row is not None
        return str(row[0])

    stored = json.loads(asyncio.run(main()))
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
        await log.record(_entry(0))
        await log.db.fetchall("DROP TABLE audit")  # break the table under the log
        results = await asyncio.gather(log.record(_entry(1)), log.record(_entry(2)),
                                       return_exceptions=True)
        await log.aclose()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
