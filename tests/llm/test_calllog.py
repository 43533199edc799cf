"""CallLog: buffered Parquet batches under <home>/calls, read back with DuckDB."""

from __future__ import annotations

import hashlib
import json
import os
import re
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
from aillm_lab.llm import calllog as calllog_module
from aillm_lab.llm.calllog import CallLog, CallRecord
from aillm_lab.runtime import LoopRunner

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
FILE_NAME = re.compile(r"^calls-\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet$")


@pytest.fixture
def runner() -> Iterator[LoopRunner]:
    runner = LoopRunner(name="aillm-test-calllog")
    yield runner
    runner.close()


@pytest.fixture
def calls(tmp_path: Path) -> Iterator[CallLog]:
    log = CallLog(tmp_path, flush_every=100)
    yield log
    log.close()


def record(model: str = "gpt-4o-mini", seconds: float = 0, **extra: Any) -> CallRecord:
    values: dict[str, Any] = {
        "run_id": "run-1", "time": T0 + timedelta(seconds=seconds), "provider": "openai",
        "model": model, "requested_model": model, "request_hash": "h" * 64,
        "input_tokens": 10, "output_tokens": 2, "latency_s": 0.5}
    return CallRecord(**(values | extra))


def test_append_buffers_rows_until_flush_writes_a_parquet_file(calls: CallLog) -> None:
    for i in range(3):
        calls.append(record(seconds=i))
    assert calls.files() == [] and calls.pending == 3
    assert len(calls.frame()) == 3  # pending rows are visible before any flush
    path = calls.flush()
    assert path is not None and path.parent == calls.dir and FILE_NAME.match(path.name)
    assert calls.files() == [path] and calls.pending == 0
    assert len(calls.frame()) == 3  # and not counted twice after it


def test_each_flush_writes_a_new_file_and_an_empty_flush_writes_none(calls: CallLog) -> None:
    calls.append(record())
    first = calls.flush()
    calls.append(record(seconds=1))
    second = calls.flush()
    assert calls.flush() is None
    assert first != second and calls.files() == sorted([first, second])
    assert len(duckdb.sql(f"select * from read_parquet('{first}')").fetchall()) == 1


def test_a_full_buffer_flushes_by_itself(tmp_path: Path) -> None:
    log = CallLog(tmp_path, flush_every=2)
    for i in range(5):
        log.append(record(seconds=i))
    assert len(log.files()) == 2 and log.pending == 1
    log.close()


def test_appending_on_an_event_loop_flushes_in_a_worker_thread(
        tmp_path: Path, runner: LoopRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[str] = []
    original = CallLog._write

    def spy(self: CallLog, batch: list[CallRecord]) -> Path:
        writers.append(threading.current_thread().name)
        return original(self, batch)

    monkeypatch.setattr(CallLog, "_write", spy)
    log = CallLog(tmp_path, flush_every=2)

    async def on_loop() -> None:
        log.append(record())
        log.append(record(seconds=1))  # sync append: flush goes to a worker
        await log.aappend(record(seconds=2))
        await log.aappend(record(seconds=3))  # async append: flush is awaited

    runner.run(on_loop())
    runner.run(log.aclose())
    assert writers and writers[0].startswith("aillm-calllog")
    assert runner.name not in writers  # the loop thread never waited on Parquet
    assert len(log.frame()) == 4 and log.pending == 0


def test_frame_is_sorted_by_time_with_typed_columns(calls: CallLog) -> None:
    calls.append(record(seconds=30, cost_usd=0.25, cache_hit=True))
    calls.append(record(seconds=10, status="error", error_type="RateLimited"))
    calls.flush()
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


def test_sql_sees_flushed_and_pending_rows_as_one_calls_view(calls: CallLog) -> None:
    calls.append(record("a"))
    calls.append(record("b"))
    calls.flush()
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


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_rows(
        calls: CallLog, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    calls.append(record())
    monkeypatch.setattr(calllog_module.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        calls.flush()
    assert list(calls.dir.iterdir()) == [] and calls.pending == 1
    monkeypatch.undo()
    assert calls.flush() is not None and calls.pending == 0


def test_files_appear_only_by_an_atomic_rename(calls: CallLog,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[str, str, list[Path]]] = []
    original = os.replace

    def spy(src: Any, dst: Any) -> None:
        renames.append((Path(src).name, Path(dst).name, list(calls.dir.glob("*.parquet"))))
        original(src, dst)

    monkeypatch.setattr(calllog_module.os, "replace", spy)
    calls.append(record())
    path = calls.flush()
    assert path is not None and len(renames) == 1
    src, dst, visible_before = renames[0]
    assert visible_before == []  # the temp file is invisible to *.parquet readers
    assert src.endswith(".tmp") and dst == path.name
    assert [p.name for p in calls.dir.iterdir()] == [path.name]


def test_close_flushes_and_a_new_log_reads_the_same_rows(tmp_path: Path) -> None:
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
    assert runner.run(calls.aflush()) is not None
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


def test_bad_flush_size_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="flush_every") as info:
        CallLog(tmp_path, flush_every=0)
    assert info.value.fields == ("flush_every",)


def test_no_key_reaches_the_parquet_files(calls: CallLog) -> None:
    fake_key = "sk-test-DO-NOT-LOG-91be04d7"
    request = {"model": "gpt-4o-mini", "headers": {"Authorization": f"Bearer {fake_key}"},
               "messages": [{"role": "user", "content": "hi"}]}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    calls.append(record(run_id="run-marker-5521", request_hash=digest, status="error",
                        error_type="AuthenticationError"))
    path = calls.flush()
    assert path is not None
    data = b"".join(p.read_bytes() for p in calls.dir.iterdir())
    assert b"run-marker-5521" in data  # the grep can see what was written
    assert fake_key.encode() not in data and b"Bearer" not in data
    assert fake_key not in calls.frame().to_csv()
