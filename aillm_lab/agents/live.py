"""One agent run in flight, as the loop in ``base.Agent`` holds it: the trace being made,
the model and tool mode picked for it, the history a fork starts from, who streams its
events, the body task the limits cancel, and the count of failed turns in a row.

Apart from ``base`` because it is the state of one run, not the loop's logic: the
supervisor, the body and ``agent.cancel()`` (from another thread) all hold it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aillm_lab.agents.progress import RunBar
from aillm_lab.agents.run import AgentEvent, AgentRun, EventType

if TYPE_CHECKING:
    from aillm_lab.agents.modes import ToolMode
    from aillm_lab.llm.base import Model
    from aillm_lab.llm.types import Message

Emit = Callable[[AgentEvent], None]


class LiveRun:
    """One run in flight: its trace, model, event sink, body task and repair count."""

    def __init__(self, run: AgentRun, model: Model, mode: ToolMode,
                 history: list[Message] | None, loop: asyncio.AbstractEventLoop,
                 emit: Emit | None, bar_after: float | None = None) -> None:
        self.run, self.model, self.mode, self.history = run, model, mode, history
        self.loop, self.emit = loop, emit
        self.bar = RunBar(bar_after, f"{run.agent} {run.id}")
        self.task: asyncio.Future[None] | None = None
        self.cancel_requested = False
        self.failures = 0
        self.last_failure = ""

    def send(self, type: EventType, step: int, **fields: Any) -> None:
        """Emit an event; built only when someone streams the run (most runs are not)."""
        if self.emit is not None:
            self.emit(AgentEvent(type=type, step=step, **fields))

    def put(self, event: AgentEvent) -> None:
        if self.emit is not None:
            self.emit(event)

    def failed(self, why: str) -> None:
        self.failures += 1
        self.last_failure = why[:500]


__all__ = ["Emit", "LiveRun"]
