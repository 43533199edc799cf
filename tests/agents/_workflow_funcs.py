"""Step functions the workflow tests name in YAML ("_workflow_funcs:load"). Each appends a
line to ``<counters>/<step>.count`` when it runs, so a test can prove which steps ran and
how often, across processes (a unique module name, so it never shadows other helpers)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DAG = """
name: six-steps
inputs: {text: null, counters: null, hold: ""}
steps:
  - id: load
    call: _workflow_funcs:load
    args: {counters: "{{ inputs.counters }}", text: "{{ inputs.text }}"}
  - id: upper
    call: _workflow_funcs:upper
    args: {counters: "{{ inputs.counters }}", words: "{{ steps.load.output.words }}"}
  - id: lengths
    call: _workflow_funcs:lengths
    args: {counters: "{{ inputs.counters }}", words: "{{ steps.load.output.words }}"}
  - id: joined
    call: _workflow_funcs:joined
    args: {counters: "{{ inputs.counters }}", hold: "{{ inputs.hold }}",
           words: "{{ steps.upper.output }}"}
  - id: total
    call: _workflow_funcs:total
    args: {counters: "{{ inputs.counters }}", hold: "{{ inputs.hold }}",
           lengths: "{{ steps.lengths.output }}"}
  - id: report
    call: _workflow_funcs:report
    args: {counters: "{{ inputs.counters }}", joined: "{{ steps.joined.output }}",
           total: "{{ steps.total.output }}", first: "{{ steps.load.output.words.0 }}"}
outputs:
  report: "{{ steps.report.output }}"
  summary: "{{ steps.report.output.first }}: {{ steps.total.output }} letters"
"""


def count(counters: str, step: str) -> None:
    with open(Path(counters) / f"{step}.count", "a", encoding="utf-8") as f:
        f.write("ran\n")
        f.flush()


def counts(counters: str | Path) -> dict[str, int]:
    return {p.name.removesuffix(".count"): len(p.read_text().splitlines())
            for p in sorted(Path(counters).glob("*.count"))}


def _hold(path: str) -> None:
    """Wait while the hold file exists: how a test keeps a step in flight to kill it."""
    while path and Path(path).exists():
        time.sleep(0.02)


def load(counters: str, text: str) -> dict[str, Any]:
    count(counters, "load")
    return {"words": text.split()}


def upper(counters: str, words: list[str]) -> list[str]:
    count(counters, "upper")
    return [w.upper() for w in words]


def lengths(counters: str, words: list[str]) -> list[int]:
    count(counters, "lengths")
    return [len(w) for w in words]


def joined(counters: str, hold: str, words: list[str]) -> str:
    count(counters, "joined")
    _hold(hold)
    return "-".join(words)


def total(counters: str, hold: str, lengths: list[int]) -> int:
    count(counters, "total")
    _hold(hold)
    return sum(lengths)


def report(counters: str, joined: str, total: int, first: str) -> dict[str, Any]:
    count(counters, "report")
    return {"joined": joined, "total": total, "first": first}
