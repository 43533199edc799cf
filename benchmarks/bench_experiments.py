"""Experiments: the runner's scheduling overhead, throughput and scale-out (issue 16).

1. Overhead: a grid of ``--cells`` cells (items x 1 prompt x 1 model) against a zero-latency
   scripted model, timed against the same number of plain ``await lab.acomplete(...)`` calls
   in a loop on the same Lab. Reported: cells/s, calls/s, and the runner's added µs per cell
   (storage, scoring, progress, ids), measured side by side in one run.
2. Throughput: the same runner at ``--latency-ms`` simulated latency (the scripted model
   sleeps) and concurrency 64 (the model's gateway limit raised to match), against the ideal
   of concurrency / latency.

3. Scale-out: one grid of ``--scale-cells`` cells (items x 2 prompts x 1 model) against a
   scripted model with ``--scale-latency-ms`` simulated latency, run by the local executor
   and by ``RayExecutor(workers=2)`` in the same process, after the local runs (the order
   a notebook has): wall time and cells/s side by side. Ray's start-up
   (``start_ray(num_cpus=2)``) is timed apart; the first Ray run also starts the worker
   processes (import, Lab), so a second one on a fresh home shows the warm figure. Both
   executors get the same total concurrency (Ray splits it, and the model's gateway limit,
   over the workers). On 2 cores expect parity, not a speed-up: the point is that the
   same spec runs unchanged. Needs the ``[ray]`` extra (skipped with a line without it).

Printed, not asserted.

    .venv/bin/python benchmarks/bench_experiments.py [--cells 10000] [--latency-ms 20]
        [--scale-cells 400] [--scale-latency-ms 20] [--scale-concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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


def _scale_grid(lab: al.Lab, model: ScriptedModel, cells: int, concurrency: int,
                name: str) -> al.Experiment:
    dataset = [{"q": f"question {i}", "answer": "ok"} for i in range(cells // 2)]
    return al.Experiment(name=name, dataset=dataset, lab=lab, models=[model],
                         prompts=["Answer {q}", "Q: {q}\nA:"],
                         scorers=[al.scorers.exact("answer")], concurrency=concurrency)


def scale_out(cells: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    """Local, then Ray with 2 workers (cold, then warm), on the same grid in one process."""
    if importlib.util.find_spec("ray") is None:
        return {"skipped": "Ray is not installed: pip install 'aillm-lab[ray]'"}
    from aillm_lab.experiments.ray_executor import RayExecutor, start_ray

    model = ScriptedModel(lambda messages, request: "ok", name="scale",
                          delay=latency_ms / 1000)
    out: dict[str, Any] = {"cells": cells, "latency_ms": latency_ms,
                           "concurrency": concurrency, "workers": 2}
    with tempfile.TemporaryDirectory() as home:
        def timed(label: str, executor: Any) -> dict[str, Any]:
            with _lab(f"{home}/{label}", model, concurrency) as lab:
                exp = _scale_grid(lab, model, cells, concurrency, label)
                started = time.perf_counter()
                run = exp.run(executor=executor, progress=False)
                wall = time.perf_counter() - started
                results = run.results()
            assert run.status == "completed" and len(results) == cells, (run.status, label)
            assert (results["output"] == "ok").all() and run.sent == cells, label
            return {"wall_s": wall, "cells_per_s": cells / wall}

        out["local"] = timed("local", "local")
        import ray

        started = time.perf_counter()
        path = os.pathsep.join(p for p in (str(Path(al.__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH")) if p)
        start_ray(num_cpus=2, include_dashboard=False, log_to_driver=False,
                  runtime_env={"env_vars": {"PYTHONPATH": path}})
        out["ray_startup_s"] = time.perf_counter() - started
        try:
            out["ray_cold"] = timed("ray-cold", RayExecutor(workers=2))
            out["ray_warm"] = timed("ray-warm", RayExecutor(workers=2))
        finally:
            ray.shutdown()
    out["ideal_cells_per_s"] = concurrency / (latency_ms / 1000)
    return out


def _scale_lines(scale: dict[str, Any]) -> list[str]:
    if "skipped" in scale:
        return [f"scale-out (Ray): skipped, {scale['skipped']}"]
    local, cold, warm = scale["local"], scale["ray_cold"], scale["ray_warm"]
    return [
        f"scale-out, {scale['cells']:,} cells at {scale['latency_ms']:g} ms, total "
        f"concurrency {scale['concurrency']} (ideal {scale['ideal_cells_per_s']:,.0f} cells/s), "
        "same grid, same process, local first:",
        f"  local                 {local['wall_s']:6.2f} s  {local['cells_per_s']:7,.0f} cells/s",
        f"  Ray, 2 workers, cold  {cold['wall_s']:6.2f} s  {cold['cells_per_s']:7,.0f} cells/s "
        f"({cold['cells_per_s'] / local['cells_per_s']:.2f}x local; starts the workers)",
        f"  Ray, 2 workers, warm  {warm['wall_s']:6.2f} s  {warm['cells_per_s']:7,.0f} cells/s "
        f"({warm['cells_per_s'] / local['cells_per_s']:.2f}x local)",
        f"  Ray start-up (start_ray(num_cpus=2), not in the rows above): "
        f"{scale['ray_startup_s']:.1f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--throughput-cells", type=int, default=5_000)
    parser.add_argument("--scale-cells", type=int, default=400)
    parser.add_argument("--scale-latency-ms", type=float, default=20.0)
    parser.add_argument("--scale-concurrency", type=int, default=8)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    over = overhead(args.cells)
    thru = throughput(args.throughput_cells, args.latency_ms, 64)
    scale = scale_out(args.scale_cells, args.scale_latency_ms, args.scale_concurrency)
    end_load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    shared = (f"note: other work shared the {cpus} cores (load average {load:.2f} at the start, "
              f"{end_load:.2f} at the end, above this script's own share of about 1): "
              "absolute figures are low, the side-by-side ratios hold" if max(load, end_load) > 1.5
              else f"load average {load:.2f} at the start, {end_load:.2f} at the end: the "
              "cores were not shared")
    lines = [
        "Experiments: the runner against plain calls on the same Lab (zero-latency scripted "
        "model), throughput at simulated latency, and the local executor against Ray",
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
        *_scale_lines(scale),
        "",
        shared,
        f"environment: {environment(load)}",
    ]
    save(NAME, "\n".join(lines), {"environment": environment(load), "overhead": over,
                                  "throughput": thru, "scale_out": scale,
                                  "shared_cores": max(load, end_load) > 1.5})


if __name__ == "__main__":
    main()
