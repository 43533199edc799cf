"""Framework overhead per agent step, ours against five peers, on a zero-latency fake model.

The same task everywhere (issue 12): a fake model answers instantly with the same three
steps (call ``add``, call ``mul``, final text) and the two tools are plain Python functions;
see ``_agents_runners.py`` for each framework's fake. Each variant runs in its own child
process: 50 warm-up runs, then ``--runs`` timed runs one after another, one agent reused.
Ours runs without the peers on its path; each peer with ``PYTHONPATH=.bench-peers`` (installed
by ``make bench-peers`` from ``requirements-peers.txt``), so no dependency versions mix. Every
child counts the tool calls (exactly one ``add`` and one ``mul`` per run) and checks the final
answer, so no framework is timed doing less work. ``--rounds`` repeats every child in a
rotated order, so drift on a shared machine hits all alike; figures pool the rounds.

Variants: ours with the guard and audit ON (the default ``ReActAgent``), ours with them off
(no audit log on the guard, no redaction or injection scan: the guard has no bypass, so
argument validation and the tool's executor hop stay), and, for information: ours through the
sync door ``agent.run``; with ``arun`` awaited on the Lab's own runner loop (no hop); guard
off with ``@al.tool(inline=True)`` tools (run on the loop, as Agno runs sync tools); and the
hand-offs alone, no framework work (the caller-loop round trip plus two worker hops), the
floor that a sync tool's worker thread and the one runner loop put under ours.

Targets: ours (guard and audit ON) below every peer; guard off below 0.5x the fastest peer.
Printed, not asserted; a peer that cannot run is shown as unavailable.

    .venv/bin/python benchmarks/bench_agents.py [--runs 1000] [--rounds 3] [--only ours,agno]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

NAME = "bench_agents"
HERE = Path(__file__).parent
PEERS = HERE.parent / ".bench-peers"
RUNNER = HERE / "_agents_runners.py"
STEPS = 3
OURS, OURS_OFF = "ours", "ours-guard-off"
INFO = ("ours-sync", "ours-runner-loop", "ours-off-inline", "hops-floor")
PEER_NAMES = ("smolagents", "pydantic-ai", "langgraph", "openai-agents", "agno")
LABELS = {
    OURS: "ours, guard+audit ON (await arun)",
    OURS_OFF: "ours, guard+audit off (await arun)",
    "ours-sync": "ours, ON, sync door agent.run",
    "ours-runner-loop": "ours, ON, arun on the runner loop",
    "ours-off-inline": "ours, off, tools inline (await arun)",
    "hops-floor": "hand-offs only, no framework work",
    "smolagents": "smolagents ToolCallingAgent",
    "pydantic-ai": "pydantic-ai FunctionModel",
    "langgraph": "LangGraph create_react_agent",
    "openai-agents": "OpenAI Agents SDK Runner.run",
    "agno": "Agno Agent.arun",
}


def run_child(name: str, runs: int, warmup: int) -> dict[str, Any]:
    """One variant in a fresh process; ``{"error": why}`` when it cannot run."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if name in PEER_NAMES:
        if not PEERS.is_dir():
            return {"error": f"not installed ({PEERS.name}/ is missing: run `make bench-peers`)"}
        env["PYTHONPATH"] = str(PEERS)
    proc = subprocess.run([sys.executable, str(RUNNER), name, "--runs", str(runs),
                           "--warmup", str(warmup)], capture_output=True, text=True, env=env,
                          cwd=HERE.parent, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {why[:200]}"}
    return json.loads(lines[-1])


def summary(samples_ns: list[int], cpu_ns: int, runs: int) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    median, mean = statistics.median(us), statistics.fmean(us)
    return {"median_us_run": median, "mean_us_run": mean, "median_us_step": median / STEPS,
            "mean_us_step": mean / STEPS, "p10_us_run": us[len(us) // 10],
            "p90_us_run": us[len(us) * 9 // 10], "p99_us_run": us[len(us) * 99 // 100],
            "cpu_us_run": cpu_ns / 1000 / runs, "runs": len(us)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="timed runs per child")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3,
                        help="children per variant, in a rotated order")
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    args = parser.parse_args()

    names = [OURS, OURS_OFF, *PEER_NAMES, *INFO]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    load_start = os.getloadavg()[0]
    samples: dict[str, list[int]] = {n: [] for n in names}
    cpu: dict[str, int] = dict.fromkeys(names, 0)
    rounds: dict[str, list[float]] = {n: [] for n in names}
    meta: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name in errors:
                continue
            print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            out = run_child(name, args.runs, args.warmup)
            if "error" in out:
                if name.startswith("ours"):
                    raise SystemExit(f"{name} failed: {out['error']}")
                errors[name] = out["error"]
                continue
            samples[name] += out.pop("samples_ns")
            cpu[name] += out.pop("cpu_ns")
            rounds[name].append(statistics.median(samples[name][-args.runs:]) / 1000)
            meta[name] = out

    results = {n: {**summary(samples[n], cpu[n], len(samples[n])),
                   "round_medians_us_run": [round(x, 1) for x in rounds[n]],
                   "version": meta[n].get("version"), "tool_calls_last_child":
                       meta[n].get("tool_calls"), "note": meta[n].get("note")}
               for n in names if n not in errors}
    ours = results.get(OURS, {}).get("median_us_run")
    ours_off = results.get(OURS_OFF, {}).get("median_us_run")
    peers = {n: results[n]["median_us_run"] for n in PEER_NAMES if n in results}
    fastest = min(peers, key=peers.__getitem__) if peers else None

    env = environment(load_start)
    lines = [f"# {NAME}: framework overhead per agent step, zero-latency fake model, 2 tools, "
             f"{STEPS} model steps a run ({args.runs} runs per child after {args.warmup} "
             f"warm-up, {args.rounds} rounds, pooled)",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'variant':36} {'version':>8} {'µs/step':>8} {'mean':>8} {'µs/run':>8} "
             f"{'mean':>8} {'p90':>8} {'cpu/run':>8} {'x ours':>7}  round medians (µs/run)"]
    for name in names:
        if name in errors:
            lines.append(f"{LABELS[name]:36} unavailable: {errors[name]}")
            continue
        r = results[name]
        ratio = f"{r['median_us_run'] / ours:6.2f}x" if ours else "     -"
        lines.append(f"{LABELS[name]:36} {str(r['version'])[:8]:>8} "
                     f"{r['median_us_step']:8.0f} {r['mean_us_step']:8.0f} "
                     f"{r['median_us_run']:8.0f} {r['mean_us_run']:8.0f} "
                     f"{r['p90_us_run']:8.0f} {r['cpu_us_run']:8.0f} {ratio:>7}  "
                     f"{', '.join(f'{x:.0f}' for x in r['round_medians_us_run'])}")
    lines += ["", "µs/step = µs/run / 3 (medians and means over every timed run); x ours = "
              "variant median / ours (guard+audit ON) median; cpu/run = process CPU time "
              "(all threads) over the timed runs / runs."]
    for name in names:
        if name in results and results[name].get("note"):
            lines.append(f"  {name}: {results[name]['note']}")

    checks: dict[str, str] = {}
    if ours is not None and fastest is not None:
        below = all(ours < m for m in peers.values())
        checks["ours_below_every_peer"] = "PASS" if below else "FAIL"
        lines.append(f"target: ours (guard+audit ON) below every peer: {ours:.0f} µs/run vs "
                     f"fastest peer {fastest} {peers[fastest]:.0f} µs/run "
                     f"({ours / peers[fastest]:.2f}x)  ->  {checks['ours_below_every_peer']}")
    if ours_off is not None and fastest is not None:
        half = ours_off < 0.5 * peers[fastest]
        checks["guard_off_below_half_fastest"] = "PASS" if half else "FAIL"
        lines.append(f"target: ours, guard off, below 0.5x the fastest peer: {ours_off:.0f} "
                     f"µs/run = {ours_off / peers[fastest]:.2f}x {fastest}  ->  "
                     f"{checks['guard_off_below_half_fastest']}")
    if fastest is not None:
        for name, what in (("ours-off-inline", "guard off with the tools inline (sync tools on "
                            "the loop, as Agno runs them)"),
                           ("hops-floor", "the hand-offs alone (caller loop <-> runner loop, "
                            "two sync-tool worker hops), no framework work")):
            if name in results:
                us = results[name]["median_us_run"]
                lines.append(f"for information: {what}: {us:.0f} µs/run = "
                             f"{us / peers[fastest]:.2f}x {fastest}")
    missing = [n for n in PEER_NAMES if n in errors]
    if missing:
        lines.append(f"(peers not measured: {', '.join(missing)}; the targets cover only "
                     f"the peers that ran)")
    verdict = ("PASS" if checks and all(v == "PASS" for v in checks.values())
               else "FAIL" if checks else "n/a")
    lines.append(f"verdict: {verdict}")
    save(NAME, "\n".join(lines), {
        "environment": env, "runs_per_child": args.runs, "warmup": args.warmup,
        "rounds": args.rounds, "steps_per_run": STEPS, "results": results,
        "unavailable": errors, "targets": {
            "ours_below_every_peer": "ours median µs/run < every peer's",
            "guard_off_below_half_fastest": "ours-guard-off median < 0.5 x fastest peer"},
        "checks": checks, "verdict": verdict})


if __name__ == "__main__":
    main()
