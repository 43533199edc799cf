"""A memory whose commit returned survives SIGKILL of the writing process.

The writer (``_writer.py``) prints each id only after ``add``/``add_many`` returned, i.e.
after COMMIT. ``synchronous=NORMAL`` in WAL mode does not fsync on commit, but the WAL
frames are already in the OS page cache when COMMIT returns, and a killed process cannot
take those back; only a power loss or kernel crash could (that is what ``FULL`` is for).
So both settings must keep every printed id here; some kills use each.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _writer import WordHashEmbedder

from aillm_lab.memory.long_term import LongTermMemory
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

WRITER = Path(__file__).with_name("_writer.py")
ROOT = Path(__file__).resolve().parents[2]
KILLS = 20


def start_writer(db: Path, tag: str, sync: str, out: Path, err: Path) -> subprocess.Popen:
    with out.open("wb") as fh, err.open("wb") as eh:
        return subprocess.Popen([sys.executable, str(WRITER), str(db), tag, sync],
                                stdout=fh, stderr=eh, cwd=ROOT)


def wait_for_first_commit(proc: subprocess.Popen, out: Path, err: Path) -> None:
    deadline = time.monotonic() + 30
    while out.stat().st_size == 0:
        if proc.poll() is not None:
            pytest.fail(f"writer exited early ({proc.returncode}): {err.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("writer committed nothing within 30 s")
        time.sleep(0.01)


def printed_ids(out: Path) -> list[str]:
    """Complete lines only: the last line may be cut if the kill hit mid-write."""
    text = out.read_text()
    return text.split("\n")[:-1] if text else []


def check_database(db: Path, committed: set[str]) -> int:
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM memories")}
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO memory_fts (memory_fts) VALUES ('integrity-check')")
        vectors = conn.execute("SELECT count(*) FROM memory_vectors").fetchone()[0]
    conn.close()
    lost = committed - stored
    assert not lost, f"{len(lost)} committed memories lost, e.g. {sorted(lost)[:3]}"
    assert vectors == len(stored)  # vectors are written in the same transaction
    return len(stored)


def test_killed_writer_never_loses_a_committed_memory(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    seed = int(os.environ.get("MEMORY_KILL_SEED", "20260"))
    rng = random.Random(seed)
    committed: set[str] = set()
    kills_after_commits = 0
    for n in range(KILLS):
        out, err = tmp_path / f"out{n}.txt", tmp_path / f"err{n}.txt"
        proc = start_writer(db, f"k{n}", "FULL" if n % 4 == 3 else "NORMAL", out, err)
        wait_for_first_commit(proc, out, err)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL, err.read_text()[-2000:]
        ids = printed_ids(out)
        kills_after_commits += bool(ids)
        committed.update(ids)
        check_database(db, committed)
    assert kills_after_commits == KILLS and len(committed) > KILLS  # the loop really ran

    runner = LoopRunner(name="durability-check")
    try:
        mem = LongTermMemory(db_path=db, embedder=WordHashEmbedder(), runner=runner)
        some = sorted(committed)[0]
        got = mem.get(some)
        assert mem.search(got.text, k=1)[0].memory.id == some  # the store still works
        assert committed <= {m.id for m in mem.list()}
    finally:
        runner.close()
