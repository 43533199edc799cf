"""What the Safety Guard adds to a tool call: ``read_file`` bare vs through guard + audit.

Every tool call an agent makes goes through ``SafetyGuard.call``: argument validation, the
approval decision, the tool (``read_file`` runs inline on the loop: a capped read costs
less than a thread hop; tools that walk trees or write use a worker thread), rendering,
secret redaction, the injection scan, the size cap and one audit row in ``lab.db``. This
times the built-in ``read_file`` tool (a 1 kB file in a temporary workspace) per call, side by side:

* bare function       ``FileTools.read_file(path)`` called directly (the baseline)
* guard, no audit     ``await guard.call(tool, args)`` without an ``AuditLog``
* guard + audit, group commit (the default for a read): the row is buffered on the loop and
                      committed with the others within 0.1 s (on disk within a second)
* guard + audit, commit per call (NORMAL): ``safety.audit.durable`` lists "read", so each
                      call returns only once its row is committed (before: every call)
* guard + audit, commit per call (FULL): ``synchronous=FULL``, an fsync per commit (also
                      survives a power cut)
* toolbox.call        ``Toolbox.call`` from a plain thread: the sync facade users call
                      (default policy: group commit)

Target: guard + audit (group commit) adds < 250 µs per call over the bare function (the
median; the mean, which carries the batch commits, is printed beside it). Printed, not
asserted.

Then the Shell tool, ``cat`` of the same file, side by side:

* shell, unconfined (before)  ``run_command`` as it ran before the jail: a plain child
* shell, in the jail          ``run_command`` inside the OS jail (namespaces, per-call mounts)
* run_shell via toolbox.call  the whole tool: argv checks, jail, guard and audit

Target: run_shell in the jail under 20 ms per call warm (median).

    .venv/bin/python benchmarks/bench_tools_guard.py [--calls 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

from aillm_lab.config import LabSettings
from aillm_lab.db import SqliteVersionWarning
from aillm_lab.runtime import LoopRunner
from aillm_lab.tools.audit import AuditLog
from aillm_lab.tools.base import Tool
from aillm_lab.tools.jail import Jail
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import SafetyPolicy
from aillm_lab.tools.process import run_command
from aillm_lab.tools.safety import SafetyGuard
from aillm_lab.tools.toolbox import Toolbox

NAME = "bench_tools_guard"
TARGET_US = 250.0
SHELL_TARGET_MS = 20.0
FILE = "notes/readme.txt"
GROUP = "guard + audit, group commit"
PER_CALL = "guard + audit, per call (NORMAL)"


def stats(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {"median_us": statistics.median(us), "p10_us": us[len(us) // 10],
            "p90_us": us[len(us) * 9 // 10], "p99_us": us[len(us) * 99 // 100],
            "mean_us": statistics.fmean(us), "calls": len(us)}


def read_tool(ws: Workspace) -> Tool:
    """The built-in ``read_file`` (``aillm_lab.tools.files``), or a stand-in if it is absent."""
    try:
        from aillm_lab.tools.files import file_tools
    except ImportError:  # the files domain module is not written yet
        def read_file(path: str) -> str:
            """Read a text file in the workspace."""
            return ws.resolve(path).read_text()
        return Tool(read_file)
    return next(t for t in file_tools(ws) if t.name == "read_file")


def bench_bare(tool: Tool, n: int) -> list[int]:
    clock, out, fn = time.perf_counter_ns, [], tool.fn
    for _ in range(n):
        t = clock()
        fn(FILE)
        out.append(clock() - t)
    return out


def bench_guard(runner: LoopRunner, guard: SafetyGuard, tool: Tool, n: int) -> list[int]:
    async def main() -> list[int]:
        clock, out, args = time.perf_counter_ns, [], {"path": FILE}
        for _ in range(n):
            t = clock()
            await guard.call(tool, args)
            out.append(clock() - t)
        return out

    return runner.run(main())  # on the runner loop, where the audit connection lives


def bench_toolbox(box: Toolbox, n: int) -> list[int]:
    clock, out = time.perf_counter_ns, []
    for _ in range(n):
        t = clock()
        box.call("read_file", path=FILE)
        out.append(clock() - t)
    return out


def bench_shell(runner: LoopRunner, ws: Workspace, policy: SafetyPolicy, jail: Jail | None,
                n: int) -> list[int]:
    async def main() -> list[int]:
        clock, out = time.perf_counter_ns, []
        for _ in range(n):
            t = clock()
            result = await run_command(["cat", FILE], cwd=ws.root, policy=policy.commands,
                                       jail=jail)
            out.append(clock() - t)
            assert result.exit_code == 0, result.render()
        return out

    return runner.run(main())


def bench_run_shell(box: Toolbox, n: int) -> list[int]:
    clock, out = time.perf_counter_ns, []
    for _ in range(n):
        t = clock()
        box.call("run_shell", command=["cat", FILE])
        out.append(clock() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; each variant gets calls/rounds per round")
    parser.add_argument("--full-calls", type=int, default=2_000,
                        help="calls for the synchronous=FULL variant (an fsync each)")
    parser.add_argument("--shell-calls", type=int, default=500,
                        help="calls for each shell variant (a process each)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SqliteVersionWarning)
    load_at_start = os.getloadavg()[0]

    tmp = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    settings = LabSettings.load(home=tmp)
    settings.workspace_path.mkdir(parents=True)
    (settings.workspace_path / FILE).parent.mkdir()
    (settings.workspace_path / FILE).write_text("A line of ordinary notes text.\n" * 32)
    ws = Workspace(settings.workspace_path, settings.safety.paths)
    tool = read_tool(ws)
    policy = SafetyPolicy()
    durable = SafetyPolicy()  # every risk level committed before the call returns
    durable.audit.durable = ["read", "write", "execute", "network"]
    runner = LoopRunner(name="bench-guard")
    group = AuditLog(tmp / "group.db", runner=runner)
    normal = AuditLog(tmp / "normal.db", runner=runner)
    full = AuditLog(tmp / "full.db", runner=runner, synchronous="FULL")
    box = Toolbox(settings, runner)
    jail = Jail(ws, runner=runner)
    if not runner.run(jail.available()):
        raise SystemExit(f"the OS jail is unavailable here: {jail.why}")
    shell_round = max(1, args.shell_calls // args.rounds)
    per_round = max(1, args.calls // args.rounds)
    full_round = max(1, args.full_calls // args.rounds)
    variants: dict[str, Callable[[], list[int]]] = {
        "bare read_file function": lambda: bench_bare(tool, per_round),
        "guard, no audit": lambda: bench_guard(runner, SafetyGuard(policy), tool, per_round),
        GROUP: lambda: bench_guard(runner, SafetyGuard(policy, audit=group), tool, per_round),
        PER_CALL: lambda: bench_guard(
            runner, SafetyGuard(durable, audit=normal), tool, per_round),
        "guard + audit, per call (FULL)": lambda: bench_guard(
            runner, SafetyGuard(durable, audit=full), tool, full_round),
        "toolbox.call (sync facade)": lambda: bench_toolbox(box, per_round),
        "shell, unconfined (before)": lambda: bench_shell(runner, ws, policy, None, shell_round),
        "shell, in the jail": lambda: bench_shell(runner, ws, policy, jail, shell_round),
        "run_shell via toolbox.call": lambda: bench_run_shell(box, shell_round),
    }
    for fn in variants.values():  # warm-up: imports, connections, code paths
        fn()
    samples: dict[str, list[int]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # interleave, so drift and noisy neighbours hit all alike
        for name, fn in variants.items():
            samples[name].extend(fn())
    rows = runner.run(group.count())
    box.close()
    jail.close()
    for log in (group, normal, full):
        runner.run(log.aclose())
    runner.close()
    report(samples, rows, per_round * args.rounds, args.rounds, load_at_start)


def report(samples: dict[str, list[int]], audit_rows: int, calls: int, rounds: int,
           load_at_start: float) -> None:
    """The table for every variant, then the guard verdict and the shell verdict."""
    results = {name: stats(s) for name, s in samples.items()}
    bare = results["bare read_file function"]["median_us"]
    bare_mean = results["bare read_file function"]["mean_us"]
    guarded = results[GROUP]["median_us"]
    added = guarded - bare
    added_mean = results[GROUP]["mean_us"] - bare_mean
    verdict = "PASS" if added < TARGET_US else "FAIL"
    env = environment(load_at_start)
    lines = [f"# {NAME}: read_file bare vs through SafetyGuard + AuditLog "
             f"({calls} calls per variant, {rounds} interleaved rounds), and run_shell "
             f"unconfined vs in the OS jail",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'variant':34} {'calls':>6} {'median':>9} {'p10':>9} {'p90':>9} {'p99':>9} "
             f"{'mean':>9} {'added':>9}"]
    for name, r in results.items():
        lines.append(f"{name:34} {r['calls']:6d} {r['median_us']:8.1f}µ {r['p10_us']:8.1f}µ "
                     f"{r['p90_us']:8.1f}µ {r['p99_us']:8.1f}µ {r['mean_us']:8.1f}µ "
                     f"{r['median_us'] - bare:+8.1f}µ")
    no_audit = results["guard, no audit"]["median_us"]
    per_call = results[PER_CALL]["median_us"]
    lines += ["",
              f"guard + audit (group commit) adds (median - median bare): {added:.1f} µs per "
              f"call (mean - mean bare: {added_mean:.1f} µs)",
              f"  of which the guard pipeline (validate, approve, render, redact,"
              f" scan, cap): {no_audit - bare:.1f} µs, the buffered audit row: "
              f"{guarded - no_audit:.1f} µs",
              f"  a commit per call instead (NORMAL, what every call paid before): "
              f"{per_call - no_audit:.1f} µs more than no audit",
              f"audit rows written in the group-commit log: {audit_rows}",
              f"target: guard + audit (group commit) adds < {TARGET_US:.0f} µs per call  ->  "
              f"{verdict}"]
    before = results["shell, unconfined (before)"]["median_us"] / 1000
    jailed = results["shell, in the jail"]["median_us"] / 1000
    tool = results["run_shell via toolbox.call"]["median_us"] / 1000
    shell_verdict = "PASS" if tool < SHELL_TARGET_MS else "FAIL"
    lines += ["",
              f"shell (cat of a 1 kB file): unconfined {before:.2f} ms, in the jail "
              f"{jailed:.2f} ms ({jailed - before:+.2f} ms, {jailed / before:.2f}x), the "
              f"whole run_shell tool {tool:.2f} ms",
              f"target: run_shell in the jail < {SHELL_TARGET_MS:.0f} ms per call warm  ->  "
              f"{shell_verdict}"]
    save(NAME, "\n".join(lines), {"environment": env, "calls_per_variant": calls,
         "results": results, "added_us": added, "added_mean_us": added_mean,
         "target_us": TARGET_US, "verdict": verdict,
         "audit_rows": audit_rows, "shell_ms": {"unconfined": before, "jail": jailed,
                                                 "run_shell": tool},
         "shell_target_ms": SHELL_TARGET_MS, "shell_verdict": shell_verdict})


if __name__ == "__main__":
    main()
