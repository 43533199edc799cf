"""Long-term memory: write throughput, search latency at 100k memories, and crash durability.

* writes/s   ``add`` committed one by one (synchronous NORMAL and FULL) against ``add_many``
             batches of 100 (NORMAL), each into a fresh ``lab.db``
* search     p50/p90/p99 of ``search`` (FTS5 BM25 + exact numpy cosine + scoring, k=5) over
             N synthetic memories (default 100,000: 12 words from a 5,000-word vocabulary,
             embedded with the deterministic HashingEmbedder at dim 384, the dimension of
             all-MiniLM-L6-v2; no model is loaded). Also ``add`` latency at that size, where
             the near-duplicate check compares against every live vector.
* durability a writer subprocess commits memories in a loop and prints each id after its
             commit returned; it is SIGKILLed at a random moment, K times (default 100).
             Every printed id must be stored and ``PRAGMA integrity_check`` must say ok.

Targets (printed, not asserted): single adds >= 200/s with NORMAL, search p50 <= 50 ms at
100k, durability 100 % with integrity ok after every kill.

    .venv/bin/python benchmarks/bench_memory.py [--memories 100000] [--kills 100]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

from aillm_lab.db import SqliteVersionWarning
from aillm_lab.memory.long_term import LongTermMemory
from aillm_lab.runtime import LoopRunner

NAME = "bench_memory"
DIM = 384
VOCAB = [f"w{n:04d}" for n in range(5000)]
TARGET_ADDS_PER_S, TARGET_SEARCH_P50_MS = 200.0, 50.0


def embedder() -> Any:
    from aillm_lab.rag.embeddings import HashingEmbedder

    return HashingEmbedder(dim=DIM)


def text(rng: random.Random, i: int) -> str:
    return f"memory {i} " + " ".join(rng.choices(VOCAB, k=12))


def open_memory(db: Path, runner: LoopRunner, sync: str = "NORMAL") -> LongTermMemory:
    return LongTermMemory(db_path=db, embedder=embedder(), runner=runner,
                          synchronous=sync)  # type: ignore[arg-type]


# -- writes ---------------------------------------------------------------------------------
def bench_writes(workdir: Path, runner: LoopRunner, n: int) -> dict[str, float]:
    rng = random.Random(1)
    out = {}
    for label, sync, batch in (("add, NORMAL", "NORMAL", 1), ("add, FULL", "FULL", 1),
                               ("add_many x100, NORMAL", "NORMAL", 100)):
        mem = open_memory(workdir / f"writes-{sync}-{batch}.db", runner, sync)
        mem.add("warm-up: open the database and load the embedder")
        texts = [text(rng, i) for i in range(n if batch == 1 else n * 10)]
        t = time.perf_counter()
        if batch == 1:
            for s in texts:
                mem.add(s)
        else:
            for start in range(0, len(texts), batch):
                mem.add_many(texts[start:start + batch])
        out[label] = len(texts) / (time.perf_counter() - t)
        mem.close()
    return out


# -- search ---------------------------------------------------------------------------------
def bench_search(workdir: Path, runner: LoopRunner, n: int, queries: int) -> dict[str, Any]:
    rng = random.Random(2)
    mem = open_memory(workdir / "search.db", runner)
    t = time.perf_counter()
    for start in range(0, n, 1000):
        mem.add_many([text(rng, i) for i in range(start, min(n, start + 1000))],
                     importance=[rng.random() for _ in range(min(1000, n - start))],
                     dedupe=False)
    fill_s = time.perf_counter() - t
    mem.search("warm up the vector cache")  # loads n vectors from SQLite once
    lat = []
    for _ in range(queries):
        q = " ".join(rng.choices(VOCAB, k=4))
        t = time.perf_counter()
        mem.search(q, k=5)
        lat.append((time.perf_counter() - t) * 1000)
    adds = []
    for i in range(50):
        t = time.perf_counter()
        mem.add(text(rng, n + i))
        adds.append((time.perf_counter() - t) * 1000)
    mem.close()
    return {"memories": n, "fill_s": fill_s, "fill_per_s": n / fill_s,
            "db_mb": (workdir / "search.db").stat().st_size / 1e6,
            "search_ms": pct(lat), "add_ms_at_size": pct(adds)}


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50": statistics.median(s), "p90": s[len(s) * 9 // 10],
            "p99": s[min(len(s) - 1, len(s) * 99 // 100)], "n": len(s)}


# -- durability -----------------------------------------------------------------------------
def bench_kills(workdir: Path, kills: int) -> dict[str, Any]:
    db = workdir / "kills.db"
    rng = random.Random(3)
    committed: set[str] = set()
    lost: set[str] = set()  # committed ids missing after any kill (they never come back)
    bad_integrity, bad_vectors, sizes = 0, 0, []
    for n in range(kills):
        out = workdir / "kill-out.txt"
        with out.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, __file__, "--writer", str(db), f"k{n}",
                                     "FULL" if n % 4 == 3 else "NORMAL"],
                                    stdout=fh, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while out.stat().st_size == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        content = out.read_text()
        ids = content.split("\n")[:-1] if content else []
        sizes.append(len(ids))
        committed.update(ids)
        with sqlite3.connect(db) as conn:
            stored = {r[0] for r in conn.execute("SELECT id FROM memories")}
            ok = conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            vectors = conn.execute("SELECT count(*) FROM memory_vectors").fetchone()[0]
        conn.close()
        bad_integrity += not ok
        bad_vectors += vectors != len(stored)  # rows and vectors commit together
        lost |= committed - stored
    return {"kills": kills, "committed": len(committed), "survived": len(committed - lost),
            "lost": len(lost), "integrity_failures": bad_integrity,
            "vector_mismatches": bad_vectors,
            "commits_per_run_median": statistics.median(sizes)}


def writer(db: str, tag: str, sync: str) -> None:
    """The killed process: print each id only after its commit returned."""
    warnings.simplefilter("ignore", SqliteVersionWarning)
    rng = random.Random(tag)
    mem = open_memory(Path(db), LoopRunner("bench-writer"), sync)
    i = 0
    while True:
        if i % 4 == 3:
            ids = [m.id for m in mem.add_many([text(rng, i + j) for j in range(3)])]
        else:
            ids = [mem.add(text(rng, i)).id]
        i += len(ids)
        sys.stdout.write("".join(f"{x}\n" for x in ids))
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--writes", type=int, default=1000, help="single adds per variant")
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--writer", nargs=3, metavar=("DB", "TAG", "SYNC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(*args.writer)
        return
    warnings.simplefilter("ignore", SqliteVersionWarning)
    load = os.getloadavg()[0]
    runner = LoopRunner(name="bench-memory")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        writes = bench_writes(work, runner, args.writes)
        search = bench_search(work, runner, args.memories, args.queries)
        runner.close()
        kills = bench_kills(work, args.kills)
        total_s = time.perf_counter() - t
    report(load, writes, search, kills, total_s, args)


def report(load: float, writes: dict[str, float], search: dict[str, Any],
           kills: dict[str, Any], total_s: float, args: argparse.Namespace) -> None:
    env = environment(load)
    s, a = search["search_ms"], search["add_ms_at_size"]
    single = writes["add, NORMAL"]
    checks = {
        f"single adds >= {TARGET_ADDS_PER_S:.0f}/s (NORMAL)": single >= TARGET_ADDS_PER_S,
        f"search p50 <= {TARGET_SEARCH_P50_MS:.0f} ms at {search['memories']:,}":
            s["p50"] <= TARGET_SEARCH_P50_MS,
        "durability: every committed memory survived, integrity ok":
            kills["lost"] == 0 and kills["integrity_failures"] == 0
            and kills["vector_mismatches"] == 0,
    }
    lines = [f"# {NAME}: long-term memory writes, search at scale, kill -9 durability",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'writes (fresh lab.db, HashingEmbedder dim 384)':48} {'per s':>10}"]
    lines += [f"{k:48} {v:10.0f}" for k, v in writes.items()]
    batched = writes["add_many x100, NORMAL"]
    lines += [f"batch of 100 vs single adds (NORMAL): {batched / single:.1f}x",
              f"single adds NORMAL vs FULL: {single / writes['add, FULL']:.1f}x", "",
              f"search over {search['memories']:,} memories (filled in {search['fill_s']:.0f} s, "
              f"{search['fill_per_s']:.0f}/s without dedupe; lab.db {search['db_mb']:.0f} MB)",
              f"  search k=5: p50 {s['p50']:.1f} ms  p90 {s['p90']:.1f} ms  p99 {s['p99']:.1f} ms"
              f"  ({s['n']} queries)",
              f"  add at that size (dedupe vs all live vectors): p50 {a['p50']:.1f} ms  "
              f"p90 {a['p90']:.1f} ms", "",
              f"durability: {kills['kills']} SIGKILLs of a writer (NORMAL, every 4th FULL): "
              f"{kills['survived']}/{kills['committed']} committed memories survived, "
              f"integrity failures {kills['integrity_failures']}, rows without their vector "
              f"{kills['vector_mismatches']}, median "
              f"{kills['commits_per_run_median']:.0f} commits per run", "",
              f"total {total_s:.0f} s"]
    lines += [f"target: {name}  ->  {'PASS' if ok else 'FAIL'}" for name, ok in checks.items()]
    save(NAME, "\n".join(lines), {"environment": env, "args": vars(args), "writes_per_s": writes,
         "search": search, "durability": kills, "total_s": total_s,
         "checks": {k: ("PASS" if v else "FAIL") for k, v in checks.items()}})


if __name__ == "__main__":
    main()
