"""Experiments: the runner's scheduling overhead and throughput (issue 16).

1. Overhead: a grid of ``--cells`` cells (items x 1 prompt x 1 model) against a zero-latency
   scripted model, timed against the same number of plain ``await lab.acomplete(...)`` calls
   in a loop on the same Lab. Reported: cells/s, calls/s, and the runner's added µs per cell
   (storage, scoring, progress, ids), measured side by side in one run.
2. Throughput: the same runner at ``--latency-ms`` simulated latency (the scripted model
   sleeps) and concurrency 64 (the model's gateway limit raised to match), against the ideal
   of concurrency / latency.

The Ray executor is not built yet, so there is no scale-out row. Printed, not asserted.

    .venv/bin/python benchmarks/bench_experiments.py [--cells 10000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

NAME = "bench_experiments"


def _lab(home: str, model: ScriptedModel, concurrency: int) -> al.Lab:
    return al.Lab(home=Path(home), model=model,
                  limits={model.id: {"concurrency": concurrency}})


def overhead(cells: int) -> dict[str, Any]:
    dataset = [{"q": f"question {i}", "answer": "ok"} for i in range(cells)]
    with tempfile.TemporaryDirectory() as home:
        model = ScriptedModel(lambda messages, request: "ok", name="zero")
        with _lab(home, model, 64) as lab:
            async def direct() -> float:
                started = time.perf_counter()
                for row in dataset:
                    await lab.acomplete(f"Answer {row['q']}")
                return time.perf_counter() - started

            direct_s = asyncio.run(direct())
            exp = al.Experiment(name="overhead", dataset=dataset, lab=lab, models=[model],
                                prompts=["Answer {q}"], scorers=[al.scorers.exact("answer")],
                                concurrency=1)
            started = time.perf_counter()
            run = exp.run(progress=False)
            grid_s = time.perf_counter() - started
            done = len(run.results())
    assert done == cells, (done, cells)
    return {"cells": cells, "grid_s": grid_s, "direct_s": direct_s,
            "cells_per_s": cells / grid_s, "calls_per_s": cells / direct_s,
            "added_us_per_cell": (grid_s - direct_s) / cells * 1e6}


def throughput(cells: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    dataset = [{"q": f"question {i}", "answer": "ok"} for i in range(cells)]
    with tempfile.TemporaryDirectory() as home:
        model = ScriptedModel(lambda messages, request: "ok", name="slow",
                              delay=latency_ms / 1000)
        with _lab(home, model, concurrency) as lab:
            exp = al.Experiment(name="throughput", dataset=dataset, lab=lab, models=[model],
                                prompts=["Answer {q}"], scorers=[al.scorers.exact("answer")],
                                concurrency=concurrency)
            started = time.perf_counter()
            exp.run(progress=False)
            wall = time.perf_counter() - started
    ideal = concurrency / (latency_ms / 1000)
    return {"cells": cells, "latency_ms": latency_ms, "concurrency": concurrency,
            "wall_s": wall, "cells_per_s": cells / wall, "ideal_cells_per_s": ideal,
            "ratio": cells / wall / ideal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--throughput-cells", type=int, default=5_000)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    over = overhead(args.cells)
    thru = throughput(args.throughput_cells, args.latency_ms, 64)
    lines = [
        "Experiments: the runner against plain calls on the same Lab (zero-latency scripted "
        "model), and throughput at simulated latency",
        "",
        f"overhead, {over['cells']:,} cells, concurrency 1:",
        f"  grid   {over['grid_s']:7.2f} s  {over['cells_per_s']:8,.0f} cells/s",
        f"  direct {over['direct_s']:7.2f} s  {over['calls_per_s']:8,.0f} calls/s "
        "(await lab.acomplete in a loop)",
        f"  the runner adds {over['added_us_per_cell']:.0f} µs per cell "
        f"({over['grid_s'] / over['direct_s']:.2f}x the plain calls' time)",
        "",
        f"throughput, {thru['cells']:,} cells at {thru['latency_ms']:g} ms, concurrency "
        f"{thru['concurrency']}:",
        f"  {thru['cells_per_s']:,.0f} cells/s against the ideal {thru['ideal_cells_per_s']:,.0f} "
        f"({thru['ratio']:.0%})",
        "",
        "scale-out (Ray): not built yet",
        f"environment: {environment(load)}",
    ]
    save(NAME, "\n".join(lines), {"environment": environment(load), "overhead": over,
                                  "throughput": thru})


if __name__ == "__main__":
    main()
