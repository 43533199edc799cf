"""What the Python sandbox costs per call, against a bare ``python -c`` per call.

Variants, each timed per call with ``perf_counter``:

* cold start     a new PythonSandbox's first ``run("1+1")``: worker start, limits,
                 namespaces, Landlock, seccomp and the audit hook, then the call
* warm call      ``run("1+1")`` in the persistent worker (the normal case for agents)
* warm numpy     ``run("float(np.arange(1000).sum())")`` once numpy is imported
* bare -c        ``subprocess.run([sys.executable, "-c", "print(1+1)"])``: what a
                 process per call would cost, with no isolation at all
* bare -c numpy  the same with ``import numpy``, since a process per call re-imports

Printed side by side with the ratio to a bare process; not asserted.

    .venv/bin/python benchmarks/bench_sandbox.py [--calls 200] [--cold 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

from aillm_lab.tools.policy import CodePolicy
from aillm_lab.tools.python import PythonSandbox

NAME = "bench_sandbox"


def stats(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"median_ms": statistics.median(ms), "p10_ms": ms[len(ms) // 10],
            "p90_ms": ms[len(ms) * 9 // 10], "mean_ms": statistics.fmean(ms), "calls": len(ms)}


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def cold_start(n: int) -> tuple[list[float], dict[str, object]]:
    samples, protections = [], {}
    for _ in range(n):
        box = PythonSandbox(CodePolicy())
        t = time.perf_counter()
        result = box.run("1+1")
        samples.append(time.perf_counter() - t)
        assert result.value == "2", result
        protections = dict(box.protections or {})
        box.close()
    return samples, protections


def bare(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="warm calls")
    parser.add_argument("--bare", type=int, default=20, help="bare process calls")
    parser.add_argument("--cold", type=int, default=5, help="cold starts")
    args = parser.parse_args()
    load = os.getloadavg()[0]

    cold, protections = cold_start(args.cold)
    box = PythonSandbox(CodePolicy())
    box.run("import numpy as np")
    samples = {
        "sandbox cold start (first call)": cold,
        "sandbox warm call": timed(lambda: box.run("1+1"), args.calls),
        "sandbox warm call, numpy loaded": timed(
            lambda: box.run("float(np.arange(1000).sum())"), args.calls),
        "bare python -c": timed(lambda: bare("print(1+1)"), args.bare),
        "bare python -c with numpy": timed(
            lambda: bare("import numpy as np; print(float(np.arange(1000).sum()))"),
            args.bare),
    }
    box.close()
    results = {name: stats(s) for name, s in samples.items()}
    base = results["bare python -c"]["median_ms"]
    base_np = results["bare python -c with numpy"]["median_ms"]
    warm = results["sandbox warm call"]["median_ms"]
    warm_np = results["sandbox warm call, numpy loaded"]["median_ms"]
    cold_ms = results["sandbox cold start (first call)"]["median_ms"]

    env = environment(load)
    lines = [f"# {NAME}: sandbox call latency against a bare process per call",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()),
             "# protections: " + ", ".join(f"{k}={v}" for k, v in protections.items()
                                           if k != "rlimits"), "",
             f"{'variant':36} {'median':>10} {'p10':>10} {'p90':>10} {'calls':>6} "
             f"{'x bare -c':>10}"]
    for name, r in results.items():
        lines.append(f"{name:36} {r['median_ms']:8.2f}ms {r['p10_ms']:8.2f}ms "
                     f"{r['p90_ms']:8.2f}ms {r['calls']:6d} {r['median_ms'] / base:9.2f}x")
    lines += ["",
              f"cold start / bare -c: {cold_ms / base:.1f}x ({cold_ms:.0f} ms vs {base:.0f} ms)",
              f"warm call / bare -c: {warm / base:.3f}x, i.e. {base / warm:.0f}x faster",
              f"warm numpy call / bare -c with numpy: {warm_np / base_np:.3f}x, i.e. "
              f"{base_np / warm_np:.0f}x faster"]
    save(NAME, "\n".join(lines), {"environment": env, "protections": protections,
                                  "results": results, "ratios": {
                                      "cold_over_bare": cold_ms / base,
                                      "warm_over_bare": warm / base,
                                      "warm_numpy_over_bare_numpy": warm_np / base_np}})


if __name__ == "__main__":
    main()
