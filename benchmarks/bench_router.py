"""TaskRouter: accuracy on the labelled set and microseconds per decision, side by side.

Accuracy on ``tests/core/router_tasks.jsonl`` (112 tasks, 16 per agent, half marked
held-out) for three routers: keyword rules alone (the agent with most hits; none or a tie
counts as wrong), MiniLM description similarity alone (``keyword_weight=0``) and both (the
default), on the dev half, the held-out half and all. The confusion matrix of the default
router follows.

Time per decision, each after a warm-up (the model loaded, descriptions embedded): keyword
rules alone; one ``router.route(task)`` at a time (sync door: one MiniLM forward pass for
the task); ``route_many`` over the whole set (one batch, per task); and the LLM classifier
(``llm="always"``) against a scripted model, which times the gateway and validation path,
not a model. Targets: accuracy >= 0.85 on each half without an LLM; a single decision
under 50 ms on this CPU. Printed, not asserted.

    .venv/bin/python benchmarks/bench_router.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

import aillm_lab as al
from aillm_lab.core.router import LlmChoice, load_examples
from aillm_lab.testing import ScriptedModel

NAME = "bench_router"
TASKS = Path(__file__).resolve().parent.parent / "tests" / "core" / "router_tasks.jsonl"
TARGET_ACCURACY = 0.85
TARGET_SINGLE_MS = 50.0


def keyword_only(router: al.TaskRouter, task: str) -> str | None:
    counts = Counter({name: len(hits) for name, hits in router.keyword_hits(task).items()})
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def accuracy(pairs: list[tuple[str, str | None]]) -> float:
    return sum(a == b for a, b in pairs) / len(pairs)


def per_call_us(fn: Any, items: list[Any], repeats: int) -> list[float]:
    """Median-ready samples: microseconds per item for ``fn`` over all ``items``."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            fn(item)
        samples.append((time.perf_counter() - started) / len(items) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = load_examples(TASKS)
    tasks = [r["task"] for r in rows]
    splits = {"dev": [r for r in rows if r["split"] == "dev"],
              "heldout": [r for r in rows if r["split"] == "heldout"], "all": rows}
    reply = LlmChoice(agent="react", confidence=0.5, reason="scripted")
    model = ScriptedModel(lambda messages, request: reply)
    with tempfile.TemporaryDirectory() as home, al.Lab(home=home, model=model) as lab:
        both = al.TaskRouter(lab)
        dense = al.TaskRouter(lab, keyword_weight=0.0)
        both.route_many(tasks)  # warm-up: model loaded, descriptions embedded
        dense.route_many(tasks)
        table: dict[str, dict[str, float]] = {}
        for label, router in (("embeddings only", dense), ("keywords + embeddings", both)):
            table[label] = {s: router.evaluate(part).accuracy for s, part in splits.items()}
        table = {"keywords only": {s: accuracy([(r["agent"], keyword_only(both, r["task"]))
                                                for r in part])
                                   for s, part in splits.items()}, **table}
        report = both.evaluate(rows)
        timings = {
            "keyword rules only": per_call_us(both.keyword_hits, tasks, args.repeats),
            "route(task), one at a time": per_call_us(both.route, tasks, args.repeats),
            "route_many(112 tasks), per task": [
                s / len(tasks) for s in per_call_us(both.route_many, [tasks], args.repeats)],
            "route(task, llm='always'), scripted": per_call_us(
                lambda t: both.route(t, llm="always"), tasks[:20], args.repeats),
        }
    env = environment()
    medians = {k: statistics.median(v) for k, v in timings.items()}
    single = medians["route(task), one at a time"]
    lines = [f"# {NAME}: TaskRouter accuracy on {len(rows)} labelled tasks and time per "
             f"decision (median of {args.repeats})",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'accuracy':<28}{'dev':>8}{'heldout':>9}{'all':>8}"]
    lines += [f"{label:<28}{acc['dev']:>8.3f}{acc['heldout']:>9.3f}{acc['all']:>8.3f}"
              for label, acc in table.items()]
    lines += ["", "confusion matrix, keywords + embeddings (rows: expected, columns: chosen)",
              report.confusion.to_string(), "",
              f"{'time per decision':<40}{'median':>12}{'x keywords':>12}"]
    base = medians["keyword rules only"]
    lines += [f"{label:<40}{_us(m):>12}{m / base:>11.0f}x" for label, m in medians.items()]
    default = table["keywords + embeddings"]
    ok = (min(default["dev"], default["heldout"]) >= TARGET_ACCURACY
          and single / 1000 < TARGET_SINGLE_MS)
    lines += ["", f"target: accuracy >= {TARGET_ACCURACY} on each half without an LLM "
                  f"(dev {default['dev']:.3f}, held-out {default['heldout']:.3f}); one "
                  f"decision < {TARGET_SINGLE_MS:.0f} ms ({single / 1000:.1f} ms)  ->  "
                  f"{'PASS' if ok else 'FAIL'}"]
    save(NAME, "\n".join(lines), {
        "environment": env, "accuracy": table, "confusion": report.confusion.to_dict(),
        "timings_us": timings, "medians_us": medians,
        "targets": {"accuracy": TARGET_ACCURACY, "single_ms": TARGET_SINGLE_MS},
        "verdict": "PASS" if ok else "FAIL"})


def _us(value: float) -> str:
    return f"{value:,.1f} us" if value < 1000 else f"{value / 1000:,.2f} ms"


if __name__ == "__main__":
    main()
