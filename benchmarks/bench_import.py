"""Import time of ``import aillm_lab`` against ``import pandas``, side by side.

Each sample is a fresh interpreter (``sys.executable -c ...``) that times only its import
statement with ``perf_counter``, so interpreter start-up is left out and nothing is cached in
``sys.modules``. The parent also times each whole process, with a bare ``pass`` as the
baseline. Runs are interleaved (aillm_lab, pandas, bare, aillm_lab, ...) after one untimed
warm-up each, so disk cache and noisy neighbours hit all alike.

A separate fresh process checks which heavy modules (torch, transformers, panel) are in
``sys.modules`` after ``import aillm_lab``, and again after touching ``al.Lab`` (for
information only: the lazy name loads pydantic and the runtime, still not torch).

Targets: ``import aillm_lab`` < 0.3 s, < 0.3x ``import pandas``, and no heavy module
imported. Printed, not asserted.

    .venv/bin/python benchmarks/bench_import.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench_import"
TARGET_S = 0.3
TARGET_RATIO = 0.3
HEAVY = ("torch", "transformers", "panel")

TIMED = "import time;t=time.perf_counter();import {module};print(time.perf_counter()-t)"
PROBE = ("import json,sys;import aillm_lab as al;heavy={heavy!r};"
         "a=[m for m in heavy if m in sys.modules];n=len(sys.modules);al.Lab;"
         "b=[m for m in heavy if m in sys.modules];"
         "print(json.dumps({{'after_import':a,'modules_after_import':n,'after_lab':b,"
         "'modules_after_lab':len(sys.modules)}}))")


def run_child(code: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; return its wall time and its stdout."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"child failed ({done.returncode}): {code}\n{done.stderr.strip()[-2000:]}")
    return wall, done.stdout.strip()


def timed_import(module: str) -> dict[str, float]:
    wall, out = run_child(TIMED.format(module=module))
    return {"import_s": float(out.splitlines()[-1]), "process_s": wall}


def stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"median_s": statistics.median(s), "min_s": s[0], "max_s": s[-1],
            "mean_s": statistics.fmean(s), "runs": len(s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed fresh processes per module")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure

    variants = {"aillm_lab": lambda: timed_import("aillm_lab"),
                "pandas": lambda: timed_import("pandas"),
                "bare interpreter (pass)": lambda: {"import_s": 0.0,
                                                    "process_s": run_child("pass")[0]}}
    for fn in variants.values():  # warm-up: page cache, .pyc files
        fn()
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for _ in range(args.runs):  # interleave
        for name, fn in variants.items():
            samples[name].append(fn())
    probe = json.loads(run_child(PROBE.format(heavy=HEAVY))[1])

    results = {name: {"import": stats([r["import_s"] for r in runs]),
                      "process": stats([r["process_s"] for r in runs])}
               for name, runs in samples.items()}
    ours = results["aillm_lab"]["import"]["median_s"]
    theirs = results["pandas"]["import"]["median_s"]
    ratio = ours / theirs
    heavy = probe["after_import"]
    checks = {"aillm_lab < 0.3 s": ours < TARGET_S, "ratio < 0.3x pandas": ratio < TARGET_RATIO,
              "no heavy module after import": not heavy}
    verdict = "PASS" if all(checks.values()) else "FAIL"

    env = environment(load_at_start)
    lines = [f"# {NAME}: import time in fresh processes ({args.runs} interleaved runs each, "
             "medians)",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'import':26} {'median':>9} {'min':>9} {'max':>9} {'process':>9} {'x pandas':>9}"]
    for name, r in results.items():
        imp, proc = r["import"], r["process"]
        times = (f"{imp['median_s'] * 1000:7.1f}ms {imp['min_s'] * 1000:7.1f}ms "
                 f"{imp['max_s'] * 1000:7.1f}ms" if name != "bare interpreter (pass)"
                 else f"{'-':>9} {'-':>9} {'-':>9}")
        share = f"{imp['median_s'] / theirs:8.2f}x" if imp["median_s"] else f"{'-':>9}"
        lines.append(f"{name:26} {times} {proc['median_s'] * 1000:7.1f}ms {share}")
    lines += ["",
              "(import = the import statement timed inside the child; process = whole child "
              "process timed by the parent)",
              f"import aillm_lab median: {ours * 1000:.1f} ms, import pandas median: "
              f"{theirs * 1000:.1f} ms, ratio aillm_lab / pandas: {ratio:.3f}x",
              f"heavy modules in sys.modules after `import aillm_lab`: "
              f"{', '.join(heavy) or 'none'} ({probe['modules_after_import']} modules in all)",
              f"  after also touching `al.Lab` (information): "
              f"{', '.join(probe['after_lab']) or 'none'} "
              f"({probe['modules_after_lab']} modules in all)",
              f"target: aillm_lab < {TARGET_S} s and < {TARGET_RATIO}x pandas, none of "
              f"{', '.join(HEAVY)} imported  ->  {verdict}"]
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        lines.append(f"  failed: {'; '.join(failed)}")
    save(NAME, "\n".join(lines), {"environment": env, "runs_per_variant": args.runs,
         "results": results, "samples": samples, "ratio": ratio, "heavy_modules": probe,
         "targets": {"import_s": TARGET_S, "ratio": TARGET_RATIO, "heavy_modules": []},
         "checks": checks, "verdict": verdict})


if __name__ == "__main__":
    main()
