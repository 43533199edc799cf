"""What the WorkflowAgent costs per step, on a 1,000-step DAG of no-op steps, side by side.

Each step is a ``call:`` of an async function that does nothing, so the time is the
scheduler's: rendering the step's templates, hashing its inputs, starting its task, waking
what needs it, and, with checkpoints, one ``BEGIN IMMEDIATE … COMMIT`` to ``lab.db`` per
step. Two shapes:

* chain  step i refers to step i-1's output (``{{ steps.s<i-1>.output }}``): one at a time
* wide   1,000 independent steps, ``max_concurrency`` 64

and four variants of each, interleaved over rounds (median per round):

* direct       the same 1,000 no-op coroutines awaited in a plain loop (the floor)
* no ckpt      ``WorkflowAgent(wf, checkpoint=False)``
* ckpt         ``WorkflowAgent(wf)``, a new run_id each round: every step checkpointed
* resume       the ckpt run's run_id again: every step restored from its checkpoint

Scheduling overhead per step = (no ckpt - direct) / steps; checkpoint cost per step =
(ckpt - no ckpt) / steps. Targets: scheduling <= 250 µs a step, a checkpoint <= 2 ms a
step (WAL, synchronous=NORMAL). Printed, not asserted.

    .venv/bin/python benchmarks/bench_workflow.py [--steps 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

import aillm_lab as al

NAME = "bench_workflow"
TARGET_SCHEDULING_US = 250.0
TARGET_CHECKPOINT_US = 2000.0


async def noop(x: object = None) -> None:
    return None


def chain(n: int) -> al.Workflow:
    steps = [{"id": "s0", "call": noop, "inline": True}]
    steps += [{"id": f"s{i}", "call": noop, "args": {"x": f"{{{{ steps.s{i - 1}.output }}}}"}}
              for i in range(1, n)]
    return al.Workflow(name="chain", steps=steps)


def wide(n: int) -> al.Workflow:
    return al.Workflow(name="wide", max_concurrency=64,
                       steps=[{"id": f"s{i}", "call": noop} for i in range(n)])


def direct(lab: al.Lab, n: int, shape: str) -> float:
    async def body() -> None:
        if shape == "chain":
            for _ in range(n):
                await noop()
        else:
            await asyncio.gather(*(noop() for _ in range(n)))

    started = time.perf_counter()
    lab.runner.run(body())
    return time.perf_counter() - started


def timed(agent: al.WorkflowAgent, run_id: str | None, expect: str) -> float:
    started = time.perf_counter()
    run = agent.run(run_id=run_id)
    elapsed = time.perf_counter() - started
    assert run.status == "completed", run.error
    kinds = {s.status for s in run.steps}
    assert kinds == {expect}, kinds
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    n = args.steps
    home = Path(tempfile.mkdtemp(prefix="bench-workflow-"))
    lab = al.Lab(al.LabSettings(home=home))
    chain(2)  # imports the agents package, so build_s times validation only
    figures: dict[str, dict[str, object]] = {}
    try:
        for shape, make in (("chain", chain), ("wide", wide)):
            started = time.perf_counter()
            wf = make(n)
            build = time.perf_counter() - started
            plain = al.WorkflowAgent(wf, lab=lab, checkpoint=False)
            durable = al.WorkflowAgent(wf, lab=lab)
            timed(plain, None, "completed")  # warm: imports, the lab.db connection
            timed(durable, f"{shape}-warm", "completed")
            samples: dict[str, list[float]] = {k: [] for k in
                                               ("direct", "no ckpt", "ckpt", "resume")}
            for r in range(args.rounds):
                samples["direct"].append(direct(lab, n, shape))
                samples["no ckpt"].append(timed(plain, None, "completed"))
                samples["ckpt"].append(timed(durable, f"{shape}-{r}", "completed"))
                samples["resume"].append(timed(durable, f"{shape}-{r}", "restored"))
            med = {k: statistics.median(v) for k, v in samples.items()}
            figures[shape] = {
                "steps": n, "build_s": build, "median_s": med,
                "samples_s": samples,
                "scheduling_us_per_step": (med["no ckpt"] - med["direct"]) / n * 1e6,
                "checkpoint_us_per_step": (med["ckpt"] - med["no ckpt"]) / n * 1e6,
                "restore_us_per_step": (med["resume"] - med["direct"]) / n * 1e6}
            durable.close()
            plain.close()
    finally:
        lab.close()
    save(NAME, report(figures, n, args.rounds, load),
         {"environment": environment(load), "steps": n, "rounds": args.rounds,
          "targets": {"scheduling_us_per_step": TARGET_SCHEDULING_US,
                      "checkpoint_us_per_step": TARGET_CHECKPOINT_US},
          "figures": figures, "verdict": verdict(figures)})


def verdict(figures: dict[str, dict[str, object]]) -> str:
    ok = all(f["scheduling_us_per_step"] <= TARGET_SCHEDULING_US  # type: ignore[operator]
             and f["checkpoint_us_per_step"] <= TARGET_CHECKPOINT_US  # type: ignore[operator]
             for f in figures.values())
    return "PASS" if ok else "FAIL"


def report(figures: dict[str, dict[str, object]], n: int, rounds: int, load: float) -> str:
    env = environment(load)
    lines = [f"bench_workflow: {n} no-op steps, median of {rounds} rounds",
             "  " + ", ".join(f"{k}={v}" for k, v in env.items()), ""]
    header = (f"{'shape':<6} {'variant':<8} {'total ms':>9} {'µs/step':>9} "
              f"{'x direct':>9}")
    lines += [header, "-" * len(header)]
    for shape, f in figures.items():
        med: dict[str, float] = f["median_s"]  # type: ignore[assignment]
        for variant, seconds in med.items():
            lines.append(f"{shape:<6} {variant:<8} {seconds * 1e3:>9.1f} "
                         f"{seconds / n * 1e6:>9.1f} {seconds / med['direct']:>9.0f}")
        lines.append(f"{shape:<6} build {f['build_s'] * 1e3:.1f} ms (validate {n} steps); "
                     f"scheduling {f['scheduling_us_per_step']:.1f} µs/step, checkpoint "
                     f"{f['checkpoint_us_per_step']:.1f} µs/step, restore "
                     f"{f['restore_us_per_step']:.1f} µs/step")
        lines.append("")
    lines.append(f"target: scheduling <= {TARGET_SCHEDULING_US:.0f} µs/step, checkpoint <= "
                 f"{TARGET_CHECKPOINT_US:.0f} µs/step -> {verdict(figures)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
