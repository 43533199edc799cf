"""Per-call overhead of the LoopRunner doors against a plain ``await``, side by side.

Every sync facade (``al.chat``, ``lab.complete`` …) hops to the runner's loop thread through
``LoopRunner.run``; this measures what that hop costs on a coroutine that does nothing, so
the number is pure overhead. Variants, each timed per call with ``perf_counter_ns``:

* direct        ``await noop()`` inside one ``asyncio.run`` (the baseline)
* hop floor     bare ``run_coroutine_threadsafe(noop(), loop).result()``: the least any
                hop to another thread's loop costs on this machine, for reference
* run           ``runner.run(noop())`` from a plain thread (the sync facade)
* run+timeout   ``runner.run(noop(), timeout=60)``, the way ``Lab`` calls it
* arun (other)  ``await runner.arun(noop())`` from another loop (Jupyter's, Panel's)
* arun (own)    ``await runner.arun(noop())`` already on the runner loop (no hop)

Target: the sync facade adds <= 100 µs per call over a direct await. Printed, not asserted.

    .venv/bin/python benchmarks/bench_runtime.py [--calls 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

from aillm_lab.runtime import LoopRunner

NAME = "bench_runtime"
TARGET_US = 100.0


async def noop() -> None:
    return None


def stats(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {"median_us": statistics.median(us), "p10_us": us[len(us) // 10],
            "p90_us": us[len(us) * 9 // 10], "p99_us": us[len(us) * 99 // 100],
            "mean_us": statistics.fmean(us), "calls": len(us)}


def bench_direct(n: int) -> list[int]:
    async def main() -> list[int]:
        clock, out = time.perf_counter_ns, []
        for _ in range(n):
            t = clock()
            await noop()
            out.append(clock() - t)
        return out

    return asyncio.run(main())


def bench_run(runner: LoopRunner, n: int, timeout: float | None) -> list[int]:
    clock, out = time.perf_counter_ns, []
    for _ in range(n):
        t = clock()
        runner.run(noop(), timeout)
        out.append(clock() - t)
    return out


def bench_hop_floor(runner: LoopRunner, n: int) -> list[int]:
    loop, clock, out = runner.loop, time.perf_counter_ns, []
    for _ in range(n):
        t = clock()
        asyncio.run_coroutine_threadsafe(noop(), loop).result()
        out.append(clock() - t)
    return out


def bench_arun_other_loop(runner: LoopRunner, n: int) -> list[int]:
    async def main() -> list[int]:
        clock, out = time.perf_counter_ns, []
        for _ in range(n):
            t = clock()
            await runner.arun(noop())
            out.append(clock() - t)
        return out

    return asyncio.run(main())  # the caller's loop, not the runner's


def bench_arun_own_loop(runner: LoopRunner, n: int) -> list[int]:
    async def main() -> list[int]:
        clock, out = time.perf_counter_ns, []
        for _ in range(n):
            t = clock()
            await runner.arun(noop())
            out.append(clock() - t)
        return out

    return runner.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; each variant gets calls/rounds per round")
    args = parser.parse_args()

    runner = LoopRunner(name="bench-runner")
    runner.run(noop())  # start the thread outside the timings
    per_round = max(1, args.calls // args.rounds)
    variants = {
        "direct await (one asyncio.run)": lambda: bench_direct(per_round),
        "hop floor: bare run_coroutine_threadsafe": lambda: bench_hop_floor(runner, per_round),
        "runner.run (sync facade)": lambda: bench_run(runner, per_round, None),
        "runner.run(timeout=60) (as Lab calls it)": lambda: bench_run(runner, per_round, 60.0),
        "await runner.arun from another loop": lambda: bench_arun_other_loop(runner, per_round),
        "await runner.arun on the runner loop": lambda: bench_arun_own_loop(runner, per_round),
    }
    for fn in variants.values():  # warm-up: imports, code paths, allocator
        fn()
    samples: dict[str, list[int]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # interleave, so drift and noisy neighbours hit all alike
        for name, fn in variants.items():
            samples[name].extend(fn())
    runner.close()

    results = {name: stats(s) for name, s in samples.items()}
    direct = results["direct await (one asyncio.run)"]["median_us"]
    facade = results["runner.run (sync facade)"]["median_us"]
    overhead = facade - direct
    verdict = "PASS" if overhead <= TARGET_US else "FAIL"

    env = environment()
    lines = [f"# {NAME}: per-call overhead of the LoopRunner doors "
             f"({per_round * args.rounds} calls each, {args.rounds} interleaved rounds)",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'variant':44} {'median':>9} {'p10':>9} {'p90':>9} {'p99':>9} {'x direct':>9}"]
    for name, r in results.items():
        lines.append(f"{name:44} {r['median_us']:8.1f}µ {r['p10_us']:8.1f}µ "
                     f"{r['p90_us']:8.1f}µ {r['p99_us']:8.1f}µ "
                     f"{r['median_us'] / direct:8.0f}x")
    other = results["await runner.arun from another loop"]["median_us"]
    floor = results["hop floor: bare run_coroutine_threadsafe"]["median_us"]
    lines += ["",
              f"sync facade overhead (median run - median direct): {overhead:.1f} µs per call",
              f"  of which the bare thread hop (floor - direct): {floor - direct:.1f} µs, "
              f"LoopRunner.run against that bare hop: {facade - floor:+.1f} µs",
              f"ratio sync facade / direct await: {facade / direct:.0f}x",
              f"arun from another loop overhead: {other - direct:.1f} µs per call "
              f"({other / direct:.0f}x)",
              f"target: <= {TARGET_US:.0f} µs per call  ->  {verdict}"]
    save(NAME, "\n".join(lines), {"environment": env, "calls_per_variant": per_round * args.rounds,
         "results": results, "overhead_us": overhead, "ratio": facade / direct,
         "target_us": TARGET_US, "verdict": verdict})


if __name__ == "__main__":
    main()
