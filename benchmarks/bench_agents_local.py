"""ReAct on the real local model: steps per second and success over 10 seeds (issue 12).

SmolLM2-135M on the CPU, through the whole stack (gateway, Safety Guard, audit, call log),
on the task of ``tests/agents/test_react_local.py``: two tools, the second fed by the first's
result (``find_home`` then ``get_weather``). A run is right when it completes, called
``find_home`` then ``get_weather``, and its answer holds the temperature (21). Two wordings:
the task with its steps spelled out (the test's) and the bare question, each at greedy and at
temperature 0.4 over ``--seeds`` seeds. Every call is checked against its tool's schema.

Side by side, so the figures explain each other: the share of run time spent inside model
calls (the rest is the agent loop, tools, guard and audit) and generated tokens per second.

    .venv/bin/python benchmarks/bench_agents_local.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

import aillm_lab as al

NAME = "bench_agents_local"
HOMES = {"alice": "Paris", "bob": "Tokyo"}
WEATHER = {"paris": "sunny and 21 C", "tokyo": "rainy and 14 C"}
TASKS = {"steps spelled out": "Find where Alice lives, then get the weather there.",
         "bare question": "What is the weather today in the city where Alice lives?"}


@al.tool
def find_home(person: str) -> str:
    """Return the city where a person lives."""
    return HOMES.get(person.strip().lower(), "unknown person")


@al.tool
def get_weather(city: str) -> str:
    """Return today's weather in a city."""
    return WEATHER.get(city.strip().lower(), "unknown city")


TOOLS = {"find_home": find_home, "get_weather": get_weather}


def one(lab: al.Lab, task: str, temperature: float, seed: int) -> dict[str, Any]:
    agent = al.ReActAgent(tools=list(TOOLS.values()), model="local:smollm2", lab=lab,
                          max_steps=6, save=False,
                          params={"max_tokens": 64, "temperature": temperature, "seed": seed})
    started = time.perf_counter()
    run = agent.run(task)
    wall = time.perf_counter() - started
    valid = 0
    for call in run.tool_calls:
        try:
            TOOLS[call.name].validate(call.arguments)
            valid += 1
        except Exception:
            pass
    names = [c.name for c in run.tool_calls]
    right = (run.status == "completed" and "21" in str(run.output)
             and names[:2] == ["find_home", "get_weather"])
    return {"right": right, "status": run.status, "steps": len(run.steps), "wall_s": wall,
            "model_s": sum(s.latency_s or 0 for s in run.steps),
            "tokens": sum(s.usage.output_tokens for s in run.steps if s.usage),
            "calls": len(names), "valid_calls": valid, "output": str(run.output)[:60]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as home, \
            al.Lab(home=home, models_dir=al.LabSettings().model_path) as lab:
        one(lab, "warm up: load the weights", 0.0, 0)
        for label, task in TASKS.items():
            rows[f"{label}, greedy"] = [one(lab, task, 0.0, 0)]
            rows[f"{label}, t=0.4"] = [one(lab, task, 0.4, s) for s in range(args.seeds)]
    lines = [f"ReAct on local:smollm2 (SmolLM2-135M, CPU): two chained tools, "
             f"{args.seeds} seeds at t=0.4 plus greedy", "",
             f"{'variant':<28}{'right':>8}{'steps/s':>9}{'steps/run':>10}{'tok/s':>7}"
             f"{'in model':>10}{'valid calls':>13}"]
    summary: dict[str, Any] = {}
    for label, runs in rows.items():
        wall, steps = sum(r["wall_s"] for r in runs), sum(r["steps"] for r in runs)
        model_s, tokens = sum(r["model_s"] for r in runs), sum(r["tokens"] for r in runs)
        calls, valid = sum(r["calls"] for r in runs), sum(r["valid_calls"] for r in runs)
        right = sum(r["right"] for r in runs)
        summary[label] = {"right": right, "runs": len(runs), "steps_per_s": steps / wall,
                          "steps_per_run": steps / len(runs), "tokens_per_s": tokens / model_s,
                          "model_share": model_s / wall, "calls": calls, "valid_calls": valid}
        lines.append(f"{label:<28}{f'{right}/{len(runs)}':>8}{steps / wall:>9.2f}"
                     f"{steps / len(runs):>10.1f}{tokens / model_s:>7.1f}"
                     f"{model_s / wall:>10.1%}{f'{valid}/{calls}':>13}")
    lines += ["", "right: completed, find_home then get_weather, and the answer holds 21.",
              "in model: share of run time inside model calls; the rest is loop, tools, guard, "
              "audit.", "valid calls: tool calls that validate against the tool's schema "
              "(grammar-constrained, so all of them).", f"environment: {environment(load)}"]
    save(NAME, "\n".join(lines), {"environment": environment(load), "summary": summary,
                                  "runs": rows})


if __name__ == "__main__":
    main()
