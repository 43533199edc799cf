"""The audit log through SIGKILL: a call that returned a second before the kill has its row.

Rows of read calls are group-committed (within 0.1 s), so this is the test that says the
buffer is not a hole: writers (``_audit_writer.py``) make audited calls as fast as they can
and print each call id once its result was returned; each is SIGKILLed at a random moment.
Every call printed more than a second before its writer's kill must have its row.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks writers to kill")

WRITER = Path(__file__).with_name("_audit_writer.py")
ROOT = Path(__file__).resolve().parents[2]
WAVES, PER_WAVE = 4, 5  # 20 kills; a wave's writers run side by side
Spawn = Callable[..., int]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(home, tag, out, *flags)`` -> pid of a new writer, forked by a warm server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILLM_")}
    server = subprocess.Popen([sys.executable, str(WRITER), "--serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    pids: list[int] = []

    def start(home: Path, tag: str, out: Path, *flags: str) -> int:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(" ".join([str(home), tag, str(out), *flags]) + "\n")
        server.stdin.flush()
        pids.append(int(server.stdout.readline()))
        return pids[-1]

    try:
        yield start
    finally:
        for pid in pids:  # a failed test must leave no writer running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.kill()
        server.communicate()


def returned(out: Path) -> dict[str, float]:
    """call id -> wall time its result was returned; a line cut by the kill is skipped."""
    lines = out.read_text().split("\n")[:-1] if out.exists() else []
    return {call_id: float(t) for call_id, t in (line.split() for line in lines)}


def wait_for_first_call(pid: int, out: Path) -> float:
    deadline = time.monotonic() + 60
    while not out.exists() or out.stat().st_size == 0:
        if not alive(pid):
            pytest.fail(f"writer {pid} died: {Path(f'{out}.err').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail("the writer returned no call within 60 s")
        time.sleep(0.005)
    return time.time()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(pid: int) -> float:
    """SIGKILL; returns the moment, once the process is gone."""
    at = time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert not alive(pid), f"writer {pid} survived SIGKILL"
    return at


def stored(home: Path) -> list[str]:
    if not (home / "lab.db").exists():
        return []
    with contextlib.closing(sqlite3.connect(home / "lab.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [row[0] for row in conn.execute("SELECT call_id FROM audit")]


def test_sigkill_at_random_moments_loses_no_audit_row_of_a_call_returned_a_second_before(
        tmp_path: Path, spawn: Spawn) -> None:
    """20 kills, 0.2-2.2 s after a writer's first call; each home is reused by a writer of
    every wave, so a killed writer's WAL is recovered by the next. Writes are durable on
    return; reads are group-committed, and the writers rest between bursts, so many kills
    find rows that only the commit timer could have written (slow it down and this fails)."""
    rng = random.Random(int(os.environ.get("AUDIT_KILL_SEED", "116")))
    homes = [tmp_path / f"home{k}" for k in range(PER_WAVE)]
    calls: dict[str, tuple[float, float]] = {}  # call id -> (returned at, killed at)
    for wave in range(WAVES):
        outs = [tmp_path / f"w{wave}h{k}.out" for k in range(PER_WAVE)]
        pids = [spawn(home, f"w{wave}h{k}", out) for k, (home, out)
                in enumerate(zip(homes, outs, strict=True))]
        kills = sorted((wait_for_first_call(pid, out) + rng.uniform(0.2, 2.2), k)
                       for k, (pid, out) in enumerate(zip(pids, outs, strict=True)))
        for at, k in kills:
            time.sleep(max(0.0, at - time.time()))
            killed_at = kill(pids[k])
            calls |= {c: (t, killed_at) for c, t in returned(outs[k]).items()}
    must_have = {c for c, (t, killed_at) in calls.items() if t < killed_at - 1.0}
    logged = [call_id for home in homes for call_id in stored(home)]
    assert len(must_have) > 100, "the writers made too few calls to show anything"
    missing = must_have - set(logged)
    assert not missing, f"{len(missing)} returned calls have no audit row: {sorted(missing)[:5]}"
    assert len(logged) == len(set(logged)), "a call was audited twice"


def test_the_kill_test_notices_rows_that_never_reach_the_disk(tmp_path: Path,
                                                              spawn: Spawn) -> None:
    """The same check against a writer whose group commit is switched off must fail: so
    the test above can see a lost row, and its passing means something."""
    home, out = tmp_path / "home", tmp_path / "never.out"
    pid = spawn(home, "never", out, "--never-commit")
    first = wait_for_first_call(pid, out)
    time.sleep(max(0.0, first + 1.5 - time.time()))
    killed_at = kill(pid)
    must_have = {c for c, t in returned(out).items() if t < killed_at - 1.0}
    assert must_have and must_have - set(stored(home))
