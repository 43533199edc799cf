"""The agents a chat can hand a prompt to, shared by the workbench's Chat page and the
notebook's ``al.ui.chat()`` widget, and the one way both read an agent's events.

Offered: the agents that run from one prompt. Left out: ``WorkflowAgent`` (it runs a workflow
spec, not a prompt), ``MonitoringAgent`` (a watcher over the call log: the Monitor page shows
it) and ``IntegrationAgent`` (its tools come from OpenAPI documents or MCP servers given in
code; with none it has no tools).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aillm_lab.agents.run import AgentEvent
    from aillm_lab.core.lab import Lab


@dataclass(frozen=True)
class AgentChoice:
    """One entry of an agent picker: its label and how to make it for a model."""

    label: str
    make: Callable[[Lab, str | None], Any] | None  # None: plain chat
    tables: bool = False  # True: it queries tables given as ``data=``


def _react(lab: Lab, model: str | None) -> Any:
    from aillm_lab.agents.react import ReActAgent

    return ReActAgent(tools=lab.tools, model=model, lab=lab, max_steps=8)


def _code_writer(lab: Lab, model: str | None) -> Any:
    from aillm_lab.agents.code_writer import CodeWriterAgent

    return CodeWriterAgent(model=model, lab=lab)


def _research(lab: Lab, model: str | None) -> Any:
    from aillm_lab.agents.research import ResearchAgent

    return ResearchAgent(model=model, lab=lab)


def _data_analysis(lab: Lab, model: str | None) -> Any:
    from aillm_lab.agents.data_analysis import DataAnalysisAgent

    return DataAnalysisAgent(model=model, lab=lab)


AGENT_CHOICES: dict[str, AgentChoice] = {
    "chat": AgentChoice("Plain chat", None),
    "react": AgentChoice("ReAct agent (the Lab's tools)", _react),
    "code_writer": AgentChoice("Code writer (sandboxed tests)", _code_writer),
    "research": AgentChoice("Research (the Lab's documents)", _research),
    "data_analysis": AgentChoice("Data analysis (the Lab's tables)", _data_analysis,
                                 tables=True),
}


async def agent_events(agent: Any, task: str,
                       inputs: dict[str, Any]) -> AsyncIterator[AgentEvent]:
    """The agent's events for ``task`` (every offered agent streams), ending in ``final``."""
    async for event in agent.astream(task, **inputs):
        yield event


__all__ = ["AGENT_CHOICES", "AgentChoice", "agent_events"]
