"""Forking a recorded run: the new run and its replayed steps, and the per-step state an
agent keeps so that a fork can rebuild what those steps made.

``run.fork(step=N)`` copies steps ``0..N-1`` (marked ``replayed``) and goes on live from
the history of step ``N-1``; no model or tool call is made for the copied steps. But an
agent is more than its messages: a ``ResearchAgent`` numbered sources, a
``DataAnalysisAgent`` kept the last query's result, a ``CodeWriterAgent`` counted its
iterations. So while a step is live, an agent writes what it derived into the step's
``state`` (``record``, JSON data, saved with the trace), and before the live part of a
fork the loop calls the agent's ``arestore(run, replayed)`` once, which reads it back
(``recorded``). Because the state is in the trace, a run reloaded in another process forks
the same way. State made before the first step (a ``ResearchAgent``'s seed sources) is part
of the run's ``inputs`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from aillm_lab.agents.run import AgentRun, AgentStep
from aillm_lab.llm.types import Message


def fork_run(run: AgentRun, step: int) -> tuple[AgentRun, list[Message] | None]:
    """The new run (``run``'s steps before ``step``, replayed) and the history its first
    live step starts from (None at ``step=0``: the run starts afresh)."""
    if not 0 <= step <= len(run.steps):
        raise ValueError(f"step={step}: run {run.id} has steps 0..{len(run.steps) - 1}; "
                         f"fork at one of them (or at {len(run.steps)} to go on after "
                         f"the last)")
    new = AgentRun(task=run.task, inputs=dict(run.inputs), forked_from=f"{run.id}@{step}",
                   steps=[s.model_copy(deep=True, update={"replayed": True})
                          for s in run.steps[:step]])
    return new, (run.steps[step - 1].history() if step else None)


def replayed_steps(run: AgentRun) -> list[AgentStep]:
    """The steps a fork copied, in order."""
    return [s for s in run.steps if s.replayed]


def record(run: AgentRun, key: str, value: Any, *, append: bool = False) -> None:
    """Keep ``value`` (JSON data) in the state of the step being made, under ``key``
    (``append``: add it to a list there). Outside a step (no step yet) nothing is kept."""
    if not run.steps:
        return
    state = run.steps[-1].state
    if append:
        state.setdefault(key, []).append(value)
    else:
        state[key] = value


def recorded(steps: Sequence[AgentStep], key: str) -> Iterator[Any]:
    """The values recorded under ``key`` in ``steps``, in order (a list's items one by one)."""
    for step in steps:
        if key in step.state:
            value = step.state[key]
            yield from (value if isinstance(value, list) else [value])


__all__ = ["fork_run", "record", "recorded", "replayed_steps"]
