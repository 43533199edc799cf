"""CallLog: a SQLite journal compacted into Parquet segments under <home>/calls, read with
DuckDB."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from aillm_lab.errors import ConfigError
from aillm_lab.llm import calllog_store as store
from aillm_lab.llm.calllog import CallLog, CallLogError, CallRecord
from aillm_lab.runtime import LoopRunner

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
FILE_NAME = re.compile(r"^calls-\d{12}-\d{12}\.parquet$")


@pytest.fixture
def calls(tmp_path: Path) -> Iterator[CallLog]:
    log = CallLog(tmp_path, compact_every=100)
    yield log
    log.close()


def record(model: str = "gpt-4o-mini", seconds: float = 0, **extra: Any) -> CallRecord:
    values: dict[str, Any] = {
        "run_id": "run-1", "time": T0 + timedelta(seconds=seconds), "provider": "openai",
        "model": model, "requested_model": model, "request_hash": "h" * 64,
        "input_tokens": 10, "output_tokens": 2, "latency_s": 0.5}
    return CallRecord(**(values | extra))


def test_append_queues_rows_that_reach_the_journal_and_compact_into_one_segment(
        calls: CallLog) -> None:
    for i in range(3):
        calls.append(record(seconds=i))
    assert len(calls.frame()) == 3  # committed before the read; no Parquet file yet
    assert calls.files() == [] and calls.pending == 0 and calls._journal.path.exists()
    path = calls.compact()
    assert path is not None and path.parent == calls.dir and FILE_NAME.match(path.name)
    assert path.name == "calls-000000000001-000000000003.parquet"
    assert calls.files() == [path] and len(calls.frame()) == 3  # and not counted twice


def test_the_flusher_commits_within_its_window_without_any_flush_call(calls: CallLog) -> None:
    calls.append(record())
    deadline = time.monotonic() + 5
    count = 0
    while time.monotonic() < deadline and count == 0:
        time.sleep(0.02)
        if calls._journal.path.exists():
            with contextlib.closing(sqlite3.connect(calls._journal.path)) as raw:
                try:
                    count = raw.execute("select count(*) from calls").fetchone()[0]
                except sqlite3.OperationalError:  # the table is being created
                    pass
    assert count == 1 and calls.pending == 0


def test_each_compaction_writes_a_new_segment_and_an_empty_one_writes_none(
        calls: CallLog) -> None:
    calls.append(record())
    first = calls.compact()
    calls.append(record(seconds=1))
    second = calls.compact()
    assert calls.compact() is None
    assert first is not None and second is not None
    assert first != second and calls.files() == [first, second]
    assert len(duckdb.sql(f"select * from read_parquet('{first}')").fetchall()) == 1


def test_a_full_journal_is_compacted_by_itself(tmp_path: Path) -> None:
    log = CallLog(tmp_path, compact_every=5)
    for i in range(12):
        log.append(record(seconds=i))
    deadline = time.monotonic() + 5
    while not log.files() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.files() and len(log.frame()) == 12
    log.close()


def test_many_small_compactions_are_merged_into_few_files(tmp_path: Path) -> None:
    log = CallLog(tmp_path)
    for batch in range(120):
        for i in range(5):
            log.append(record(run_id=f"r{batch}-{i}"))
        log.compact()
    files = log.files()
    assert len(files) < 2 * store.MERGE_FANOUT  # not 120
    assert all(FILE_NAME.match(p.name) for p in files)
    runs = list(log.frame()["run_id"])
    assert len(runs) == 600 and len(set(runs)) == 600
    log.close()


def test_appending_on_an_event_loop_leaves_the_disk_to_the_flusher_thread(
        tmp_path: Path, runner: LoopRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[str] = []
    original = store.Journal.append

    def spy(self: store.Journal, conn: Any, rows: list[Any]) -> None:
        writers.append(threading.current_thread().name)
        original(self, conn, rows)

    monkeypatch.setattr(store.Journal, "append", spy)
    log = CallLog(tmp_path)

    async def on_loop() -> None:
        log.append(record())
        await log.aappend(record(seconds=1))

    runner.run(on_loop())
    deadline = time.monotonic() + 5
    while not writers and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.run(log.aclose())
    assert writers and writers[0] == "aillm-calllog-flusher"
    assert runner.name not in writers  # the loop thread never waited on SQLite
    assert len(log.frame()) == 2 and log.pending == 0


def test_frame_is_sorted_by_time_with_typed_columns(calls: CallLog) -> None:
    calls.append(record(seconds=30, cost_usd=0.25, cache_hit=True))
    calls.append(record(seconds=10, status="error", error_type="RateLimited"))
    calls.compact()
    calls.append(record(seconds=20))
    df = calls.frame()
    assert list(df.columns) == list(CallRecord.model_fields)
    assert list(df["time"]) == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]
    assert str(df["time"].dtype) == "datetime64[us, UTC]"
    assert df["input_tokens"].dtype == "int64" and df["cache_hit"].dtype == bool
    assert df["cost_usd"].dtype == "float64" and pd.isna(df["cost_usd"][0])
    text = pd.Series(["x"]).dtype  # what pandas gives text columns here
    assert df["model"].dtype == text and df["error_type"].dtype == text
    assert list(df["error_type"].isna()) == [False, True, True]
    assert list(df.index) == [0, 1, 2]


def test_sql_sees_segment_and_journal_rows_as_one_calls_view(calls: CallLog) -> None:
    calls.append(record("a"))
    calls.append(record("b"))
    calls.compact()
    calls.append(record("a", seconds=1))
    df = calls.sql("select model, count(*) as n from calls group by model order by model")
    assert list(df.itertuples(index=False, name=None)) == [("a", 2), ("b", 1)]


def test_empty_log_gives_an_empty_frame_with_typed_columns(calls: CallLog) -> None:
    df = calls.frame()
    assert df.empty and list(df.columns) == list(CallRecord.model_fields)
    assert str(df["time"].dtype) == "datetime64[us, UTC]"
    assert df["attempts"].dtype == "int64" and df["stream"].dtype == bool
    assert df["latency_s"].dtype == "float64"
    assert df["model"].dtype == pd.Series(["x"]).dtype
    assert calls.sql("select count(*) as n from calls")["n"][0] == 0


def test_bad_sql_raises_value_error_naming_the_query(calls: CallLog) -> None:
    calls.append(record())
    with pytest.raises(ValueError, match="selekt model") as info:
        calls.sql("selekt model from calls")
    assert isinstance(info.value.__cause__, duckdb.Error)
    assert "request_hash" in str(info.value)  # says which columns exist
    with pytest.raises(ValueError, match="no_such_column"):
        calls.sql("select no_such_column from calls")
    assert len(calls.frame()) == 1  # the log still works afterwards


def test_a_failed_segment_write_leaves_no_partial_file_and_keeps_the_rows(
        calls: CallLog, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    calls.append(record())
    monkeypatch.setattr(store.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        calls.compact()
    assert not list(calls.dir.glob("*.parquet")) and not list(calls.dir.glob(".*.tmp"))
    assert len(calls.frame()) == 1  # still in the journal
    monkeypatch.undo()
    assert calls.compact() is not None and len(calls.frame()) == 1


def test_segments_appear_only_by_an_atomic_rename(calls: CallLog,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[str, str, list[Path]]] = []
    original = os.replace

    def spy(src: Any, dst: Any) -> None:
        renames.append((Path(src).name, Path(dst).name, list(calls.dir.glob("*.parquet"))))
        original(src, dst)

    monkeypatch.setattr(store.os, "replace", spy)
    calls.append(record())
    path = calls.compact()
    assert path is not None and len(renames) == 1
    src, dst, visible_before = renames[0]
    assert visible_before == []  # the temp file is invisible to *.parquet readers
    assert src.endswith(".tmp") and src.startswith(".") and dst == path.name
    assert [p.name for p in calls.dir.glob("*.parquet")] == [path.name]


def test_a_crash_between_segment_and_journal_delete_counts_each_row_once(
        calls: CallLog, monkeypatch: pytest.MonkeyPatch) -> None:
    original = store.Journal.delete_through

    def crash_after_the_segment(self: store.Journal, conn: Any, hi: int) -> None:
        if hi > 0:
            raise OSError("killed")
        original(self, conn, hi)

    for i in range(4):
        calls.append(record(run_id=f"r{i}"))
    monkeypatch.setattr(store.Journal, "delete_through", crash_after_the_segment)
    with pytest.raises(OSError, match="killed"):
        calls.compact()
    assert len(calls.files()) == 1 and calls._journal.path.exists()
    assert sorted(calls.frame()["run_id"]) == ["r0", "r1", "r2", "r3"]  # not 8
    monkeypatch.undo()
    calls.append(record(run_id="r4"))
    calls.compact()  # deletes the leftovers, then compacts r4 alone
    assert sorted(calls.frame()["run_id"]) == ["r0", "r1", "r2", "r3", "r4"]
    with contextlib.closing(sqlite3.connect(calls._journal.path)) as raw:
        assert raw.execute("select count(*) from calls").fetchone()[0] == 0


def test_segments_left_behind_by_a_crashed_merge_are_read_once_and_removed(
        calls: CallLog) -> None:
    for i in range(4):
        calls.append(record(run_id=f"r{i}"))
        calls.compact()
    parts = calls.files()
    merged = calls.dir / "calls-000000000001-000000000004.parquet"
    listed = ", ".join(f"'{p}'" for p in parts)
    duckdb.execute(f"copy (select * from read_parquet([{listed}])) to '{merged}'")
    assert sorted(calls.frame()["run_id"]) == ["r0", "r1", "r2", "r3"]
    assert calls.files() == [merged]
    calls.append(record(run_id="r4"))
    calls.compact()
    assert not any(p.exists() for p in parts)
    assert sorted(calls.frame()["run_id"]) == ["r0", "r1", "r2", "r3", "r4"]


def test_a_damaged_journal_is_a_typed_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "log.db").write_bytes(b"not a database at all " * 100)
    log = CallLog(tmp_path)
    with pytest.raises(CallLogError, match="log.db") as info:
        log.frame()
    assert info.value.path == tmp_path / "calls" / "log.db"
    assert "Move it aside" in str(info.value)
    log._journal.path.unlink()


def test_a_damaged_segment_is_a_typed_error_naming_the_file(calls: CallLog) -> None:
    calls.append(record())
    path = calls.compact()
    assert path is not None
    path.write_bytes(b"PAR1 garbage")
    with pytest.raises(CallLogError, match=path.name) as info:
        calls.frame()
    assert info.value.path == path


def test_files_from_before_the_journal_are_still_read(calls: CallLog) -> None:
    old = calls.dir / "calls-20250101T120000000000Z-0123456789abcdef0123456789abcdef.parquet"
    calls.dir.mkdir(parents=True)
    duckdb.execute("set TimeZone = 'UTC'")
    duckdb.execute(f"copy (select 'old-run' as run_id, timestamptz '2024-01-01 00:00:00+00' "
                   f"as time, 'p' as provider, 'm' as model, 'm' as requested_model, 'h' as "
                   f"request_hash) to '{old}'")
    calls.append(record(run_id="new-run"))
    assert list(calls.frame()["run_id"]) == ["old-run", "new-run"]
    assert calls.files()[0] == old


def test_close_compacts_and_a_new_log_reads_the_same_rows(tmp_path: Path) -> None:
    log = CallLog(tmp_path)
    log.append(record("a"))
    log.close()
    log.close()
    assert len(log.files()) == 1 and log.pending == 0
    again = CallLog(tmp_path)
    assert list(again.frame()["model"]) == ["a"]
    again.close()


def test_async_doors_run_duckdb_off_the_event_loop(calls: CallLog, runner: LoopRunner,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = CallLog.sql

    def spy(self: CallLog, query: str) -> pd.DataFrame:
        threads.append(threading.current_thread().name)
        return original(self, query)

    monkeypatch.setattr(CallLog, "sql", spy)
    calls.append(record("a"))
    assert runner.run(calls.aflush()) == 1
    assert list(runner.run(calls.aframe())["model"]) == ["a"]
    assert runner.run(calls.asql("select count(*) as n from calls"))["n"][0] == 1
    assert len(threads) == 2 and all(t.startswith("aillm-calllog") for t in threads)


def test_async_query_timeout_interrupts_duckdb(calls: CallLog, runner: LoopRunner) -> None:
    slow = "select sum(a.range * b.range) from range(100000000) a, range(1000) b"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="interrupted"):
        runner.run(calls.asql(slow, timeout=0.2))
    assert time.monotonic() - start < 5
    start = time.monotonic()
    calls.close()  # joins the workers, so the interrupted query must have stopped
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(("name", "value"), [("compact_every", 0), ("max_pending", True),
                                           ("commit_every_s", 2.0)])
def test_bad_settings_raise_config_error(tmp_path: Path, name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        CallLog(tmp_path, **{name: value})
    assert info.value.fields == (name,)


def test_rows_past_max_pending_are_dropped_and_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(self: store.Journal, conn: Any, rows: list[Any]) -> None:
        raise OSError("disk full")

    log = CallLog(tmp_path, max_pending=2)
    monkeypatch.setattr(store.Journal, "append", stuck)
    for i in range(5):
        log.append(record(seconds=i))
    assert log.pending == 2 and log.dropped == 3
    monkeypatch.undo()
    log.close()
    assert len(log.frame()) == 2


def test_no_key_reaches_the_parquet_files(calls: CallLog) -> None:
    fake_key = "sk-test-DO-NOT-LOG-91be04d7"
    request = {"model": "gpt-4o-mini", "headers": {"Authorization": f"Bearer {fake_key}"},
               "messages": [{"role": "user", "content": "hi"}]}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    calls.append(record(run_id="run-marker-5521", request_hash=digest, status="error",
                        error_type="AuthenticationError"))
    calls.flush()
    journal = b"".join(p.read_bytes() for p in calls.dir.iterdir() if p.is_file())
    path = calls.compact()
    assert path is not None
    data = journal + b"".join(p.read_bytes() for p in calls.dir.iterdir() if p.is_file())
    assert b"run-marker-5521" in data  # the grep can see what was written
    assert fake_key.encode() not in data and b"Bearer" not in data
    assert fake_key not in calls.frame().to_csv()


def test_a_forked_child_logs_its_own_rows_once_and_not_the_parents(calls: CallLog) -> None:
    calls.append(record(run_id="parent"))  # still queued when the child is forked
    pid = os.fork()
    if pid == 0:  # the child: no inherited flusher thread, no copy of "parent"
        code = 0
        try:
            calls.append(record(run_id="child"))
            calls.flush()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(calls.frame()["run_id"]) == ["child", "parent"]
