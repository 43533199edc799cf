"""LongTermMemory's write batches: one ``BEGIN IMMEDIATE … COMMIT`` per call, all or nothing,
never read half-done, waiting out other writers up to ``busy_timeout_ms``; WAL pragmas,
periodic checkpoints and the SQLite version warning."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from _writer import WordHashEmbedder

from aillm_lab.db import LabDB, SqliteVersionWarning, wal_reset_bug
from aillm_lab.memory import _batch
from aillm_lab.memory.long_term import LongTermMemory, MemoryBusy, ScoringWeights
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mem(tmp_path: Path, runner: LoopRunner) -> LongTermMemory:
    return LongTermMemory(db_path=tmp_path / "lab.db", embedder=WordHashEmbedder(),
                          runner=runner)


def count(mem: LongTermMemory, table: str) -> int:
    with sqlite3.connect(mem.path) as conn:
        n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    conn.close()
    return int(n)


def pragmas(mem: LongTermMemory, runner: LoopRunner) -> tuple[Any, ...]:
    async def read() -> tuple[Any, ...]:
        conn = await mem._db.conn()
        return tuple([(await conn.execute_fetchall(f"PRAGMA {name}"))[0][0]
                      for name in ("synchronous", "journal_mode", "busy_timeout")])

    return runner.run(read())


def hold_write_lock(db: Path, seconds: float) -> tuple[threading.Thread, threading.Event,
                                                       threading.Event]:
    """Another connection takes the write lock and keeps it for ``seconds``."""
    locked, released = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        threading.Event().wait(seconds)
        released.set()
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(10)
    return thread, locked, released


# -- one transaction per write call -------------------------------------------------------
def test_every_write_call_is_one_begin_immediate_commit(mem: LongTermMemory,
                                                        runner: LoopRunner) -> None:
    first = mem.add("warm-up opens the database")
    statements: list[str] = []

    async def trace() -> None:
        await (await mem._db.conn()).set_trace_callback(statements.append)

    runner.run(trace())
    mem.add_many(["ten facts at once"] + [f"fact {i} about topic{i}" for i in range(9)])
    mem.add("one more fact")
    second = mem.update(first.id, "the warm-up opened the database")
    mem.forget(second.id)
    mem.purge(second.id)
    mem.search("topic3")  # reads take no write lock
    mem.get(mem.list()[0].id)
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE"] * 5
    assert sum(s == "COMMIT" for s in statements) == 5 and "ROLLBACK" not in statements
    vectors = [i for i, s in enumerate(statements) if s.startswith("INSERT OR REPLACE INTO "
                                                                   "memory_vectors")]
    commits = [i for i, s in enumerate(statements) if s == "COMMIT"]
    assert len(vectors) == 10 + 1 + 1 and vectors[9] < commits[0]  # the batch: one commit


def test_a_failed_write_batch_leaves_nothing_behind(mem: LongTermMemory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    kept = mem.add("a fact stored before the failure")
    real = _batch.apply_plan

    async def fail_after_writing(*args: Any) -> list[int]:
        await real(*args)  # rows, FTS entries and vectors are written, then it fails
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(_batch, "apply_plan", fail_after_writing)
    with pytest.raises(RuntimeError, match="disk trouble"):
        mem.add_many(["zebras graze at dawn", "zebras sleep standing up"])
    with pytest.raises(RuntimeError, match="disk trouble"):
        mem.add("a fact stored before the failure")  # a strengthen rolls back too
    monkeypatch.setattr(_batch, "apply_plan", real)
    assert (count(mem, "memories"), count(mem, "memory_vectors"), count(mem, "memory_fts")) == (
        1, 1, 1)
    assert mem.get(kept.id).strength == 1
    vectors_only = ScoringWeights(text_weight=0)
    assert all(h.memory.id == kept.id for h in mem.search("zebras graze", weights=vectors_only))
    again = mem.add("zebras graze at dawn")
    assert again.strength == 1 and count(mem, "memories") == 2


def test_readers_never_see_a_batch_before_it_commits(mem: LongTermMemory, runner: LoopRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    mem.add("giraffes eat acacia leaves")
    real = _batch.apply_plan
    written, go_on = asyncio.Event(), asyncio.Event()

    async def paused(*args: Any) -> list[int]:
        await real(*args)
        written.set()
        await go_on.wait()
        raise RuntimeError("rolled back")

    monkeypatch.setattr(_batch, "apply_plan", paused)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        writing = asyncio.create_task(mem.aadd("a phantom fact about zebras"))
        await written.wait()  # the row is inserted but not committed
        readers = [asyncio.create_task(c) for c in (mem.asearch("phantom zebras"),
                                                    mem.alist())]
        await asyncio.sleep(0.3)  # long enough for an unguarded read to run
        go_on.set()
        with pytest.raises(RuntimeError, match="rolled back"):
            await writing
        hits, listed = await asyncio.gather(*readers)
        after = await mem.alist()
        return ([h.memory.text for h in hits], [m.text for m in listed],
                [m.text for m in after])

    hits, listed, after = runner.run(scenario())
    assert "a phantom fact about zebras" not in hits + listed + after
    assert listed == after == ["giraffes eat acacia leaves"]


# -- other writers ------------------------------------------------------------------------
def test_a_write_waits_for_another_connections_lock(mem: LongTermMemory) -> None:
    mem.add("opened before the lock")
    thread, _, released = hold_write_lock(mem.path, 0.4)
    added = mem.add("written once the other writer committed")
    assert released.is_set()  # add returned only after the other transaction ended
    assert added.live and count(mem, "memories") == 2
    thread.join(10)


def test_a_lock_held_past_busy_timeout_raises_a_typed_error(tmp_path: Path,
                                                            runner: LoopRunner) -> None:
    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=WordHashEmbedder(),
                         runner=runner, busy_timeout_ms=50)
    first = mem.add("opened before the lock")
    thread, _, _ = hold_write_lock(mem.path, 1.5)
    with pytest.raises(MemoryBusy, match=r"busy_timeout_ms = 50") as info:
        mem.add("refused while locked")
    assert info.value.argument == "busy_timeout_ms" and isinstance(info.value, TimeoutError)
    assert mem.get(first.id).live  # reads still work: WAL readers never wait for writers
    thread.join(10)
    assert mem.add("accepted after the lock").live and count(mem, "memories") == 2
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        LongTermMemory(db_path=tmp_path / "lab.db", busy_timeout_ms=-1)


# -- pragmas, checkpoints, version warning ------------------------------------------------
def test_wal_and_synchronous_normal_are_the_default_and_full_is_an_option(
        tmp_path: Path, mem: LongTermMemory, runner: LoopRunner) -> None:
    mem.add("durable against a killed process")
    assert pragmas(mem, runner) == (1, "wal", 5000)  # 1 = NORMAL
    full = LongTermMemory(db_path=tmp_path / "full.db", embedder=WordHashEmbedder(),
                          runner=runner, synchronous="FULL", busy_timeout_ms=2000)
    full.add("durable against power loss")
    assert pragmas(full, runner) == (2, "wal", 2000)  # 2 = FULL


def test_wal_is_checkpointed_every_n_writes_and_every_t_seconds(
        tmp_path: Path, runner: LoopRunner) -> None:
    clock = Clock()
    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=WordHashEmbedder(),
                         runner=runner, clock=clock, checkpoint_every=3,
                         checkpoint_interval_s=100)
    calls: list[str] = []
    real = mem._db.checkpoint

    async def counting(mode: str = "PASSIVE") -> tuple[int, int, int]:
        calls.append(mode)
        return await real(mode)

    mem._db.checkpoint = counting  # type: ignore[method-assign]
    for i in range(7):
        mem.add(f"fact number {i} word{i}")
    assert calls == ["PASSIVE", "PASSIVE"]
    clock.now += 101
    mem.add("one more after a long pause")
    assert len(calls) == 3
    busy, frames, done = mem.checkpoint("TRUNCATE")
    assert busy == 0 and frames == done == 0  # TRUNCATE leaves an empty WAL
    assert (tmp_path / "lab.db-wal").stat().st_size == 0


@pytest.mark.skipif(not wal_reset_bug(), reason="this SQLite has the WAL-reset fix")
def test_sqlite_version_warning_is_raised_at_open(tmp_path: Path, runner: LoopRunner,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LabDB, "_warned", False)
    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=WordHashEmbedder(),
                         runner=runner)
    with pytest.warns(SqliteVersionWarning, match="WAL-reset bug"):
        mem.add("first write opens the database")
